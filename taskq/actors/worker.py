"""A Worker: runs the tasks the dispatcher hands it, one at a time.

The tasks it is handed wait in ``backlog``, most urgent first (a task claimed
for a busy worker because it is more urgent than the rest runs next): on a deep
queue of short tasks a claim gives each worker several (``ClaimTasks.per_worker``,
sized from the durations workers report when idle), in one ``RunTasks``, so one
commit serves many rounds of work. One Trio task of the worker's, started with it, runs the
backlog and waits when it is empty; it yields once between two tasks, so that
a stop or a drain waiting in the inbox goes first and a round of the scheduler
stays one task per worker.

It runs one task at a time (``taskq.execution``). A handler that takes no
context runs right in that Trio task, inside a cancel scope that lasts until a
stop uses it: no Trio task, no scope, no event of its own per task. Any other
is an ``Execution`` the worker holds: it starts it (or, for a resumed task,
adopts the execution suspended at a checkpoint) and waits for its ending. Either way the outcome
goes to the writer fenced by the task's attempt, so an execution that was taken
away never overwrites what happened since. A pause, a delete or the end of a
shutdown's grace period stops the task; a pause of a handler that checkpoints
only suspends it, and the worker moves on. A pause or delete of a task still
in the backlog drops it from there.

A worker announces itself idle once per idle spell (``announced``); it says so
again only when the dispatcher has forgotten it: after being set inactive, or
when a restarted dispatcher asks (``AnnounceIdle``). A worker set inactive
still runs what it was already handed: those tasks are ``running`` on disk.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import outcome
import trio

from taskq.errors import NotFound, TaskqError
from taskq.execution import Execution, Outcome, outcome_of, time_limit
from taskq.messages import (
    AnnounceIdle,
    DispatcherMessage,
    Drain,
    GetWorker,
    Reply,
    RequeueRunning,
    RunTasks,
    SetActive,
    StopTask,
    WorkerHeartbeat,
    WorkerIdle,
    WorkerMessage,
    WriterCommand,
    answer,
    request,
)
from taskq.models import Task, WorkerStatus, utcnow
from taskq.registry import Registry
from taskq.runtimes import Runtimes

log = logging.getLogger(__name__)


@dataclass
class _Spell:
    """One busy spell: when it began and how many tasks it ran."""

    began: float
    ran: int = 0


@dataclass
class _State:
    active: bool
    # The task being run, until its outcome is with the writer.
    current: Task | None = None
    # The current task's execution, when it is an ``Execution`` (its handler takes a context).
    held: Execution | None = None
    # The scope that stops the current task's handler, while one runs in the worker.
    stoppable: trio.CancelScope | None = None
    backlog: deque[Task] = field(default_factory=deque)
    drain: Reply | None = None
    announced: bool = False
    # Set when tasks are handed; what the worker's task running them waits for.
    handed: trio.Event = field(default_factory=trio.Event)
    # The busy spell under way, if any.
    spell: _Spell | None = None
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
    """What a worker runs tasks with: the handlers by name, where they run, and the wall
    clock that says when a task's ``scheduled_at`` has come."""

    registry: Registry
    runtimes: Runtimes
    clock: Callable[[], datetime] = utcnow


async def run(
    worker_id: int, links: Links, handlers: Handlers, *, heartbeat_interval: float
) -> None:
    # A previous incarnation of this worker may have died mid-task.
    await request(links.writer, lambda reply: RequeueRunning(worker_id, reply))
    me = await request(links.writer, lambda reply: GetWorker(worker_id, reply))
    state = _State(active=me.status == WorkerStatus.ACTIVE)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_heartbeat, worker_id, state, links, heartbeat_interval)
        nursery.start_soon(_run_tasks, worker_id, state, links, handlers)
        _announce_if_idle(worker_id, state, links)
        async for message in links.inbox:
            _handle(worker_id, state, message, links)
        nursery.cancel_scope.cancel()


def _handle(worker_id: int, state: _State, message: WorkerMessage, links: Links) -> None:
    match message:
        case RunTasks(tasks=tasks):
            state.announced = False
            _hold(state.backlog, tasks)
            if state.drain is None:
                state.handed.set()
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


def _hold(backlog: deque[Task], tasks: Sequence[Task]) -> None:
    """Most urgent first, in the order handed within a priority: a task claimed for
    this busy worker because it is more urgent than all it holds runs next."""
    if backlog and max((task.priority for task in tasks), default=0) > backlog[-1].priority:
        merged = sorted([*backlog, *tasks], key=_urgency)
        backlog.clear()
        backlog.extend(merged)
    else:
        backlog.extend(tasks)


def _urgency(task: Task) -> int:
    return -task.priority


def _stop(state: _State, task_id: int, *, suspend: bool) -> None:
    if state.current is not None and state.current.id == task_id:
        if state.held is not None:
            state.held.stop(suspend=suspend)
        elif state.stoppable is not None:
            state.stoppable.cancel()
    state.backlog = deque(task for task in state.backlog if task.id != task_id)


async def _run_tasks(worker_id: int, state: _State, links: Links, handlers: Handlers) -> None:
    """Run what the worker is handed, one task after another, for the worker's life.

    A stop of a handler running here cancels the scope around all this, which ends
    only that task: the work goes on in a new scope.
    """
    while True:
        with trio.CancelScope() as stopper:
            await _run_until_stopped(worker_id, state, links, handlers, stopper)


async def _run_until_stopped(
    worker_id: int, state: _State, links: Links, handlers: Handlers, stopper: trio.CancelScope
) -> None:
    """Run tasks, waiting for more when there are none, until ``stopper`` is cancelled.

    The task stays ``current`` until its outcome is with the writer, so a drain
    answered once nothing is current never leaves an outcome behind.
    """
    while True:
        if state.spell is not None and state.spell.ran and _has_work(state):
            # What reached the inbox meanwhile (a stop, a drain) goes first. A stop
            # that its handler swallowed ends the run here, before the next task.
            await trio.lowlevel.checkpoint()
        spell = state.spell
        if spell is None or not _has_work(state):
            _end_spell(worker_id, state, links)
            spell = state.spell = await _next_spell(state)
        spell.ran += 1
        task = state.current = state.backlog.popleft()
        try:
            ended = await _ending(worker_id, state, links, handlers, task, stopper)
            if isinstance(ended, Outcome):
                # Not awaited: the worker's next claim then rides in the same commit as
                # this outcome. No one was promised the outcome, so if it is lost in a
                # crash the task is still `running` on disk and runs again after recovery.
                await _send(links.writer, handlers.runtimes.finish_command(task, ended))
        finally:
            state.current = state.held = None


async def _ending(
    worker_id: int,
    state: _State,
    links: Links,
    handlers: Handlers,
    task: Task,
    stopper: trio.CancelScope,
) -> Outcome | None:
    """Run ``task``; its outcome, or None when there is none to report here."""
    await _until_its_time(task, state, stopper, handlers.clock)
    runtimes = handlers.runtimes
    suspended = runtimes.take(task.id)
    registration = handlers.registry.get(task.name)
    if suspended is None and (registration is None or not registration.takes_context):
        state.stoppable = stopper
        try:
            return await outcome_of(runtimes, registration, task, None, time_limit(task))
        finally:
            state.stoppable = None
    if suspended is None:
        assert registration is not None
        state.held = Execution(runtimes, registration, task, worker_id, links.writer)
        ended = await state.held.run()
    else:
        state.held = suspended
        suspended.adopt(task, worker_id)
        ended = await suspended.ending()
    return ended if isinstance(ended, Outcome) else None


async def _until_its_time(
    task: Task, state: _State, stopper: trio.CancelScope, clock: Callable[[], datetime]
) -> None:
    """A task the scheduler promoted ahead of its ``scheduled_at`` (``SCHEDULE_LEAD_SECONDS``)
    starts at that instant by the wall clock, never before; a stop meanwhile ends it here."""
    if task.scheduled_at is None:
        return
    state.stoppable = stopper
    try:
        # The wall clock says when, not an event; Trio's clock only times each wait.
        while (ahead := (task.scheduled_at - clock()).total_seconds()) > 0:  # noqa: ASYNC110
            await trio.sleep(ahead)
    finally:
        state.stoppable = None


async def _send(writer: trio.MemorySendChannel[WriterCommand], command: WriterCommand) -> None:
    """Without a yield when the writer's inbox has room: one task's end runs straight
    into the next one's start."""
    try:
        writer.send_nowait(command)
    except trio.WouldBlock:
        await writer.send(command)


def _has_work(state: _State) -> bool:
    return bool(state.backlog) and state.drain is None


def _end_spell(worker_id: int, state: _State, links: Links) -> None:
    spell, state.spell = state.spell, None
    if spell is not None and spell.ran:
        state.task_seconds = (trio.current_time() - spell.began) / spell.ran
    _answer_drain(state)
    _announce_if_idle(worker_id, state, links)


async def _next_spell(state: _State) -> _Spell:
    while not _has_work(state):
        await state.handed.wait()
        state.handed = trio.Event()
    return _Spell(trio.current_time())


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
    node was lost; the usual path is the dispatcher's ``StopTask``. Every worker
    of a node beats at the same instants (``next_beat``), so the writer takes
    all their beats in one batch, where they share three statements: a batch
    of 32 beats costs about what one beat does, and the writer is held up by
    beats once an interval rather than once for each small group.
    """
    while True:
        await trio.sleep_until(next_beat(trio.current_time(), interval))
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


def next_beat(now: float, interval: float) -> float:
    """The next multiple of ``interval`` on Trio's clock, which every actor of a
    process shares: a worker's beats come at most an interval apart while the
    writer answers within an interval."""
    return (math.floor(now / interval) + 1) * interval


def _holding(state: _State) -> tuple[tuple[int, int], ...]:
    tasks = list(state.backlog)
    if state.current is not None:
        tasks.append(state.current)
    return tuple((task.id, task.attempt) for task in tasks)
