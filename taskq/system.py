"""The supervisor: starts every actor in one nursery and stops them in order.

Start-up: open the database, start the writer, restore this node's worker
rows of earlier runs, put back in the queue the tasks a killed process of this
node left ``running`` (they run again: at-least-once), then start the
scheduler, the dispatcher, the reaper (and on PostgreSQL the listener), one
actor per worker and the HTTP server. Other nodes on the same database are
left alone: their running tasks are theirs until the reaper finds them dead.

Shutdown (``Running.stop``, called by the CLI on SIGINT/SIGTERM): stop taking
HTTP requests, stop handing out tasks, let running tasks finish within the
grace period, cancel the rest, put them back in the queue, flush the writer.
"""

from __future__ import annotations

import functools
import gc
import logging
import math
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

import outcome
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from taskq import threads
from taskq.actors import dispatcher, hub, listener, reader, reaper, scheduler, worker, writer
from taskq.api.app import create_app
from taskq.config import (
    GIL_HAND_OFF_AFTER_SECONDS,
    GIL_HAND_OFF_SECONDS,
    GIL_SWITCH_INTERVAL_SECONDS,
    READER_INBOX_SIZE,
    WRITER_INBOX_SIZE,
    Settings,
)
from taskq.messages import (
    AnnounceIdle,
    DispatcherMessage,
    Drain,
    EndStreams,
    HubMessage,
    ReaderCommand,
    RequeueNode,
    RestoreWorkers,
    SchedulerMessage,
    SpawnWorker,
    StopDispatching,
    SupervisorMessage,
    WorkerJoined,
    WorkerMessage,
    WriterCommand,
    answer,
    request,
)
from taskq.metrics import Metrics
from taskq.models import Worker
from taskq.monitor import Monitor
from taskq.queue import Queue
from taskq.registry import ExecutionDefaults, Registry, Runtime
from taskq.runtimes import RetryPolicy, Runtimes, open_runtimes
from taskq.store import Store
from taskq.supervision import Liveness, RestartPolicy, supervise

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Running:
    """What a started system hands its starter."""

    queue: Queue
    stop: Callable[[], None]
    # Where HTTP is served ("http://host:port"), or None when it is not.
    url: str | None
    monitor: Monitor


class Supervised(Protocol):
    """``supervise`` with this system's restart policy and liveness bound in."""

    def __call__(
        self,
        name: str,
        actor: Callable[[], Awaitable[None]],
        *,
        before_restart: Callable[[], None] | None = None,
    ) -> Awaitable[None]: ...


class _Channels:
    def __init__(self) -> None:
        self.writer, self.writer_inbox = trio.open_memory_channel[WriterCommand](WRITER_INBOX_SIZE)
        self.reader, self.reader_inbox = trio.open_memory_channel[ReaderCommand](READER_INBOX_SIZE)
        # Actor-to-actor inboxes are unbounded: the actors form cycles
        # (dispatcher <-> workers), and a bounded cycle can deadlock.
        self.dispatcher, self.dispatcher_inbox = trio.open_memory_channel[DispatcherMessage](
            math.inf
        )
        self.scheduler, self.scheduler_inbox = trio.open_memory_channel[SchedulerMessage](math.inf)
        self.supervisor, self.supervisor_inbox = trio.open_memory_channel[SupervisorMessage](
            math.inf
        )
        # Unbounded so the writer never waits for the hub; the hub bounds each subscriber.
        self.hub, self.hub_inbox = trio.open_memory_channel[HubMessage](math.inf)


async def run(
    settings: Settings,
    registry: Registry,
    *,
    serve_http: bool = True,
    policy: RestartPolicy | None = None,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the whole system until ``Running.stop`` is called; then shut down in order."""
    policy = policy or RestartPolicy()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)
    store = await trio.to_thread.run_sync(
        functools.partial(
            Store.open, settings.db_url, migrate_schema=settings.migrate, node=settings.node
        )
    )
    channels = _Channels()
    workers: dict[int, trio.MemorySendChannel[WorkerMessage]] = {}
    stopping = trio.Event()
    monitor = Monitor(Metrics(), Liveness(), channels.hub)
    supervised = functools.partial(supervise, policy=policy, liveness=monitor.liveness)
    hand_off = threads.GilHandOff(GIL_HAND_OFF_SECONDS, GIL_HAND_OFF_AFTER_SECONDS)
    trio.lowlevel.add_instrument(hand_off)
    try:
        async with trio.open_nursery() as core:
            events = functools.partial(hub.run, channels.hub_inbox, hub.HubState(), monitor.metrics)
            core.start_soon(supervised, "hub", events)
            core.start_soon(
                supervised,
                "writer",
                functools.partial(
                    writer.run,
                    channels.writer_inbox,
                    store,
                    channels.dispatcher,
                    channels.scheduler,
                    hub=channels.hub,
                ),
            )
            core.start_soon(
                supervised, "reader", functools.partial(reader.run, channels.reader_inbox, store)
            )
            restored = await _recover(channels.writer, settings.workers)
            async with (
                _open_runtimes(settings, registry) as runtimes,
                trio.open_nursery() as actors,
            ):
                handlers = worker.Handlers(registry, runtimes)
                _start_actors(actors, channels, supervised, workers, runtimes)
                _start_cluster_actors(actors, channels, supervised, settings, store)
                for each in restored:
                    _spawn_worker(
                        actors, each.id, channels, handlers, settings, supervised, workers
                    )
                actors.start_soon(
                    _serve_spawn_requests, actors, channels, handlers, settings, supervised, workers
                )
                queue = Queue(
                    channels.writer,
                    channels.supervisor,
                    defaults=functools.partial(registry.defaults, system=_defaults(settings)),
                    reader=channels.reader,
                )
                url = (
                    await _start_http(actors, queue, monitor, settings, stopping)
                    if serve_http
                    else None
                )
                # What start-up made (modules, schemas, compiled SQL, the actors) lives as
                # long as the system: out of the collector's sight, a full collection walks
                # only what tasks and requests made, not 100,000+ objects (a 30-300 ms
                # pause at every one, in the middle of some task's dispatch).
                gc.freeze()
                task_status.started(Running(queue, stopping.set, url, monitor))
                await stopping.wait()
                channels.hub.send_nowait(EndStreams())
                await _drain(channels, workers, settings.grace_seconds)
                actors.cancel_scope.cancel()
            await request(channels.writer, RequeueNode)
            await channels.writer.aclose()
            await channels.reader.aclose()
            await channels.hub.aclose()
    finally:
        trio.lowlevel.remove_instrument(hand_off)
        gc.unfreeze()
        store.close()


def _open_runtimes(settings: Settings, registry: Registry) -> AbstractAsyncContextManager[Runtimes]:
    retry = RetryPolicy(settings.retry_backoff_seconds, settings.retry_backoff_max_seconds)
    return open_runtimes(
        retry=retry,
        checkpoint_grace=settings.checkpoint_grace_seconds,
        warm_processes=registry.uses(Runtime.PROCESS),
    )


def _defaults(settings: Settings) -> ExecutionDefaults:
    return ExecutionDefaults(settings.max_attempts, settings.timeout_seconds)


async def _recover(writer_inbox: trio.MemorySendChannel[WriterCommand], boot: int) -> list[Worker]:
    restored: list[Worker] = await request(writer_inbox, lambda reply: RestoreWorkers(boot, reply))
    await request(writer_inbox, RequeueNode)
    return restored


def _start_actors(
    actors: trio.Nursery,
    channels: _Channels,
    supervised: Supervised,
    workers: dict[int, trio.MemorySendChannel[WorkerMessage]],
    runtimes: Runtimes,
) -> None:
    def rejoin_workers() -> None:
        for worker_id, inbox in workers.items():
            channels.dispatcher.send_nowait(WorkerJoined(worker_id, inbox))
            inbox.send_nowait(AnnounceIdle())

    actors.start_soon(
        functools.partial(
            supervised,
            "dispatcher",
            functools.partial(
                dispatcher.run,
                channels.dispatcher_inbox,
                channels.writer,
                void_suspension=runtimes.void,
            ),
            before_restart=rejoin_workers,
        )
    )
    actors.start_soon(
        supervised,
        "scheduler",
        functools.partial(scheduler.run, channels.scheduler_inbox, channels.writer),
    )


def _start_cluster_actors(
    actors: trio.Nursery,
    channels: _Channels,
    supervised: Supervised,
    settings: Settings,
    store: Store,
) -> None:
    """The reaper runs on every node; the listener where other nodes can notify (PostgreSQL)."""
    actors.start_soon(
        supervised,
        "reaper",
        functools.partial(
            reaper.run, channels.writer, dead_after_seconds=settings.dead_after_seconds
        ),
    )
    if store.engine.dialect.name == "postgresql":
        actors.start_soon(
            supervised,
            "listener",
            functools.partial(
                listener.run,
                settings.db_url,
                settings.node,
                channels.dispatcher,
                channels.scheduler,
            ),
        )


def _spawn_worker(
    actors: trio.Nursery,
    worker_id: int,
    channels: _Channels,
    handlers: worker.Handlers,
    settings: Settings,
    supervised: Supervised,
    workers: dict[int, trio.MemorySendChannel[WorkerMessage]],
) -> None:
    inbox_send, inbox = trio.open_memory_channel[WorkerMessage](math.inf)
    links = worker.Links(inbox, inbox_send, channels.dispatcher, channels.writer)
    actor = functools.partial(
        worker.run,
        worker_id,
        links,
        handlers,
        heartbeat_interval=settings.heartbeat_interval_seconds,
    )
    actors.start_soon(supervised, f"worker-{worker_id}", actor)
    workers[worker_id] = inbox_send
    channels.dispatcher.send_nowait(WorkerJoined(worker_id, inbox_send))


async def _serve_spawn_requests(
    actors: trio.Nursery,
    channels: _Channels,
    handlers: worker.Handlers,
    settings: Settings,
    supervised: Supervised,
    workers: dict[int, trio.MemorySendChannel[WorkerMessage]],
) -> None:
    async for message in channels.supervisor_inbox:
        match message:
            case SpawnWorker(worker_id=worker_id, reply=reply):
                _spawn_worker(actors, worker_id, channels, handlers, settings, supervised, workers)
                answer(reply, outcome.Value(None))


async def _start_http(
    actors: trio.Nursery, queue: Queue, monitor: Monitor, settings: Settings, stopping: trio.Event
) -> str:
    config = Config()
    config.bind = [f"{settings.host}:{settings.port}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    config.graceful_timeout = 1.0
    app = create_app(queue, monitor, settings)
    bound: list[str] = await actors.start(
        functools.partial(serve, app, config, shutdown_trigger=stopping.wait)
    )
    return bound[0]


async def _drain(
    channels: _Channels,
    workers: dict[int, trio.MemorySendChannel[WorkerMessage]],
    grace_seconds: float,
) -> None:
    """Let running tasks finish for up to the grace period; hand out nothing new."""
    await request(channels.dispatcher, StopDispatching)
    with trio.move_on_after(grace_seconds) as grace:
        async with trio.open_nursery() as waiting:
            for inbox in workers.values():
                waiting.start_soon(request, inbox, Drain)
    if grace.cancelled_caught:
        log.warning("grace period over; re-queueing the tasks still running")
