"""On SQLite too the ready, due and running-by-worker indexes hold only their own rows.

A claim and an outcome each change a task's ``status``, and with full indexes
each change moved an entry within all three of them; partial, a row is in the
one index its status is for (see ``taskq.store.schema``).

Revision ID: 0006
Revises: 0005
"""

from taskq.store.migrations.partial_indexes import make_partial, make_whole

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    make_partial("sqlite")


def downgrade() -> None:
    make_whole("sqlite")
