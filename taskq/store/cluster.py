"""The store's operations for running several nodes on one database.

A node owns the workers whose rows carry its name. It re-queues its own
running tasks when it starts, reaps the workers of nodes that stopped
heartbeating, and, at each heartbeat, reconciles what a worker holds with
what the database says it holds. ``Tx`` inherits these; they are apart only
to keep the single-node store readable on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, select, text, update
from sqlalchemy.engine import Connection

from taskq.errors import NotFound
from taskq.messages import Event
from taskq.models import SOURCES, Action, TaskStatus, WorkerStatus
from taskq.store import notices
from taskq.store.schema import tasks, workers
from taskq.store.workers import BACK_ONLINE, TAKE_OFFLINE, WORKER_NOT_FOUND, database_utcnow

_NOTIFY = text(
    "SELECT pg_notify(:channel, payload) FROM unnest(CAST(:payloads AS text[])) AS payload"
)


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
        """Record that the worker lives; answer which tasks it holds that are no longer its own.

        ``holding`` maps the ids of the tasks the worker runs or has waiting to
        their attempts. A held task that is not running this attempt on this
        worker any more (paused, deleted, reaped) is answered, so the worker
        stops it even if the notice that should have told it was lost. A task
        the database says this worker runs but the worker does not hold (its
        outcome was lost with a dropped connection) goes back to the queue once
        it is older than ``stale_before``, so that a claim still on its way to
        the worker is not mistaken for one; how many did is answered too (this
        node's clock both stamped the claim and gives ``stale_before``). The
        heartbeat itself is stamped by the database's clock, as the reaper
        reads it. A worker reaped while its node was cut off comes back with
        the status it had before.
        """
        alive = self.connection.execute(
            update(workers)
            .where(workers.c.id == worker_id)
            .values(**BACK_ONLINE, last_heartbeat=database_utcnow(self.connection), updated_at=now)
            .returning(workers.c.id)
        ).one_or_none()
        if alive is None:
            raise NotFound(WORKER_NOT_FOUND)
        requeued = self._requeue(
            now,
            tasks.c.worker_id == worker_id,
            tasks.c.started_at < stale_before,
            tasks.c.id.not_in(list(holding)),
        )
        held = self.connection.execute(
            select(tasks.c.id, tasks.c.attempt).where(
                tasks.c.id.in_(list(holding)),
                tasks.c.status == TaskStatus.RUNNING,
                tasks.c.worker_id == worker_id,
            )
        )
        still_mine = {row.id for row in held if holding[row.id] == row.attempt}
        return [task_id for task_id in holding if task_id not in still_mine], requeued

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
            .where(tasks.c.status.in_(SOURCES[Action.REQUEUE]), *where)
            .values(
                status=TaskStatus.PENDING,
                worker_id=None,
                started_at=None,
                attempts=tasks.c.attempts - 1,
                updated_at=now,
            )
        )
        return int(requeued.rowcount)
