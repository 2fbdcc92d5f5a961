"""Huey on its SQLite storage: the embedded peer, one file like taskq's default.

The consumer runs worker threads (``-k thread``, which the consumer's help calls the
safest choice, and which suits I/O-bound tasks), one per core and then some (``-w 4``);
polling, backoff and scheduler interval stay at their defaults (0.1 s, x1.15 up to
10 s, 1 s). See https://huey.readthedocs.io/en/latest/consumer.html.
"""

from __future__ import annotations

from collections.abc import Sequence

from huey import SqliteHuey

from bench import common

WORKERS = 4

# fsync=False is the documented default ("use durable writes ... Defaults to false"),
# spelled out because huey 3 otherwise leaves SQLite at its own synchronous=FULL.
huey = SqliteHuey("bench", filename=str(common.state_dir() / "huey.db"), fsync=False)


@huey.task(name="noop")
def noop(task_id: int) -> None:
    common.record_start(task_id)


class Peer:
    config = (
        f"SqliteHuey (WAL, fsync=False as documented); huey_consumer -k thread -w {WORKERS}, "
        "default polling (0.1 s, backoff 1.15, max 10 s) and 1 s scheduler; task.map to enqueue"
    )

    def reset(self) -> None:
        huey.flush()

    def worker_commands(self) -> list[list[str]]:
        consumer = common.venv_script("huey_consumer")
        return [[consumer, "bench.systems.huey.huey", "-k", "thread", "-w", str(WORKERS), "-q"]]

    def wait_ready(self) -> None:
        """One consumer process: the warm-up task proved it polls."""

    def enqueue(self, task_id: int) -> None:
        noop(task_id)

    def enqueue_many(self, task_ids: Sequence[int]) -> None:
        noop.map(task_ids)

    def schedule(self, task_id: int, at: float) -> None:
        noop.schedule(args=(task_id,), eta=common.utc_datetime(at))


if __name__ == "__main__":
    common.main(__file__)
