"""The Reaper: re-queues the tasks of workers whose node has died.

Every node runs one. Every ``dead_after_seconds / REAPS_PER_DEAD_AFTER`` it
asks the writer to take offline the other nodes' workers whose last heartbeat
is older than ``dead_after_seconds`` and to put their running tasks back in
the queue, where live workers claim them (at-least-once: those tasks run
again). Several reapers at once are safe: each dead worker is reaped by
exactly one transaction. A node never reaps its own workers, and workers
heartbeat several times within the timeout, so a live node is never reaped.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

import trio

from taskq.errors import Unavailable
from taskq.messages import ReapDeadWorkers, WriterCommand, request
from taskq.models import utcnow

log = logging.getLogger(__name__)

REAPS_PER_DEAD_AFTER = 2


async def run(
    writer: trio.MemorySendChannel[WriterCommand],
    *,
    dead_after_seconds: float,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    while True:
        await trio.sleep(dead_after_seconds / REAPS_PER_DEAD_AFTER)
        cutoff = clock() - timedelta(seconds=dead_after_seconds)
        try:
            dead: list[int] = await request(writer, functools.partial(ReapDeadWorkers, cutoff))
        except Unavailable as exc:
            log.warning("could not look for dead workers (%s)", exc)
            continue
        if dead:
            log.warning(
                "workers %s stopped heartbeating: offline, their tasks re-queued",
                ", ".join(map(str, dead)),
            )
