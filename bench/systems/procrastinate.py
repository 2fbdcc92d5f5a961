"""procrastinate on PostgreSQL, in a database of its own created afresh for each run.

Its how-to on running several jobs at once names both ways, and both are used: several
worker processes (``procrastinate worker``), each running ``async`` jobs concurrently
(``--concurrency``). A worker fetches its jobs one at a time, each fetch a committed
transaction, however high its concurrency (``Worker._fetch_and_process_jobs``), so for
short jobs the processes are what run fetches in parallel: four of them (measured on two
cores under load: about 1.5x the throughput of two, and eight no better than four), each
with a concurrency of 4, the size of its connection pool (psycopg_pool's default). Workers
are woken by LISTEN/NOTIFY, and the fetch polling interval, which is also what picks up
scheduled jobs, stays at its default (5 s). Bulk enqueue is ``batch_defer`` (one
statement for many jobs); scheduling is ``schedule_at``. See
https://procrastinate.readthedocs.io/en/stable/ (how-to guides "Execute multiple jobs at
the same time" and "Defer a job at a given time").
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from procrastinate import App, PsycopgConnector
from psycopg import sql

from bench import common

WORKERS = 4
CONCURRENCY = 4
DATABASE = "taskq_bench_procrastinate"
CONNINFO = f"{common.POSTGRES_CONNINFO} dbname={DATABASE}"

app = App(connector=PsycopgConnector(conninfo=CONNINFO))


@app.task(name="noop")
async def noop(task_id: int) -> None:
    common.record_start(task_id)


def recreate_database() -> None:
    """Drop and create the benchmark's own database (never another's tables)."""
    name = sql.Identifier(DATABASE)
    with psycopg.connect(f"{common.POSTGRES_CONNINFO} dbname=postgres", autocommit=True) as db:
        db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        db.execute(sql.SQL("CREATE DATABASE {}").format(name))


def analyze_jobs() -> None:
    """Give the planner the statistics autovacuum keeps on a database in use.

    A database created for the run has none, and the fetch query then plans as if the
    jobs table were empty: each fetch scans the whole burst. Run inside the measured
    window, so it counts against procrastinate rather than for it.
    """
    with psycopg.connect(CONNINFO, autocommit=True) as db:
        db.execute("ANALYZE procrastinate_jobs")


class Peer:
    config = (
        f"procrastinate on PostgreSQL; {WORKERS} x `procrastinate worker --concurrency "
        f"{CONCURRENCY}`"
        " (one fetch at a time per process) with an async task, LISTEN/NOTIFY on, default 5 s "
        "fetch polling; batch_defer "
        "(then ANALYZE) to enqueue, schedule_at to schedule"
    )

    def reset(self) -> None:
        app.close()
        recreate_database()
        app.open()
        app.schema_manager.apply_schema()

    def worker_commands(self) -> list[list[str]]:
        command = [
            common.venv_script("procrastinate"),
            "--app",
            "bench.systems.procrastinate.app",
            "worker",
            "--concurrency",
            str(CONCURRENCY),
        ]
        return [command] * WORKERS

    def wait_ready(self) -> None:
        common.wait_until(self.all_workers_registered, common.READY_WITHIN_SECONDS, "workers")

    def all_workers_registered(self) -> bool:
        with psycopg.connect(CONNINFO) as db:
            row = db.execute("SELECT count(*) FROM procrastinate_workers").fetchone()
        return row is not None and row[0] == WORKERS

    def enqueue(self, task_id: int) -> None:
        noop.defer(task_id=task_id)

    def enqueue_many(self, task_ids: Sequence[int]) -> None:
        noop.batch_defer(*({"task_id": task_id} for task_id in task_ids))
        analyze_jobs()

    def schedule(self, task_id: int, at: float) -> None:
        noop.configure(schedule_at=common.utc_datetime(at)).defer(task_id=task_id)


if __name__ == "__main__":
    common.main(__file__)
