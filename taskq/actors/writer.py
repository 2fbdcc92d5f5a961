"""The Writer: the only actor that touches the database.

Group commit: it takes the first command waiting, drains whatever else is
already queued (up to ``batch_max``), applies all of it in ONE transaction on
its own thread, commits, and only then answers each command and publishes the
resulting events. An answer therefore always describes committed state: an
HTTP 201 means the task is on disk.

A database error fails the batch; the writer then retries each command in a
transaction of its own, so one bad command cannot fail its neighbours, and a
command that still fails is answered ``Unavailable`` (never a false success).

On PostgreSQL the events of a transaction are also sent to the other nodes
from inside it (``Tx.announce``, NOTIFY): they arrive on commit, or never.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import outcome
import trio
from sqlalchemy.exc import SQLAlchemyError

from taskq.config import WRITER_BATCH_MAX
from taskq.errors import TaskqError, Unavailable
from taskq.messages import (
    ClaimTasks,
    CreateTask,
    CreateWorker,
    DeleteTask,
    DispatcherMessage,
    Event,
    FinishTask,
    GetTask,
    GetWorker,
    Heartbeat,
    ListTasks,
    ListWorkers,
    PauseTask,
    PromoteDueTasks,
    ReapDeadWorkers,
    RequeueNode,
    RequeueRunning,
    RestoreWorkers,
    ResumeTask,
    SchedulerMessage,
    SetWorkerStatus,
    TaskRevoked,
    TaskScheduled,
    TasksReady,
    UpdateTask,
    WorkerHeartbeat,
    WorkerStatusChanged,
    WriterCommand,
    answer,
)
from taskq.models import Task, TaskStatus, utcnow
from taskq.store import Revoked, Store, Tx

log = logging.getLogger(__name__)

Applied = tuple[list[outcome.Outcome[Any]], list[Event]]


async def run(
    inbox: trio.MemoryReceiveChannel[WriterCommand],
    store: Store,
    dispatcher: trio.MemorySendChannel[DispatcherMessage],
    scheduler: trio.MemorySendChannel[SchedulerMessage],
    *,
    clock: Callable[[], datetime] = utcnow,
    batch_max: int = WRITER_BATCH_MAX,
) -> None:
    """Apply commands in batches until every sender has closed the inbox."""
    thread = trio.CapacityLimiter(1)
    async for first in inbox:
        batch = [first, *_drain(inbox, batch_max - 1)]
        try:
            results, events = await trio.to_thread.run_sync(
                apply_batch, store, batch, clock(), limiter=thread
            )
        except BaseException:
            _refuse(batch, "the writer failed while applying this request; try again")
            raise
        for command, result in zip(batch, results, strict=True):
            answer(command.reply, result)
        publish(events, dispatcher, scheduler)


def _drain(inbox: trio.MemoryReceiveChannel[WriterCommand], most: int) -> list[WriterCommand]:
    waiting: list[WriterCommand] = []
    while len(waiting) < most:
        try:
            waiting.append(inbox.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    return waiting


def _refuse(batch: Sequence[WriterCommand], detail: str) -> None:
    for command in batch:
        answer(command.reply, outcome.Error(Unavailable(detail)))


def apply_batch(store: Store, batch: Sequence[WriterCommand], now: datetime) -> Applied:
    """Runs on the writer's thread: the whole batch in one transaction if it can."""
    try:
        with store.transaction() as tx:
            return _apply_all(tx, batch, now)
    except SQLAlchemyError:
        log.exception("batch of %d commands failed; retrying them one by one", len(batch))
    results: list[outcome.Outcome[Any]] = []
    events: list[Event] = []
    for command in batch:
        try:
            with store.transaction() as tx:
                (result,), new_events = _apply_all(tx, [command], now)
        except SQLAlchemyError as exc:
            result, new_events = (
                outcome.Error(Unavailable(f"database error: {exc}")),
                [],
            )
        results.append(result)
        events.extend(new_events)
    return results, events


def _apply_all(tx: Tx, batch: Sequence[WriterCommand], now: datetime) -> Applied:
    results: list[outcome.Outcome[Any]] = []
    events: list[Event] = []
    for command in batch:
        try:
            result, new_events = _apply(tx, command, now)
        except TaskqError as refusal:
            results.append(outcome.Error(refusal))
        else:
            results.append(outcome.Value(result))
            events.extend(new_events)
    tx.announce(events)
    return results, events


def _apply(tx: Tx, command: WriterCommand, now: datetime) -> tuple[Any, list[Event]]:
    match command:
        case CreateTask(task=new):
            task = tx.create_task(new, now)
            return task, _waiting_events(task)
        case GetTask(task_id=task_id):
            return tx.get_task(task_id), []
        case ListTasks(skip=skip, limit=limit, status=status):
            return tx.list_tasks(skip, limit, status), []
        case UpdateTask(task_id=task_id, changes=changes):
            task = tx.update_task(task_id, changes, now)
            return task, _waiting_events(task)
        case DeleteTask(task_id=task_id):
            return None, _revoked_events(tx.delete_task(task_id))
        case PauseTask(task_id=task_id):
            revoked = tx.pause_task(task_id, now)
            return revoked.task, _revoked_events(revoked)
        case ResumeTask(task_id=task_id):
            task = tx.resume_task(task_id, now)
            return task, _waiting_events(task)
        case ClaimTasks(worker_ids=worker_ids):
            return tx.claim(worker_ids, now), []
        case FinishTask():
            written = tx.finish(
                command.task_id,
                command.attempt,
                succeeded=command.succeeded,
                result=command.result,
                error=command.error,
                now=now,
            )
            return written, []
        case PromoteDueTasks(now=due_by):
            promoted, next_due = tx.promote_due(due_by)
            return next_due, [TasksReady()] if promoted else []
        case RequeueRunning(worker_id=worker_id):
            requeued = tx.requeue_running(worker_id, now)
            return requeued, [TasksReady()] if requeued else []
        case RequeueNode():
            requeued = tx.requeue_node(now)
            return requeued, [TasksReady()] if requeued else []
        case ReapDeadWorkers(cutoff=cutoff):
            dead, requeued = tx.reap_dead(cutoff, now)
            return dead, [TasksReady()] if requeued else []
        case WorkerHeartbeat(worker_id=worker_id, holding=holding):
            stale_before = now - timedelta(seconds=command.min_age_seconds)
            lost, requeued = tx.worker_heartbeat(worker_id, dict(holding), stale_before, now)
            return lost, [TasksReady()] if requeued else []
        case CreateWorker(name=name):
            return tx.create_worker(name, now), []
        case RestoreWorkers(boot_workers=boot_workers):
            return tx.restore_workers(boot_workers, now), []
        case GetWorker(worker_id=worker_id):
            return tx.get_worker(worker_id), []
        case ListWorkers():
            return tx.list_workers(), []
        case Heartbeat(worker_id=worker_id):
            return tx.heartbeat(worker_id, now), []
        case SetWorkerStatus(worker_id=worker_id, status=status):
            worker = tx.set_worker_status(worker_id, status, now)
            return worker, [WorkerStatusChanged(worker.id, worker.status)]
    raise AssertionError(f"unknown writer command {command!r}")


def _waiting_events(task: Task) -> list[Event]:
    if task.status == TaskStatus.PENDING:
        return [TasksReady()]
    if task.status == TaskStatus.SCHEDULED and task.scheduled_at is not None:
        return [TaskScheduled(task.scheduled_at)]
    return []


def _revoked_events(revoked: Revoked) -> list[Event]:
    if revoked.worker_id is None:
        return []
    return [TaskRevoked(revoked.task.id, revoked.worker_id)]


def publish(
    events: Sequence[Event],
    dispatcher: trio.MemorySendChannel[DispatcherMessage],
    scheduler: trio.MemorySendChannel[SchedulerMessage],
) -> None:
    """Events go to unbounded inboxes: publishing never blocks the writer."""
    ready_sent = False
    for event in events:
        match event:
            case TasksReady():
                if not ready_sent:
                    _send(dispatcher, event)
                    ready_sent = True
            case TaskScheduled():
                _send(scheduler, event)
            case TaskRevoked() | WorkerStatusChanged():
                _send(dispatcher, event)


def _send(inbox: trio.MemorySendChannel[Any], event: Event) -> None:
    try:
        inbox.send_nowait(event)
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        log.debug("dropped %r: its receiver has stopped", event)
