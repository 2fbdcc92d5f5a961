"""A Worker: runs the tasks the dispatcher hands it, one at a time.

It holds one execution at a time (``taskq.execution``): it starts it (or, for
a resumed task, adopts the execution suspended at a checkpoint), waits for its
ending, and sends the outcome to the writer fenced by the task's attempt, so an
execution that was taken away never overwrites what happened since. A pause,
a delete or the end of a shutdown's grace period stops the execution; a pause
of a handler that checkpoints only suspends it, and the worker moves on.

A worker announces itself idle once per idle spell (``announced``); it says so
again only when the dispatcher has forgotten it: after being set inactive, or
when a restarted dispatcher asks (``AnnounceIdle``). Should a task still reach
it while busy, it waits in ``backlog`` and runs next rather than being lost.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from dataclasses import dataclass, field

import outcome
import trio

from taskq.errors import NotFound, TaskqError
from taskq.execution import Execution, Outcome, Runtimes
from taskq.messages import (
    AnnounceIdle,
    DispatcherMessage,
    Drain,
    GetWorker,
    Reply,
    RequeueRunning,
    RunTask,
    SetActive,
    StopTask,
    TaskDone,
    WorkerHeartbeat,
    WorkerIdle,
    WorkerMessage,
    WriterCommand,
    answer,
    request,
)
from taskq.models import Task, WorkerStatus
from taskq.registry import Registry

log = logging.getLogger(__name__)


@dataclass
class _State:
    active: bool
    current: Execution | None = None
    backlog: deque[Task] = field(default_factory=deque)
    drain: Reply | None = None
    announced: bool = False

    @property
    def idle(self) -> bool:
        return self.current is None and not self.backlog


@dataclass(frozen=True, slots=True)
class Links:
    """The channels a worker talks over; ``inbox_send`` is its own inbox's sender."""

    inbox: trio.MemoryReceiveChannel[WorkerMessage]
    inbox_send: trio.MemorySendChannel[WorkerMessage]
    dispatcher: trio.MemorySendChannel[DispatcherMessage]
    writer: trio.MemorySendChannel[WriterCommand]


@dataclass(frozen=True, slots=True)
class Handlers:
    """What a worker runs tasks with: the handlers by name, and where they run."""

    registry: Registry
    runtimes: Runtimes


async def run(
    worker_id: int, links: Links, handlers: Handlers, *, heartbeat_interval: float
) -> None:
    # A previous incarnation of this worker may have died mid-task.
    await request(links.writer, lambda reply: RequeueRunning(worker_id, reply))
    me = await request(links.writer, lambda reply: GetWorker(worker_id, reply))
    state = _State(active=me.status == WorkerStatus.ACTIVE)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_heartbeat, worker_id, state, links, heartbeat_interval)
        _announce_if_idle(worker_id, state, links)
        async for message in links.inbox:
            _handle(worker_id, state, message, links, handlers, nursery)
        nursery.cancel_scope.cancel()


def _handle(
    worker_id: int,
    state: _State,
    message: WorkerMessage,
    links: Links,
    handlers: Handlers,
    nursery: trio.Nursery,
) -> None:
    match message:
        case RunTask(task=task):
            state.announced = False
            state.backlog.append(task)
            _start_next(worker_id, state, links, handlers, nursery)
        case StopTask(task_id=task_id, suspend=suspend):
            _stop(state, task_id, suspend=suspend)
        case SetActive(active=active):
            state.active = active and state.drain is None
            state.announced = state.announced and state.active
            _announce_if_idle(worker_id, state, links)
        case AnnounceIdle():
            state.announced = False
            _announce_if_idle(worker_id, state, links)
        case TaskDone():
            state.current = None
            _start_next(worker_id, state, links, handlers, nursery)
            _announce_if_idle(worker_id, state, links)
        case Drain(reply=reply):
            state.drain = reply
            state.active = False
            state.backlog.clear()
    if state.drain is not None and state.current is None:
        answer(state.drain, outcome.Value(None))
        state.drain = None


def _stop(state: _State, task_id: int, *, suspend: bool) -> None:
    if state.current is not None and state.current.task.id == task_id:
        state.current.stop(suspend=suspend)
    state.backlog = deque(task for task in state.backlog if task.id != task_id)


def _start_next(
    worker_id: int, state: _State, links: Links, handlers: Handlers, nursery: trio.Nursery
) -> None:
    if state.current is not None or not state.backlog or state.drain is not None:
        return
    task = state.backlog.popleft()
    execution = handlers.runtimes.take(task.id)
    if execution is None:
        registration = handlers.registry.get(task.name)
        execution = Execution.start(handlers.runtimes, registration, task, worker_id, links.writer)
    else:
        execution.adopt(task, worker_id)
    state.current = execution
    nursery.start_soon(_execute, task, execution, links, handlers.runtimes)


def _announce_if_idle(worker_id: int, state: _State, links: Links) -> None:
    if state.active and state.idle and not state.announced:
        links.dispatcher.send_nowait(WorkerIdle(worker_id))
        state.announced = True


async def _execute(task: Task, execution: Execution, links: Links, runtimes: Runtimes) -> None:
    ended = await execution.ending()
    if isinstance(ended, Outcome):
        # Not awaited: the worker's next claim then rides in the same commit as this
        # outcome. No one was promised the outcome, so if it is lost in a crash the
        # task is still `running` on disk and runs again after recovery.
        await links.writer.send(runtimes.finish_command(task, ended))
    links.inbox_send.send_nowait(TaskDone(task.id))


async def _heartbeat(worker_id: int, state: _State, links: Links, interval: float) -> None:
    """Say the worker lives, and stop what the database says is no longer its to run.

    The stop is the fallback for a pause or delete whose notice from another
    node was lost; the usual path is the dispatcher's ``StopTask``.
    """
    while True:
        await trio.sleep(interval)
        beat = functools.partial(WorkerHeartbeat, worker_id, _holding(state), interval)
        try:
            lost: list[int] = await request(links.writer, beat)
        except NotFound:
            return
        except TaskqError as exc:
            log.warning("worker %d: heartbeat not recorded (%s)", worker_id, exc)
            continue
        for task_id in lost:
            links.inbox_send.send_nowait(StopTask(task_id))


def _holding(state: _State) -> tuple[tuple[int, int], ...]:
    tasks = list(state.backlog)
    if state.current is not None:
        tasks.append(state.current.task)
    return tuple((task.id, task.attempt) for task in tasks)
