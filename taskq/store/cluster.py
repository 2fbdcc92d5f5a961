"""The store's operations for running several nodes on one database.

A node owns the workers whose rows carry its name. It re-queues its own
running tasks when it starts, reaps the workers of nodes that stopped
heartbeating, and, at each heartbeat, reconciles what a worker holds with
what the database says it holds. ``Tx`` inherits these; they are apart only
to keep the single-node store readable on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, select, text, tuple_, update
from sqlalchemy.engine import Connection

from taskq.errors import NotFound
from taskq.messages import Event
from taskq.models import Action, TaskStatus, WorkerStatus
from taskq.store import notices
from taskq.store.schema import is_source, status_is, tasks, workers
from taskq.store.workers import BACK_ONLINE, TAKE_OFFLINE, WORKER_NOT_FOUND, database_utcnow

_NOTIFY = text(
    "SELECT pg_notify(:channel, payload) FROM unnest(CAST(:payloads AS text[])) AS payload"
)


@dataclass(frozen=True, slots=True)
class Beat:
    """One worker's heartbeat, as ``NodeOps.worker_heartbeats`` records it."""

    worker_id: int
    holding: Mapping[int, int]
    stale_before: datetime


class NodeOps:
    connection: Connection
    node: str

    def requeue_node(self, now: datetime) -> int:
        """Put back in the queue the running tasks of this node's workers (at start and stop)."""
        mine = select(workers.c.id).where(workers.c.node == self.node)
        return self._requeue(now, tasks.c.worker_id.in_(mine.scalar_subquery()))

    def reap_dead(self, dead_after_seconds: float, now: datetime) -> tuple[list[int], int]:
        """Reap other nodes' workers silent for ``dead_after_seconds``; re-queue their tasks.

        Silence is measured on the database's clock, as heartbeats are stamped,
        so the reaping node's own clock plays no part. Safe with several
        reapers at once: a worker row goes offline in exactly one transaction
        (the others find it offline already once its lock is free), and only
        that transaction re-queues its tasks. This node's own workers are never
        reaped: this node is alive to run the reaper.
        """
        dead = list(
            self.connection.execute(
                update(workers)
                .where(
                    workers.c.node.is_distinct_from(self.node),
                    workers.c.status != WorkerStatus.OFFLINE,
                    workers.c.last_heartbeat < database_utcnow(self.connection, dead_after_seconds),
                )
                .values(**TAKE_OFFLINE, updated_at=now)
                .returning(workers.c.id)
            ).scalars()
        )
        requeued = self._requeue(now, tasks.c.worker_id.in_(dead)) if dead else 0
        return dead, requeued

    def worker_heartbeat(
        self,
        worker_id: int,
        holding: Mapping[int, int],
        stale_before: datetime,
        now: datetime,
    ) -> tuple[list[int], int]:
        """One worker's heartbeat (``worker_heartbeats``); NotFound for an unknown worker."""
        (lost,), requeued = self.worker_heartbeats([Beat(worker_id, holding, stale_before)], now)
        if lost is None:
            raise NotFound(WORKER_NOT_FOUND)
        return lost, requeued

    def worker_heartbeats(
        self, beats: Sequence[Beat], now: datetime
    ) -> tuple[list[list[int] | None], int]:
        """Record that the workers live; answer, per beat, which tasks it holds that are
        no longer its worker's (None: no such worker), and how many tasks went back.

        ``holding`` maps the ids of the tasks a worker runs or has waiting to
        their attempts. A held task that is not running this attempt on this
        worker any more (paused, deleted, reaped) is answered, so the worker
        stops it even if the notice that should have told it was lost. A task
        the database says a worker runs but the worker does not hold (its
        outcome was lost with a dropped connection) goes back to the queue once
        it is older than ``stale_before``, so that a claim still on its way to
        the worker is not mistaken for one; beats sharing statements take the
        earliest ``stale_before`` of them, which never re-queues a task earlier
        than its own beat would (this node's clock both stamped the claim and
        gives ``stale_before``). The heartbeat itself is stamped by the
        database's clock, as the reaper reads it. A worker reaped while its
        node was cut off comes back with the status it had before.

        Three statements however many beats: a batch of every worker's beat
        costs about what one beat did.
        """
        alive = set(
            self.connection.execute(
                update(workers)
                .where(workers.c.id.in_({beat.worker_id for beat in beats}))
                .values(
                    **BACK_ONLINE, last_heartbeat=database_utcnow(self.connection), updated_at=now
                )
                .returning(workers.c.id)
            ).scalars()
        )
        beating = [beat for beat in beats if beat.worker_id in alive]
        if not beating:
            return [None] * len(beats), 0
        held = [(beat.worker_id, task_id) for beat in beating for task_id in beat.holding]
        requeued = self._requeue(
            now,
            tasks.c.worker_id.in_(alive),
            tasks.c.started_at < min(beat.stale_before for beat in beating),
            tuple_(tasks.c.worker_id, tasks.c.id).not_in(held),
        )
        running = self._running_attempts([task_id for _, task_id in held])
        return [
            _lost(beat, running) if beat.worker_id in alive else None for beat in beats
        ], requeued

    def _running_attempts(self, task_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
        """Which of ``task_ids`` run: task id -> (worker id, attempt); nothing held, no query."""
        if not task_ids:
            return {}
        rows = self.connection.execute(
            select(tasks.c.id, tasks.c.worker_id, tasks.c.attempt).where(
                tasks.c.id.in_(task_ids), status_is(TaskStatus.RUNNING)
            )
        )
        return {task_id: (worker_id, attempt) for task_id, worker_id, attempt in rows}

    def announce(self, events: Sequence[Event]) -> None:
        """Tell the other nodes, on commit, what this transaction changed (PostgreSQL only)."""
        if not events or self.connection.dialect.name != "postgresql":
            return
        self.connection.execute(
            _NOTIFY, {"channel": notices.CHANNEL, "payloads": notices.encode(self.node, events)}
        )

    def _requeue(self, now: datetime, *where: ColumnElement[bool]) -> int:
        """The interrupted executions did not fail, so each gives back its attempt."""
        requeued = self.connection.execute(
            update(tasks)
            .where(is_source(Action.REQUEUE), *where)
            .values(
                status=TaskStatus.PENDING,
                worker_id=None,
                started_at=None,
                attempts=tasks.c.attempts - 1,
                updated_at=now,
            )
        )
        return int(requeued.rowcount)


def _lost(beat: Beat, running: Mapping[int, tuple[int, int]]) -> list[int]:
    """The tasks ``beat`` holds that do not run this attempt on its worker any more."""
    return [
        task_id
        for task_id, attempt in beat.holding.items()
        if running.get(task_id) != (beat.worker_id, attempt)
    ]
