"""A Worker: runs the tasks the dispatcher hands it, one at a time.

The tasks it is handed wait in ``backlog``: on a deep queue of short tasks a
claim gives each worker several (``ClaimTasks.per_worker``, sized from the
durations workers report when idle), so one commit serves many rounds of work.
One Trio task of the worker's runs the backlog to its end and stops.

It holds one execution at a time (``taskq.execution``): it starts it (or, for
a resumed task, adopts the execution suspended at a checkpoint), waits for its
ending, and sends the outcome to the writer fenced by the task's attempt, so an
execution that was taken away never overwrites what happened since. A pause,
a delete or the end of a shutdown's grace period stops the execution; a pause
of a handler that checkpoints only suspends it, and the worker moves on. A
pause or delete of a task still in the backlog drops it from there.

A worker announces itself idle once per idle spell (``announced``); it says so
again only when the dispatcher has forgotten it: after being set inactive, or
when a restarted dispatcher asks (``AnnounceIdle``). A worker set inactive
still runs what it was already handed: those tasks are ``running`` on disk.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from dataclasses import dataclass, field

import outcome
import trio

from taskq.config import HEARTBEAT_PHASES
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
    # A Trio task of the worker's is running the backlog.
    running: bool = False
    # Seconds per task of the last busy spell, told to the dispatcher when idle.
    task_seconds: float | None = None

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
            if not state.running and state.drain is None:
                state.running = True
                nursery.start_soon(_run_backlog, worker_id, state, links, handlers)
        case StopTask(task_id=task_id, suspend=suspend):
            _stop(state, task_id, suspend=suspend)
        case SetActive(active=active):
            state.active = active and state.drain is None
            state.announced = state.announced and state.active
            _announce_if_idle(worker_id, state, links)
        case AnnounceIdle():
            state.announced = False
            _announce_if_idle(worker_id, state, links)
        case Drain(reply=reply):
            state.drain = reply
            state.active = False
            state.backlog.clear()
    _answer_drain(state)


def _stop(state: _State, task_id: int, *, suspend: bool) -> None:
    if state.current is not None and state.current.task.id == task_id:
        state.current.stop(suspend=suspend)
    state.backlog = deque(task for task in state.backlog if task.id != task_id)


async def _run_backlog(worker_id: int, state: _State, links: Links, handlers: Handlers) -> None:
    """Run the backlog to its end, one task after another, in this one Trio task.

    The execution stays ``current`` until its outcome is with the writer, so a
    drain answered once nothing is current never leaves an outcome behind.
    """
    began, ran = trio.current_time(), 0
    try:
        while state.backlog and state.drain is None:
            if ran:
                # What reached the inbox meanwhile (a stop, a drain) goes first.
                await trio.lowlevel.checkpoint()
                if not state.backlog or state.drain is not None:
                    break
            ran += 1
            task = state.backlog.popleft()
            suspended = handlers.runtimes.take(task.id)
            if suspended is None:
                registration = handlers.registry.get(task.name)
                execution = Execution(
                    handlers.runtimes, registration, task, worker_id, links.writer
                )
            else:
                execution = suspended
                execution.adopt(task, worker_id)
            state.current = execution
            try:
                ended = await (execution.run() if suspended is None else execution.ending())
                if isinstance(ended, Outcome):
                    # Not awaited: the worker's next claim then rides in the same commit as
                    # this outcome. No one was promised the outcome, so if it is lost in a
                    # crash the task is still `running` on disk and runs again after recovery.
                    await _send(links.writer, handlers.runtimes.finish_command(task, ended))
            finally:
                state.current = None
    finally:
        state.running = False
    if ran:
        state.task_seconds = (trio.current_time() - began) / ran
    _answer_drain(state)
    _announce_if_idle(worker_id, state, links)


async def _send(writer: trio.MemorySendChannel[WriterCommand], command: WriterCommand) -> None:
    """Without a yield when the writer's inbox has room: one task's end runs straight
    into the next one's start."""
    try:
        writer.send_nowait(command)
    except trio.WouldBlock:
        await writer.send(command)


def _answer_drain(state: _State) -> None:
    if state.drain is not None and state.current is None:
        answer(state.drain, outcome.Value(None))
        state.drain = None


def _announce_if_idle(worker_id: int, state: _State, links: Links) -> None:
    if state.active and state.idle and not state.announced:
        links.dispatcher.send_nowait(WorkerIdle(worker_id, state.task_seconds))
        state.announced = True


async def _heartbeat(worker_id: int, state: _State, links: Links, interval: float) -> None:
    """Say the worker lives, and stop what the database says is no longer its to run.

    The stop is the fallback for a pause or delete whose notice from another
    node was lost; the usual path is the dispatcher's ``StopTask``. The first beat
    is put off by the worker's phase (``HEARTBEAT_PHASES``), less than half an
    interval, so it still comes well inside the dead-node timeout.
    """
    delay = interval * (1 + (worker_id % HEARTBEAT_PHASES) / (2 * HEARTBEAT_PHASES))
    while True:
        await trio.sleep(delay)
        delay = interval
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
