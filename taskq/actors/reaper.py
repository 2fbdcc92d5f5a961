"""The Reaper: re-queues the tasks of workers whose node has died.

Every node runs one. Every ``dead_after_seconds / REAPS_PER_DEAD_AFTER`` it
asks the writer to take offline the other nodes' workers whose last heartbeat
is older than ``dead_after_seconds`` and to put their running tasks back in
the queue, where live workers claim them (at-least-once: those tasks run
again). Age is measured by the database's clock, which also stamps every
heartbeat: the nodes' own clocks never compare, so one that is off neither
gets reaped alive nor reaps the living. Several reapers at once are safe: each
dead worker is reaped by exactly one transaction. A node never reaps its own
workers, and workers heartbeat several times within the timeout, so a live
node is never reaped.
"""

from __future__ import annotations

import functools
import logging

import trio

from taskq.errors import Unavailable
from taskq.messages import ReapDeadWorkers, WriterCommand, request

log = logging.getLogger(__name__)

REAPS_PER_DEAD_AFTER = 2


async def run(writer: trio.MemorySendChannel[WriterCommand], *, dead_after_seconds: float) -> None:
    reap = functools.partial(ReapDeadWorkers, dead_after_seconds)
    while True:
        await trio.sleep(dead_after_seconds / REAPS_PER_DEAD_AFTER)
        try:
            dead: list[int] = await request(writer, reap)
        except Unavailable as exc:
            log.warning("could not look for dead workers (%s)", exc)
            continue
        if dead:
            log.warning(
                "workers %s stopped heartbeating: offline, their tasks re-queued",
                ", ".join(map(str, dead)),
            )
