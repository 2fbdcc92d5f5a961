"""Throughput of a taskq cluster: 1, 2 and 3 processes on one PostgreSQL database.

For each cluster size, in one sitting, on a fresh database of its own: start
the processes (``--workers 0``), put N queued ``taskq.echo`` tasks in the
database, then give each process W workers over HTTP and time from there until
every task is completed (read from the database). Figures are tasks/s and the
ratio to one process measured in the same run: on a shared 2-core machine the
absolute numbers are noisy, the ratios less so. The processes share the
machine with PostgreSQL, so more processes also means less CPU for each.

    python bench/cluster.py                    # 1, 2, 3 processes; 5,000 tasks; 4 workers each
    python bench/cluster.py -n 20000 --workers 8 --nodes 1 3

``make bench`` runs it as taskq's ``cluster`` scenario (``bench/systems/taskq.py``).
"""

from __future__ import annotations

import argparse
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime

import httpx
from sqlalchemy import Engine, create_engine, func, insert, select, text
from sqlalchemy.engine import make_url

from taskq.store import Store
from taskq.store.schema import tasks

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
START_WITHIN_SECONDS = 30.0
POLL_INTERVAL_SECONDS = 0.02
LISTENING = re.compile(r"^taskq listening on (?P<url>http://\S+) ")


@contextmanager
def database(server: str) -> Iterator[str]:
    """A database of this run's own, dropped at the end."""
    name = f"taskq_bench_{secrets.token_hex(4)}"
    admin = create_engine(make_url(server).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def node(db_url: str, name: str) -> Iterator[str]:
    """One ``python -m taskq`` with no workers yet; answers its URL; stopped at exit."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taskq",
            "--db",
            db_url,
            "--port",
            "0",
            "--workers",
            "0",
            "--node",
            name,
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + START_WITHIN_SECONDS
        for line in process.stdout:
            if found := LISTENING.match(line):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {name} did not start")
        else:
            raise RuntimeError(f"node {name} exited: {process.wait()}")
        yield found["url"]
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def queue_tasks(engine: Engine, count: int) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    row = {
        "name": "taskq.echo",
        "payload": {},
        "priority": 2,
        "status": "pending",
        "created_at": now,
        "updated_at": now,
        "attempt": 0,
    }
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE tasks, workers RESTART IDENTITY"))
        connection.execute(insert(tasks), [row] * count)


def completed(engine: Engine) -> int:
    with engine.connect() as connection:
        done: int = connection.execute(
            select(func.count()).where(tasks.c.status == "completed")
        ).scalar_one()
    return done


def measure(db_url: str, nodes: int, count: int, workers: int) -> float:
    engine = create_engine(db_url)
    try:
        queue_tasks(engine, count)
        with ExitStack() as stack:
            urls = [stack.enter_context(node(db_url, f"bench-{n}")) for n in range(nodes)]
            clients = [stack.enter_context(httpx.Client(base_url=url)) for url in urls]
            started = time.perf_counter()
            for client in clients:
                for number in range(workers):
                    client.post("/api/workers/", json={"name": f"w{number}"}).raise_for_status()
            while completed(engine) < count:
                time.sleep(POLL_INTERVAL_SECONDS)
            return count / (time.perf_counter() - started)
    finally:
        engine.dispose()


def rates(server: str, nodes: Sequence[int], count: int, workers: int) -> dict[int, float]:
    """tasks/s of each cluster size, in turn, on a database of this run's own."""
    with database(server) as db_url:
        Store.open(db_url).close()
        return {n: measure(db_url, n, count, workers) for n in nodes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--tasks", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=4, help="workers per process")
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--server", default=SERVER, help="PostgreSQL server URL (no database)")
    args = parser.parse_args()
    rates_of = rates(args.server, args.nodes, args.tasks, args.workers)
    base = rates_of[args.nodes[0]]
    print(f"{args.tasks} taskq.echo tasks, {args.workers} workers per process")
    print(f"{'processes':>9}  {'tasks/s':>8}  {'ratio':>6}")
    for n, rate in rates_of.items():
        print(f"{n:>9}  {rate:>8.0f}  {rate / base:>6.2f}")


if __name__ == "__main__":
    main()
