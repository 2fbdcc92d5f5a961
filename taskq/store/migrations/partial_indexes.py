"""The ready, due and running-by-worker indexes, partial: each holds only the rows of the
one status it serves, so a task's status change moves an entry in one index instead of all
three. PostgreSQL got them in revision 0005, SQLite in 0006; both revisions use this one
definition, each for its own dialect.
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

# name, columns, the one status its rows have
_PARTIAL: tuple[tuple[str, list[str | sa.TextClause], str], ...] = (
    ("ix_tasks_ready", ["status", sa.text("priority DESC"), "id"], "pending"),
    ("ix_tasks_due", ["status", "scheduled_at"], "scheduled"),
    ("ix_tasks_worker_running", ["worker_id", "status"], "running"),
)


def make_partial(dialect: str) -> None:
    """On ``dialect`` only: each of the three indexes rebuilt to hold its status's rows."""
    if op.get_bind().dialect.name != dialect:
        return
    for name, columns, status in _PARTIAL:
        # The dialect's own keyword (``postgresql_where``, ``sqlite_where``).
        where: dict[str, Any] = {f"{dialect}_where": sa.text(f"status = '{status}'")}
        op.drop_index(name, table_name="tasks")
        op.create_index(name, "tasks", columns, **where)


def make_whole(dialect: str) -> None:
    """On ``dialect`` only: the three indexes back to holding every row."""
    if op.get_bind().dialect.name != dialect:
        return
    for name, columns, _status in _PARTIAL:
        op.drop_index(name, table_name="tasks")
        op.create_index(name, "tasks", columns)
