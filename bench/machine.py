"""What the benchmark ran on, for the results and the page: hardware, versions, commit.

Each fact is looked up where it lives (``/proc``, the servers themselves, the installed
packages); one that cannot be found is written as ``unknown`` rather than stopping a run.
"""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("taskq", "huey", "procrastinate", "rq", "celery", "kombu", "redis", "psycopg")
UNKNOWN = "unknown"


def _or_unknown(look_up: Callable[[], str]) -> str:
    try:
        return look_up()
    except Exception:  # any failure only means the fact is unknown
        return UNKNOWN


def _cpu_model() -> str:
    return cpu_model(Path("/proc/cpuinfo").read_text())


def cpu_model(cpuinfo: str) -> str:
    """The model name, its family and model numbers, and whether the kernel runs under a
    hypervisor (a virtual machine).

    A hypervisor may show only the maker's brand ("AMD EPYC"), the same for processors
    of several generations and far apart in speed; the family and model numbers tell
    them apart.
    """
    fields = {}
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    model = fields.get("model name", UNKNOWN)
    details = [
        f"{label} {fields[key]}"
        for key, label in (("cpu family", "family"), ("model", "model"))
        if key in fields
    ]
    if "hypervisor" in fields.get("flags", "").split():
        details.append("virtual machine")
    return f"{model} ({', '.join(details)})" if details else model


def _memory_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def _postgresql() -> str:
    import psycopg

    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres") as db:
        row = db.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else UNKNOWN


def _redis() -> str:
    from redis import Redis

    return str(Redis(host="127.0.0.1", port=6379).info("server")["redis_version"])


def _commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    dirty = " (with uncommitted changes)" if git("status", "--porcelain", "--", "taskq") else ""
    return git("rev-parse", "--short", "HEAD") + dirty


def describe(command: str) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "cpu_model": _or_unknown(_cpu_model),
        "cpus": os.cpu_count(),
        "memory_gb": round(_memory_gb(), 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": _or_unknown(_postgresql),
        "redis": _or_unknown(_redis),
        "packages": {name: _or_unknown(lambda n=name: metadata.version(n)) for name in PACKAGES},
        "commit": _or_unknown(_commit),
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
    }
