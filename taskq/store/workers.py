"""The store's operations on worker rows: creation, restore at start, status, heartbeat.

``Tx`` inherits these; they are apart to keep the task operations readable on
their own. What ties workers to nodes in a cluster (reaping, the worker
actor's heartbeat) is in ``taskq.store.cluster``.

Heartbeats are stamped, and judged, by the database's clock, never a node's:
the nodes of a cluster share one database but not necessarily one time, and a
node whose clock is off must neither be taken for dead nor take others for dead.
A worker taken ``offline`` (reaped, or a boot slot no longer wanted) keeps the
status it had in ``status_before_offline`` and gets it back when it returns.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Row,
    case,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection

from taskq.errors import NotFound
from taskq.models import Worker, WorkerStatus
from taskq.store.schema import workers

WORKER_NOT_FOUND = "Worker not found"

# SQLAlchemy's own text form of a SQLite DateTime (microseconds; SQLite's %f has
# milliseconds), so that the database's times and taskq's compare as text.
_SQLITE_UTC_FORMAT = "%Y-%m-%d %H:%M:%f000"

# Values taking a worker offline, remembering its status; only for rows not offline yet.
TAKE_OFFLINE: dict[str, Any] = {
    "status": WorkerStatus.OFFLINE,
    "status_before_offline": workers.c.status,
}
# Values bringing a worker back with the status it had; any other status stays.
BACK_ONLINE: dict[str, Any] = {
    "status": case(
        (
            workers.c.status == WorkerStatus.OFFLINE,
            func.coalesce(workers.c.status_before_offline, WorkerStatus.ACTIVE.value),
        ),
        else_=workers.c.status,
    ),
    "status_before_offline": None,
}


def database_utcnow(connection: Connection, seconds_ago: float = 0.0) -> ColumnElement[datetime]:
    """The database's time ``seconds_ago`` back, naive UTC like every stored timestamp.

    PostgreSQL's ``now()`` (the transaction's start) is given in UTC whatever
    the session's time zone; SQLite's ``'now'`` is UTC already.
    """
    if connection.dialect.name == "postgresql":
        now = literal_column("timezone('utc', now())", DateTime)
        return now - timedelta(seconds=seconds_ago) if seconds_ago else now
    return func.strftime(_SQLITE_UTC_FORMAT, "now", f"-{seconds_ago:.6f} seconds", type_=DateTime)


class WorkerOps:
    connection: Connection
    node: str

    def create_worker(self, name: str, now: datetime, boot_slot: int | None = None) -> Worker:
        row = self.connection.execute(
            insert(workers)
            .values(
                name=name,
                status=WorkerStatus.ACTIVE,
                last_heartbeat=database_utcnow(self.connection),
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
        return self._set_worker(
            worker_id, last_heartbeat=database_utcnow(self.connection), updated_at=now
        )

    def set_worker_status(self, worker_id: int, status: WorkerStatus, now: datetime) -> Worker:
        """The operator's choice: an offline worker that returns keeps it."""
        return self._set_worker(
            worker_id, status=status, status_before_offline=None, updated_at=now
        )

    def restore_workers(self, boot_workers: int, now: datetime) -> list[Worker]:
        """Reuse the rows of earlier runs so restarts do not pile up workers.

        Boot slots 1..``boot_workers`` of this node are taken up again, slots
        beyond go offline, and workers created over the API on this node are
        restored. A worker back from offline (reaped while this node was down,
        or a slot wanted again) gets the status it had, so an inactive one
        stays inactive. Every restored worker's heartbeat is now: this node is
        alive. Rows from before nodes existed become this node's.
        """
        self.connection.execute(
            update(workers).where(workers.c.node.is_(None)).values(node=self.node)
        )
        mine = workers.c.node == self.node
        taken = set(
            self.connection.execute(
                select(workers.c.boot_slot).where(mine, workers.c.boot_slot.is_not(None))
            ).scalars()
        )
        for slot in range(1, boot_workers + 1):
            if slot not in taken:
                self.create_worker(f"worker-{slot}", now, boot_slot=slot)
        self.connection.execute(
            update(workers)
            .where(
                mine,
                workers.c.boot_slot > boot_workers,
                workers.c.status != WorkerStatus.OFFLINE,
            )
            .values(**TAKE_OFFLINE, updated_at=now)
        )
        wanted = or_(workers.c.boot_slot.is_(None), workers.c.boot_slot <= boot_workers)
        rows = self.connection.execute(
            update(workers)
            .where(mine, wanted)
            .values(**BACK_ONLINE, last_heartbeat=database_utcnow(self.connection), updated_at=now)
            .returning(*workers.c)
        )
        return sorted((_worker(row) for row in rows), key=lambda worker: worker.id)

    def _set_worker(self, worker_id: int, **values: Any) -> Worker:
        row = self.connection.execute(
            update(workers).where(workers.c.id == worker_id).values(**values).returning(*workers.c)
        ).one_or_none()
        if row is None:
            raise NotFound(WORKER_NOT_FOUND)
        return _worker(row)


def _worker(row: Row[Any]) -> Worker:
    return Worker(
        id=row.id,
        name=row.name,
        status=WorkerStatus(row.status),
        last_heartbeat=row.last_heartbeat,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
