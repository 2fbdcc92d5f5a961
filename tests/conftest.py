"""Fixtures shared by every layer's tests.

``running`` starts the whole system in-process (no HTTP) on a temporary SQLite
file with a fresh handler registry; ``client`` is the HTTP app on top of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import trio
from quart.typing import TestClientProtocol

from taskq import system
from taskq.api.app import create_app
from taskq.config import Settings
from taskq.execution import Runtimes, open_runtimes
from taskq.registry import Registry
from taskq.store import Store


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'taskq.db'}"


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
    return Settings(db_url=db_url, workers=2, grace_seconds=1.0, heartbeat_interval_seconds=60.0)


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
