"""Measure taskq and its peers side by side, in the same run on the same machine.

Each system's scenario runs as its own process, ``bench/systems/<name>.py <scenario>``,
which starts the system's workers, measures, stops them and prints one JSON object as
the last line of its output. This script runs them one after another, prints one table
per scenario with the systems side by side and taskq's ratio to each peer, and (except
with ``--quick``) writes ``bench/results/<scenario>.json``. A system whose module is
missing or fails is shown as such, with the last line of its error output.

    python bench/run.py                        # everything (what `make bench` runs)
    python bench/run.py --quick                # small n: a smoke run of the harness
    python bench/run.py --only taskq,huey --scenarios latency
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import DEFAULT_LEAD_SECONDS, DEFAULT_N, SCENARIOS

BENCH = Path(__file__).resolve().parent
REPO_ROOT = BENCH.parent
RESULTS = BENCH / "results"

SYSTEMS = ("taskq", "huey", "procrastinate", "rq", "celery")
BASELINE = "taskq"
QUICK_N = {"throughput": 500, "latency": 20, "punctuality": 20}
RUN_WITHIN_SECONDS = 900

# Per scenario: the figures shown, each with whether more is better (for the note under
# the table; the ratio is always taskq / peer).
METRICS: dict[str, tuple[tuple[str, bool], ...]] = {
    "throughput": (("enqueue_per_s", True), ("end_to_end_per_s", True)),
    "latency": (("p50_ms", False), ("p99_ms", False)),
    "punctuality": (("p50_ms", False), ("p99_ms", False), ("max_ms", False), ("min_ms", False)),
}

NO_FIGURE = "n/a"
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


def run_one(system: str, scenario: str, options: list[str]) -> Outcome:
    module = BENCH / "systems" / f"{system}.py"
    if not module.exists():
        return Outcome(system, "not available", error=f"{module.relative_to(REPO_ROOT)} not found")
    # -P: the module's own folder must not come first on the path, or bench/systems/rq.py
    # would shadow the rq library; the repository root makes `bench` importable.
    command = [sys.executable, "-P", str(module), scenario, *options]
    environ = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
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


def cell(outcome: Outcome, metric: str) -> str:
    if outcome.status != "ok":
        return outcome.status
    value = outcome.result.get(metric)
    return NO_FIGURE if value is None else f"{value:,.1f}"


def ratio(baseline: Outcome | None, peer: Outcome, metric: str) -> str:
    """taskq / peer, where both measured a figure with the same sign (a ratio of an early
    start to a late one would mean nothing)."""
    if baseline is None or baseline.status != "ok" or peer.status != "ok":
        return NO_FIGURE
    ours, theirs = baseline.result.get(metric), peer.result.get(metric)
    if ours is None or theirs is None or ours * theirs <= 0:
        return NO_FIGURE
    return f"{ours / theirs:.2f}"


def table(scenario: str, n: int, outcomes: list[Outcome]) -> str:
    """A Markdown table: a row per figure, the systems side by side, then the ratios."""
    by_system = {outcome.system: outcome for outcome in outcomes}
    baseline = by_system.get(BASELINE)
    peers = [outcome for outcome in outcomes if outcome.system != BASELINE]
    header = [f"{scenario} (n={n:,})"]
    header += [outcome.system for outcome in outcomes]
    header += [f"{BASELINE}/{peer.system}" for peer in peers if baseline is not None]
    rows = [header, ["---"] + ["---:"] * (len(header) - 1)]
    for metric, more_is_better in METRICS[scenario]:
        label = f"{metric} ({'higher' if more_is_better else 'lower'} is better)"
        row = [label] + [cell(outcome, metric) for outcome in outcomes]
        row += [ratio(baseline, peer, metric) for peer in peers if baseline is not None]
        rows.append(row)
    lines = ["| " + " | ".join(row) + " |" for row in rows] + [""]
    for outcome in outcomes:
        if outcome.status == "ok":
            lines.append(f"- {outcome.system}: {outcome.result.get('config', '')}")
        else:
            lines.append(f"- {outcome.system}: {outcome.status}: {outcome.error}")
    return "\n".join(lines)


def write_results(scenario: str, n: int, args: argparse.Namespace, outcomes: list[Outcome]) -> None:
    RESULTS.mkdir(exist_ok=True)
    document = {
        "scenario": scenario,
        "n": n,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_end": [round(load, 2) for load in os.getloadavg()],
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "options": {"quick": args.quick, "lead": args.lead, "connections": args.connections},
        "systems": {outcome.system: asdict(outcome) for outcome in outcomes},
    }
    path = RESULTS / f"{scenario}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")


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
    parser.add_argument("--quick", action="store_true", help="small n: a smoke run")
    parser.add_argument(
        "--lead", type=float, default=DEFAULT_LEAD_SECONDS, help="punctuality: seconds ahead"
    )
    parser.add_argument("--connections", type=int, help="HTTP connections for taskq's client")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    ensure_services()
    started = time.monotonic()
    systems = [system for system in SYSTEMS if system in args.only]
    for scenario in (scenario for scenario in SCENARIOS if scenario in args.scenarios):
        n = QUICK_N[scenario] if args.quick else DEFAULT_N[scenario]
        options = ["--n", str(n), "--lead", str(args.lead)]
        if args.connections:
            options += ["--connections", str(args.connections)]
        outcomes = []
        for system in systems:
            print(f"{scenario}: {system} ...", file=sys.stderr, flush=True)
            outcomes.append(run_one(system, scenario, options))
        print(table(scenario, n, outcomes) + "\n", flush=True)
        if not args.quick:  # a smoke run's figures would only overwrite real ones
            write_results(scenario, n, args, outcomes)
    print(f"bench took {time.monotonic() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
