"""The scheduler through its channels, with a fake writer and a wall clock tied to Trio's.

Each test asks for ``autojump_clock`` itself: pytest-trio only runs a test under a
clock that is one of the test function's own arguments.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import outcome
import pytest
import trio
import trio.testing

from taskq.actors import scheduler
from taskq.messages import PromoteDueTasks, SchedulerMessage, TaskScheduled, WriterCommand, answer

EPOCH = datetime(2030, 1, 1)
# How long before a due time the scheduler promotes (half a second: exact in floats).
LEAD = 0.5
# Mock time: a scheduler that never promotes fails at once, in real time.
DEADLINE_SECONDS = 10 * 365 * 24 * 3600.0


def wall_clock() -> datetime:
    """The wall clock as the mock clock moves it: EPOCH at Trio time 0."""
    return EPOCH + timedelta(seconds=trio.current_time())


def at(seconds: float) -> datetime:
    return EPOCH + timedelta(seconds=seconds)


@dataclass
class Harness:
    inbox: trio.MemorySendChannel[SchedulerMessage]
    writer: trio.MemoryReceiveChannel[WriterCommand]

    async def promotion(self) -> PromoteDueTasks:
        with trio.fail_after(DEADLINE_SECONDS):
            command = await self.writer.receive()
        assert isinstance(command, PromoteDueTasks)
        return command

    async def promote(self, next_due: datetime | None) -> PromoteDueTasks:
        """Wait for the next promotion and answer it with ``next_due``."""
        command = await self.promotion()
        answer(command.reply, outcome.Value(next_due))
        return command


@pytest.fixture
async def harness(nursery: trio.Nursery) -> AsyncIterator[Harness]:
    inbox_send, inbox = trio.open_memory_channel[SchedulerMessage](math.inf)
    writer_send, writer = trio.open_memory_channel[WriterCommand](math.inf)
    nursery.start_soon(
        lambda: scheduler.run(inbox, writer_send, clock=wall_clock, lead_seconds=LEAD)
    )
    yield Harness(inbox_send, writer)
    nursery.cancel_scope.cancel()


async def test_promotes_at_start(harness: Harness, autojump_clock: trio.testing.MockClock) -> None:
    command = await harness.promote(None)
    assert (trio.current_time(), command.due_by) == (0.0, at(LEAD))


async def test_wakes_its_lead_before_the_earliest_due_time_and_not_earlier(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    """What is due by then is promoted ahead: its worker holds it until its time."""
    await harness.promote(at(30))

    command = await harness.promote(at(45))
    assert trio.current_time() == 30.0 - LEAD
    assert command.due_by == at(30)

    await harness.promote(None)
    assert trio.current_time() == 45.0 - LEAD


async def test_an_earlier_scheduled_task_wakes_it_earlier(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    await harness.promote(at(60))
    await trio.sleep(5)
    harness.inbox.send_nowait(TaskScheduled(at(12)))

    command = await harness.promote(at(60))

    assert trio.current_time() == 12.0 - LEAD
    assert command.due_by == at(12)


async def test_a_later_scheduled_task_does_not_delay_the_earlier(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    await harness.promote(at(20))
    harness.inbox.send_nowait(TaskScheduled(at(90)))

    await harness.promote(None)

    assert trio.current_time() == 20.0 - LEAD


async def test_a_scheduled_task_wakes_it_from_an_empty_wait(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    await harness.promote(None)
    await trio.sleep(100)
    harness.inbox.send_nowait(TaskScheduled(at(130)))

    command = await harness.promote(None)

    assert trio.current_time() == 130.0 - LEAD
    assert command.due_by == at(130)


async def test_with_nothing_due_it_waits_forever(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    await harness.promote(None)

    with trio.move_on_after(365 * 24 * 3600) as waited:
        await harness.writer.receive()

    assert waited.cancelled_caught


async def test_a_past_due_time_promotes_at_once(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    await trio.sleep(50)
    await harness.promote(None)
    harness.inbox.send_nowait(TaskScheduled(at(10)))

    await harness.promote(None)

    assert trio.current_time() == 50.0


async def test_returns_when_its_inbox_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inbox_send, inbox = trio.open_memory_channel[SchedulerMessage](math.inf)
    writer_send, writer = trio.open_memory_channel[WriterCommand](math.inf)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: scheduler.run(inbox, writer_send, clock=wall_clock))
        await Harness(inbox_send, writer).promote(at(1000))
        await inbox_send.aclose()
    assert trio.current_time() < 1000
