"""RQ on Redis (a database of its own, flushed before and after), several workers.

RQ's own notes on performance measure ``SimpleWorker`` about six times faster than the
default forking ``Worker`` on short jobs, and advise it for jobs of a few milliseconds
whose code is trusted: a no-op is that case. Four worker processes (one ``rq worker``
each, as its docs start them) on two cores, each with ``--with-scheduler`` (one takes the
scheduler lock) so that ``enqueue_at`` runs. See https://python-rq.org/docs/workers/
and https://github.com/rq/rq/blob/master/docs/benchmark.md.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis import Redis
from rq import Queue, Worker

from bench import common

WORKERS = 4
REDIS_DB = 14
QUEUE = "bench"
TASK = "bench.systems.rq.noop"


def noop(task_id: int) -> None:
    common.record_start(task_id)


class Peer:
    config = (
        f"RQ on Redis (no persistence); {WORKERS} x `rq worker --worker-class "
        "rq.worker.SimpleWorker --with-scheduler`; Queue.enqueue_many (one pipeline) to "
        "enqueue, enqueue_at to schedule"
    )

    def __init__(self) -> None:
        self.url = f"redis://{common.REDIS_HOST}:{common.REDIS_PORT}/{REDIS_DB}"
        self.redis = Redis.from_url(self.url)
        self.queue = Queue(QUEUE, connection=self.redis)

    def reset(self) -> None:
        self.redis.flushdb()

    def worker_commands(self) -> list[list[str]]:
        command = [
            common.venv_script("rq"),
            "worker",
            "--url",
            self.url,
            "--worker-class",
            "rq.worker.SimpleWorker",
            "--with-scheduler",
            "--logging_level",
            "WARNING",
            QUEUE,
        ]
        return [command] * WORKERS

    def wait_ready(self) -> None:
        common.wait_until(
            lambda: Worker.count(connection=self.redis) == WORKERS,
            common.READY_WITHIN_SECONDS,
            f"{WORKERS} RQ workers registered",
        )

    def enqueue(self, task_id: int) -> None:
        self.queue.enqueue(TASK, task_id)

    def enqueue_many(self, task_ids: Sequence[int]) -> None:
        self.queue.enqueue_many([Queue.prepare_data(TASK, (task_id,)) for task_id in task_ids])

    def schedule(self, task_id: int, at: float) -> None:
        self.queue.enqueue_at(common.utc_datetime(at), TASK, task_id)


if __name__ == "__main__":
    common.main(__file__)
