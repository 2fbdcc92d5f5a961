"""What every peer module of the benchmark shares: the command line, the three scenarios,
the timestamp sink the handlers write to, the worker processes and the one JSON line.

A peer module (``bench/systems/<name>.py``) only says, in a ``Peer`` class (see
:class:`PeerAPI`), how its system enqueues, schedules and starts its workers; the
scenarios here drive every peer the same way, so a difference in the figures is a
difference between the systems.

Times are wall-clock (``time.time()``) on both sides: the client stamps a task when it
enqueues it, the handler stamps it when it starts, in whatever worker process runs it.
A no-op handler starts and completes in the same microsecond, so its one stamp is both.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

SCENARIOS = ("throughput", "latency", "punctuality")
DEFAULT_LEAD_SECONDS = 2.0
# The size of each scenario's run: what `make bench` uses, and a system module's default.
FULL_N = {
    "throughput": 10_000,
    "latency": 200,
    "punctuality": 200,
    "throughput_http": 10_000,
    "throughput_batch": 50_000,
    "http": 10_000,
    "scale": 1_000_000,
    "priority": 100_000,
    "cluster": 20_000,
}
# Scheduled tasks are enqueued this far apart, so that each one's start shows the
# scheduler's own delay rather than a backlog of tasks that all fell due together.
PUNCTUALITY_SPACING_SECONDS = 0.01
WARM_UP_TASK = -1
READY_WITHIN_SECONDS = 60.0
STOP_WITHIN_SECONDS = 15.0
# The pause before each latency task, so that it finds the system idle: the previous
# task's bookkeeping done and every worker back to waiting for work.
LATENCY_PAUSE_SECONDS = 0.1
# How often the client looks at the sink: only when it learns of a start, never the
# start itself, which the handler stamps.
SINK_POLL_SECONDS = 0.001
DRAIN_POLL_SECONDS = 0.05

REPO_ROOT = Path(__file__).resolve().parent.parent
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
POSTGRES_CONNINFO = "host=127.0.0.1 port=5432 user=postgres"

STATE_DIR_ENV = "TASKQ_BENCH_STATE"
SINK_FILE = "starts.log"

Result = dict[str, Any]


class PeerAPI(Protocol):
    """One system under test, driven by the scenarios below."""

    config: str

    def reset(self) -> None:
        """Leave no task, result or schedule of an earlier run behind."""

    def worker_commands(self) -> list[list[str]]:
        """The commands a user would run to start this system's workers."""

    def wait_ready(self) -> None:
        """Return once every worker takes tasks (the warm-up task has run on one)."""

    def enqueue(self, task_id: int) -> None: ...

    def enqueue_many(self, task_ids: Sequence[int]) -> None:
        """With the system's bulk API where it has one."""

    def schedule(self, task_id: int, at: float) -> None:
        """Run the task at ``at`` (a ``time.time()`` value), with the system's own scheduler."""


def state_dir() -> Path:
    """The folder of this run (sink, SQLite file, logs), shared with the worker processes.

    The first process to ask makes it and names it in the environment, which the workers
    it starts inherit: a peer module reads it at import time, before ``main`` runs.
    """
    if found := os.environ.get(STATE_DIR_ENV):
        return Path(found)
    made = Path(tempfile.mkdtemp(prefix="taskq-bench-"))
    os.environ[STATE_DIR_ENV] = str(made)
    return made


@functools.cache
def _sink_fd(pid: int) -> int:
    # One descriptor per process (keyed by pid, so a forked worker opens its own);
    # O_APPEND makes each short line one atomic write among concurrent writers.
    return os.open(state_dir() / SINK_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def record_start(task_id: int) -> None:
    """The handler's one line of work: stamp the moment it started."""
    os.write(_sink_fd(os.getpid()), f"{task_id} {time.time():.6f}\n".encode())


class Sink:
    """Reads the handlers' stamps as they arrive, without disturbing the writers."""

    def __init__(self, path: Path) -> None:
        path.touch()
        self._file = path.open("rb")
        self._partial = b""
        self.starts: dict[int, float] = {}

    def _read(self) -> None:
        data = self._partial + self._file.read()
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            task_id, stamp = line.split()
            self.starts.setdefault(int(task_id), float(stamp))

    def wait_for(self, task_ids: Iterable[int], timeout: float, poll: float) -> dict[int, float]:
        wanted = set(task_ids)
        deadline = time.monotonic() + timeout
        while True:
            self._read()
            missing = wanted - self.starts.keys()
            if not missing:
                return {task_id: self.starts[task_id] for task_id in wanted}
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(missing)} of {len(wanted)} tasks never started")
            time.sleep(poll)


def venv_script(name: str) -> str:
    """A command installed beside this Python (``celery``, ``rq``...): the peer's own CLI."""
    return str(Path(sys.executable).parent / name)


def utc_datetime(at: float) -> datetime:
    """A ``time.time()`` value as the aware UTC datetime the peers' schedulers take."""
    return datetime.fromtimestamp(at, UTC)


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def as_ms(seconds: Sequence[float]) -> list[float]:
    return [value * 1000 for value in seconds]


@contextmanager
def running_workers(peer: PeerAPI, sink: Sink) -> Iterator[None]:
    """Start the workers as a user would, wait until they take tasks, stop them at exit.

    Each worker gets its own process group and a log file; at exit the group gets SIGINT
    (Ctrl-C, the graceful stop of all four peers), then SIGKILL if it lingers.
    """
    logs = state_dir() / "workers.log"
    processes: list[subprocess.Popen[bytes]] = []
    environ = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with logs.open("ab") as log:
        try:
            for command in peer.worker_commands():
                processes.append(
                    subprocess.Popen(
                        command,
                        cwd=state_dir(),
                        env=environ,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            peer.enqueue(WARM_UP_TASK)
            sink.wait_for([WARM_UP_TASK], READY_WITHIN_SECONDS, DRAIN_POLL_SECONDS)
            peer.wait_ready()
            yield
        except Exception:
            sys.stderr.write(logs.read_text(errors="replace")[-4000:])
            raise
        finally:
            _stop(processes)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
    for process in processes:
        try:
            process.wait(timeout=STOP_WITHIN_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition()`` until true; for readiness that only the broker shows."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:g} s")
        time.sleep(DRAIN_POLL_SECONDS)


def throughput(peer: PeerAPI, sink: Sink, n: int) -> Result:
    """N no-op tasks in bulk; first enqueue -> last start (= completion of a no-op)."""
    task_ids = range(n)
    began = time.time()
    peer.enqueue_many(task_ids)
    enqueued = time.time()
    starts = sink.wait_for(task_ids, timeout=60 + n / 20, poll=DRAIN_POLL_SECONDS)
    return {
        "enqueue_per_s": round(n / (enqueued - began), 1),
        "end_to_end_per_s": round(n / (max(starts.values()) - began), 1),
        "n": n,
    }


def latency(peer: PeerAPI, sink: Sink, n: int) -> Result:
    """One task at a time on an idle system; enqueue -> handler start."""
    delays: list[float] = []
    for task_id in range(n):
        time.sleep(LATENCY_PAUSE_SECONDS)
        enqueued = time.time()
        peer.enqueue(task_id)
        started = sink.wait_for([task_id], timeout=30, poll=SINK_POLL_SECONDS)[task_id]
        delays.append(started - enqueued)
    delays_ms = as_ms(delays)
    return {
        "p50_ms": round(percentile(delays_ms, 50), 2),
        "p99_ms": round(percentile(delays_ms, 99), 2),
        "n": n,
    }


def punctuality(peer: PeerAPI, sink: Sink, n: int, lead: float) -> Result:
    """Tasks scheduled ``lead`` seconds ahead, one every 10 ms; start - scheduled time."""
    due: dict[int, float] = {}
    for task_id in range(n):
        due[task_id] = time.time() + lead
        peer.schedule(task_id, due[task_id])
        time.sleep(PUNCTUALITY_SPACING_SECONDS)
    starts = sink.wait_for(due, timeout=lead + 60, poll=DRAIN_POLL_SECONDS)
    late_ms = as_ms([starts[task_id] - due[task_id] for task_id in due])
    return {
        "p50_ms": round(percentile(late_ms, 50), 2),
        "p99_ms": round(percentile(late_ms, 99), 2),
        "max_ms": round(max(late_ms), 2),
        "min_ms": round(min(late_ms), 2),
        "n": n,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run one benchmark scenario on one system.")
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--n", type=int, help="tasks (default: 10,000 throughput, 200 else)")
    parser.add_argument("--lead", type=float, default=DEFAULT_LEAD_SECONDS, help="seconds ahead")
    parser.add_argument(
        "--connections", type=int, help="client connections (for systems driven over HTTP)"
    )
    return parser.parse_args(argv)


def run_scenario(peer: PeerAPI, args: argparse.Namespace) -> Result:
    n: int = args.n or FULL_N[args.scenario]
    sink = Sink(state_dir() / SINK_FILE)
    with running_workers(peer, sink):
        if args.scenario == "throughput":
            return throughput(peer, sink, n)
        if args.scenario == "latency":
            return latency(peer, sink, n)
        return punctuality(peer, sink, n, args.lead)


def main(script: str) -> None:
    """The command line of every peer module; prints the result as the last line.

    The peer is taken from the module imported under its package name, as its workers
    import it, rather than from ``__main__``: the systems that name a task after its
    module then agree on the name on both sides.
    """
    args = parse_args()
    folder = state_dir()
    module = importlib.import_module(f"bench.systems.{Path(script).stem}")
    peer: PeerAPI = module.Peer()
    try:
        peer.reset()
        result = run_scenario(peer, args)
        peer.reset()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps({**result, "config": peer.config}))
