"""The SQLite connection set-up: the writer's transactions take the write lock up front."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from taskq.store.engine import open_engine


def test_a_write_transaction_takes_the_lock_or_fails_with_sqlalchemys_error(
    tmp_path: Path,
) -> None:
    database = tmp_path / "taskq.db"
    engine = open_engine(f"sqlite:///{database}")
    holder = sqlite3.connect(database, isolation_level=None)
    try:
        with engine.connect() as connection:
            connection.connection.cursor().execute("PRAGMA busy_timeout=0")
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(OperationalError, match="locked"), connection.begin():
                pass
            holder.execute("ROLLBACK")
            # Once it has begun, the lock is the transaction's before any statement.
            with connection.begin():
                holder.execute("PRAGMA busy_timeout=0")
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    holder.execute("BEGIN IMMEDIATE")
    finally:
        holder.close()
        engine.dispose()
