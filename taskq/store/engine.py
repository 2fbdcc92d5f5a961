"""Opening a database: the backend-specific connection set-up lives here alone.

SQLite runs in WAL mode (readers beside the one writer) with
``synchronous=FULL``: a commit is on disk before anyone is told about it, so an
acknowledged task survives a power cut. Python 3.11's sqlite3 module opens
transactions on its own terms; we switch that off (``isolation_level=None``)
and begin every transaction with ``BEGIN IMMEDIATE`` so the write lock is
taken up front instead of failing half-way through a batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url

SQLITE_BUSY_TIMEOUT_MS = 5000
# SQLite's default page cache is 2 MiB; with a million queued tasks the indexes a
# claim and a finish touch outgrow it, and every batch goes back to the file.
SQLITE_CACHE_KIB = 65536


def open_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_immediate)
    else:
        engine = create_engine(parsed, pool_pre_ping=True)
    return engine


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; a no-op when it is there already."""
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.close()


def _begin_immediate(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")
