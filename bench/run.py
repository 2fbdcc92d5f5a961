"""Measure taskq and its peers side by side, in the same run on the same machine.

Each system's scenario runs as its own process, ``bench/systems/<name>.py <scenario>``,
which starts the system, measures, stops it and prints one JSON object as the last line
of its output. This script runs them one after another and prints one table per
scenario; then (except with ``--quick``) it writes ``bench/results/<scenario>.json`` and
``bench/results/machine.json`` and makes docs/benchmarks.md and docs/benchmarks.png from
them (``bench/report.py``). ``--quick`` writes the same into ``bench/results/quick/``
instead, so a smoke run never overwrites real figures. A system whose module is missing
or fails is shown as such, with the last line of its error output.

Every system runs throughput, latency and punctuality; throughput also runs taskq over
HTTP (single creates, then the batch endpoint) and on PostgreSQL. taskq alone runs http
(create/get beside a bare Quart-Trio endpoint), scale (a deep queue, on SQLite and on
PostgreSQL), priority (CRITICAL behind a LOW backlog, on both) and cluster (1, 2 and 3
processes on one PostgreSQL database).

    python bench/run.py                        # everything (what `make bench` runs)
    python bench/run.py --quick                # small n: a smoke run of the harness
    python bench/run.py --only taskq,huey --scenarios latency
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import machine
import report
import settle
from common import DEFAULT_LEAD_SECONDS, FULL_N

BENCH = Path(__file__).resolve().parent
REPO_ROOT = BENCH.parent
RESULTS = BENCH / "results"

QUICK_RESULTS = RESULTS / "quick"

SYSTEMS = ("taskq", *report.PEERS)
BASELINE = report.BASELINE
SCENARIOS = (*report.PEER_SCENARIOS, *report.TASKQ_SCENARIOS)
QUICK_N = {
    "throughput": 500,
    "latency": 20,
    "punctuality": 20,
    "throughput_http": 500,
    "throughput_batch": 2_000,
    "http": 500,
    "scale": 5_000,
    "priority": 2_000,
    "cluster": 2_000,
}
# On this kind of machine (two shared cores) one pair of throughput runs of taskq and
# Huey, the pair behind the 5x target, gave ratios from 2.7 to 6.4 within an hour. So
# those two are measured in rounds, taken in turns, and each column shows its median
# round (by ROUNDS_MEDIAN_OF), with every round's figure listed under the table.
ROUNDS = 5
IN_ROUNDS = {"throughput": (BASELINE, "huey")}
ROUNDS_MEDIAN_OF = {"throughput": "end_to_end_per_s"}
RUN_WITHIN_SECONDS = 1800
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
POSTGRES_CONNINFO = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
REDIS_ADDRESS = ("127.0.0.1", 6379)
POSTGRES_ADDRESS = ("127.0.0.1", 5432)
SERVICE_UP_WITHIN_SECONDS = 30.0


@dataclass
class Outcome:
    """What one system's scenario gave: its figures, or why there are none."""

    system: str
    status: str  # "ok", "not available" or "failed"
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0
    # The machine as the run found it (``settle.Quiet``).
    quiet: dict[str, Any] = field(default_factory=dict)
    # The disk while the run measured (``settle.DiskSeen``).
    disk: dict[str, Any] = field(default_factory=dict)


def listening(address: tuple[str, int]) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(address) == 0


def wait_listening(address: tuple[str, int], name: str) -> None:
    deadline = time.monotonic() + SERVICE_UP_WITHIN_SECONDS
    while not listening(address):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} did not come up within {SERVICE_UP_WITHIN_SECONDS:g} s")
        time.sleep(0.2)


def start_service(name: str, address: tuple[str, int], command: list[str]) -> None:
    """Start a server that is down; if that fails, say so: its peers will fail visibly."""
    if listening(address):
        return
    print(f"starting {name} on {address[0]}:{address[1]}", file=sys.stderr)
    try:
        subprocess.run(command, check=True)
        wait_listening(address, name)
    except (OSError, subprocess.CalledProcessError, TimeoutError) as error:
        print(f"could not start {name}: {error}", file=sys.stderr)


def postgres_version() -> str:
    versions = [path.name for path in Path("/etc/postgresql").glob("*") if path.name.isdigit()]
    return max(versions, key=int, default="15")


def ensure_services() -> None:
    """Redis (without persistence) and PostgreSQL on 127.0.0.1, started if down."""
    start_service(
        "Redis",
        REDIS_ADDRESS,
        [
            *("redis-server", "--bind", "127.0.0.1", "--port", "6379", "--daemonize", "yes"),
            *("--save", "", "--appendonly", "no"),
        ],
    )
    start_service(
        "PostgreSQL",
        POSTGRES_ADDRESS,
        ["pg_ctlcluster", "--skip-systemctl-redirect", postgres_version(), "main", "start"],
    )


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


@dataclass(frozen=True)
class Run:
    """One column of a table: a system module's scenario with its options."""

    label: str
    module: str
    scenario: str
    n: int
    options: tuple[str, ...] = ()
    rounds: int = 1


def run_one(run: Run, common_options: list[str], run_id: str) -> Outcome:
    """Settle the machine (``settle``), then run one system module's scenario with the
    disk watched."""
    quiet = settle.settle(run_id, POSTGRES_CONNINFO).as_dict()
    print(f"  starting on {quiet}", file=sys.stderr, flush=True)
    with settle.watching() as watch:
        outcome = _measure(run, common_options, run_id)
    outcome.quiet = quiet
    outcome.disk = watch.seen().as_dict()
    return outcome


def _measure(run: Run, common_options: list[str], run_id: str) -> Outcome:
    system, scenario = run.label, run.scenario
    options = ["--n", str(run.n), *common_options, *run.options]
    module = BENCH / "systems" / f"{run.module}.py"
    if not module.exists():
        return Outcome(system, "not available", error=f"{module.relative_to(REPO_ROOT)} not found")
    # -P: the module's own folder must not come first on the path, or bench/systems/rq.py
    # would shadow the rq library; the repository root makes `bench` importable.
    command = [sys.executable, "-P", str(module), scenario, *options]
    environ = {**os.environ, "PYTHONPATH": str(REPO_ROOT), settle.MARKER_ENV: run_id}
    started = time.monotonic()
    try:
        done = subprocess.run(
            command,
            cwd=REPO_ROOT,
            env=environ,
            capture_output=True,
            text=True,
            timeout=RUN_WITHIN_SECONDS,
        )
    except subprocess.TimeoutExpired:
        return Outcome(system, "failed", error=f"no result within {RUN_WITHIN_SECONDS} s")
    seconds = round(time.monotonic() - started, 1)
    if done.returncode != 0:
        error = last_line(done.stderr) or f"exit code {done.returncode}"
        return Outcome(system, "failed", error=error, seconds=seconds)
    try:
        result = json.loads(last_line(done.stdout))
    except json.JSONDecodeError:
        return Outcome(system, "failed", error="last line of output is not JSON", seconds=seconds)
    return Outcome(system, "ok", result=result, seconds=seconds)


def runs(scenario: str, systems: list[str], sizes: dict[str, int]) -> list[Run]:
    """The columns of one scenario's table, in order."""
    on_postgres = ("--db", POSTGRES_URL)
    if scenario in report.PEER_SCENARIOS:
        in_rounds = IN_ROUNDS.get(scenario, ())
        found = [
            Run(
                system,
                system,
                scenario,
                sizes[scenario],
                rounds=ROUNDS if system in in_rounds else 1,
            )
            for system in systems
        ]
        if scenario == "throughput" and BASELINE in systems:
            found[1:1] = [
                Run("taskq-postgresql", BASELINE, scenario, sizes[scenario], on_postgres),
                Run("taskq-http", BASELINE, "throughput_http", sizes["throughput_http"]),
                Run("taskq-batch", BASELINE, "throughput_batch", sizes["throughput_batch"]),
            ]
        return found
    if BASELINE not in systems:
        return []
    if scenario in ("http", "cluster"):
        return [Run(BASELINE, BASELINE, scenario, sizes[scenario])]
    return [
        Run("sqlite", BASELINE, scenario, sizes[scenario]),
        Run("postgresql", BASELINE, scenario, sizes[scenario], on_postgres),
    ]


def measured_in_turns(
    columns: list[Run], common_options: list[str], run_id: str
) -> list[dict[str, Any]]:
    """Every column once, then the columns measured in rounds again, in turns, so that
    a slow spell of the machine falls on both sides of a ratio; each column keeps its
    median round (``report.median_round``)."""
    taken: dict[str, list[dict[str, Any]]] = {run.label: [] for run in columns}
    for number in range(max((run.rounds for run in columns), default=0)):
        for run in (run for run in columns if number < run.rounds):
            of = f" (round {number + 1} of {run.rounds})" if run.rounds > 1 else ""
            print(f"{run.scenario}: {run.label}{of} ...", file=sys.stderr, flush=True)
            taken[run.label].append(asdict(run_one(run, common_options, run_id)))
    return [
        report.median_round(taken[run.label], ROUNDS_MEDIAN_OF.get(run.scenario, ""))
        for run in columns
    ]


def document(
    scenario: str, n: int, args: argparse.Namespace, outcomes: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "n": n,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"load_average_at_end": [round(load, 2) for load in os.getloadavg()]},
        "options": {"quick": args.quick, "lead": args.lead, "connections": args.connections},
        "systems": {outcome["system"]: outcome for outcome in outcomes},
    }


def comma_list(allowed: tuple[str, ...]) -> Any:
    def parse(text: str) -> list[str]:
        chosen = [name.strip() for name in text.split(",") if name.strip()]
        unknown = sorted(set(chosen) - set(allowed))
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown: {', '.join(unknown)}")
        return chosen

    return parse


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", type=comma_list(SYSTEMS), default=list(SYSTEMS), help="systems, e.g. taskq,rq"
    )
    parser.add_argument(
        "--scenarios",
        type=comma_list(SCENARIOS),
        default=list(SCENARIOS),
        help="scenarios, e.g. latency,punctuality",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small n, results in bench/results/quick/"
    )
    parser.add_argument(
        "--lead", type=float, default=DEFAULT_LEAD_SECONDS, help="punctuality: seconds ahead"
    )
    parser.add_argument("--connections", type=int, help="HTTP connections for taskq's client")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    ensure_services()
    folder = QUICK_RESULTS if args.quick else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    sizes = QUICK_N if args.quick else FULL_N
    started = time.monotonic()
    arguments = " ".join(sys.argv[1:])
    facts = machine.describe(f'make bench ARGS="{arguments}"' if arguments else "make bench")
    (folder / "machine.json").write_text(json.dumps(facts, indent=2) + "\n")
    systems = [system for system in SYSTEMS if system in args.only]
    run_id = uuid.uuid4().hex
    common_options = ["--lead", str(args.lead)]
    if args.connections:
        common_options += ["--connections", str(args.connections)]
    for scenario in (scenario for scenario in SCENARIOS if scenario in args.scenarios):
        outcomes = measured_in_turns(runs(scenario, systems, sizes), common_options, run_id)
        if not outcomes:
            continue
        found = document(scenario, sizes[scenario], args, outcomes)
        (folder / f"{scenario}.json").write_text(json.dumps(found, indent=2) + "\n")
        print(report.table(found) + "\n", flush=True)
    if args.quick:
        report.write(folder, folder / "benchmarks.md", folder / "benchmarks.png")
    else:
        report.write(folder, report.PAGE, report.CHART)
    print(f"bench took {time.monotonic() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
