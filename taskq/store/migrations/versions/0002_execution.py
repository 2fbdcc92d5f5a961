"""Retries, timeouts and progress: the columns of the execution model.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, which both databases do in place: a batch (copy) on SQLite
    # would lose the table's AUTOINCREMENT, and with it "ids are never reused".
    op.add_column(
        "tasks", sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0"))
    )
    op.add_column(
        "tasks",
        sa.Column("max_attempts", sa.Integer(), nullable=False, server_default=sa.text("1")),
    )
    op.add_column("tasks", sa.Column("timeout", sa.Float(), nullable=True))
    op.add_column("tasks", sa.Column("progress", sa.JSON(none_as_null=True), nullable=True))
    # A task running across the upgrade holds its claim's attempt, which a requeue gives back.
    op.execute("UPDATE tasks SET attempts = 1 WHERE status = 'running'")


def downgrade() -> None:
    with op.batch_alter_table("tasks", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("progress")
        batch.drop_column("timeout")
        batch.drop_column("max_attempts")
        batch.drop_column("attempts")
