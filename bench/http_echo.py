"""End-to-end throughput and scheduling delay of taskq, measured over HTTP.

Two figures, both from the server's own timestamps:

* throughput: N ``taskq.echo`` tasks submitted over HTTP by C concurrent
  connections; tasks/s from the first ``created_at`` to the last
  ``completed_at`` (the client's wall clock, first submit to "all done seen",
  is printed beside it);
* start delay: ``started_at - scheduled_at`` of tasks scheduled a lead time
  ahead on an idle system (and, for comparison, ``started_at - created_at`` of
  immediate tasks).

Runs against ``--url`` or, without it, starts its own ``python -m taskq`` on a
fresh SQLite file in a temporary folder and stops it afterwards. The client
shares the machine with the server: on a small machine it competes for the
same cores, so the CPU time of both is printed too.

    python bench/http_echo.py                       # own server, 10,000 tasks
    python bench/http_echo.py -n 2000 --workers 8
    python bench/http_echo.py --url http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import trio

START_WITHIN_SECONDS = 30.0
POLL_INTERVAL_SECONDS = 0.05
LIST_PAGE = 1000
LISTENING = re.compile(r"^taskq listening on (?P<url>http://\S+) ")

Task = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Server:
    url: str
    pid: int | None


@contextmanager
def own_server(workers: int, extra: list[str]) -> Iterator[Server]:
    """A fresh taskq on a temporary SQLite file; stopped (SIGTERM, then SIGKILL) at exit."""
    with tempfile.TemporaryDirectory(prefix="taskq-bench-") as folder:
        argv = [
            sys.executable,
            "-m",
            "taskq",
            "--db",
            f"sqlite:///{Path(folder) / 'bench.db'}",
            "--port",
            "0",
            "--workers",
            str(workers),
            "--log-level",
            "WARNING",
            *extra,
        ]
        environ = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")}
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=environ
        )
        try:
            yield Server(_wait_listening(process), process.pid)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            assert process.stdout is not None
            process.stdout.close()


def _wait_listening(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + START_WITHIN_SECONDS
    # readline blocks, but the server prints this line within a second of starting;
    # the deadline catches a server that printed something else and kept going.
    for line in process.stdout:
        if found := LISTENING.match(line):
            return found["url"]
        if time.monotonic() > deadline:
            break
    raise SystemExit(f"taskq did not report where it listens (exit code {process.poll()})")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def utc_in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).replace(tzinfo=None).isoformat()


async def submit_echoes(client: httpx.AsyncClient, count: int, concurrency: int) -> list[int]:
    ids: list[int] = []
    numbers = iter(range(count))

    async def submitter() -> None:
        for number in numbers:
            response = await client.post(
                "/api/tasks/", json={"name": "taskq.echo", "payload": {"n": number}}
            )
            response.raise_for_status()
            ids.append(response.json()["id"])

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(submitter)
    return ids


async def wait_idle(client: httpx.AsyncClient) -> None:
    """Until no task is pending or running (a pending -> running claim is one update)."""
    while True:
        busy = False
        for status in ("pending", "running"):
            response = await client.get("/api/tasks/", params={"status": status, "limit": 1})
            response.raise_for_status()
            busy = busy or bool(response.json())
        if not busy:
            return
        await trio.sleep(POLL_INTERVAL_SECONDS)


async def fetch(client: httpx.AsyncClient, ids: set[int]) -> list[Task]:
    found: list[Task] = []
    skip = 0
    while True:
        response = await client.get("/api/tasks/", params={"skip": skip, "limit": LIST_PAGE})
        response.raise_for_status()
        page: list[Task] = response.json()
        found.extend(task for task in page if task["id"] in ids)
        if len(page) < LIST_PAGE:
            return found
        skip += LIST_PAGE


async def wait_completed(client: httpx.AsyncClient, task_id: int) -> Task:
    while True:
        response = await client.get(f"/api/tasks/{task_id}")
        response.raise_for_status()
        task: Task = response.json()
        if task["status"] in ("completed", "failed"):
            return task
        await trio.sleep(POLL_INTERVAL_SECONDS)


async def throughput(server: Server, count: int, concurrency: int) -> None:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as client:
        server_cpu = cpu_seconds(server.pid) if server.pid else math.nan
        client_cpu = time.process_time()
        started = time.perf_counter()
        ids = await submit_echoes(client, count, concurrency)
        submitted = time.perf_counter()
        await wait_idle(client)
        done = time.perf_counter()
        server_cpu = (cpu_seconds(server.pid) if server.pid else math.nan) - server_cpu
        client_cpu = time.process_time() - client_cpu
        tasks = await fetch(client, set(ids))

    completed = [task for task in tasks if task["status"] == "completed"]
    first = min(parse_time(task["created_at"]) for task in tasks)
    last = max(parse_time(task["completed_at"]) for task in completed)
    server_span = (last - first).total_seconds()

    def rate(label: str, seconds: float, done_count: int) -> None:
        print(f"  {label:<44} {seconds:7.2f} s {done_count / seconds:8.0f} tasks/s")

    print(f"throughput: {count} taskq.echo over HTTP, {concurrency} connections")
    print(f"  completed {len(completed)} of {len(ids)} acknowledged")
    rate("submit phase (client clock)", submitted - started, count)
    rate("first created -> last completed (server clock)", server_span, len(completed))
    rate("first submit -> all done seen (client clock)", done - started, count)
    print(f"  CPU: client {client_cpu:.1f} s, server {server_cpu:.1f} s")


async def delays(server: Server, lead_seconds: float, runs: int) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        scheduled: list[float] = []
        immediate: list[float] = []
        for number in range(runs):
            response = await client.post(
                "/api/tasks/",
                json={
                    "name": "taskq.echo",
                    "payload": {"run": number},
                    "scheduled_at": utc_in(lead_seconds),
                },
            )
            response.raise_for_status()
            task = await wait_completed(client, response.json()["id"])
            start = parse_time(task["started_at"]) - parse_time(task["scheduled_at"])
            scheduled.append(start.total_seconds() * 1000)

            response = await client.post(
                "/api/tasks/", json={"name": "taskq.echo", "payload": {"now": number}}
            )
            response.raise_for_status()
            task = await wait_completed(client, response.json()["id"])
            start = parse_time(task["started_at"]) - parse_time(task["created_at"])
            immediate.append(start.total_seconds() * 1000)

    def summary(values: list[float]) -> str:
        shown = ", ".join(f"{value:.2f}" for value in values)
        return f"median {statistics.median(values):.2f} ms, max {max(values):.2f} ms  ({shown})"

    print(f"start delay, idle system, {runs} runs")
    print(f"  scheduled {lead_seconds:g} s ahead: started_at - scheduled_at  {summary(scheduled)}")
    print(f"  immediate:            started_at - created_at    {summary(immediate)}")


async def bench(server: Server, args: argparse.Namespace) -> None:
    print(f"taskq at {server.url}")
    if args.tasks:
        await throughput(server, args.tasks, args.concurrency)
    if args.delay_runs:
        await delays(server, args.lead, args.delay_runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running taskq; without it, start one")
    parser.add_argument("-n", "--tasks", type=int, default=10_000, help="echo tasks to submit")
    parser.add_argument("-c", "--concurrency", type=int, default=32, help="HTTP connections")
    parser.add_argument("--workers", type=int, default=4, help="workers of the started taskq")
    parser.add_argument("--lead", type=float, default=2.0, help="seconds ahead to schedule")
    parser.add_argument("--delay-runs", type=int, default=5, help="scheduled tasks to time")
    parser.add_argument(
        "server_args", nargs="*", help="more options for the started taskq (after --)"
    )
    args = parser.parse_args()
    if args.url:
        trio.run(bench, Server(args.url.rstrip("/"), None), args)
    else:
        with own_server(args.workers, args.server_args) as server:
            trio.run(bench, server, args)


if __name__ == "__main__":
    main()
