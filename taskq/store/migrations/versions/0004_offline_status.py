"""An offline worker remembers the status it returns to.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# SQLite's copy of the table must keep AUTOINCREMENT: ids of deleted rows are never reused.
_TABLE = {"sqlite_autoincrement": True}


def upgrade() -> None:
    with op.batch_alter_table("workers", table_kwargs=_TABLE) as batch:
        batch.add_column(sa.Column("status_before_offline", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers", table_kwargs=_TABLE) as batch:
        batch.drop_column("status_before_offline")
