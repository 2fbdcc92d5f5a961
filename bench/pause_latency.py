"""How fast a pause stops each kind of handler, and what a worker process costs.

Runs taskq in-process (no HTTP) on a fresh SQLite file; every figure is from
the same run, and the ones to compare are printed as ratios to a baseline:

* pause: one worker runs a handler that would go on for a long time; a
  marker task waits behind it. The time from the pause request to the
  marker's start is how long the pause takes to free the worker, for a Trio
  handler (cancelled), a Trio handler that checkpoints (suspended), an
  asyncio handler (cancelled), a thread handler (abandoned: the thread goes
  on) and a process handler busy in a loop that never yields (killed).
  Baseline: the Trio handler. The pause request's own round trip (committed
  and answered) is printed beside.
* process start: submit-to-completion of a no-op ``runtime="process"`` task,
  the first one right after start-up (the pool is still starting its
  processes, one per core, which taskq begins at boot when a process handler
  is registered) and warm ones, against a no-op Trio task. A worker process
  spawned from a script re-imports that script (here: all of taskq), which
  ``python -m taskq`` avoids; so the first call here is an upper bound.
* cores: two CPU-bound tasks at once on two workers, in threads and in
  processes, against one alone: ~2x the time in threads (one GIL), ~1x in
  processes when both cores are free.

    python bench/pause_latency.py            # 10 rounds of each
    python bench/pause_latency.py -n 30
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).parent))

import pause_latency_handlers as handlers

from taskq import TaskContext, system
from taskq.config import Settings
from taskq.models import Priority, TaskStatus
from taskq.queue import Queue
from taskq.registry import Registry

LONG_SECONDS = 30.0
THREAD_SPIN_SECONDS = 0.5
BURN_LOOPS = 3_000_000
ENDED = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED})


class Marker:
    """A task that notes when it starts, so the bench waits on an event, not a poll."""

    def __init__(self) -> None:
        self.started: dict[int, float] = {}
        self.changed = trio.Event()

    async def __call__(self, payload: Mapping[str, Any], context: TaskContext) -> None:
        self.started[context.task_id] = time.perf_counter()
        self.changed.set()
        self.changed = trio.Event()

    async def wait(self, task_id: int) -> float:
        with trio.fail_after(LONG_SECONDS):
            while task_id not in self.started:
                await self.changed.wait()
        return self.started.pop(task_id)


async def trio_sleeper(payload: Mapping[str, Any]) -> None:
    await trio.sleep(LONG_SECONDS)


async def trio_stepper(payload: Mapping[str, Any], context: TaskContext) -> None:
    end = trio.current_time() + LONG_SECONDS
    while trio.current_time() < end:
        await trio.sleep(0.001)  # a unit of work
        await context.checkpoint()


async def asyncio_sleeper(payload: Mapping[str, Any]) -> None:
    await asyncio.sleep(LONG_SECONDS)


def registry_for(marker: Marker) -> Registry:
    registry = Registry()
    registry.task("marker")(marker)
    registry.task("trio")(trio_sleeper)
    registry.task("trio+checkpoint")(trio_stepper)
    registry.task("asyncio", runtime="asyncio")(asyncio_sleeper)
    registry.task("thread")(handlers.spin)
    registry.task("process", runtime="process")(handlers.spin)
    registry.task("process.nothing", runtime="process")(handlers.nothing)
    registry.task("trio.nothing")(trio_nothing)
    registry.task("thread.burn")(handlers.burn)
    registry.task("process.burn", runtime="process")(handlers.burn)
    return registry


async def trio_nothing(payload: Mapping[str, Any]) -> None:
    return None


async def until_status(
    queue: Queue, task_id: int, statuses: frozenset[TaskStatus], within: float
) -> None:
    """Wait for a committed status: a process handler's state shows nowhere else."""
    with trio.fail_after(within):
        while (await queue.get_task(task_id)).status not in statuses:  # noqa: ASYNC110
            await trio.sleep(0.001)


async def settle(queue: Queue, task_id: int) -> None:
    await until_status(queue, task_id, ENDED, LONG_SECONDS * 4)


async def until_running(queue: Queue, task_id: int) -> None:
    await until_status(queue, task_id, frozenset({TaskStatus.RUNNING}), LONG_SECONDS)


async def pause_to_next_start(queue: Queue, marker: Marker, kind: str) -> tuple[float, float]:
    """Seconds from the pause request to its answer, and to the start of the task behind."""
    seconds = THREAD_SPIN_SECONDS if kind == "thread" else LONG_SECONDS
    target = await queue.submit(kind, {"seconds": seconds}, priority=Priority.HIGH)
    await until_running(queue, target.id)
    await trio.sleep(0.05)  # let it get going (and a process handler into its loop)
    behind = await queue.submit("marker", {}, priority=Priority.LOW)
    began = time.perf_counter()
    await queue.pause_task(target.id)
    answered = time.perf_counter()
    started = await marker.wait(behind.id)
    await queue.delete_task(target.id)
    if kind == "thread":
        await trio.sleep(seconds)  # the abandoned thread spins on: let it end first
    return answered - began, started - began


async def timed(make: Callable[[], Awaitable[None]], rounds: int) -> list[float]:
    found = []
    for _ in range(rounds):
        began = time.perf_counter()
        await make()
        found.append(time.perf_counter() - began)
    return found


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:8.2f} ms  max {max(values) * 1000:8.2f} ms"


async def main(rounds: int) -> None:
    marker = Marker()
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(db_url=f"sqlite:///{folder}/bench.db", workers=1, grace_seconds=1.0)
        async with trio.open_nursery() as nursery:
            running: system.Running = await nursery.start(
                lambda task_status: system.run(
                    settings, registry_for(marker), serve_http=False, task_status=task_status
                )
            )
            queue = running.queue
            await report_process_start(queue, rounds)
            await report_pause(queue, marker, rounds)
            await report_cores(queue)
            running.stop()


async def report_process_start(queue: Queue, rounds: int) -> None:
    async def run(name: str) -> None:
        task = await queue.submit(name, {})
        await settle(queue, task.id)

    first = await timed(lambda: run("process.nothing"), 1)
    warm = await timed(lambda: run("process.nothing"), rounds)
    trio_base = await timed(lambda: run("trio.nothing"), rounds)
    base = statistics.median(trio_base)
    print("submit → completed of a no-op task (1 worker)")
    print(f"  trio (baseline)          {ms(trio_base)}")
    print(f"  process, first (booting) {ms(first)}   x{first[0] / base:7.1f}")
    print(f"  process, warm pool       {ms(warm)}   x{statistics.median(warm) / base:7.1f}")


async def report_pause(queue: Queue, marker: Marker, rounds: int) -> None:
    print("pause → the next task starts on the freed worker (1 worker)")
    results: dict[str, list[float]] = {}
    answers: list[float] = []
    for kind in ("trio", "trio+checkpoint", "asyncio", "thread", "process"):
        results[kind] = []
        for _ in range(rounds):
            answered, started = await pause_to_next_start(queue, marker, kind)
            answers.append(answered)
            results[kind].append(started)
    base = statistics.median(results["trio"])
    print(f"  (the pause request itself  {ms(answers)})")
    for kind, values in results.items():
        ratio = statistics.median(values) / base
        print(f"  {kind:<24} {ms(values)}   x{ratio:5.2f} of trio")


async def report_cores(queue: Queue) -> None:
    await queue.create_worker("second")
    print(f"CPU-bound work ({BURN_LOOPS:,} loops), 2 workers: two at once vs one alone")
    for name in ("thread.burn", "process.burn"):

        async def run(count: int, name: str = name) -> None:
            tasks = [await queue.submit(name, {"loops": BURN_LOOPS}) for _ in range(count)]
            for task in tasks:
                await settle(queue, task.id)

        await run(1)  # warm up (and spawn the second process)
        one = await timed(lambda: run(1), 3)
        two = await timed(lambda: run(2), 3)
        ratio = statistics.median(two) / statistics.median(one)
        print(f"  {name:<24} one {ms(one)}; two x{ratio:4.2f} the time of one")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("-n", "--rounds", type=int, default=10)
    trio.run(main, parser.parse_args().rounds)
