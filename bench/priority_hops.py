"""Where an urgent task's time goes under load: a timestamp at each hop, POST -> handler.

The ``priority`` scenario of ``bench/systems/taskq.py`` (N LOW no-op tasks queued,
the workers draining them, CRITICAL ``bench.mark`` tasks POSTed one at a time),
with the server started with this module as its tasks module. Imported there, it
wraps the functions that mark each hop and appends ``number hop time.time()``
lines to a file (same wall clock in both processes). The hops:

    0 post        the client sends the POST
    1 route       ``Queue.submit`` called in the server
    2 writer      the writer took the batch holding the create from its inbox
    3 thread      ``apply_batch`` began on the writer's thread
    4 committed   ``apply_batch`` returned
    5 answered    the writer back in Trio, answering (``_answer_all``)
    6 dispatcher  the claim that took the task reached the dispatcher (``_by_worker``)
    7 worker      the worker took ``RunTasks`` from its inbox (``_handle``)
    8 handler     the handler's first line

It also numbers every batch the writer applies and says how many batches after the
create's own the claim that took the task came ("0": in the commit that stored it),
and prints, for the slowest samples, every batch around them: how long it took, its
commands by kind and its claims' shapes (workers x tasks each). "post -> response"
is the client's wait for its 201, beside the chain. Diagnostic only: it leans on
private names.

    PYTHONPATH=. python bench/priority_hops.py [--db URL] [--n 100000] [--samples 50]
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import outcome
import trio

import taskq
from bench.hooks import before_calls

HOPS_FILE_ENV = "BENCH_HOPS_FILE"
CHAIN = ("post", "route", "writer", "thread", "committed", "answered", "dispatcher", "worker")
URGENT = "bench.mark"
BATCH = -1


@functools.cache
def _hops_fd() -> int:
    return os.open(os.environ[HOPS_FILE_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def _write(*fields: object) -> None:
    os.write(_hops_fd(), (" ".join(map(str, fields)) + "\n").encode())


def _stamp(number: int, hop: str, at: float | None = None) -> None:
    _write(number, hop, f"{time.time() if at is None else at:.6f}")


@taskq.task(URGENT)
async def mark(payload: Mapping[str, Any]) -> None:
    _stamp(int(payload["n"]), "handler")


def _urgent_numbers(tasks: Any) -> list[int]:
    return [int(task.payload["n"]) for task in tasks if task.name == URGENT]


def _instrument() -> None:
    from taskq import queue
    from taskq.actors import dispatcher, worker, writer
    from taskq.messages import ClaimTasks, CreateTask, RunTasks

    latest = {"writer": 0.0, "batches": 0}
    submit = queue.Queue.submit

    async def timed_submit(self: Any, name: str, payload: Any, **options: Any) -> Any:
        if name == URGENT:
            _stamp(int(payload["n"]), "route")
        return await submit(self, name, payload, **options)

    queue.Queue.submit = timed_submit  # type: ignore[method-assign]
    before_calls(writer, "drain", lambda *_: latest.update(writer=time.time()))
    apply_batch = writer.apply_batch

    def timed_apply(store: Any, batch: Any, now: Any) -> Any:
        began = time.time()
        applied = apply_batch(store, batch, now)
        ended = time.time()
        index = latest["batches"] = int(latest["batches"]) + 1
        kinds = collections.Counter(type(command).__name__ for command in batch)
        claims = [command for command in batch if isinstance(command, ClaimTasks)]
        shapes = ",".join(f"{len(c.worker_ids)}x{c.per_worker}" for c in claims) or "-"
        _write(BATCH, index, f"{began:.6f}", f"{ended:.6f}", shapes, *sorted(kinds.items()))
        for command, result in zip(batch, applied[0], strict=True):
            if isinstance(command, CreateTask) and command.task.name == URGENT:
                number = int(command.task.payload["n"])
                _stamp(number, "writer", float(latest["writer"]))
                _stamp(number, "thread", began)
                _stamp(number, "committed", ended)
                _write(number, "created_in", index)
            if isinstance(command, ClaimTasks) and isinstance(result, outcome.Value):
                for number in _urgent_numbers(result.value):
                    _write(number, "claimed_in", index)
        return applied

    writer.apply_batch = timed_apply

    def answering(batch: Any, _results: Any) -> None:
        for command in batch:
            if isinstance(command, CreateTask) and command.task.name == URGENT:
                _stamp(int(command.task.payload["n"]), "answered")

    before_calls(writer, "_answer_all", answering)

    def claimed(tasks: list[Any]) -> None:
        for number in _urgent_numbers(tasks):
            _stamp(number, "dispatcher")

    before_calls(dispatcher, "_by_worker", claimed)

    def handed(_worker_id: int, state: Any, message: Any, _links: Any) -> None:
        if isinstance(message, RunTasks):
            for number in _urgent_numbers(message.tasks):
                _stamp(number, "worker")

    before_calls(worker, "_handle", handed)


def _line(label: str, values: list[float]) -> str:
    from bench.systems.taskq import percentile

    return (
        f"{label:22s} p50 {statistics.median(values):7.2f}  p90 {percentile(values, 0.9):7.2f}  "
        f"p99 {percentile(values, 0.99):7.2f}  max {max(values):7.2f} ms"
    )


def _read(path: Path) -> tuple[dict[int, dict[str, float]], list[list[str]]]:
    stamps: dict[int, dict[str, float]] = collections.defaultdict(dict)
    batches = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if int(fields[0]) == BATCH:
            batches.append(fields[1:])
        else:
            stamps[int(fields[0])][fields[1]] = float(fields[2])
    return stamps, batches


def report(path: Path, worst: int) -> None:
    stamps, batches = _read(path)
    complete = {
        number: stamped
        for number, stamped in stamps.items()
        if all(hop in stamped for hop in (*CHAIN, "handler", "response", "claimed_in"))
    }
    hops: dict[str, list[float]] = collections.defaultdict(list)
    for stamped in complete.values():
        times = [stamped[hop] for hop in (*CHAIN, "handler")]
        for hop, start, end in zip(CHAIN, times, times[1:], strict=False):
            hops[hop].append((end - start) * 1000)
        hops["total"].append((times[-1] - times[0]) * 1000)
        hops["post -> response"].append((stamped["response"] - stamped["post"]) * 1000)
    for hop, to in zip(CHAIN, [*CHAIN[1:], "handler"], strict=True):
        print(_line(f"{hop} -> {to}", hops[hop]))
    for label in ("total", "post -> response"):
        print(_line(label, hops[label]))
    later = collections.Counter(
        int(stamped["claimed_in"] - stamped["created_in"]) for stamped in complete.values()
    )
    print("claimed N batches after the create's:", dict(sorted(later.items())))
    slowest = sorted(complete.items(), key=lambda item: item[1]["post"] - item[1]["handler"])
    for number, stamped in slowest[:worst]:
        _timeline(number, stamped, batches)


def _timeline(number: int, stamped: dict[str, float], batches: list[list[str]]) -> None:
    start, end = stamped["post"], stamped["handler"]
    print(f"--- #{number}: {(end - start) * 1000:.1f} ms (ms from the POST)")
    events = [(stamped[hop], hop) for hop in (*CHAIN, "handler", "response")]
    for index, began, ended, shapes, *kinds in batches:
        if float(ended) >= start - 0.05 and float(began) <= end:
            took = (float(ended) - float(began)) * 1000
            label = f"  batch {index} {took:5.1f} ms, claims {shapes}: {' '.join(kinds)}"
            events.append((float(began), label))
    for at, label in sorted(events):
        print(f"{(at - start) * 1000:8.1f}  {label}")


async def run(args: argparse.Namespace, hops: Path) -> None:
    from bench.systems import taskq as bench
    from taskq.models import Priority

    with bench.fresh_database(args.db) as url:
        bench.fill(url, args.n, "taskq.echo", Priority.LOW)
        with bench.taskq_server(url, args.workers, "bench.priority_hops") as server:
            connection = await bench.HttpConnection.open(server)
            low_done = "/api/tasks/?status=completed&limit=1"
            while not (await connection.request("GET", low_done))[1]:  # noqa: ASYNC110
                await trio.sleep(bench.POLL_SECONDS)
            for number in range(args.samples):
                body = {"name": URGENT, "payload": {"n": number}, "priority": bench.CRITICAL}
                await trio.sleep(bench.PRIORITY_SPACING_SECONDS)
                _stamp(number, "post")
                status, created = await connection.request("POST", "/api/tasks/", body)
                _stamp(number, "response")
                assert status == 201, created
                while not _started(hops, number):  # noqa: ASYNC110 - the server writes a file
                    await trio.sleep(bench.MARK_POLL_SECONDS)
            await connection.aclose()


def _started(hops: Path, number: int) -> bool:
    return f"\n{number} handler " in "\n" + hops.read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--n", type=int, default=100_000, help="LOW tasks queued")
    parser.add_argument("--samples", type=int, default=50, help="CRITICAL tasks")
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--worst", type=int, default=3, help="timelines of the slowest")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="taskq-hops-") as folder:
        hops = Path(folder) / "hops.log"
        hops.touch()
        os.environ[HOPS_FILE_ENV] = str(hops)
        trio.run(run, args, hops)
        report(hops, args.worst)


if __name__ == "__main__":
    main()
elif HOPS_FILE_ENV in os.environ and "bench.systems.taskq" not in sys.modules:
    _instrument()
