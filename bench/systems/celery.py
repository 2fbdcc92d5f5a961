"""Celery on Redis (a database of its own, flushed before and after), prefork pool.

One ``celery worker`` with the prefork pool, one child per core (``-c 2``, the default
on two cores), and a large prefetch multiplier, as the optimizing guide advises for
many short tasks where throughput and round-trip latency matter; no result backend,
and gossip, mingle and heartbeat off (they only matter across many nodes). Bulk
enqueue is a ``group``, sent over one producer connection; scheduling is ``eta``.

Measured on two cores while tuning: the threads pool (-c 4 or 8), two solo workers and
prefork -c 2 drained a queue filled beforehand at the same rate, within the noise, so the
documented default pool stays. The end-to-end figure is bound by the enqueue instead: a
Celery message costs the client about 1 ms of CPU (group, a loop of ``apply_async`` on one
producer and a loop of ``delay`` measured alike), and the client shares the two cores with
the workers. ``chunks`` would send fewer messages, but each chunk runs as one task, so it
would no longer be 10,000 tasks.
See https://docs.celeryq.dev/en/stable/userguide/optimizing.html and
https://docs.celeryq.dev/en/stable/userguide/workers.html.
"""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery, group

from bench import common

CONCURRENCY = 2
PREFETCH_MULTIPLIER = 64
REDIS_DB = 15

app = Celery("bench", broker=f"redis://{common.REDIS_HOST}:{common.REDIS_PORT}/{REDIS_DB}")
app.conf.update(
    worker_prefetch_multiplier=PREFETCH_MULTIPLIER,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
)


@app.task(name="noop")
def noop(task_id: int) -> None:
    common.record_start(task_id)


class Peer:
    config = (
        f"Celery on Redis (no persistence, no result backend); one worker, prefork pool "
        f"-c {CONCURRENCY}, --prefetch-multiplier {PREFETCH_MULTIPLIER}, "
        "--without-gossip --without-mingle --without-heartbeat; group() to enqueue, eta to "
        "schedule"
    )

    def reset(self) -> None:
        with app.connection_for_write() as connection:
            connection.default_channel.client.flushdb()

    def worker_commands(self) -> list[list[str]]:
        return [
            [
                common.venv_script("celery"),
                "-A",
                "bench.systems.celery",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                str(CONCURRENCY),
                "--prefetch-multiplier",
                str(PREFETCH_MULTIPLIER),
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel",
                "WARNING",
            ]
        ]

    def wait_ready(self) -> None:
        """One worker node: the warm-up task proved it consumes."""

    def enqueue(self, task_id: int) -> None:
        noop.delay(task_id)

    def enqueue_many(self, task_ids: Sequence[int]) -> None:
        group(noop.s(task_id) for task_id in task_ids).apply_async()

    def schedule(self, task_id: int, at: float) -> None:
        noop.apply_async((task_id,), eta=common.utc_datetime(at))


if __name__ == "__main__":
    common.main(__file__)
