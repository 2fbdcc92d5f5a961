"""The writer when things break: it crashes mid-batch, or the database refuses writes.

The promise under test: every request of a batch gets either an error or a
success that is true (its change committed), never a success for something that
is not on disk; the supervisor restarts a crashed writer and later requests
work; while the database is full or read-only, writes are refused with a clear
``Unavailable`` (HTTP 503 with its ``detail``), reads are still answered, and
everything recovers by itself, with nothing acknowledged lost.

The faults are injected: a writer that raises where a bug would, and SQLite's
own limits on the writer's connection (``PRAGMA max_page_count`` makes it
answer SQLITE_FULL exactly as a full disk does; ``PRAGMA query_only`` makes it
answer SQLITE_READONLY). ``tests/system/test_faults.py`` fills a real
filesystem under the real process.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import outcome
import pytest
import trio
from sqlalchemy import event
from sqlalchemy.engine import Connection

from taskq.actors import batches, writer
from taskq.errors import Unavailable
from taskq.messages import (
    CreateTask,
    DispatcherMessage,
    GetTask,
    ListTasks,
    PauseTask,
    Reply,
    SchedulerMessage,
    WriterCommand,
    request,
)
from taskq.models import NewTask, Task, TaskStatus
from taskq.store import Store
from taskq.supervision import RestartPolicy, supervise
from tests.actors.conftest import DEADLINE_SECONDS, NOW, receive

pytestmark = pytest.mark.sqlite_only

# Restart at once and never give up: each test counts the restarts itself.
POLICY = RestartPolicy(
    max_restarts=100, window_seconds=60.0, backoff_first_seconds=0.0, backoff_max_seconds=0.0
)
# Larger than an SQLite page (4 KiB): storing it needs new pages, which a full database lacks.
BIG = {"blob": "x" * 16384}
Answer = trio.MemoryReceiveChannel[outcome.Outcome[Any]]


class Supervised:
    """A writer on ``store`` under ``supervise``, counting its starts."""

    def __init__(self, store: Store, nursery: trio.Nursery) -> None:
        self.store = store
        self.inbox, inbox = trio.open_memory_channel[WriterCommand](math.inf)
        dispatcher, self._dispatcher = trio.open_memory_channel[DispatcherMessage](math.inf)
        scheduler, self._scheduler = trio.open_memory_channel[SchedulerMessage](math.inf)
        self.starts = 0
        actor = functools.partial(
            writer.run, inbox, store, dispatcher, scheduler, clock=lambda: NOW
        )

        async def counted() -> None:
            self.starts += 1
            await actor()

        nursery.start_soon(supervise, "writer", counted, POLICY)

    def queue(self, build: Callable[[Reply], WriterCommand]) -> Answer:
        reply, answer = trio.open_memory_channel[outcome.Outcome[Any]](1)
        self.inbox.send_nowait(build(reply))
        return answer

    async def ask(self, build: Callable[[Reply], WriterCommand]) -> Any:
        with trio.fail_after(DEADLINE_SECONDS):
            return await request(self.inbox, build)

    def stored(self) -> dict[int, Task]:
        with self.store.transaction() as tx:
            return {task.id: task for task in tx.list_tasks(0, 1000, None)}


@pytest.fixture
def supervised(store: Store, nursery: trio.Nursery) -> Supervised:
    return Supervised(store, nursery)


async def _settle(answers: list[Answer]) -> list[outcome.Outcome[Any]]:
    """Each request's answer; a reply closed unanswered counts as the ``Unavailable``
    that ``request`` turns it into."""
    settled: list[outcome.Outcome[Any]] = []
    for answer in answers:
        try:
            settled.append(await receive(answer))
        except trio.EndOfChannel:
            settled.append(outcome.Error(Unavailable("closed unanswered")))
    return settled


def _assert_no_lie(settled: list[outcome.Outcome[Any]], stored: dict[int, Task]) -> int:
    """Every success names a committed task; answers the number of successes."""
    successes = 0
    for each in settled:
        if isinstance(each, outcome.Value):
            successes += 1
            assert stored[each.value.id] == each.value
        else:
            assert isinstance(each.error, Unavailable), each.error
    return successes


# --- the writer crashing mid-batch ---


async def test_a_crash_before_the_commit_refuses_the_whole_batch_and_the_writer_restarts(
    supervised: Supervised, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = batches.apply_batch
    crashes = 0

    def crash_once(*args: Any) -> Any:
        nonlocal crashes
        if crashes == 0:
            crashes += 1
            raise RuntimeError("injected: the writer fails before committing")
        return real(*args)

    monkeypatch.setattr(writer, "apply_batch", crash_once)
    answers = [supervised.queue(lambda r: CreateTask(NewTask("job", {}), r)) for _ in range(5)]

    settled = await _settle(answers)

    assert _assert_no_lie(settled, supervised.stored()) == 0
    assert supervised.stored() == {}
    later = await supervised.ask(lambda r: CreateTask(NewTask("later", {}), r))
    assert supervised.stored() == {later.id: later}
    assert supervised.starts == 2


async def test_a_crash_after_the_commit_answers_no_success_it_cannot_vouch_for(
    supervised: Supervised, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = batches.apply_batch
    crashes = 0

    def commit_then_crash(*args: Any) -> Any:
        nonlocal crashes
        applied = real(*args)
        if crashes == 0:
            crashes += 1
            raise RuntimeError("injected: the writer fails after committing")
        return applied

    monkeypatch.setattr(writer, "apply_batch", commit_then_crash)
    answers = [supervised.queue(lambda r: CreateTask(NewTask("job", {}), r)) for _ in range(5)]

    settled = await _settle(answers)

    # Committed, yet refused: an error is allowed, a false success never is.
    assert _assert_no_lie(settled, supervised.stored()) == 0
    assert len(supervised.stored()) == 5
    later = await supervised.ask(lambda r: CreateTask(NewTask("later", {}), r))
    assert supervised.stored()[later.id] == later
    assert supervised.starts == 2


async def test_a_crash_half_way_through_the_answers_leaves_no_asker_waiting(
    supervised: Supervised, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = writer.answer
    calls = 0

    def crash_on_the_third(reply: Reply | None, result: outcome.Outcome[Any]) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("injected: the writer fails while answering")
        real(reply, result)

    monkeypatch.setattr(writer, "answer", crash_on_the_third)
    answers = [supervised.queue(lambda r: CreateTask(NewTask("job", {}), r)) for _ in range(6)]

    settled = await _settle(answers)

    stored = supervised.stored()
    assert _assert_no_lie(settled, stored) == 2
    assert [isinstance(each, outcome.Value) for each in settled] == [True, True] + [False] * 4
    assert len(stored) == 6
    later = await supervised.ask(lambda r: CreateTask(NewTask("later", {}), r))
    assert supervised.stored()[later.id] == later
    assert supervised.starts == 2


# --- the database full or read-only ---


@pytest.fixture
def database_limits(store: Store) -> Iterator[dict[str, int]]:
    """Limits applied to every transaction the writer begins, changeable mid-test:
    ``full`` 1 caps the file at its current size (SQLITE_FULL), ``read_only`` 1
    refuses every write (SQLITE_READONLY)."""
    limits = {"full": 0, "read_only": 0}

    def after_begin(connection: Connection) -> None:
        pages = 1 if limits["full"] else 2**31 - 1
        connection.exec_driver_sql(f"PRAGMA max_page_count={pages}")
        connection.exec_driver_sql(f"PRAGMA query_only={limits['read_only']}")

    def at_end(connection: Connection) -> None:
        # The next BEGIN IMMEDIATE would itself be refused on a query-only connection.
        connection.exec_driver_sql("PRAGMA query_only=0")

    listeners = [("begin", after_begin), ("commit", at_end), ("rollback", at_end)]
    for name, listener in listeners:
        event.listen(store.engine, name, listener)
    yield limits
    for name, listener in listeners:
        event.remove(store.engine, name, listener)


@pytest.mark.parametrize(
    ("limit", "said"),
    [("full", "database or disk is full"), ("read_only", "attempt to write a readonly database")],
)
async def test_a_full_or_read_only_database_refuses_writes_clearly_serves_reads_and_recovers(
    supervised: Supervised, database_limits: dict[str, int], limit: str, said: str
) -> None:
    before = [await supervised.ask(lambda r: CreateTask(NewTask("job", BIG), r)) for _ in range(3)]
    database_limits[limit] = 1

    refused = [supervised.queue(lambda r: CreateTask(NewTask("job", BIG), r)) for _ in range(3)]
    read = supervised.queue(lambda r: GetTask(before[0].id, r))
    listed = supervised.queue(lambda r: ListTasks(0, 100, None, r))
    for answer in refused:
        with pytest.raises(Unavailable, match=rf"\(the database said: {said}\); try again later"):
            (await receive(answer)).unwrap()
    assert (await receive(read)).unwrap() == before[0]
    assert (await receive(listed)).unwrap() == before
    if limit == "read_only":
        with pytest.raises(Unavailable, match=said):
            await supervised.ask(lambda r: PauseTask(before[1].id, r))

    database_limits[limit] = 0
    after = await supervised.ask(lambda r: CreateTask(NewTask("job", BIG), r))
    paused = await supervised.ask(lambda r: PauseTask(before[1].id, r))

    assert paused.status == TaskStatus.PAUSED
    assert set(supervised.stored()) == {task.id for task in [*before, after]}
    # Refusals are answers, not crashes: the writer never had to be restarted.
    assert supervised.starts == 1
