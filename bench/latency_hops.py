"""Where the dispatch latency goes: a timestamp at each hop of submit -> handler start.

The ``latency`` scenario of ``bench/systems/taskq.py`` (one task at a time on an
idle system, the peers' pause between them), with ``time.perf_counter`` taken at
each hop by wrapping the functions that mark it:

    0 submit      ``Queue.submit`` called
    1 writer      the writer took the command from its inbox (its ``drain``)
    2 thread      ``apply_batch`` began on the writer's thread
    3 commit      the statements ran; the transaction's COMMIT (the fsync) began
    4 committed   ``apply_batch`` returned
    5 trio        the writer back in Trio, answering (``_answer_all``)
    6 dispatcher  the claim's answer reached the dispatcher (``_by_worker``)
    7 worker      the worker took ``RunTasks`` from its inbox (``_handle``)
    8 handler     the handler's first line

Prints p50/p90/p99/max of each hop, of the total, and of the total less the
fsync (3 -> 4), which is the part the code decides; diagnostic only, it leans
on those private names.

    PYTHONPATH=. python bench/latency_hops.py --n 200
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time
from collections.abc import Mapping
from typing import Any

import trio
from sqlalchemy import event
from sqlalchemy.engine import Engine

from bench.common import LATENCY_PAUSE_SECONDS
from bench.hooks import before_calls
from bench.systems.taskq import DEFAULT_WORKERS, Marks, fresh_database, percentile, with_system
from taskq import queue
from taskq.actors import dispatcher, worker, writer
from taskq.messages import CreateTask, RunTasks
from taskq.models import Task

HOPS = ("submit", "writer", "thread", "commit", "committed", "trio", "dispatcher", "worker")

stamps: dict[int, dict[str, float]] = collections.defaultdict(dict)
latest: dict[str, Any] = {"writer": 0.0, "commit": 0.0, "number": None}


def _number(payload: Mapping[str, Any]) -> int:
    return int(payload.get("n", -1))


def _instrument() -> None:
    submit = queue.Queue.submit

    async def timed_submit(self: queue.Queue, name: str, payload: Any, **options: Any) -> Task:
        stamps[_number(payload)]["submit"] = time.perf_counter()
        return await submit(self, name, payload, **options)

    queue.Queue.submit = timed_submit  # type: ignore[method-assign]
    before_calls(writer, "drain", lambda *_: latest.update(writer=time.perf_counter()))
    event.listen(Engine, "commit", lambda _: latest.update(commit=time.perf_counter()))
    apply_batch = writer.apply_batch

    def timed_apply(store: Any, batch: Any, now: Any) -> Any:
        began = time.perf_counter()
        applied = apply_batch(store, batch, now)
        for command in batch:
            if isinstance(command, CreateTask):
                number = latest["number"] = _number(command.task.payload)
                stamps[number].update(
                    writer=latest["writer"],
                    thread=began,
                    commit=latest["commit"],
                    committed=time.perf_counter(),
                )
        return applied

    writer.apply_batch = timed_apply

    def answering(batch: Any, _results: Any) -> None:
        if any(isinstance(command, CreateTask) for command in batch):
            stamps[latest["number"]]["trio"] = time.perf_counter()

    before_calls(writer, "_answer_all", answering)

    def claimed(tasks: list[Task]) -> None:
        for task in tasks:
            stamps[_number(task.payload)]["dispatcher"] = time.perf_counter()

    before_calls(dispatcher, "_by_worker", claimed)

    def handed(_worker_id: int, _state: Any, message: Any, _links: Any) -> None:
        if isinstance(message, RunTasks):
            for task in message.tasks:
                stamps[_number(task.payload)]["worker"] = time.perf_counter()

    before_calls(worker, "_handle", handed)


def _line(label: str, values: list[float]) -> str:
    return (
        f"{label:22s} p50 {statistics.median(values):7.3f}  p90 {percentile(values, 0.9):7.3f}  "
        f"p99 {percentile(values, 0.99):7.3f}  max {max(values):7.3f} ms"
    )


def report(marks: Marks) -> None:
    hops: dict[str, list[float]] = collections.defaultdict(list)
    for number, stamped in stamps.items():
        if number < 0 or number not in marks.started or len(stamped) != len(HOPS):
            continue
        times = [stamped[hop] for hop in HOPS] + [marks.started[number][0]]
        for hop, start, end in zip(HOPS, times, times[1:], strict=False):
            hops[hop].append((end - start) * 1000)
        hops["total"].append((times[-1] - times[0]) * 1000)
        hops["total less fsync"].append(hops["total"][-1] - hops["commit"][-1])
    following = [*HOPS[1:], "handler"]
    for hop, to in zip(HOPS, following, strict=True):
        print(_line(f"{hop} -> {to}", hops[hop]))
    print(_line("total", hops["total"]))
    print(_line("total less fsync", hops["total less fsync"]))


async def run(count: int, workers: int) -> None:
    marks = Marks()

    async def body(queue: Any) -> dict[str, Any]:
        await marks.warm_up(queue)
        for number in range(count):
            await trio.sleep(LATENCY_PAUSE_SECONDS)
            await queue.submit("bench.mark", {"n": number})
            await marks.wait_for(number)
        return {}

    with fresh_database(None) as url:
        await with_system(url, workers, marks.registry(), body)
    report(marks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="tasks, one at a time")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    args = parser.parse_args()
    _instrument()
    trio.run(run, args.n, args.workers)


if __name__ == "__main__":
    main()
