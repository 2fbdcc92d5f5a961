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

from sqlalchemy import (
    Engine,
    Row,
    bindparam,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.engine import Connection

from taskq.config import WAL_AUTOCHECKPOINT_FRAMES, default_node
from taskq.errors import Conflict, NotFound
from taskq.models import (
    Action,
    NewTask,
    Priority,
    Task,
    TaskChanges,
    TaskCounts,
    TaskStatus,
    allowed,
    waiting_status,
)
from taskq.store import hot
from taskq.store.checkpoints import Checkpointer
from taskq.store.cluster import NodeOps
from taskq.store.engine import migrate, open_engine, sqlite_wal_file
from taskq.store.executions import ExecutionOps
from taskq.store.schema import is_source, listed_status, tasks
from taskq.store.workers import WorkerOps

TASK_NOT_FOUND = "Task not found"
CANNOT_PAUSE = (
    "Task not found or cannot be paused (must be in PENDING, SCHEDULED, or RUNNING state)"
)
CANNOT_RESUME = "Task not found or cannot be resumed (must be in PAUSED state)"
CANNOT_UPDATE_RUNNING = "Task is running and cannot be updated; pause it first"
CANNOT_RETRY = "Task cannot be retried (must be in FAILED state)"


# Built once: SQLAlchemy then finds them compiled in its cache instead of building
# and compiling a statement per request.
_GET_TASK = select(tasks).where(tasks.c.id == bindparam("b_id"))
_LIST_TASKS = (
    select(tasks).order_by(tasks.c.id).offset(bindparam("b_skip")).limit(bindparam("b_limit"))
)
_LIST_TASKS_BY_STATUS = _LIST_TASKS.where(listed_status(bindparam("b_status")))


@dataclass(frozen=True, slots=True)
class Revoked:
    """A change that took a running task away from its worker."""

    task: Task
    worker_id: int | None


class Store:
    """One database as seen by one node: the transactions it opens speak for that node."""

    def __init__(self, engine: Engine, node: str | None = None) -> None:
        self.engine = engine
        self._writer_connection: Connection | None = None
        self._reader_connection: Connection | None = None
        self._read_engine: Engine | None = None
        self.checkpointer: Checkpointer | None = None
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

    @contextmanager
    def writer_transaction(self) -> Iterator[Tx]:
        """A transaction on the writer's own connection, kept open between batches.

        Only the writer's thread may use it; it saves a pool check-out and
        check-in per batch. After any failure it goes back to the pool, which
        rolls back whatever the failure left open, and the next batch takes a
        fresh one.
        """
        if self._writer_connection is None:
            self._writer_connection = self._connect_writer()
        try:
            with self._writer_connection.begin():
                yield Tx(self._writer_connection, self.node)
        except BaseException:
            self._writer_connection.close()
            self._writer_connection = None
            raise
        if self.checkpointer is not None:
            self.checkpointer.committed()

    def _connect_writer(self) -> Connection:
        """The writer's connection; on a SQLite file, with the checkpoints moved off it.

        The checkpointer (``taskq.store.checkpoints``) copies the WAL back on its
        own thread; the writer's COMMIT checkpoints only past a bound that the
        WAL reaches under writes that never pause.
        """
        connection = self.engine.connect()
        database = sqlite_wal_file(connection)
        if database is None:
            return connection
        if self.checkpointer is None:
            self.checkpointer = Checkpointer.start(database)
        if self.checkpointer is not None:
            connection.connection.cursor().execute(
                f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_FRAMES}"
            )
        return connection

    @contextmanager
    def read_transaction(self) -> Iterator[Tx]:
        """A read-only transaction on the reader's own connection, kept open between reads.

        Only the reader's thread may use it. It is not the writer's connection,
        so reads never wait for a batch to commit and a slow read (a count over
        a million rows) never holds up writes. On SQLite it is a connection of
        its own that never takes the write lock; on PostgreSQL one more from
        the pool. After a failure it is dropped, like the writer's.
        """
        if self._reader_connection is None:
            if self._read_engine is None:
                self._read_engine = (
                    open_engine(self.engine.url.render_as_string(False), read_only=True)
                    if self.engine.dialect.name == "sqlite"
                    else self.engine
                )
            self._reader_connection = self._read_engine.connect()
        try:
            with self._reader_connection.begin():
                yield Tx(self._reader_connection, self.node)
        except BaseException:
            self._reader_connection.close()
            self._reader_connection = None
            raise

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.close()
            self.checkpointer = None
        if self._writer_connection is not None:
            self._writer_connection.close()
            self._writer_connection = None
        if self._reader_connection is not None:
            self._reader_connection.close()
            self._reader_connection = None
        if self._read_engine is not None and self._read_engine is not self.engine:
            self._read_engine.dispose()
        self.engine.dispose()


class Tx(ExecutionOps, NodeOps, WorkerOps):
    """The operations of one transaction; ``now`` is passed in so a batch shares one clock.

    ``node`` is the process the transaction speaks for: the workers it creates,
    restores and re-queues are that node's.
    """

    def __init__(self, connection: Connection, node: str | None = None) -> None:
        self.connection = connection
        self.node = default_node() if node is None else node

    # --- tasks ---

    def create_task(self, new: NewTask, now: datetime) -> Task:
        (task,) = self.create_many([new], now)
        return task

    def create_many(self, news: Sequence[NewTask], now: datetime) -> list[Task]:
        """Insert ``news`` in as few statements as can hold them; same order back."""
        return hot.create_many(self.connection, news, now) if news else []

    def get_task(self, task_id: int) -> Task:
        row = self.connection.execute(_GET_TASK, {"b_id": task_id}).one_or_none()
        if row is None:
            raise NotFound(TASK_NOT_FOUND)
        return _task(row)

    def list_tasks(
        self,
        skip: int,
        limit: int,
        status: TaskStatus | None,
        *,
        name: str | None = None,
        priority: Priority | None = None,
        newest_first: bool = False,
    ) -> list[Task]:
        page = {"b_skip": skip, "b_limit": limit}
        if name is None and priority is None and not newest_first:
            if status is None:
                rows = self.connection.execute(_LIST_TASKS, page)
            else:
                rows = self.connection.execute(
                    _LIST_TASKS_BY_STATUS, {**page, "b_status": str(status)}
                )
            return [_task(row) for row in rows]
        order = tasks.c.id.desc() if newest_first else tasks.c.id
        query = select(tasks).order_by(order).offset(skip).limit(limit)
        if status is not None:
            query = query.where(listed_status(status))
        if name is not None:
            query = query.where(tasks.c.name == name)
        if priority is not None:
            query = query.where(tasks.c.priority == priority)
        return [_task(row) for row in self.connection.execute(query)]

    def count_tasks(self) -> TaskCounts:
        """How many tasks each (status, priority) pair holds; absent pairs hold none."""
        query = select(tasks.c.status, tasks.c.priority, func.count()).group_by(
            tasks.c.status, tasks.c.priority
        )
        return {
            (TaskStatus(status), Priority(priority)): count
            for status, priority, count in self.connection.execute(query)
        }

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
        worker_id = _running_worker(current)
        given_back = 0 if worker_id is None else 1
        paused = self._set(
            task_id,
            status=TaskStatus.PAUSED,
            worker_id=None,
            attempts=tasks.c.attempts - given_back,
            updated_at=now,
        )
        return Revoked(paused, worker_id)

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

    def retry_task(self, task_id: int, now: datetime) -> Task:
        """Put a failed task back in the queue with a fresh attempt budget.

        ``attempts`` starts again at 0; the fencing ``attempt`` goes on counting,
        so nothing an earlier execution might still send can land.
        """
        current = self._lock_task(task_id, TASK_NOT_FOUND)
        if not allowed(Action.RETRY, current.status):
            raise Conflict(CANNOT_RETRY)
        return self._set(
            task_id,
            status=waiting_status(current.scheduled_at, now),
            attempts=0,
            result=None,
            progress=None,
            started_at=None,
            completed_at=None,
            updated_at=now,
        )

    def promote_due(self, due_by: datetime, now: datetime) -> tuple[int, datetime | None]:
        """Make the scheduled tasks due by ``due_by`` pending; return how many, and when
        the next is due."""
        promoted = self.connection.execute(
            update(tasks)
            .where(is_source(Action.PROMOTE), tasks.c.scheduled_at <= due_by)
            .values(status=TaskStatus.PENDING, updated_at=now)
        ).rowcount
        next_due = self.connection.execute(
            select(func.min(tasks.c.scheduled_at)).where(is_source(Action.PROMOTE))
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
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        timeout=row.timeout,
        progress=row.progress,
    )
