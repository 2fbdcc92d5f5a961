"""The events hub: turns committed writer batches into a numbered stream of changes.

The writer hands over each committed batch as it is (commands and outcomes)
on an unbounded channel, so it never waits for the hub. The hub numbers the
changes in commit order, keeps the last few in a ring (``Last-Event-ID``
resume), feeds the metrics, and fans out to subscribers, each through a
bounded channel of its own. A subscriber that falls a whole buffer behind is
dropped (its channel closes) rather than slowing anyone else: it may
reconnect and resume from the ring, or be told it missed changes.

``HubState`` outlives a crash of the hub: numbering and the ring go on, while
the subscribers of the crashed incarnation see their stream end.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import outcome
import trio

from taskq.config import EVENTS_RING_SIZE
from taskq.messages import (
    ClaimTasks,
    Committed,
    CountTasks,
    CreateTask,
    CreateWorker,
    DeleteTask,
    EndStreams,
    FinishTask,
    GetTask,
    GetWorker,
    Heartbeat,
    HubMessage,
    ListTasks,
    ListWorkers,
    PromoteDueTasks,
    ReapDeadWorkers,
    Reply,
    ReportProgress,
    RequeueNode,
    RequeueRunning,
    RestoreWorkers,
    SetWorkerStatus,
    Subscribe,
    Subscription,
    WorkerHeartbeat,
    WriterCommand,
    answer,
)
from taskq.metrics import Metrics
from taskq.models import Change, ChangeKind, Task, Worker

log = logging.getLogger(__name__)

Subscriber = trio.MemorySendChannel[Change]


class HubState:
    def __init__(self, ring_size: int = EVENTS_RING_SIZE) -> None:
        self.ring: deque[Change] = deque(maxlen=ring_size)
        self.last_id = 0
        # Tasks as their claim left them, until their outcome is written: the
        # metrics need a finished task's name and start time.
        self.running: dict[int, Task] = {}

    def number(
        self,
        kind: ChangeKind,
        at: datetime,
        *,
        task: Task | None = None,
        worker: Worker | None = None,
        task_id: int | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> Change:
        self.last_id += 1
        if task is not None:
            task_id = task.id
        change = Change(self.last_id, kind, at, task, worker, task_id, detail or {})
        self.ring.append(change)
        return change

    def since(self, after: int) -> tuple[list[Change], bool]:
        """The changes after id ``after`` still held, and whether that is all of them."""
        oldest_held = self.ring[0].id if self.ring else self.last_id + 1
        complete = oldest_held - 1 <= after <= self.last_id
        return [change for change in self.ring if change.id > after], complete


async def run(
    inbox: trio.MemoryReceiveChannel[HubMessage], state: HubState, metrics: Metrics
) -> None:
    subscribers: list[Subscriber] = []
    ended = False
    try:
        async for message in inbox:
            match message:
                case Committed():
                    metrics.batch_committed(len(message.commands), message.seconds)
                    changes = list(_record(state, metrics, message))
                    if changes:
                        subscribers = _fan_out(subscribers, changes)
                case Subscribe(after=after, buffer=buffer, reply=reply):
                    subscriber = _subscribe(state, after, buffer, reply)
                    if ended:
                        subscriber.close()
                    else:
                        subscribers.append(subscriber)
                case EndStreams():
                    ended = True
                    for subscriber in subscribers:
                        subscriber.close()
                    subscribers = []
    finally:
        for subscriber in subscribers:
            subscriber.close()


def _subscribe(state: HubState, after: int | None, buffer: int, reply: Reply | None) -> Subscriber:
    replay, complete = state.since(after) if after is not None else ([], True)
    send, receive = trio.open_memory_channel[Change](buffer + len(replay))
    for change in replay:
        send.send_nowait(change)
    answer(reply, outcome.Value(Subscription(receive, complete)))
    return send


def _fan_out(subscribers: list[Subscriber], changes: list[Change]) -> list[Subscriber]:
    """Deliver to each subscriber without waiting; keep those that kept up."""
    kept = []
    for subscriber in subscribers:
        try:
            for change in changes:
                subscriber.send_nowait(change)
        except trio.WouldBlock:
            log.info("dropped an event subscriber that fell behind")
            subscriber.close()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            subscriber.close()
        else:
            kept.append(subscriber)
    return kept


def _record(state: HubState, metrics: Metrics, batch: Committed) -> Iterator[Change]:
    for command, result in zip(batch.commands, batch.results, strict=True):
        if isinstance(result, outcome.Value):
            yield from _changes(state, metrics, command, result.value, batch.at)


def _changes(
    state: HubState, metrics: Metrics, command: WriterCommand, value: Any, at: datetime
) -> Iterator[Change]:
    """What one successful command changed; reads (get, list, count) change nothing.

    A command not named here that answers a task or worker row counts as an
    update of that row, so new commands show in the stream without a case here.
    """
    match command:
        case CreateTask():
            metrics.task_created(value)
            yield state.number(ChangeKind.TASK_CREATED, at, task=value)
        case DeleteTask(task_id=task_id):
            state.running.pop(task_id, None)
            yield state.number(ChangeKind.TASK_DELETED, at, task_id=task_id)
        case ClaimTasks():
            for task in value:
                state.running[task.id] = task
                metrics.task_claimed(task)
                yield state.number(ChangeKind.TASK_UPDATED, at, task=task)
        case FinishTask() if value:
            yield from _finished(state, metrics, command, at)
        case ReportProgress(task_id=task_id, progress=progress) if value:
            detail = {"progress": progress}
            yield state.number(ChangeKind.TASK_PROGRESS, at, task_id=task_id, detail=detail)
        case PromoteDueTasks():
            yield state.number(ChangeKind.TASKS_CHANGED, at, detail={"reason": "promoted"})
        case RequeueRunning(worker_id=worker_id) if value:
            _forget_running(state, worker_id)
            detail = {"reason": "requeued", "count": value, "worker_id": worker_id}
            yield state.number(ChangeKind.TASKS_CHANGED, at, detail=detail)
        case RequeueNode() if value:
            _forget_running(state, None)
            detail = {"reason": "requeued", "count": value}
            yield state.number(ChangeKind.TASKS_CHANGED, at, detail=detail)
        case ReapDeadWorkers() if value:
            for worker_id in value:
                _forget_running(state, worker_id)
            detail = {"reason": "dead workers reaped", "worker_ids": value}
            yield state.number(ChangeKind.TASKS_CHANGED, at, detail=detail)
        case WorkerHeartbeat():
            return
        case CreateWorker() | Heartbeat() | SetWorkerStatus():
            yield state.number(ChangeKind.WORKER_UPDATED, at, worker=value)
        case RestoreWorkers():
            for worker in value:
                yield state.number(ChangeKind.WORKER_UPDATED, at, worker=worker)
        case GetTask() | ListTasks() | CountTasks() | GetWorker() | ListWorkers():
            return
        case _ if isinstance(value, Task):
            # Update, pause, resume, and any command that answers a task row, changed it.
            state.running.pop(value.id, None)
            yield state.number(ChangeKind.TASK_UPDATED, at, task=value)
        case _ if isinstance(value, Worker):
            yield state.number(ChangeKind.WORKER_UPDATED, at, worker=value)


def _finished(
    state: HubState, metrics: Metrics, command: FinishTask, at: datetime
) -> Iterator[Change]:
    claimed = state.running.pop(command.task_id, None)
    if claimed is not None:
        metrics.task_finished(claimed, command.succeeded, at)
    detail = {
        "succeeded": command.succeeded,
        "error": command.error,
        # Set when the failure is not final: the task runs again after this many seconds.
        "retry_after": command.retry_after,
    }
    yield state.number(ChangeKind.TASK_FINISHED, at, task_id=command.task_id, detail=detail)


def _forget_running(state: HubState, worker_id: int | None) -> None:
    if worker_id is None:
        state.running.clear()
        return
    for task_id in [t.id for t in state.running.values() if t.worker_id == worker_id]:
        del state.running[task_id]
