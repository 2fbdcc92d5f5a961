"""taskq under the shared benchmark scenarios; prints one JSON object as its last line.

    python bench/systems/taskq.py <scenario> [--n N] [--lead S] [--connections C]
                                             [--workers W] [--db URL]

Python-API scenarios run the whole system in this process (no HTTP):

* ``throughput``: after one warm-up task, N ``taskq.echo`` tasks enqueued in bulk
  (``Queue.submit_many``, 1,000 per call), drained by the workers; rates from the
  first enqueue to the last ``completed_at``, read from the database once drained.
* ``latency``: N tasks one after another on an idle system, each after the peers'
  pause (``bench.common.LATENCY_PAUSE_SECONDS``); enqueue (just before ``submit``)
  -> the handler's first line. On SQLite, in turns with those tasks, the disk's own
  floor (``CommitFloor``): one row committed by SQLite alone after the same pause.
* ``punctuality``: N tasks, each scheduled ``--lead`` s ahead, submitted 10 ms
  apart; the handler's first line (wall clock) - ``scheduled_at``.

Both first run one warm-up task, as the peers' runs do.

HTTP scenarios start ``python -m taskq`` on a fresh SQLite file (or a fresh
PostgreSQL database with ``--db``) and talk to it with a small HTTP/1.1
keep-alive client on raw Trio sockets (about 20 us of client CPU per request,
far below the server's cost, so the client is not the bottleneck):

* ``throughput_http``: N single ``POST /api/tasks/`` over C connections.
* ``throughput_batch``: N tasks through ``POST /api/tasks/batch`` (1,000 a request).
* ``http``: requests/s and latency of create and get (server with no workers, so
  only the API is measured) against a bare Quart-Trio endpoint served the same way,
  in rounds that take turns between the two servers.
* ``scale``: claim rate with 1,000 and with N (default 1,000,000) tasks queued,
  ``GET /api/tasks/?status=pending&limit=100`` latency and the server's RSS at depth.
* ``priority``: CRITICAL tasks submitted one at a time behind 100,000 queued LOW ones;
  POST -> the handler's own start (``bench/taskq_marks.py`` stamps it).
* ``cluster``: N queued tasks drained by 1, 2 and 3 ``python -m taskq`` processes on
  one PostgreSQL database (``bench/cluster.py``): tasks/s and the ratio to one process.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path and would shadow the package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

import argparse  # noqa: E402
import functools  # noqa: E402
import gc  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import sqlite3  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Awaitable, Callable, Iterator, Mapping  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402

import trio  # noqa: E402
from sqlalchemy import create_engine, func, insert, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench import cluster as cluster_bench  # noqa: E402
from bench.common import (  # noqa: E402
    FULL_N,
    LATENCY_PAUSE_SECONDS,
    PUNCTUALITY_SPACING_SECONDS,
    WARM_UP_TASK,
)
from taskq import system  # noqa: E402
from taskq.config import Settings  # noqa: E402
from taskq.models import NewTask, Priority, TaskStatus, utcnow  # noqa: E402
from taskq.registry import Registry  # noqa: E402
from taskq.store import Store  # noqa: E402
from taskq.store.schema import tasks as tasks_table  # noqa: E402

START_WITHIN_SECONDS = 60.0
POLL_SECONDS = 0.05
# Drained: nothing pending or running. Polled often, so the end is seen within ~20 ms.
DRAIN_POLL_SECONDS = 0.02
BUSY = (TaskStatus.PENDING, TaskStatus.RUNNING)
SUBMIT_CHUNK = 1000
LISTENING = re.compile(r"(?:taskq listening on|bare listening on) (?P<url>http://\S+)")
DEFAULT_WORKERS = 32
SCALE_SAMPLE = 1000
PRIORITY_SAMPLES = 20
# The http scenario's turns between taskq and the bare stack: short turns, so that a slower
# stretch of this shared machine falls on both sides alike.
HTTP_ROUNDS = 6
# Between CRITICAL tasks, so that each meets workers busy with LOW ones again.
PRIORITY_SPACING_SECONDS = 0.05
MARK_POLL_SECONDS = 0.001
MARKS_FILE_ENV = "BENCH_MARKS_FILE"
CRITICAL = int(Priority.CRITICAL)
# The cluster scenario: these process counts, each with this many workers.
CLUSTER_NODES = (1, 2, 3)
CLUSTER_WORKERS = 8

Json = dict[str, Any]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def summary_ms(values: list[float]) -> Json:
    return {
        "p50_ms": round(statistics.median(values), 3),
        "p99_ms": round(percentile(values, 0.99), 3),
    }


# --- databases ---------------------------------------------------------------------


@contextmanager
def fresh_database(url: str | None) -> Iterator[str]:
    """A new SQLite file in a temporary folder, or a new uniquely named PostgreSQL database."""
    if url is None or make_url(url).get_backend_name() == "sqlite":
        with tempfile.TemporaryDirectory(prefix="taskq-bench-") as folder:
            yield f"sqlite:///{Path(folder) / 'bench.db'}"
        return
    name = f"taskq_bench_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def fill(url: str, count: int, name: str, priority: Priority) -> None:
    """Queue ``count`` pending tasks straight into the database (set-up, not measured)."""
    store = Store.open(url)
    try:
        now = utcnow()
        row = {
            "name": name,
            "payload": {},
            "priority": int(priority),
            "scheduled_at": None,
            "status": str(TaskStatus.PENDING),
            "created_at": now,
            "updated_at": now,
            "attempt": 0,
        }
        for start in range(0, count, 50_000):
            with store.engine.begin() as connection:
                connection.execute(insert(tasks_table), [row] * min(50_000, count - start))
    finally:
        store.close()


# --- in-process scenarios (Python API) -----------------------------------------------


class Marks:
    """What the ``bench.mark`` handler saw: when each task's handler started."""

    def __init__(self) -> None:
        self.started: dict[int, tuple[float, datetime]] = {}
        self.changed = trio.Event()

    def registry(self) -> Registry:
        registry = Registry()

        @registry.task("bench.mark")
        async def mark(payload: Mapping[str, Any]) -> None:
            self.started[int(payload["n"])] = (time.perf_counter(), utcnow())
            self.changed.set()
            self.changed = trio.Event()

        return registry

    async def wait_for(self, number: int) -> tuple[float, datetime]:
        while number not in self.started:
            await self.changed.wait()
        return self.started[number]

    async def warm_up(self, queue: Any) -> None:
        """One task through the whole path before measuring, as every peer's run has:
        the workers' start-up is not part of the first measured task."""
        await queue.submit("bench.mark", {"n": WARM_UP_TASK})
        await self.wait_for(WARM_UP_TASK)


async def with_system(
    url: str, workers: int, registry: Registry, body: Callable[[Any], Awaitable[Json]]
) -> Json:
    settings = Settings(db_url=url, workers=workers, port=0, log_level="WARNING")
    async with trio.open_nursery() as nursery:
        running: system.Running = await nursery.start(
            functools.partial(system.run, settings, registry, serve_http=False)
        )
        try:
            return await body(running.queue)
        finally:
            running.stop()


def bulk_method(queue: Any) -> str:
    if hasattr(queue, "submit_many"):
        return f"submit_many in chunks of {SUBMIT_CHUNK}"
    return "no submit_many in this version: 64 concurrent single submits"


async def submit_bulk(queue: Any, news: list[NewTask], concurrency: int) -> None:
    """In chunks through ``submit_many``; one at a time where the queue lacks it."""
    if hasattr(queue, "submit_many"):
        chunks = iter(range(0, len(news), SUBMIT_CHUNK))

        async def submitter() -> None:
            for start in chunks:
                await queue.submit_many(news[start : start + SUBMIT_CHUNK])

    else:
        items = iter(news)

        async def submitter() -> None:
            for new in items:
                await queue.submit(new.name, new.payload, priority=new.priority)

        concurrency = 64
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(submitter)


async def drained(queue: Any, count: int) -> float:
    """perf_counter when nothing is pending or running any more; all ``count`` completed."""
    while True:
        busy = [await queue.list_tasks(status=status, limit=1) for status in BUSY]
        if not any(busy):
            finished = time.perf_counter()
            break
        await trio.sleep(DRAIN_POLL_SECONDS)
    last = await queue.list_tasks(status=TaskStatus.COMPLETED, skip=count - 1, limit=1)
    assert last, f"fewer than {count} tasks completed"
    return finished


async def echo_warmed_up(queue: Any) -> int:
    """One ``taskq.echo`` through the whole path before measuring, as every peer's run
    has (``bench.common.running_workers``): the workers' start-up is not measured.
    Answers its id; the measured tasks come after it."""
    task = await queue.submit("taskq.echo", {"n": WARM_UP_TASK})
    await drained(queue, 1)
    return int(task.id)


def last_completed(url: str, after_id: int) -> float:
    """The latest ``completed_at`` of the tasks after ``after_id``, as a ``time.time()``
    value: the end of a run to the last completion, as the peers' runs end at their
    last handler's stamp, rather than at whichever drain poll first saw it."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            latest = connection.execute(
                select(func.max(tasks_table.c.completed_at)).where(tasks_table.c.id > after_id)
            ).scalar_one()
    finally:
        engine.dispose()
    return float(latest.replace(tzinfo=UTC).timestamp())


async def throughput(args: argparse.Namespace) -> Json:
    news = [NewTask("taskq.echo", {"n": number}) for number in range(args.n)]

    async def body(url: str, queue: Any) -> Json:
        warm_up_id = await echo_warmed_up(queue)
        started = time.time()
        await submit_bulk(queue, news, concurrency=2)
        enqueued = time.time() - started
        await drained(queue, args.n + 1)
        finished = last_completed(url, warm_up_id)
        return {
            "enqueue_per_s": round(args.n / enqueued),
            "end_to_end_per_s": round(args.n / (finished - started)),
            "n": args.n,
            "config": f"in-process Python API, {args.workers} workers, "
            f"{bulk_method(queue)}, {backend(args.db)}",
        }

    with fresh_database(args.db) as url:
        return await with_system(url, args.workers, Registry(), functools.partial(body, url))


class CommitFloor:
    """The disk's floor under any durable dispatch: SQLite alone committing one row,
    in WAL mode with ``synchronous=FULL`` as taskq's database is, after the same pause.

    Taken in turns with taskq's tasks, so that both meet the disk in the same state:
    what taskq's latency holds beyond it is taskq's own.
    """

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=FULL")
        self.connection.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, payload TEXT)")
        self.times_ms: list[float] = []

    @classmethod
    def beside(cls, url: str) -> CommitFloor | None:
        """A floor on the disk of the SQLite database ``url``; None on PostgreSQL."""
        location = make_url(url)
        if location.get_backend_name() != "sqlite" or not location.database:
            return None
        return cls(Path(location.database).with_name("floor.db"))

    def commit_one(self) -> None:
        """``BEGIN IMMEDIATE``, one ``INSERT``, ``COMMIT`` (its fsync), timed whole."""
        began = time.perf_counter()
        self.connection.execute("BEGIN IMMEDIATE")
        self.connection.execute("INSERT INTO rows (payload) VALUES (?)", ('{"n": 0}',))
        self.connection.execute("COMMIT")
        self.times_ms.append((time.perf_counter() - began) * 1000)

    def summary(self) -> Json:
        return {
            **summary_ms(self.times_ms),
            "config": "SQLite alone (WAL, synchronous=FULL): BEGIN IMMEDIATE, one INSERT, "
            "COMMIT, after the same pause, in turns with taskq's tasks",
        }


async def latency(args: argparse.Namespace) -> Json:
    marks = Marks()

    async def body(floor: CommitFloor | None, queue: Any) -> Json:
        await marks.warm_up(queue)
        delays: list[float] = []
        for number in range(args.n):
            # The peers' pause: each task meets an idle system, and the run lasts as long
            # as theirs, periodic work (heartbeats) included.
            await trio.sleep(LATENCY_PAUSE_SECONDS)
            started = time.perf_counter()
            await queue.submit("bench.mark", {"n": number})
            began, _ = await marks.wait_for(number)
            delays.append((began - started) * 1000)
            if floor is not None:
                await trio.sleep(LATENCY_PAUSE_SECONDS)
                floor.commit_one()
        return {
            **summary_ms(delays),
            "n": args.n,
            "config": f"in-process Python API, {args.workers} workers, submit -> handler "
            f"start, one task at a time, {backend(args.db)}",
            **({} if floor is None else {"commit_floor": floor.summary()}),
        }

    with fresh_database(args.db) as url:
        floor = CommitFloor.beside(url)
        try:
            measured = functools.partial(body, floor)
            return await with_system(url, args.workers, marks.registry(), measured)
        finally:
            if floor is not None:
                floor.connection.close()


async def punctuality(args: argparse.Namespace) -> Json:
    marks = Marks()

    async def body(queue: Any) -> Json:
        await marks.warm_up(queue)
        due: dict[int, datetime] = {}
        for number in range(args.n):
            at = utcnow() + timedelta(seconds=args.lead)
            due[number] = at
            await queue.submit("bench.mark", {"n": number}, scheduled_at=at)
            await trio.sleep(PUNCTUALITY_SPACING_SECONDS)
        late = []
        for number in range(args.n):
            _, wall = await marks.wait_for(number)
            late.append((wall - due[number]).total_seconds() * 1000)
        return {
            **summary_ms(late),
            "max_ms": round(max(late), 3),
            "min_ms": round(min(late), 3),
            "n": args.n,
            "config": f"in-process Python API, {args.workers} workers, each task scheduled "
            f"{args.lead:g} s ahead, submitted {PUNCTUALITY_SPACING_SECONDS * 1000:g} ms apart; "
            "handler start (wall clock) - scheduled_at",
        }

    with fresh_database(args.db) as url:
        return await with_system(url, args.workers, marks.registry(), body)


# --- HTTP: servers and a lean client ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Server:
    url: str
    pid: int

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        return host, int(port)


@contextmanager
def serve(argv: list[str]) -> Iterator[Server]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")}
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=environ
    )
    try:
        yield Server(_wait_listening(process), process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()


def taskq_server(url: str, workers: int, *modules: str) -> Any:
    argv = [sys.executable, "-m", "taskq", "--db", url, "--port", "0"]
    argv += ["--workers", str(workers), "--log-level", "WARNING"]
    for module in modules:
        argv += ["--tasks", module]
    return serve(argv)


def backend(url: str | None) -> str:
    """How the run stores its tasks, as the ``config`` strings say it."""
    if url is None or make_url(url).get_backend_name() == "sqlite":
        return "SQLite WAL synchronous=FULL"
    return "PostgreSQL"


def _wait_listening(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + START_WITHIN_SECONDS
    for line in process.stdout:
        if found := LISTENING.search(line):
            return found["url"]
        if time.monotonic() > deadline:
            break
    raise SystemExit(f"the server did not report where it listens (exit {process.poll()})")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class HttpConnection:
    """HTTP/1.1 with keep-alive on one socket; enough for JSON request/response.

    hypercorn closes a keep-alive connection after 1,000 requests (its
    ``keep_alive_max_requests``); a GET that finds its connection closed that way is sent
    again on a new one. Anything else the server closes on is an error.
    """

    def __init__(self, stream: trio.SocketStream, address: tuple[str, int]) -> None:
        self.stream = stream
        self.address = address
        self.buffer = bytearray()

    @classmethod
    async def open(cls, server: Server) -> HttpConnection:
        return cls(await trio.open_tcp_stream(*server.address), server.address)

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        try:
            return await self._exchange(method, path, body)
        except (ConnectionError, trio.BrokenResourceError):
            if method != "GET" or self.buffer:
                raise
        await self.stream.aclose()
        self.stream = await trio.open_tcp_stream(*self.address)
        return await self._exchange(method, path, body)

    async def _exchange(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.address[0]}\r\n"
        data = b""
        if body is not None:
            data = json.dumps(body).encode()
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        await self.stream.send_all(head.encode() + b"\r\n" + data)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            await self._read()
        header = bytes(self.buffer[:end]).decode("latin-1")
        del self.buffer[: end + 4]
        status = int(header[9:12])
        found = re.search(r"(?im)^content-length:\s*(\d+)", header)
        length = int(found[1]) if found else 0
        while len(self.buffer) < length:
            await self._read()
        payload = bytes(self.buffer[:length])
        del self.buffer[:length]
        return status, json.loads(payload) if payload else None

    async def _read(self) -> None:
        chunk = await self.stream.receive_some(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    async def aclose(self) -> None:
        await self.stream.aclose()


@contextmanager
def collector_paused() -> Iterator[None]:
    """The client keeps every response body: left on, its own garbage collector stops all
    32 connections at once every few hundred requests, and that pause would be counted
    as the server's latency."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def load(
    server: Server,
    connections: int,
    requests: list[tuple[str, str, Any]],
    expect: int,
) -> tuple[float, list[float], list[Any]]:
    """Send ``requests`` over ``connections`` keep-alive connections; (seconds, ms each, bodies)."""
    opened = [await HttpConnection.open(server) for _ in range(connections)]
    numbered = iter(enumerate(requests))
    times: list[float] = [0.0] * len(requests)
    bodies: list[Any] = [None] * len(requests)

    async def client(connection: HttpConnection) -> None:
        for index, (method, path, body) in numbered:
            started = time.perf_counter()
            status, answer = await connection.request(method, path, body)
            times[index] = (time.perf_counter() - started) * 1000
            if status != expect:
                raise SystemExit(f"{method} {path} answered {status}: {answer}")
            bodies[index] = answer

    with collector_paused():
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for connection in opened:
                nursery.start_soon(client, connection)
        elapsed = time.perf_counter() - started
    for connection in opened:
        await connection.aclose()
    return elapsed, times, bodies


async def http_drained(server: Server, count: int) -> float:
    """perf_counter when the server has nothing pending or running; all ``count`` completed."""
    connection = await HttpConnection.open(server)
    while True:
        busy = [
            (await connection.request("GET", f"/api/tasks/?status={status}&limit=1"))[1]
            for status in BUSY
        ]
        if not any(busy):
            finished = time.perf_counter()
            break
        await trio.sleep(DRAIN_POLL_SECONDS)
    _, last = await connection.request("GET", f"/api/tasks/?status=completed&skip={count - 1}")
    assert last, f"fewer than {count} tasks completed"
    await connection.aclose()
    return finished


async def completed_tasks(server: Server, count: int) -> list[Json]:
    """The first ``count`` tasks to complete, once they have (polled, then fetched)."""
    connection = await HttpConnection.open(server)
    path = f"/api/tasks/?status=completed&skip={count - 1}&limit=1"
    while not (await connection.request("GET", path))[1]:  # noqa: ASYNC110 - polls over HTTP
        await trio.sleep(POLL_SECONDS)
    done: list[Json] = []
    while len(done) < count:
        _, page = await connection.request(
            "GET", f"/api/tasks/?status=completed&skip={len(done)}&limit=1000"
        )
        done.extend(page)
    await connection.aclose()
    return done[:count]


def echo_body(number: int, **extra: Any) -> Json:
    return {"name": "taskq.echo", "payload": {"n": number}, **extra}


async def http_end_to_end(
    server: Server, args: argparse.Namespace, requests: list[tuple[str, str, Any]], per: int
) -> Json:
    started = time.perf_counter()
    elapsed, _, _ = await load(server, args.connections, requests, 201)
    finished = await http_drained(server, args.n)
    return {
        "enqueue_per_s": round(len(requests) * per / elapsed),
        "end_to_end_per_s": round(args.n / (finished - started)),
        "n": args.n,
    }


async def throughput_http(args: argparse.Namespace) -> Json:
    requests = [("POST", "/api/tasks/", echo_body(number)) for number in range(args.n)]
    with fresh_database(args.db) as url, taskq_server(url, args.workers) as server:
        found = await http_end_to_end(server, args, requests, 1)
    return {
        **found,
        "config": f"python -m taskq --workers {args.workers}, {backend(args.db)}; single "
        f"POST /api/tasks/ over {args.connections} keep-alive connections from a raw-socket "
        "Trio client",
    }


async def throughput_batch(args: argparse.Namespace) -> Json:
    requests = [
        (
            "POST",
            "/api/tasks/batch",
            {"tasks": [echo_body(n) for n in range(start, min(args.n, start + SUBMIT_CHUNK))]},
        )
        for start in range(0, args.n, SUBMIT_CHUNK)
    ]
    connections = min(args.connections, 4)
    with fresh_database(args.db) as url, taskq_server(url, args.workers) as server:
        found = await http_end_to_end(
            server,
            argparse.Namespace(**{**vars(args), "connections": connections}),
            requests,
            SUBMIT_CHUNK,
        )
    found["enqueue_per_s"] = round(found["enqueue_per_s"] * args.n / (len(requests) * SUBMIT_CHUNK))
    return {
        **found,
        "config": f"python -m taskq --workers {args.workers}, {backend(args.db)}; "
        f"POST /api/tasks/batch with {SUBMIT_CHUNK} tasks each over {connections} "
        "keep-alive connections from a raw-socket Trio client",
    }


def rate(elapsed: float, times: list[float]) -> Json:
    return {"rps": round(len(times) / elapsed), **summary_ms(times)}


async def http(args: argparse.Namespace) -> Json:
    """Creates and gets on taskq and POSTs on the bare stack, in ``HTTP_ROUNDS`` rounds that
    take turns (taskq creates, bare, taskq gets of what was just created), both servers up
    throughout: a stretch of a busier machine falls on both sides alike."""
    creates = [("POST", "/api/tasks/", echo_body(number)) for number in range(args.n)]
    bare_posts = [("POST", "/bare", echo_body(number)) for number in range(args.n)]
    bare_argv = [sys.executable, str(_HERE / "taskq.py"), "serve_bare"]
    runs: dict[str, list[tuple[float, list[float]]]] = {"create": [], "get": [], "bare": []}
    with (
        fresh_database(args.db) as url,
        taskq_server(url, 0) as server,
        serve(bare_argv) as bare_server,
    ):
        await load(server, args.connections, creates[: args.n // 10], 201)  # warm-up
        await load(bare_server, args.connections, bare_posts[: args.n // 10], 201)
        for part in _parts(args.n, HTTP_ROUNDS):
            elapsed, times, bodies = await load(server, args.connections, creates[part], 201)
            runs["create"].append((elapsed, times))
            elapsed, times, _ = await load(bare_server, args.connections, bare_posts[part], 201)
            runs["bare"].append((elapsed, times))
            gets = [("GET", f"/api/tasks/{body['id']}", None) for body in bodies]
            elapsed, times, _ = await load(server, args.connections, gets, 200)
            runs["get"].append((elapsed, times))
    create, get, bare = (_pooled(runs[kind]) for kind in ("create", "get", "bare"))
    return {
        "create": create,
        "get": get,
        "bare": bare,
        "create_vs_bare": round(create["rps"] / bare["rps"], 3),
        "get_vs_bare": round(get["rps"] / bare["rps"], 3),
        "connections": args.connections,
        "n": args.n,
        "config": f"python -m taskq --workers 0 (the API alone), {backend(args.db)}; "
        "bare: a Quart-Trio POST route answering 201 {} on hypercorn, same settings; "
        f"{args.connections} keep-alive connections from a raw-socket Trio client; "
        f"{HTTP_ROUNDS} rounds taking turns (creates, bare, gets), pooled",
    }


def _parts(count: int, rounds: int) -> list[slice]:
    """``count`` requests in ``rounds`` consecutive slices of (nearly) equal size."""
    bounds = [count * index // rounds for index in range(rounds + 1)]
    return [slice(start, end) for start, end in itertools.pairwise(bounds)]


def _pooled(runs: list[tuple[float, list[float]]]) -> Json:
    """The rounds of one kind as one: all their requests over all their seconds."""
    return rate(sum(elapsed for elapsed, _ in runs), [ms for _, times in runs for ms in times])


async def claim_rate(url: str, workers: int, depth: int) -> float:
    """Claims/s over the first ``SCALE_SAMPLE`` tasks of a queue ``depth`` deep (server clock)."""
    with taskq_server(url, workers) as server:
        done = await completed_tasks(server, min(SCALE_SAMPLE, depth))
    starts = sorted(datetime.fromisoformat(task["started_at"]) for task in done)
    return (len(starts) - 1) / (starts[-1] - starts[0]).total_seconds()


async def scale(args: argparse.Namespace) -> Json:
    with fresh_database(args.db) as url:
        fill(url, SCALE_SAMPLE, "taskq.echo", Priority.MEDIUM)
        shallow = await claim_rate(url, args.workers, SCALE_SAMPLE)
    with fresh_database(args.db) as url:
        fill(url, args.n, "taskq.echo", Priority.MEDIUM)
        deep = await claim_rate(url, args.workers, args.n)
        with taskq_server(url, args.workers) as server:
            connection = await HttpConnection.open(server)
            times = []
            for _ in range(50):
                started = time.perf_counter()
                status, page = await connection.request(
                    "GET", "/api/tasks/?status=pending&limit=100"
                )
                times.append((time.perf_counter() - started) * 1000)
                assert status == 200, status
                assert len(page) == 100, len(page)
            await connection.aclose()
            rss = rss_mb(server.pid)
    return {
        "depth_1k": {"claim_per_s": round(shallow)},
        "depth_1m": {"claim_per_s": round(deep), "depth": args.n},
        "ratio": round(shallow / deep, 3),
        "list_pending_ms": summary_ms(times),
        "rss_mb": round(rss, 1),
        "backend": make_url(url).get_backend_name(),
        "config": f"python -m taskq --workers {args.workers}, {backend(args.db)}; claim rate "
        f"from the started_at of the first {SCALE_SAMPLE} tasks of a fresh server; list "
        "latency (50 requests) and RSS at depth while the workers drain",
    }


def read_marks(path: Path) -> dict[int, float]:
    """What ``bench.mark`` handlers stamped so far: task number -> wall-clock start."""
    marks = {}
    for line in path.read_text().splitlines():
        number, stamp = line.split()
        marks[int(number)] = float(stamp)
    return marks


async def wait_mark(path: Path, number: int) -> float:
    deadline = time.monotonic() + START_WITHIN_SECONDS
    while (found := read_marks(path).get(number)) is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench.mark {number} never started")
        await trio.sleep(MARK_POLL_SECONDS)
    return found


def count_status(url: str, status: TaskStatus) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            query = text("SELECT count(*) FROM tasks WHERE status = :status")
            return int(connection.execute(query, {"status": str(status)}).scalar_one())
    finally:
        engine.dispose()


async def priority(args: argparse.Namespace) -> Json:
    """CRITICAL ``bench.mark`` tasks, one at a time, while the workers drain N LOW ones.

    Each delay runs from just before the POST to the handler's own first line (a stamp in
    the server's process, same wall clock): what a client waits for its urgent task.
    """
    with (
        fresh_database(args.db) as url,
        tempfile.TemporaryDirectory(prefix="taskq-bench-") as folder,
    ):
        marks = Path(folder) / "marks.log"
        marks.touch()
        os.environ[MARKS_FILE_ENV] = str(marks)
        fill(url, args.n, "taskq.echo", Priority.LOW)
        with taskq_server(url, args.workers, "bench.taskq_marks") as server:
            connection = await HttpConnection.open(server)
            low_done = "/api/tasks/?status=completed&limit=1"
            while not (await connection.request("GET", low_done))[1]:  # noqa: ASYNC110 - polls over HTTP
                await trio.sleep(POLL_SECONDS)
            delays = []
            for number in range(PRIORITY_SAMPLES):
                urgent = {"name": "bench.mark", "payload": {"n": number}, "priority": CRITICAL}
                await trio.sleep(PRIORITY_SPACING_SECONDS)
                submitted = time.time()
                status, created = await connection.request("POST", "/api/tasks/", urgent)
                assert status == 201, created
                delays.append((await wait_mark(marks, number) - submitted) * 1000)
            await connection.aclose()
        low_pending = count_status(url, TaskStatus.PENDING)
    return {
        **summary_ms(delays),
        "max_ms": round(max(delays), 3),
        "samples": PRIORITY_SAMPLES,
        "queued_low": args.n,
        "low_pending_after": low_pending,
        "backend": make_url(url).get_backend_name(),
        "config": f"python -m taskq --workers {args.workers}, {backend(args.db)}; "
        f"{args.n:,} LOW taskq.echo queued, then {PRIORITY_SAMPLES} CRITICAL tasks one at a "
        f"time while the workers drain them: POST -> the handler's own first line",
    }


async def serve_bare(_args: argparse.Namespace) -> Json:
    """The baseline server: one Quart-Trio route that does nothing, on hypercorn as taskq is."""
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve
    from quart_trio import QuartTrio

    app = QuartTrio("bare")

    @app.post("/bare")
    async def bare() -> tuple[Json, int]:
        return {}, 201

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.loglevel = "WARNING"
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(functools.partial(hypercorn_serve, app, config))
        print(f"bare listening on {bound[0]}", flush=True)
    return {}


async def cluster(args: argparse.Namespace) -> Json:
    rates = await trio.to_thread.run_sync(
        cluster_bench.rates, cluster_bench.SERVER, CLUSTER_NODES, args.n, CLUSTER_WORKERS
    )
    one = rates[CLUSTER_NODES[0]]
    return {
        "tasks_per_s": {str(nodes): round(rate) for nodes, rate in rates.items()},
        "vs_one": {str(nodes): round(rate / one, 2) for nodes, rate in rates.items()},
        "n": args.n,
        "config": f"{', '.join(map(str, CLUSTER_NODES))} x python -m taskq --workers 0 on one "
        f"PostgreSQL database, then {CLUSTER_WORKERS} workers each over HTTP; {args.n:,} "
        "queued taskq.echo tasks, from the workers' creation to the last completion",
    }


SCENARIOS: dict[str, Callable[[argparse.Namespace], Awaitable[Json]]] = {
    "throughput": throughput,
    "latency": latency,
    "punctuality": punctuality,
    "throughput_http": throughput_http,
    "throughput_batch": throughput_batch,
    "http": http,
    "scale": scale,
    "priority": priority,
    "cluster": cluster,
    "serve_bare": serve_bare,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--n", type=int, help="size of the run (default: the full size)")
    parser.add_argument("--lead", type=float, default=2.0, help="seconds ahead to schedule")
    parser.add_argument("--connections", type=int, default=32, help="HTTP connections")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="taskq workers")
    parser.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    args = parser.parse_args()
    args.n = args.n or FULL_N.get(args.scenario, 0)
    print(json.dumps(trio.run(SCENARIOS[args.scenario], args)), flush=True)


if __name__ == "__main__":
    main()
