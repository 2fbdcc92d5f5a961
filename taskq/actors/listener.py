"""The Listener (PostgreSQL only): hears what the other nodes changed and wakes this node's actors.

Every writer NOTIFYs its transaction's events on commit (``Tx.announce``). The
listener holds one dedicated connection that LISTENs, turns each notice from
another node back into the event its own writer would have published, and
hands it to the dispatcher (new, resumed or due tasks; pause and delete of a
task running here; worker status changes) or the scheduler (a nearer
scheduled time). Each node's dispatcher ignores workers it does not run, so
a notice needs no routing beyond that.

A notice sent while the connection was down is lost, so after every
(re)connect and every ``poll_seconds`` without a notice the listener wakes
both actors anyway (``catch_up``): the dispatcher claims and the scheduler
promotes, reading the truth from the database. The connection is retried
with backoff for as long as the node runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import psycopg
import trio
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import make_url

from taskq.actors.writer import publish
from taskq.config import (
    CLUSTER_POLL_SECONDS,
    RECONNECT_BACKOFF_FIRST_SECONDS,
    RECONNECT_BACKOFF_MAX_SECONDS,
)
from taskq.messages import DispatcherMessage, Event, SchedulerMessage, TaskScheduled, TasksReady
from taskq.models import utcnow
from taskq.store import notices
from taskq.store.engine import POSTGRESQL_CONNECT_ARGS

log = logging.getLogger(__name__)


async def run(
    db_url: str,
    node: str,
    dispatcher: trio.MemorySendChannel[DispatcherMessage],
    scheduler: trio.MemorySendChannel[SchedulerMessage],
    *,
    poll_seconds: float = CLUSTER_POLL_SECONDS,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    conninfo = libpq_url(db_url)
    backoff = RECONNECT_BACKOFF_FIRST_SECONDS
    while True:
        try:
            connection = await trio.to_thread.run_sync(_listen, conninfo)
        except psycopg.Error as exc:
            log.warning("cannot listen for other nodes (%s); retrying in %.1f s", exc, backoff)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX_SECONDS)
            continue
        backoff = RECONNECT_BACKOFF_FIRST_SECONDS
        log.info("listening for other nodes")
        try:
            with connection:
                await _hear(connection, node, dispatcher, scheduler, poll_seconds, clock)
        except psycopg.Error as exc:
            log.warning("lost the listening connection (%s); reconnecting", exc)


def libpq_url(db_url: str) -> str:
    """The SQLAlchemy URL as libpq reads it, with the engine's connection settings."""
    url = make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)
    return make_conninfo(url, **POSTGRESQL_CONNECT_ARGS)


def catch_up(
    dispatcher: trio.MemorySendChannel[DispatcherMessage],
    scheduler: trio.MemorySendChannel[SchedulerMessage],
    clock: Callable[[], datetime],
) -> None:
    """Wake both actors as if every kind of notice had come: they re-read the database."""
    publish([TasksReady(from_other_node=True), TaskScheduled(clock())], dispatcher, scheduler)


def _listen(conninfo: str) -> psycopg.Connection[tuple[object, ...]]:
    connection = psycopg.connect(conninfo, autocommit=True)
    connection.execute(f"LISTEN {notices.CHANNEL}")
    return connection


async def _hear(
    connection: psycopg.Connection[tuple[object, ...]],
    node: str,
    dispatcher: trio.MemorySendChannel[DispatcherMessage],
    scheduler: trio.MemorySendChannel[SchedulerMessage],
    poll_seconds: float,
    clock: Callable[[], datetime],
) -> None:
    while True:
        # Anything may have happened while this connection was not listening.
        catch_up(dispatcher, scheduler, clock)
        while payloads := await _receive(connection, poll_seconds):
            publish(_from_others(node, payloads), dispatcher, scheduler)


async def _receive(
    connection: psycopg.Connection[tuple[object, ...]], silence_seconds: float
) -> list[str]:
    """The payloads of the notices that arrived, or none after ``silence_seconds`` of silence.

    Trio waits on the socket, so cancelling the wait is immediate; psycopg then
    reads what is there without blocking (and raises if the server is gone).
    """
    with trio.move_on_after(silence_seconds):
        await trio.lowlevel.wait_readable(connection.fileno())
    return [notice.payload for notice in connection.notifies(timeout=0)]


def _from_others(node: str, payloads: list[str]) -> list[Event]:
    events = []
    for payload in payloads:
        decoded = notices.decode(payload)
        if decoded is None:
            log.warning("ignoring a notice this version does not understand: %r", payload)
        elif decoded[0] != node:
            event = decoded[1]
            events.append(
                TasksReady(from_other_node=True) if isinstance(event, TasksReady) else event
            )
    return events
