"""The store's operations on worker rows: creation, restore at start, status, heartbeat.

``Tx`` inherits these; they are apart to keep the task operations readable on
their own. What ties workers to nodes in a cluster (reaping, the worker
actor's heartbeat) is in ``taskq.store.cluster``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.engine import Connection

from taskq.errors import NotFound
from taskq.models import Worker, WorkerStatus
from taskq.store.schema import workers

WORKER_NOT_FOUND = "Worker not found"


class WorkerOps:
    connection: Connection
    node: str

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


def _worker(row: Row[Any]) -> Worker:
    return Worker(
        id=row.id,
        name=row.name,
        status=WorkerStatus(row.status),
        last_heartbeat=row.last_heartbeat,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
