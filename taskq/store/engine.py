"""Opening a database: the backend-specific connection set-up lives here alone.

SQLite runs in WAL mode (readers beside the one writer) with
``synchronous=FULL``: a commit is on disk before anyone is told about it, so an
acknowledged task survives a power cut. Python 3.11's sqlite3 module opens
transactions on its own terms; we switch that off (``isolation_level=None``)
and begin every transaction with ``BEGIN IMMEDIATE`` so the write lock is
taken up front instead of failing half-way through a batch.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError

SQLITE_BUSY_TIMEOUT_MS = 5000
# SQLite's default page cache is 2 MiB; with a million queued tasks the indexes a
# claim and a finish touch outgrow it, and every batch goes back to the file.
SQLITE_CACHE_KIB = 65536
# The reader's page cache: its reads are pages of a list or one task, and a count's
# scan of an index is better left to the OS's file cache than kept in the process.
SQLITE_READER_CACHE_KIB = 8192
# Any constant shared by every taskq process: the key of the migration lock.
MIGRATION_LOCK = 0x7461736B71
# PostgreSQL: give up on an unreachable server quickly (the writer answers 503
# and tries again with the next batch), and let TCP keepalives notice a silent
# peer instead of waiting on it for hours.
POSTGRESQL_CONNECT_ARGS = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


def open_engine(url: str, *, read_only: bool = False) -> Engine:
    """The engine of a store; ``read_only``: for its reader, which never writes.

    A SQLite reader never begins a transaction of its own (no ``BEGIN
    IMMEDIATE``): each statement reads the last commit, beside the writer's
    transaction in WAL mode, and never takes the write lock.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _configure_sqlite)
        if read_only:
            event.listen(engine, "connect", _sqlite_query_only)
        else:
            event.listen(engine, "begin", _begin_immediate)
    else:
        engine = create_engine(
            parsed,
            pool_pre_ping=True,
            connect_args=POSTGRESQL_CONNECT_ARGS,
            json_serializer=_json_or_data_error,
        )
    return engine


def sqlite_wal_file(connection: Connection) -> Path | None:
    """The database file behind ``connection`` if it is SQLite in WAL mode, else None.

    None also for an in-memory database, which has no WAL to checkpoint.
    """
    if connection.dialect.name != "sqlite":
        return None
    database = connection.engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    (mode,) = _driver_sql(connection, "PRAGMA journal_mode").fetchone()
    return Path(database) if mode == "wal" else None


def _driver_sql(connection: Connection, sql: str) -> Any:
    """Run ``sql`` on the DBAPI connection, outside SQLAlchemy's transaction (no BEGIN)."""
    cursor = connection.connection.cursor()
    cursor.execute(sql)
    return cursor


def migrate(engine: Engine) -> str | None:
    """Bring the schema to the newest revision (a no-op when it is there); answer it.

    On PostgreSQL the upgrade holds an advisory lock, so nodes starting together
    migrate one after the other instead of racing to create the same tables.
    """
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        return MigrationContext.configure(connection).get_current_revision()


def _json_or_data_error(value: Any) -> str:
    """psycopg writes JSON itself; a value it cannot write is the driver's data error.

    SQLAlchemy then reports it as a database error, as it does on SQLite, and
    the writer refuses that one command instead of failing.
    """
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise psycopg.DataError(f"the value is not JSON: {exc}") from exc


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.close()


def _sqlite_query_only(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA query_only=1")
    dbapi_connection.execute(f"PRAGMA cache_size=-{SQLITE_READER_CACHE_KIB}")


def _begin_immediate(connection: Connection) -> None:
    """``BEGIN IMMEDIATE`` on the driver's connection itself, at the start of every write.

    Through ``exec_driver_sql`` SQLAlchemy's execution machinery made an empty
    transaction cost nearly twice as much (19 against 11 us), on the path of
    every commit. A failure (locked, I/O) is still SQLAlchemy's ``OperationalError``.
    """
    try:
        connection.connection.cursor().execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise DBAPIError.instance("BEGIN IMMEDIATE", None, exc, sqlite3.Error) from exc
