"""The one seam to the database: every read and write taskq makes is a method here.

The store is synchronous on purpose: it runs on the writer's thread only, one
transaction per batch of commands (see ``taskq.actors.writer``). Methods raise
``NotFound`` or ``Conflict`` before they write anything, so a refused command
leaves the rest of its batch untouched.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Row, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from taskq.config import default_node
from taskq.errors import Conflict, NotFound
from taskq.models import (
    SOURCES,
    Action,
    NewTask,
    Priority,
    Task,
    TaskChanges,
    TaskStatus,
    Worker,
    WorkerStatus,
    allowed,
    waiting_status,
)
from taskq.store.cluster import WORKER_NOT_FOUND, NodeOps
from taskq.store.engine import migrate, open_engine
from taskq.store.schema import tasks, workers

TASK_NOT_FOUND = "Task not found"
CANNOT_PAUSE = (
    "Task not found or cannot be paused (must be in PENDING, SCHEDULED, or RUNNING state)"
)
CANNOT_RESUME = "Task not found or cannot be resumed (must be in PAUSED state)"
CANNOT_UPDATE_RUNNING = "Task is running and cannot be updated; pause it first"


@dataclass(frozen=True, slots=True)
class Revoked:
    """A change that took a running task away from its worker."""

    task: Task
    worker_id: int | None


class Store:
    """One database as seen by one node: the transactions it opens speak for that node."""

    def __init__(self, engine: Engine, node: str | None = None) -> None:
        self.engine = engine
        self.node = default_node() if node is None else node

    @classmethod
    def open(cls, url: str, *, migrate_schema: bool = True, node: str | None = None) -> Store:
        engine = open_engine(url)
        if migrate_schema:
            migrate(engine)
        return cls(engine, node)

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self.engine.begin() as connection:
            yield Tx(connection, self.node)

    def close(self) -> None:
        self.engine.dispose()


class Tx(NodeOps):
    """The operations of one transaction; ``now`` is passed in so a batch shares one clock.

    ``node`` is the process the transaction speaks for: the workers it creates,
    restores and re-queues are that node's.
    """

    def __init__(self, connection: Connection, node: str | None = None) -> None:
        self.connection = connection
        self.node = default_node() if node is None else node

    # --- tasks ---

    def create_task(self, new: NewTask, now: datetime) -> Task:
        row = self.connection.execute(
            insert(tasks)
            .values(
                name=new.name,
                payload=dict(new.payload),
                priority=int(new.priority),
                scheduled_at=new.scheduled_at,
                status=waiting_status(new.scheduled_at, now),
                created_at=now,
                updated_at=now,
                attempt=0,
            )
            .returning(*tasks.c)
        ).one()
        return _task(row)

    def get_task(self, task_id: int) -> Task:
        row = self.connection.execute(select(tasks).where(tasks.c.id == task_id)).one_or_none()
        if row is None:
            raise NotFound(TASK_NOT_FOUND)
        return _task(row)

    def list_tasks(self, skip: int, limit: int, status: TaskStatus | None) -> list[Task]:
        query = select(tasks).order_by(tasks.c.id).offset(skip).limit(limit)
        if status is not None:
            query = query.where(tasks.c.status == status)
        return [_task(row) for row in self.connection.execute(query)]

    def update_task(self, task_id: int, changes: TaskChanges, now: datetime) -> Task:
        current = self._lock_task(task_id, TASK_NOT_FOUND)
        if not allowed(Action.UPDATE, current.status):
            raise Conflict(CANNOT_UPDATE_RUNNING)
        values: dict[str, Any] = {field: getattr(changes, field) for field in changes.fields}
        if "payload" in values:
            values["payload"] = dict(values["payload"])
        if "scheduled_at" in values and current.status in (
            TaskStatus.PENDING,
            TaskStatus.SCHEDULED,
        ):
            values["status"] = waiting_status(changes.scheduled_at, now)
        return self._set(task_id, updated_at=now, **values)

    def delete_task(self, task_id: int) -> Revoked:
        current = self._lock_task(task_id, TASK_NOT_FOUND)
        self.connection.execute(delete(tasks).where(tasks.c.id == task_id))
        return Revoked(current, _running_worker(current))

    def pause_task(self, task_id: int, now: datetime) -> Revoked:
        current = self._lock_task(task_id, CANNOT_PAUSE)
        if not allowed(Action.PAUSE, current.status):
            raise NotFound(CANNOT_PAUSE)
        paused = self._set(task_id, status=TaskStatus.PAUSED, worker_id=None, updated_at=now)
        return Revoked(paused, _running_worker(current))

    def resume_task(self, task_id: int, now: datetime) -> Task:
        current = self._lock_task(task_id, CANNOT_RESUME)
        if not allowed(Action.RESUME, current.status):
            raise NotFound(CANNOT_RESUME)
        return self._set(
            task_id,
            status=waiting_status(current.scheduled_at, now),
            started_at=None,
            completed_at=None,
            updated_at=now,
        )

    def claim(self, worker_ids: Sequence[int], now: datetime) -> list[Task]:
        """Hand the most urgent pending tasks to ``worker_ids``, one each, in order.

        The attempt counter goes up with every claim; it is the fencing token that
        ``finish`` checks, so the result of an execution that was taken away
        (paused, deleted, re-queued) can never land.
        """
        ready = self.connection.execute(
            select(tasks.c.id)
            .where(tasks.c.status.in_(SOURCES[Action.CLAIM]))
            .order_by(tasks.c.priority.desc(), tasks.c.id)
            .limit(len(worker_ids))
            .with_for_update(skip_locked=True)
        ).scalars()
        return [
            self._set(
                task_id,
                status=TaskStatus.RUNNING,
                attempt=tasks.c.attempt + 1,
                worker_id=worker_id,
                started_at=now,
                completed_at=None,
                updated_at=now,
            )
            for task_id, worker_id in zip(list(ready), worker_ids, strict=False)
        ]

    def finish(
        self,
        task_id: int,
        attempt: int,
        *,
        succeeded: bool,
        result: Any,
        error: str | None,
        now: datetime,
    ) -> bool:
        """Record a handler's outcome; False when the execution was fenced off."""
        written = self.connection.execute(
            update(tasks)
            .where(
                tasks.c.id == task_id,
                tasks.c.status.in_(SOURCES[Action.FINISH]),
                tasks.c.attempt == attempt,
            )
            .values(
                status=TaskStatus.COMPLETED if succeeded else TaskStatus.FAILED,
                result=result,
                error=error,
                completed_at=now,
                updated_at=now,
            )
        )
        return written.rowcount == 1

    def promote_due(self, now: datetime) -> tuple[int, datetime | None]:
        """Make due scheduled tasks pending; return how many, and when the next is due."""
        promoted = self.connection.execute(
            update(tasks)
            .where(tasks.c.status.in_(SOURCES[Action.PROMOTE]), tasks.c.scheduled_at <= now)
            .values(status=TaskStatus.PENDING, updated_at=now)
        ).rowcount
        next_due = self.connection.execute(
            select(func.min(tasks.c.scheduled_at)).where(tasks.c.status == TaskStatus.SCHEDULED)
        ).scalar()
        return promoted, next_due

    def requeue_running(self, worker_id: int | None, now: datetime) -> int:
        """Put running tasks (of one worker, or all) back to pending; they run again."""
        if worker_id is None:
            return self._requeue(now)
        return self._requeue(now, tasks.c.worker_id == worker_id)

    def _lock_task(self, task_id: int, missing: str) -> Task:
        row = self.connection.execute(
            select(tasks).where(tasks.c.id == task_id).with_for_update()
        ).one_or_none()
        if row is None:
            raise NotFound(missing)
        return _task(row)

    def _set(self, task_id: int, **values: Any) -> Task:
        row = self.connection.execute(
            update(tasks).where(tasks.c.id == task_id).values(**values).returning(*tasks.c)
        ).one()
        return _task(row)

    # --- workers ---

    def create_worker(self, name: str, now: datetime, boot_slot: int | None = None) -> Worker:
        row = self.connection.execute(
            insert(workers)
            .values(
                name=name,
                status=WorkerStatus.ACTIVE,
                last_heartbeat=now,
                created_at=now,
                updated_at=now,
                boot_slot=boot_slot,
                node=self.node,
            )
            .returning(*workers.c)
        ).one()
        return _worker(row)

    def get_worker(self, worker_id: int) -> Worker:
        row = self.connection.execute(
            select(workers).where(workers.c.id == worker_id)
        ).one_or_none()
        if row is None:
            raise NotFound(WORKER_NOT_FOUND)
        return _worker(row)

    def list_workers(self) -> list[Worker]:
        return [_worker(row) for row in self.connection.execute(select(workers).order_by("id"))]

    def heartbeat(self, worker_id: int, now: datetime) -> Worker:
        return self._set_worker(worker_id, last_heartbeat=now, updated_at=now)

    def set_worker_status(self, worker_id: int, status: WorkerStatus, now: datetime) -> Worker:
        return self._set_worker(worker_id, status=status, updated_at=now)

    def restore_workers(self, boot_workers: int, now: datetime) -> list[Worker]:
        """Reuse the rows of earlier runs so restarts do not pile up workers.

        Boot slots 1..``boot_workers`` of this node are taken up again (an
        offline one comes back active, an inactive one stays inactive), slots
        beyond go offline, and workers created over the API on this node are
        restored as they were. Rows from before nodes existed become this node's.
        """
        self.connection.execute(
            update(workers).where(workers.c.node.is_(None)).values(node=self.node)
        )
        mine = workers.c.node == self.node
        by_slot = {
            row.boot_slot: row
            for row in self.connection.execute(
                select(workers).where(mine, workers.c.boot_slot.is_not(None))
            )
        }
        for slot in range(1, boot_workers + 1):
            row = by_slot.get(slot)
            if row is None:
                self.create_worker(f"worker-{slot}", now, boot_slot=slot)
            elif row.status == WorkerStatus.OFFLINE:
                self._set_worker(row.id, status=WorkerStatus.ACTIVE, updated_at=now)
        self.connection.execute(
            update(workers)
            .where(mine, workers.c.boot_slot > boot_workers)
            .values(status=WorkerStatus.OFFLINE, updated_at=now)
        )
        rows = self.connection.execute(
            select(workers)
            .where(mine, workers.c.status != WorkerStatus.OFFLINE)
            .order_by(workers.c.id)
        )
        return [_worker(row) for row in rows]

    def _set_worker(self, worker_id: int, **values: Any) -> Worker:
        row = self.connection.execute(
            update(workers).where(workers.c.id == worker_id).values(**values).returning(*workers.c)
        ).one_or_none()
        if row is None:
            raise NotFound(WORKER_NOT_FOUND)
        return _worker(row)


def _running_worker(task: Task) -> int | None:
    return task.worker_id if task.status == TaskStatus.RUNNING else None


def _task(row: Row[Any]) -> Task:
    return Task(
        id=row.id,
        name=row.name,
        payload=row.payload,
        priority=Priority(row.priority),
        scheduled_at=row.scheduled_at,
        status=TaskStatus(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
        started_at=row.started_at,
        completed_at=row.completed_at,
        worker_id=row.worker_id,
        result=row.result,
        error=row.error,
        attempt=row.attempt,
    )


def _worker(row: Row[Any]) -> Worker:
    return Worker(
        id=row.id,
        name=row.name,
        status=WorkerStatus(row.status),
        last_heartbeat=row.last_heartbeat,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
