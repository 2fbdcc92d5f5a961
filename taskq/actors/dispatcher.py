"""The Dispatcher: matches idle workers with ready tasks.

It keeps the directory of worker inboxes and the set of idle workers. When
there are idle workers and tasks may be ready, it sends ONE claim for all of
them to the writer (a single transaction hands out up to one task each, most
urgent first) and delivers what comes back. ``maybe_ready`` is cleared when a
claim comes back short and set again by ``TasksReady``; because events and
claims share the writer's order, no wake-up is lost between the two.

It also routes to workers what concerns them: revocations (pause, delete) and
status changes. A worker's idle announcement counts only while the dispatcher
believes it active, so a late announcement never hands a task to a worker that
was just set inactive. After a dispatcher restart the supervisor re-registers
every worker and asks each to announce itself again.
"""

from __future__ import annotations

import logging

import outcome
import trio

from taskq.config import RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS
from taskq.errors import Unavailable
from taskq.messages import (
    ClaimTasks,
    DispatcherMessage,
    RunTask,
    SetActive,
    StopDispatching,
    StopTask,
    TaskRevoked,
    TasksReady,
    WorkerIdle,
    WorkerJoined,
    WorkerMessage,
    WorkerStatusChanged,
    WriterCommand,
    answer,
    request,
)
from taskq.models import Task, WorkerStatus

log = logging.getLogger(__name__)


class _State:
    def __init__(self) -> None:
        self.workers: dict[int, trio.MemorySendChannel[WorkerMessage]] = {}
        # Insertion-ordered set: the worker idle longest is served first.
        self.idle: dict[int, None] = {}
        self.inactive: set[int] = set()
        self.maybe_ready = True
        self.stopped = False


async def run(
    inbox: trio.MemoryReceiveChannel[DispatcherMessage],
    writer: trio.MemorySendChannel[WriterCommand],
) -> None:
    state = _State()
    async for message in inbox:
        _handle(state, message)
        await _dispatch(state, inbox, writer)


async def _dispatch(
    state: _State,
    inbox: trio.MemoryReceiveChannel[DispatcherMessage],
    writer: trio.MemorySendChannel[WriterCommand],
) -> None:
    """Claim for the idle workers; while the database is away, keep trying with backoff.

    Between tries the messages that arrived meanwhile are taken in, so a
    shutdown or a status change is not held up behind the outage.
    """
    backoff = RETRY_FIRST_SECONDS
    while state.idle and state.maybe_ready and not state.stopped:
        try:
            await _claim_and_deliver(state, writer)
            return
        except Unavailable as exc:
            log.warning("claim failed (%s); trying again in %.2f s", exc, backoff)
        await trio.sleep(backoff)
        backoff = min(backoff * 2, RETRY_MAX_SECONDS)
        while True:
            try:
                _handle(state, inbox.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break


def _handle(state: _State, message: DispatcherMessage) -> None:
    match message:
        case WorkerJoined(worker_id=worker_id, inbox=worker_inbox):
            state.workers[worker_id] = worker_inbox
        case WorkerIdle(worker_id=worker_id):
            if worker_id in state.workers and worker_id not in state.inactive:
                state.idle[worker_id] = None
        case TasksReady():
            state.maybe_ready = True
        case TaskRevoked(task_id=task_id, worker_id=worker_id):
            _tell(state, worker_id, StopTask(task_id))
        case WorkerStatusChanged(worker_id=worker_id, status=status):
            if status == WorkerStatus.ACTIVE:
                state.inactive.discard(worker_id)
            else:
                state.inactive.add(worker_id)
                state.idle.pop(worker_id, None)
            _tell(state, worker_id, SetActive(status == WorkerStatus.ACTIVE))
        case StopDispatching(reply=reply):
            state.stopped = True
            answer(reply, outcome.Value(None))


async def _claim_and_deliver(state: _State, writer: trio.MemorySendChannel[WriterCommand]) -> None:
    worker_ids = tuple(state.idle)
    claimed: list[Task] = await request(writer, lambda reply: ClaimTasks(worker_ids, reply))
    if len(claimed) < len(worker_ids):
        state.maybe_ready = False
    for task in claimed:
        assert task.worker_id is not None
        state.idle.pop(task.worker_id, None)
        _tell(state, task.worker_id, RunTask(task))


def _tell(state: _State, worker_id: int, message: WorkerMessage) -> None:
    """Worker inboxes are unbounded, so the dispatcher never waits on a worker."""
    inbox = state.workers.get(worker_id)
    if inbox is None:
        return
    try:
        inbox.send_nowait(message)
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        log.warning("worker %d is gone; forgetting it", worker_id)
        state.workers.pop(worker_id, None)
        state.idle.pop(worker_id, None)
