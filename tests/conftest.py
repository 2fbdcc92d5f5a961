"""Fixtures shared by every layer's tests.

``db_url`` is parametrised over the backends: every test that uses it runs on
a temporary SQLite file and on PostgreSQL. The PostgreSQL database is created
once per session under a unique name, emptied before each test and dropped at
the end, so tests never touch anyone else's tables. A test marked
``sqlite_only`` (it checks something only SQLite has, such as the file) or
``postgresql_only`` runs on that backend alone.

``running`` starts the whole system in-process (no HTTP) on that database with
a fresh handler registry; ``client`` is the HTTP app on top of it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import trio
from quart.typing import TestClientProtocol
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from taskq import system
from taskq.api.app import create_app
from taskq.config import Settings
from taskq.registry import Registry
from taskq.runtimes import Runtimes, open_runtimes
from taskq.store import Store

# The PostgreSQL server the suite uses (.ci/run starts the local one).
POSTGRESQL_SERVER = os.environ.get(
    "TASKQ_TEST_POSTGRESQL", "postgresql+psycopg://postgres@127.0.0.1:5432"
)
BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: runs on SQLite only")
    config.addinivalue_line("markers", "postgresql_only: runs on PostgreSQL only")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "db_url" not in metafunc.fixturenames:
        return
    backends = [
        backend
        for backend in BACKENDS
        if not any(
            metafunc.definition.get_closest_marker(f"{other}_only")
            for other in BACKENDS
            if other != backend
        )
    ]
    metafunc.parametrize("db_url", backends, indirect=True)


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    """A database of this session's own on the test server, migrated once, dropped at the end."""
    server = make_url(POSTGRESQL_SERVER)
    name = f"taskq_test_{os.getpid()}_{secrets.token_hex(4)}"
    # No pool: a connection kept from the start may not survive a server restart.
    admin = create_engine(
        server.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL at {server} is not reachable (start it; see .ci/run): {exc}")
    url = server.set(database=name).render_as_string(hide_password=False)
    Store.open(url).close()
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def empty_postgresql(url: str) -> None:
    """Every table empty and every id counter back at 1, as in a new database."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("SET LOCAL lock_timeout = '10s'"))
            connection.execute(text("TRUNCATE tasks, workers RESTART IDENTITY"))
    finally:
        engine.dispose()


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'taskq.db'}"
    url: str = request.getfixturevalue("postgresql_url")
    empty_postgresql(url)
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    opened = Store.open(db_url)
    yield opened
    opened.close()


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
async def runtimes() -> AsyncIterator[Runtimes]:
    """Where executions run, as the supervisor opens it: asyncio loop, process pool."""
    async with open_runtimes() as opened:
        yield opened


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(
        db_url=db_url,
        workers=2,
        grace_seconds=1.0,
        heartbeat_interval_seconds=60.0,
        dead_after_seconds=600.0,
    )


@pytest.fixture
async def running(nursery: trio.Nursery, settings: Settings, registry: Registry) -> system.Running:
    started: system.Running = await nursery.start(
        lambda task_status: system.run(
            settings, registry, serve_http=False, task_status=task_status
        )
    )
    return started


@pytest.fixture
async def client(running: system.Running) -> TestClientProtocol:
    return create_app(running.queue, running.monitor).test_client()


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 10.0, what: str = "condition"
) -> None:
    """Wait until ``check()`` holds, re-reading observable state, failing after ``within`` s.

    For state that only the database shows (a committed status); where a test
    can hold an event or a channel instead, it should.
    """
    with trio.move_on_after(within):
        while not await check():  # noqa: ASYNC110 - polls committed state, bounded
            await trio.sleep(0.01)
        return
    pytest.fail(f"timed out after {within} s waiting for {what}")
