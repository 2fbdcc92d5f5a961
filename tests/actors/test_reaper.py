"""The reaper through its channel, with a fake writer and Trio's mock clock."""

from __future__ import annotations

import math

import outcome
import trio
import trio.testing

from taskq.actors import reaper
from taskq.errors import Unavailable
from taskq.messages import ReapDeadWorkers, WriterCommand, answer

DEAD_AFTER_SECONDS = 30.0
# Mock time: a reaper that never asks fails at once, in real time.
DEADLINE_SECONDS = 3600.0


async def _next_reap(writer: trio.MemoryReceiveChannel[WriterCommand]) -> ReapDeadWorkers:
    with trio.fail_after(DEADLINE_SECONDS):
        command = await writer.receive()
    assert isinstance(command, ReapDeadWorkers)
    return command


async def test_asks_twice_per_timeout_for_a_timeout_the_database_measures(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    writer_send, writer = trio.open_memory_channel[WriterCommand](math.inf)
    nursery.start_soon(lambda: reaper.run(writer_send, dead_after_seconds=DEAD_AFTER_SECONDS))

    times: list[float] = []
    asked: list[float] = []
    for result in (
        outcome.Value([7]),
        outcome.Error(Unavailable("database unreachable")),
        outcome.Value([]),
    ):
        command = await _next_reap(writer)
        times.append(trio.current_time())
        asked.append(command.dead_after_seconds)
        answer(command.reply, result)
    # A failed round does not stop the reaper: it asks again a period later.
    await _next_reap(writer)
    nursery.cancel_scope.cancel()

    period = DEAD_AFTER_SECONDS / reaper.REAPS_PER_DEAD_AFTER
    assert times == [period, 2 * period, 3 * period]
    assert asked == [DEAD_AFTER_SECONDS] * 3
