"""On PostgreSQL the ready, due and running-by-worker indexes hold only their own rows.

Revision ID: 0005
Revises: 0004
"""

from taskq.store.migrations.partial_indexes import make_partial, make_whole

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    make_partial("postgresql")


def downgrade() -> None:
    make_whole("postgresql")
