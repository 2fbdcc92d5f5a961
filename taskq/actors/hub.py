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
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from typing import Any

import outcome
import trio

from taskq.config import EVENTS_RING_SIZE
from taskq.messages import (
    ClaimTasks,
    Committed,
    CountTasks,
    CreateTask,
    CreateTasks,
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


# A change before its number: kind, task, worker, task id, detail (``Change``'s other fields).
Draft = tuple[ChangeKind, Task | None, Worker | None, int | None, Mapping[str, Any]]


class HubState:
    """Numbering, the ring and the running tasks; kept across restarts of the hub.

    A committed batch is numbered at once (its changes are counted, not made) and
    kept as it is; its ``Change`` records are made only when someone needs them: a
    subscriber, now or resuming from the ring. With nobody listening, the hub's work
    per batch is counting and metrics, not one record per task that no one reads.
    """

    def __init__(self, ring_size: int = EVENTS_RING_SIZE) -> None:
        self.ring: deque[Change] = deque(maxlen=ring_size)
        self.last_id = 0
        # Batches numbered after the ring's last change, oldest first, with their
        # first id; only those that still reach into the last ``ring_size`` ids.
        self.unmade: deque[tuple[int, Committed]] = deque()
        # Tasks as their claim left them, until their outcome is written: the
        # metrics need a finished task's name and start time.
        self.running: dict[int, Task] = {}

    def number(self, batch: Committed) -> None:
        """Give the changes of ``batch`` their ids; they are made later, if ever."""
        count = 0
        for command, result in zip(batch.commands, batch.results, strict=True):
            if isinstance(result, outcome.Value):
                count += _count(command, result.value)
        if not count:
            return
        self.unmade.append((self.last_id + 1, batch))
        self.last_id += count
        ring_size = self.ring.maxlen or 0
        while len(self.unmade) > 1 and self.unmade[1][0] <= self.last_id - ring_size + 1:
            # The newer batches alone fill the ring: this one's changes would fall out.
            self.unmade.popleft()

    def make(self) -> list[Change]:
        """The changes of the batches numbered but not yet made, now in the ring."""
        made: list[Change] = []
        for first_id, batch in self.unmade:
            made += (
                Change(change_id, kind, batch.at, task, worker, task_id, detail)
                for change_id, (kind, task, worker, task_id, detail) in enumerate(
                    _drafts(batch), first_id
                )
            )
        self.unmade.clear()
        self.ring.extend(made)
        return made

    def since(self, after: int) -> tuple[list[Change], bool]:
        """The changes after id ``after`` still held, and whether that is all of them."""
        self.make()
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
                    _account(state, metrics, message)
                    state.number(message)
                    if subscribers:
                        subscribers = _fan_out(subscribers, state.make())
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
    replay: list[Change] = []
    complete = True
    if after is None:
        # What committed before is made for the ring, not sent down this stream.
        state.make()
    else:
        replay, complete = state.since(after)
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


def _drafts(batch: Committed) -> Iterator[Draft]:
    for command, result in zip(batch.commands, batch.results, strict=True):
        if isinstance(result, outcome.Value):
            yield from _changes(command, result.value)


def _changes(command: WriterCommand, value: Any) -> Iterator[Draft]:
    """What one successful command changed; reads (get, list, count) change nothing.

    A command not named here that answers a task or worker row counts as an
    update of that row, so new commands show in the stream without a case here.
    """
    match command:
        case CreateTask():
            yield ChangeKind.TASK_CREATED, value, None, value.id, {}
        case CreateTasks():
            for task in value:
                yield ChangeKind.TASK_CREATED, task, None, task.id, {}
        case DeleteTask(task_id=task_id):
            yield ChangeKind.TASK_DELETED, None, None, task_id, {}
        case ClaimTasks():
            for task in value:
                yield ChangeKind.TASK_UPDATED, task, None, task.id, {}
        case FinishTask(task_id=task_id) if value:
            detail = {
                "succeeded": command.succeeded,
                "error": command.error,
                # Set when the failure is not final: the task runs again after this many seconds.
                "retry_after": command.retry_after,
            }
            yield ChangeKind.TASK_FINISHED, None, None, task_id, detail
        case ReportProgress(task_id=task_id, progress=progress) if value:
            yield ChangeKind.TASK_PROGRESS, None, None, task_id, {"progress": progress}
        case PromoteDueTasks():
            yield ChangeKind.TASKS_CHANGED, None, None, None, {"reason": "promoted"}
        case RequeueRunning(worker_id=worker_id) if value:
            detail = {"reason": "requeued", "count": value, "worker_id": worker_id}
            yield ChangeKind.TASKS_CHANGED, None, None, None, detail
        case RequeueNode() if value:
            yield ChangeKind.TASKS_CHANGED, None, None, None, {"reason": "requeued", "count": value}
        case ReapDeadWorkers() if value:
            detail = {"reason": "dead workers reaped", "worker_ids": value}
            yield ChangeKind.TASKS_CHANGED, None, None, None, detail
        case WorkerHeartbeat():
            return
        case CreateWorker() | Heartbeat() | SetWorkerStatus():
            yield ChangeKind.WORKER_UPDATED, None, value, None, {}
        case RestoreWorkers():
            for worker in value:
                yield ChangeKind.WORKER_UPDATED, None, worker, None, {}
        case _ if _is_read(command):
            return
        case _ if isinstance(value, Task):
            # Update, pause, resume, and any command that answers a task row, changed it.
            yield ChangeKind.TASK_UPDATED, value, None, value.id, {}
        case _ if isinstance(value, Worker):
            yield ChangeKind.WORKER_UPDATED, None, value, None, {}


def _count(command: WriterCommand, value: Any) -> int:
    """How many changes ``_changes`` makes of one successful command, without making
    them: the commands of every task's path are counted straight from their value."""
    match command:
        case FinishTask() | ReportProgress() | RequeueRunning() | RequeueNode() | ReapDeadWorkers():
            # One change if the command took effect: fenced or empty ones change nothing.
            return 1 if value else 0
        case CreateTasks() | ClaimTasks() | RestoreWorkers():
            return len(value)
        case _:
            return sum(1 for _ in _changes(command, value))


def _is_read(command: WriterCommand) -> bool:
    return isinstance(command, GetTask | ListTasks | CountTasks | GetWorker | ListWorkers)


def _account(state: HubState, metrics: Metrics, batch: Committed) -> None:
    """Feed the metrics and keep ``state.running``: counters once per batch and name,
    histograms one observation per task (exact).

    Outcomes and claims, most of every batch, are told apart before any other
    pattern is tried.
    """
    metrics.batch_committed(len(batch.commands), batch.seconds)
    created: Counter[str] = Counter()
    finished: Counter[tuple[str, bool]] = Counter()
    ran: list[Task] = []
    running = state.running
    for command, result in zip(batch.commands, batch.results, strict=True):
        if not isinstance(result, outcome.Value):
            continue
        value = result.value
        if isinstance(command, FinishTask):
            claimed = running.pop(command.task_id, None) if value else None
            if claimed is not None:
                finished[claimed.name, command.succeeded] += 1
                ran.append(claimed)
        elif isinstance(command, ClaimTasks):
            running.update((task.id, task) for task in value)
            metrics.tasks_claimed(value)
        else:
            _account_other(state, command, value, created)
    metrics.tasks_ran(ran, batch.at)
    metrics.add_created(created)
    metrics.add_finished(finished)


def _account_other(
    state: HubState, command: WriterCommand, value: Any, created: Counter[str]
) -> None:
    match command:
        case CreateTask():
            created[value.name] += 1
        case CreateTasks():
            created.update(task.name for task in value)
        case DeleteTask(task_id=task_id):
            state.running.pop(task_id, None)
        case RequeueRunning(worker_id=worker_id) if value:
            _forget_running(state, worker_id)
        case RequeueNode() if value:
            _forget_running(state, None)
        case ReapDeadWorkers() if value:
            for worker_id in value:
                _forget_running(state, worker_id)
        case _ if isinstance(value, Task) and not _is_read(command):
            state.running.pop(value.id, None)


def _forget_running(state: HubState, worker_id: int | None) -> None:
    if worker_id is None:
        state.running.clear()
        return
    for task_id in [t.id for t in state.running.values() if t.worker_id == worker_id]:
        del state.running[task_id]
