"""The Listener on a real PostgreSQL: other nodes' notices reach this node's actors."""

from __future__ import annotations

import functools
import math

import pytest
import trio

from taskq.actors import listener
from taskq.messages import DispatcherMessage, SchedulerMessage, TaskRevoked, TasksReady
from taskq.store import Store
from tests.actors.conftest import NOW, receive

pytestmark = pytest.mark.postgresql_only


def announce(db_url: str, node: str, *events: TaskRevoked | TasksReady) -> None:
    store = Store.open(db_url, migrate_schema=False, node=node)
    try:
        with store.transaction() as tx:
            tx.announce(list(events))
    finally:
        store.close()


async def test_it_forwards_other_nodes_notices_and_skips_its_own(
    db_url: str, nursery: trio.Nursery
) -> None:
    dispatcher_send, dispatcher = trio.open_memory_channel[DispatcherMessage](math.inf)
    scheduler_send, scheduler = trio.open_memory_channel[SchedulerMessage](math.inf)
    nursery.start_soon(
        functools.partial(
            listener.run, db_url, "me", dispatcher_send, scheduler_send, clock=lambda: NOW
        )
    )
    # Connected: it catches up at once, since anything may have been missed.
    assert await receive(dispatcher) == TasksReady(from_other_node=True)
    assert (await receive(scheduler)).at == NOW

    await trio.to_thread.run_sync(announce, db_url, "me", TaskRevoked(1, 2))
    await trio.to_thread.run_sync(announce, db_url, "other", TaskRevoked(3, 4))

    assert await receive(dispatcher) == TaskRevoked(3, 4)


async def test_it_keeps_trying_to_connect_and_never_crashes(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    dispatcher_send, dispatcher = trio.open_memory_channel[DispatcherMessage](math.inf)
    scheduler_send, _ = trio.open_memory_channel[SchedulerMessage](math.inf)
    nowhere = "postgresql+psycopg://postgres@127.0.0.1:1/nothing"
    nursery.start_soon(listener.run, nowhere, "me", dispatcher_send, scheduler_send)
    await trio.sleep(60)
    with pytest.raises(trio.WouldBlock):
        dispatcher.receive_nowait()


def test_the_listening_connection_has_the_engine_s_settings() -> None:
    assert listener.libpq_url("postgresql+psycopg://u:p@h:5433/d").split() == [
        "user=u",
        "password=p",
        "dbname=d",
        "host=h",
        "port=5433",
        "connect_timeout=5",
        "keepalives=1",
        "keepalives_idle=10",
        "keepalives_interval=5",
        "keepalives_count=3",
    ]
