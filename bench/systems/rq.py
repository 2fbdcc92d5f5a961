"""RQ on Redis (a database of its own, flushed before and after), several workers.

RQ's own notes on performance measure ``SimpleWorker`` about six times faster than the
default forking ``Worker`` on short jobs, and advise it for jobs of a few milliseconds
whose code is trusted: a no-op is that case. Four worker processes (one ``rq worker``
each, as its docs start them) on two cores: a job costs a worker about twenty Redis round
trips, so workers waiting on Redis overlap (measured on two cores: six or eight no
better than four). One of them runs the scheduler (``--with-scheduler``; only one
worker ever holds its lock) so that ``enqueue_at`` runs. Results are not kept
(``result_ttl=0``), as Celery runs without a result backend. See
https://python-rq.org/docs/workers/ and https://github.com/rq/rq/blob/master/docs/benchmark.md.
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
# Results are not kept (RQ's docs: result_ttl=0 discards them at once), as Celery runs
# without a result backend: the no-op returns nothing anyone reads.
RESULT_TTL = 0


def noop(task_id: int) -> None:
    common.record_start(task_id)


class Peer:
    config = (
        f"RQ on Redis (no persistence); {WORKERS} x `rq worker --worker-class "
        "rq.worker.SimpleWorker`, one of them --with-scheduler; result_ttl=0; "
        "Queue.enqueue_many (one pipeline) to enqueue, enqueue_at to schedule"
    )

    def __init__(self) -> None:
        self.url = f"redis://{common.REDIS_HOST}:{common.REDIS_PORT}/{REDIS_DB}"
        self.redis = Redis.from_url(self.url)
        self.queue = Queue(QUEUE, connection=self.redis)

    def reset(self) -> None:
        self.redis.flushdb()

    def worker_commands(self) -> list[list[str]]:
        worker = [
            common.venv_script("rq"),
            "worker",
            "--url",
            self.url,
            "--worker-class",
            "rq.worker.SimpleWorker",
            "--logging_level",
            "WARNING",
            QUEUE,
        ]
        return [[*worker, "--with-scheduler"]] + [worker] * (WORKERS - 1)

    def wait_ready(self) -> None:
        common.wait_until(
            lambda: Worker.count(connection=self.redis) == WORKERS,
            common.READY_WITHIN_SECONDS,
            f"{WORKERS} RQ workers registered",
        )

    def enqueue(self, task_id: int) -> None:
        self.queue.enqueue(TASK, task_id, result_ttl=RESULT_TTL)

    def enqueue_many(self, task_ids: Sequence[int]) -> None:
        self.queue.enqueue_many(
            [Queue.prepare_data(TASK, (task_id,), result_ttl=RESULT_TTL) for task_id in task_ids]
        )

    def schedule(self, task_id: int, at: float) -> None:
        self.queue.enqueue_at(common.utc_datetime(at), TASK, task_id, result_ttl=RESULT_TTL)


if __name__ == "__main__":
    common.main(__file__)
