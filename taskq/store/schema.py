"""The tables, declared once for SQLite and PostgreSQL.

``ix_tasks_ready`` is in claim order (status, then priority high to low, then
id): a claim reads its first rows and stops, however many tasks wait, with no
sort. ``ix_tasks_due`` does the same for the scheduler's "what is due now".
They and ``ix_tasks_worker_running`` are partial: an UPDATE that changes
``status`` (a claim, an outcome) touches only the index the row leaves and the
one it enters, not all three, and each holds only the rows it is for.

A database uses a partial index only for a query whose WHERE implies the
index's own: SQLite, by finding the index's term in it as it is written.
``status = 'pending'`` does; ``status IN ('pending')`` does not, and neither
does ``status = ?`` without re-preparing the statement at every execution to
look at the value (PostgreSQL's generic plans cannot look at it at all). So
the queries these indexes serve write the status into the SQL: ``is_source``.

``workers.node`` names the process that runs a worker: boot slots are unique
per node, and a node restores, re-queues and reaps by it (see docs/cluster.md).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    cast,
    literal_column,
    text,
)
from sqlalchemy.sql.elements import ColumnElement

from taskq.models import SOURCES, Action, TaskStatus

metadata = MetaData()

# SQLite only aliases the rowid (and so autoincrements) for a plain INTEGER key.
_id_type = BigInteger().with_variant(Integer(), "sqlite")

tasks = Table(
    "tasks",
    metadata,
    Column("id", _id_type, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False),
    Column("payload", JSON(none_as_null=True), nullable=False),
    Column("priority", SmallInteger, nullable=False),
    Column("scheduled_at", DateTime, nullable=True),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("started_at", DateTime, nullable=True),
    Column("completed_at", DateTime, nullable=True),
    Column("worker_id", _id_type, nullable=True),
    Column("result", JSON(none_as_null=True), nullable=True),
    Column("error", Text, nullable=True),
    Column("attempt", Integer, nullable=False, server_default=text("0")),
    # Executions counted against ``max_attempts`` (see taskq.models.Task).
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("max_attempts", Integer, nullable=False, server_default=text("1")),
    Column("timeout", Float, nullable=True),
    Column("progress", JSON(none_as_null=True), nullable=True),
    # Never reuse the id of a deleted task: a client holding it must get 404.
    sqlite_autoincrement=True,
)

Index(
    "ix_tasks_ready",
    tasks.c.status,
    tasks.c.priority.desc(),
    tasks.c.id,
    postgresql_where=tasks.c.status == "pending",
    sqlite_where=tasks.c.status == "pending",
)
Index(
    "ix_tasks_due",
    tasks.c.status,
    tasks.c.scheduled_at,
    postgresql_where=tasks.c.status == "scheduled",
    sqlite_where=tasks.c.status == "scheduled",
)
Index("ix_tasks_status_id", tasks.c.status, tasks.c.id)
Index(
    "ix_tasks_worker_running",
    tasks.c.worker_id,
    tasks.c.status,
    postgresql_where=tasks.c.status == "running",
    sqlite_where=tasks.c.status == "running",
)

workers = Table(
    "workers",
    metadata,
    Column("id", _id_type, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    # What an offline worker returns to when it is back (an operator's inactive
    # stays inactive); NULL unless offline.
    Column("status_before_offline", String(16), nullable=True),
    # Written by the database's clock, so nodes' clocks never compare (workers.py).
    Column("last_heartbeat", DateTime, nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    # The --workers slot (1..N) of a worker started at boot; NULL for API-created ones.
    Column("boot_slot", Integer, nullable=True),
    # The process (cluster node) that runs this worker's actor; NULL only for rows
    # written before nodes existed, which the next node to start takes up.
    Column("node", String(255), nullable=True),
    UniqueConstraint("node", "boot_slot", name="uq_workers_node_boot_slot"),
    sqlite_autoincrement=True,
)


def source_status_sql(action: Action) -> str:
    """``status = 'x'``, x the one status ``action`` starts from, written out (see above)."""
    (status,) = SOURCES[action]
    return f"status = '{status}'"


def is_source(action: Action) -> ColumnElement[bool]:
    """The tasks ``action`` may start from, as ``source_status_sql`` writes them."""
    (status,) = SOURCES[action]
    return status_is(status)


def status_is(status: TaskStatus) -> ColumnElement[bool]:
    """``tasks.status = 'x'`` with the status written out (see above)."""
    return tasks.c.status == literal_column(f"'{status}'")


def listed_status(status: object) -> ColumnElement[bool]:
    """``status`` as a page of tasks filters on it: compared as an expression.

    A page reads ``ix_tasks_status_id`` in id order and stops at its limit.
    Given ``status = ?`` with 'pending' bound, SQLite would also weigh
    ``ix_tasks_ready`` (partial, for ``status = 'pending'``), and ANALYZE's
    statistics make that index look the cheaper one though it needs a sort of
    every pending task; a CAST is never the index's term, so it is not weighed.
    """
    return tasks.c.status == cast(status, String)
