"""The Scheduler: turns scheduled tasks into pending ones at their time, not at a poll.

Its whole state is the earliest due time it knows of. It sleeps until then,
asks the writer to promote what is due (the writer answers with the next due
time, read in the same transaction), and is woken early by ``TaskScheduled``
when a nearer time arrives. It wakes ``SCHEDULE_LEAD_SECONDS`` before a due
time and promotes what is due by then: the commit lands before the task's time,
and the worker that takes the task holds it until that time. The wall clock
decides what is due, so a task is never started before its ``scheduled_at``; the
Trio clock only times the sleep, which lets tests drive it with ``autojump_clock``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime, timedelta

import trio

from taskq.config import RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS, SCHEDULE_LEAD_SECONDS
from taskq.errors import Unavailable
from taskq.messages import PromoteDueTasks, SchedulerMessage, TaskScheduled, WriterCommand, request
from taskq.models import utcnow

log = logging.getLogger(__name__)


async def run(
    inbox: trio.MemoryReceiveChannel[SchedulerMessage],
    writer: trio.MemorySendChannel[WriterCommand],
    *,
    clock: Callable[[], datetime] = utcnow,
    lead_seconds: float = SCHEDULE_LEAD_SECONDS,
) -> None:
    lead = timedelta(seconds=lead_seconds)
    next_due = await _promote(writer, clock, lead)
    while True:
        wake = None if next_due is None else next_due - lead
        with trio.move_on_at(_wake_time(wake, clock)) as sleep:
            try:
                message = await inbox.receive()
            except trio.EndOfChannel:
                return
        if sleep.cancelled_caught:
            next_due = await _promote(writer, clock, lead)
            continue
        match message:
            case TaskScheduled(at=at):
                next_due = at if next_due is None else min(next_due, at)


async def _promote(
    writer: trio.MemorySendChannel[WriterCommand], clock: Callable[[], datetime], lead: timedelta
) -> datetime | None:
    """Promote what is due within ``lead``; while the database is away, keep trying
    with backoff."""
    backoff = RETRY_FIRST_SECONDS
    while True:
        try:
            next_due: datetime | None = await request(
                writer, lambda reply: PromoteDueTasks(clock() + lead, reply)
            )
            return next_due
        except Unavailable as exc:
            log.warning("promoting due tasks failed (%s); trying again in %.2f s", exc, backoff)
        await trio.sleep(backoff)
        backoff = min(backoff * 2, RETRY_MAX_SECONDS)


def _wake_time(wake: datetime | None, clock: Callable[[], datetime]) -> float:
    if wake is None:
        return math.inf
    return trio.current_time() + max(0.0, (wake - clock()).total_seconds())
