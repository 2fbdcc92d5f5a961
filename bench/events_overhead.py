"""What the events hub costs next to the writer's own work, per task.

For N tasks, the same commands the system issues (create, claim, finish) are
applied by the writer's ``apply_batch`` on a fresh SQLite file, in batches of
B commands; the outcomes are then fed, as ``Committed`` batches, through the
events hub with one subscriber reading everything (the dashboard's case).
Both run in this process's main thread, one after the other, timed in CPU
seconds of that thread (``time.thread_time``: waiting for fsync and for other
processes on a shared machine is not counted). The ratio hub / writer is what
the hub adds to the process's CPU work per task: the hub runs on the event
loop and the writer on its own thread, and both hold the GIL.

    python bench/events_overhead.py                 # 20,000 tasks, batches of 64
    python bench/events_overhead.py -n 50000 -b 256
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import outcome
import trio

from taskq.actors import hub
from taskq.actors.batches import apply_batch
from taskq.messages import (
    ClaimTasks,
    Committed,
    CreateTask,
    FinishTask,
    HubMessage,
    Subscribe,
    Subscription,
    WriterCommand,
    request,
)
from taskq.metrics import Metrics
from taskq.models import NewTask, Task, utcnow
from taskq.store import Store

Batch = tuple[list[WriterCommand], list[outcome.Outcome[Any]]]


def write(store: Store, tasks: int, batch: int) -> tuple[float, list[Batch]]:
    """The writer's part: CPU seconds in ``apply_batch``, and the batches with outcomes."""
    done: list[Batch] = []
    spent = 0.0
    worker = store_worker(store)

    def run(commands: list[WriterCommand]) -> list[outcome.Outcome[Any]]:
        nonlocal spent
        started = time.thread_time()
        results, _ = apply_batch(store, commands, utcnow())
        spent += time.thread_time() - started
        done.append((commands, results))
        return results

    for first in range(0, tasks, batch):
        count = min(batch, tasks - first)
        run([CreateTask(NewTask("bench", {"n": i}), None) for i in range(count)])
        claims = run([ClaimTasks((worker,), None) for _ in range(count)])
        claimed: list[Task] = [task for result in claims for task in result.unwrap()]
        run([FinishTask(t.id, t.attempt, True, {"ok": 1}, None, None) for t in claimed])
    return spent, done


def store_worker(store: Store) -> int:
    with store.transaction() as tx:
        return tx.create_worker("bench", utcnow()).id


async def publish(batches: Sequence[Batch]) -> tuple[float, int]:
    """The hub's part: CPU seconds to number, record and fan out every change to one reader."""
    send, inbox = trio.open_memory_channel[HubMessage](math.inf)
    received = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.run, inbox, hub.HubState(), Metrics())
        subscription: Subscription = await request(
            send, lambda reply: Subscribe(None, 1 << 20, reply)
        )

        async def read() -> None:
            # As the event stream reads: one wake-up, then whatever else waits.
            nonlocal received
            async for _ in subscription.changes:
                received += 1
                while True:
                    try:
                        subscription.changes.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    received += 1

        nursery.start_soon(read)
        started = time.thread_time()
        for commands, results in batches:
            send.send_nowait(Committed(tuple(commands), tuple(results), utcnow(), 0.001))
        await send.aclose()
    return time.thread_time() - started, received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--tasks", type=int, default=20_000)
    parser.add_argument("-b", "--batch", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = Store.open(f"sqlite:///{Path(folder) / 'bench.db'}")
        try:
            writer_seconds, batches = write(store, args.tasks, args.batch)
        finally:
            store.close()
    hub_seconds, changes = trio.run(publish, batches)
    per_task = 1e6 / args.tasks
    print(f"tasks {args.tasks}, batch {args.batch}, changes published {changes}")
    print(f"writer apply_batch: {writer_seconds * per_task:7.1f} us CPU/task")
    print(f"events hub:         {hub_seconds * per_task:7.1f} us CPU/task")
    print(f"hub / writer:       {hub_seconds / writer_seconds:7.2f}")


if __name__ == "__main__":
    main()
