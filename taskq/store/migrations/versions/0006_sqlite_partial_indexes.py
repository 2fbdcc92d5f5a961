"""On SQLite too the ready, due and running-by-worker indexes hold only their own rows.

A claim and an outcome each change a task's ``status``, and with full indexes
each change moved an entry within all three of them; partial, a row is in the
one index its status is for (see ``taskq.store.schema``).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# name, columns, the one status its rows have
_PARTIAL: tuple[tuple[str, list[str | sa.TextClause], str], ...] = (
    ("ix_tasks_ready", ["status", sa.text("priority DESC"), "id"], "pending"),
    ("ix_tasks_due", ["status", "scheduled_at"], "scheduled"),
    ("ix_tasks_worker_running", ["worker_id", "status"], "running"),
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for name, columns, status in _PARTIAL:
        op.drop_index(name, table_name="tasks")
        op.create_index(name, "tasks", columns, sqlite_where=sa.text(f"status = '{status}'"))


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for name, columns, _status in _PARTIAL:
        op.drop_index(name, table_name="tasks")
        op.create_index(name, "tasks", columns)
