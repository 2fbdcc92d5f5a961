"""How long a durable submit takes while every worker computes in short steps.

Runs taskq in-process (no HTTP) on a fresh SQLite file, twice in the same run:
with the GIL hand-off (``taskq.threads.GilHandOff``) as the system runs it, and
without it (its threshold set out of reach). In each, first N submits on an idle
system, then N submits while the 32 workers run handlers that compute in short
steps with a checkpoint between them (the way Trio asks a long computation to
stay responsive), which keeps the event loop busy round after round. Each submit
is answered only after its commit, which the writer's thread makes: without the
hand-off that thread waits for the GIL, one SQLite call at a time.

    PYTHONPATH=. python bench/busy_loop_commits.py          # 40 submits each way
    PYTHONPATH=. python bench/busy_loop_commits.py -n 100
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from taskq import system
from taskq.config import GIL_HAND_OFF_AFTER_SECONDS, Settings
from taskq.queue import Queue
from taskq.registry import Registry

WORKERS = 32
STEP_LOOPS = 300
SUBMIT_GAP_SECONDS = 0.01


def busy_registry(all_busy: trio.Event) -> Registry:
    """``bench.busy`` sets ``all_busy`` once every worker runs one."""
    registry = Registry()
    started = 0

    @registry.task("bench.busy")
    async def busy(payload: Mapping[str, Any]) -> None:
        nonlocal started
        started += 1
        if started == WORKERS:
            all_busy.set()
        ends = time.perf_counter() + float(payload["seconds"])
        while time.perf_counter() < ends:
            sum(range(STEP_LOOPS))
            await trio.lowlevel.checkpoint()

    return registry


async def submit_times_ms(queue: Queue, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await queue.submit("taskq.echo", {})
        times.append((time.perf_counter() - started) * 1000)
        await trio.sleep(SUBMIT_GAP_SECONDS)
    return times


async def measure(count: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        settings = Settings(db_url=url, workers=WORKERS, port=0, log_level="WARNING")
        all_busy = trio.Event()
        registry = busy_registry(all_busy)
        async with trio.open_nursery() as nursery:
            running: system.Running = await nursery.start(
                functools.partial(system.run, settings, registry, serve_http=False)
            )
            try:
                idle = await submit_times_ms(running.queue, count)
                seconds = count * SUBMIT_GAP_SECONDS * 4 + 2
                for _ in range(WORKERS):
                    await running.queue.submit("bench.busy", {"seconds": seconds})
                await all_busy.wait()
                busy = await submit_times_ms(running.queue, count)
            finally:
                running.stop()
    return {"idle": idle, "busy": busy}


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    return f"p50 {statistics.median(ordered):8.2f}  p99 {p99:8.2f}  max {ordered[-1]:8.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=40, help="submits on each system, idle and busy")
    args = parser.parse_args()
    with_hand_off = trio.run(measure, args.n)
    # The system reads the threshold when it starts: out of reach, the hand-off never runs.
    system.GIL_HAND_OFF_AFTER_SECONDS = math.inf
    without = trio.run(measure, args.n)
    system.GIL_HAND_OFF_AFTER_SECONDS = GIL_HAND_OFF_AFTER_SECONDS
    for label, times in (("with the hand-off", with_hand_off), ("without it", without)):
        for state in ("idle", "busy"):
            print(f"{label:18} {state:5} {summary(times[state])}")
    ratio = max(without["busy"]) / max(with_hand_off["busy"])
    print(f"busy, slowest submit: {ratio:.0f}x longer without the hand-off")


if __name__ == "__main__":
    main()
