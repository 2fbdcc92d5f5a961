"""The migrations and the declared schema must describe the same database."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from taskq.store import Store, engine
from taskq.store.engine import migrate
from taskq.store.schema import metadata

NOW = datetime(2030, 1, 1, 12, 0, 0)


def test_migrations_produce_exactly_the_declared_schema(store: Store) -> None:
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    assert differences == []


def test_migrating_twice_changes_nothing(store: Store) -> None:
    before = inspect(store.engine).get_table_names()
    migrate(store.engine)
    assert inspect(store.engine).get_table_names() == before
    assert set(before) == {"alembic_version", "tasks", "workers"}


def _to_revision(store: Store, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(Path(engine.__file__).with_name("migrations")))
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def test_workers_from_before_nodes_are_taken_up_by_the_first_node_to_start(store: Store) -> None:
    _to_revision(store, "0001")
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO workers (name, status, last_heartbeat, created_at, updated_at, "
                "boot_slot) VALUES ('worker-1', 'active', :t, :t, :t, 1), "
                "('api', 'active', :t, :t, :t, NULL)"
            ),
            {"t": NOW},
        )
    migrate(store.engine)
    upgraded = Store(store.engine, node="first")

    with upgraded.transaction() as tx:
        restored = tx.restore_workers(2, NOW)

    assert [(w.id, w.name) for w in restored] == [(1, "worker-1"), (2, "api"), (3, "worker-2")]
    with Store(store.engine, node="second").transaction() as tx:
        assert [w.name for w in tx.restore_workers(1, NOW)] == ["worker-1"]
        assert len(tx.list_workers()) == 4


# The one status each queue index holds rows of, once migrated.
PARTIAL = {
    "ix_tasks_ready": "pending",
    "ix_tasks_due": "scheduled",
    "ix_tasks_worker_running": "running",
    "ix_tasks_status_id": None,
}


def _index_statuses(store: Store) -> dict[str, str | None]:
    """Each index of ``tasks`` -> the status its WHERE names (None: a whole index)."""
    where_option = f"{store.engine.dialect.name}_where"
    statuses: dict[str, str | None] = {}
    for index in inspect(store.engine).get_indexes("tasks"):
        where = index.get("dialect_options", {}).get(where_option)
        named = [status for status in PARTIAL.values() if status and f"'{status}'" in str(where)]
        statuses[str(index["name"])] = named[0] if where is not None and len(named) == 1 else None
    return statuses


def test_the_queue_indexes_are_partial_and_a_downgrade_makes_them_whole(store: Store) -> None:
    assert _index_statuses(store) == PARTIAL
    _to_revision(store, "0004")
    assert _index_statuses(store) == dict.fromkeys(PARTIAL)
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO tasks (name, payload, priority, status, created_at, updated_at, "
                "attempt) VALUES ('low', '{}', 1, 'pending', :t, :t, 0), "
                "('high', '{}', 4, 'pending', :t, :t, 0), "
                "('done', '{}', 4, 'completed', :t, :t, 1)"
            ),
            {"t": NOW},
        )

    migrate(store.engine)

    assert _index_statuses(store) == PARTIAL
    with store.transaction() as tx:
        claimed = tx.claim([1, 2, 3], NOW)
    assert [task.name for task in claimed] == ["high", "low"]
