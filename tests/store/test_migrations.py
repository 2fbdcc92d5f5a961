"""The migrations and the declared schema must describe the same database."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from taskq.store import Store
from taskq.store.engine import migrate
from taskq.store.schema import metadata


def test_migrations_produce_exactly_the_declared_schema(store: Store) -> None:
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    assert differences == []


def test_migrating_twice_changes_nothing(store: Store) -> None:
    before = inspect(store.engine).get_table_names()
    migrate(store.engine)
    assert inspect(store.engine).get_table_names() == before
    assert set(before) == {"alembic_version", "tasks", "workers"}
