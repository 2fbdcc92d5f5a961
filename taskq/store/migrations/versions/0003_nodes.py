"""Workers belong to a node: boot slots become unique per node.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# 0001 declared ``boot_slot`` unique inline: PostgreSQL named that constraint
# itself; SQLite left it unnamed, so batch mode names it by this convention to drop it.
_POSTGRESQL_BOOT_SLOT_KEY = "workers_boot_slot_key"
_NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}
# SQLite's copy of the table must keep AUTOINCREMENT: ids of deleted rows are never reused.
_TABLE = {"sqlite_autoincrement": True}


def upgrade() -> None:
    with op.batch_alter_table("workers", naming_convention=_NAMING, table_kwargs=_TABLE) as batch:
        batch.add_column(sa.Column("node", sa.String(255), nullable=True))
        batch.drop_constraint(_old_boot_slot_key(), type_="unique")
        batch.create_unique_constraint("uq_workers_node_boot_slot", ["node", "boot_slot"])


def downgrade() -> None:
    with op.batch_alter_table("workers", naming_convention=_NAMING, table_kwargs=_TABLE) as batch:
        batch.drop_constraint("uq_workers_node_boot_slot", type_="unique")
        batch.drop_column("node")
        batch.create_unique_constraint(_old_boot_slot_key(), ["boot_slot"])


def _old_boot_slot_key() -> str:
    if op.get_bind().dialect.name == "postgresql":
        return _POSTGRESQL_BOOT_SLOT_KEY
    return "uq_workers_boot_slot"
