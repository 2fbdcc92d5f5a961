"""The Writer: the only actor that touches the database.

Group commit: it takes the first command waiting, drains whatever else is
already queued (up to ``batch_max``), applies all of it in ONE transaction on
its own thread, commits, and only then answers each command and publishes the
resulting events. An answer therefore always describes committed state: an
HTTP 201 means the task is on disk.

Consecutive commands of the same kind share statements: a run of creates is
one executemany insert, a run of successful outcomes nobody waits for is one
executemany update. A claim for many workers is two statements.

Any error while applying a batch (a database error, or a bug in one command)
fails the batch; the writer then retries each command in a transaction of its
own, so one bad command cannot fail its neighbours, and a command that still
fails is answered ``Unavailable`` (never a false success). The writer carries
on with the next batch.

On PostgreSQL the events of a transaction are also sent to the other nodes
from inside it (``Tx.announce``, NOTIFY): they arrive on commit, or never.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeGuard

import outcome
import trio

from taskq.config import WRITER_BATCH_MAX, WRITER_LINGER_SECONDS
from taskq.errors import TaskqError, Unavailable
from taskq.messages import (
    ClaimTasks,
    Committed,
    CountTasks,
    CreateTask,
    CreateTasks,
    CreateWorker,
    DeleteTask,
    DispatcherMessage,
    Event,
    FinishTask,
    GetTask,
    GetWorker,
    Heartbeat,
    HubMessage,
    ListTasks,
    ListWorkers,
    PauseTask,
    PromoteDueTasks,
    ReapDeadWorkers,
    ReportProgress,
    RequeueNode,
    RequeueRunning,
    RestoreWorkers,
    ResumeTask,
    RetryTask,
    SchedulerMessage,
    SetWorkerStatus,
    SuspensionVoided,
    TaskRevoked,
    TaskScheduled,
    TasksReady,
    UpdateTask,
    WithdrawClaim,
    WorkerHeartbeat,
    WorkerStatusChanged,
    WriterCommand,
    answer,
)
from taskq.models import NewTask, Task, TaskStatus, WorkerStatus, utcnow, waiting_status
from taskq.store import Completion, Revoked, Store, Tx

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
    hub: trio.MemorySendChannel[HubMessage] | None = None,
    linger_seconds: float = WRITER_LINGER_SECONDS,
) -> None:
    """Apply commands in batches until every sender has closed the inbox.

    ``hub`` (unbounded) gets each committed batch as it is, for the event stream
    and the metrics; the writer does no more work for them than that one send.
    """
    thread = trio.CapacityLimiter(1)
    parked: ClaimTasks | None = None
    # Workers this writer set inactive: no claim, even one sent before, reaches them.
    stopped: set[int] = set()
    try:
        async for first in inbox:
            batch = [first, *_drain(inbox, batch_max - 1)]
            if all(command.reply is None for command in batch):
                batch += await _linger(inbox, batch_max - len(batch), linger_seconds)
            if parked is not None and _still_awaited(parked):
                batch.append(parked)
            parked = None
            batch = _claims_last(_without_stopped_workers(batch, stopped))
            now = clock()
            started = time.perf_counter()
            try:
                results, events = await trio.to_thread.run_sync(
                    apply_batch, store, batch, now, limiter=thread
                )
            except BaseException:
                _refuse(batch, "the writer failed while applying this request; try again")
                raise
            seconds = time.perf_counter() - started
            parked = _answer_all(batch, results)
            _note_status_changes(batch, results, stopped)
            publish(events, dispatcher, scheduler)
            if hub is not None:
                _send(hub, Committed(tuple(batch), tuple(results), now, seconds))
    finally:
        if parked is not None:
            answer(parked.reply, outcome.Value([]))


def _answer_all(
    batch: Sequence[WriterCommand], results: Sequence[outcome.Outcome[Any]]
) -> ClaimTasks | None:
    """Answer every command but a waiting claim that found nothing: that one is returned,
    to be parked (the latest such claim wins; a withdrawal answers it with nothing)."""
    parked: ClaimTasks | None = None
    withdrawn = any(isinstance(command, WithdrawClaim) for command in batch)
    for command, result in zip(batch, results, strict=True):
        if _found_nothing(command, result) and not withdrawn:
            if parked is not None:
                answer(parked.reply, outcome.Value([]))
            parked = command
        else:
            answer(command.reply, result)
    return parked


def _found_nothing(command: WriterCommand, result: outcome.Outcome[Any]) -> TypeGuard[ClaimTasks]:
    return (
        isinstance(command, ClaimTasks)
        and command.wait
        and isinstance(result, outcome.Value)
        and result.value == []
    )


def _still_awaited(claim: ClaimTasks) -> bool:
    """A claim whose asker has gone (a restarted dispatcher) must not take tasks."""
    return claim.reply is None or claim.reply.statistics().open_receive_channels > 0


def _claims_last(batch: Sequence[WriterCommand]) -> list[WriterCommand]:
    """Claims see everything else in their batch: a task created beside a claim is
    claimed in that commit, never left for a claim that already ran and was parked."""
    return sorted(batch, key=lambda command: isinstance(command, ClaimTasks))


def _without_stopped_workers(
    batch: Sequence[WriterCommand], stopped: set[int]
) -> list[WriterCommand]:
    """Leave out of every claim the workers set inactive before or within this batch;
    a claim left with no worker is answered at once with no task."""
    leaving = stopped | {
        command.worker_id
        for command in batch
        if isinstance(command, SetWorkerStatus) and command.status != WorkerStatus.ACTIVE
    }
    if not leaving:
        return list(batch)
    kept: list[WriterCommand] = []
    for command in batch:
        if isinstance(command, ClaimTasks):
            worker_ids = tuple(worker for worker in command.worker_ids if worker not in leaving)
            if not worker_ids:
                answer(command.reply, outcome.Value([]))
                continue
            command = dataclasses.replace(command, worker_ids=worker_ids)
        kept.append(command)
    return kept


def _note_status_changes(
    batch: Sequence[WriterCommand], results: Sequence[outcome.Outcome[Any]], stopped: set[int]
) -> None:
    for command, result in zip(batch, results, strict=True):
        if isinstance(command, SetWorkerStatus) and isinstance(result, outcome.Value):
            if command.status == WorkerStatus.ACTIVE:
                stopped.discard(command.worker_id)
            else:
                stopped.add(command.worker_id)


async def _linger(
    inbox: trio.MemoryReceiveChannel[WriterCommand], most: int, seconds: float
) -> list[WriterCommand]:
    """A batch nobody waits for (workers' outcomes) waits a moment for company.

    The outcomes of a round of tasks arrive one by one, just before the claim
    for the same workers; waiting for that claim (or at most ``seconds``) puts
    them all in one commit instead of two or more.
    """
    if most <= 0:
        return []
    with trio.move_on_after(seconds):
        try:
            first = await inbox.receive()
        except trio.EndOfChannel:
            return []
        return [first, *_drain(inbox, most - 1)]
    return []


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
        with store.writer_transaction() as tx:
            return _apply_all(tx, batch, now)
    except Exception:
        log.exception("batch of %d commands failed; retrying them one by one", len(batch))
    results: list[outcome.Outcome[Any]] = []
    events: list[Event] = []
    for command in batch:
        try:
            with store.writer_transaction() as tx:
                (result,), new_events = _apply_all(tx, [command], now)
        except Exception as exc:
            log.exception("%s failed on its own", type(command).__name__)
            failure = f"taskq could not apply this request ({type(exc).__name__}: {exc})"
            result, new_events = outcome.Error(Unavailable(failure)), []
        results.append(result)
        events.extend(new_events)
    return results, events


def _apply_all(tx: Tx, batch: Sequence[WriterCommand], now: datetime) -> Applied:
    results: list[outcome.Outcome[Any]] = []
    events: list[Event] = []
    for kind, run in itertools.groupby(batch, key=_bulk_kind):
        commands = list(run)
        if kind is CreateTask:
            _create_run(tx, commands, now, results, events)
        elif kind is FinishTask:
            _complete_run(tx, commands, now, results)
        else:
            for command in commands:
                _apply_one(tx, command, now, results, events)
    tx.announce(events)
    return results, events


def _bulk_kind(command: WriterCommand) -> type | None:
    """Which run a command can share statements with; None: it is applied on its own."""
    match command:
        case CreateTask() | CreateTasks():
            return CreateTask
        case FinishTask(succeeded=True, reply=None):
            return FinishTask
    return None


def _create_run(
    tx: Tx,
    commands: Sequence[WriterCommand],
    now: datetime,
    results: list[outcome.Outcome[Any]],
    events: list[Event],
) -> None:
    news = [new for command in commands for new in _new_tasks(command)]
    created = iter(tx.create_many(news, now))
    for command in commands:
        if isinstance(command, CreateTask):
            results.append(outcome.Value(next(created)))
        else:
            results.append(outcome.Value(list(itertools.islice(created, len(_new_tasks(command))))))
    events.extend(_waiting_events_of_many(news, now))


def _new_tasks(command: WriterCommand) -> tuple[NewTask, ...]:
    match command:
        case CreateTask(task=new):
            return (new,)
        case CreateTasks(tasks=news):
            return news
    raise AssertionError(f"not a create: {command!r}")


def _waiting_events_of_many(news: Sequence[NewTask], now: datetime) -> list[Event]:
    """One ``TasksReady`` and the earliest ``TaskScheduled`` say all a run of creates has to."""
    due = [new.scheduled_at for new in news if new.scheduled_at is not None]
    ahead = [at for at in due if waiting_status(at, now) == TaskStatus.SCHEDULED]
    events: list[Event] = []
    if len(ahead) < len(news):
        events.append(TasksReady())
    if ahead:
        events.append(TaskScheduled(min(ahead)))
    return events


def _complete_run(
    tx: Tx, commands: Sequence[WriterCommand], now: datetime, results: list[outcome.Outcome[Any]]
) -> None:
    written = tx.complete_many(
        [
            Completion(command.task_id, command.attempt, command.result)
            for command in commands
            if isinstance(command, FinishTask)
        ],
        now,
    )
    results.extend(outcome.Value(each) for each in written)


def _apply_one(
    tx: Tx,
    command: WriterCommand,
    now: datetime,
    results: list[outcome.Outcome[Any]],
    events: list[Event],
) -> None:
    try:
        result, new_events = _apply(tx, command, now)
    except TaskqError as refusal:
        results.append(outcome.Error(refusal))
    else:
        results.append(outcome.Value(result))
        events.extend(new_events)


def _apply(tx: Tx, command: WriterCommand, now: datetime) -> tuple[Any, list[Event]]:
    match command:
        case GetTask(task_id=task_id):
            return tx.get_task(task_id), []
        case ListTasks(skip=skip, limit=limit, status=status):
            found = tx.list_tasks(
                skip,
                limit,
                status,
                name=command.name,
                priority=command.priority,
                newest_first=command.newest_first,
            )
            return found, []
        case CountTasks():
            return tx.count_tasks(), []
        case UpdateTask(task_id=task_id, changes=changes):
            task = tx.update_task(task_id, changes, now)
            rewritten = not changes.fields.isdisjoint({"name", "payload"})
            return task, _waiting_events(task) + ([SuspensionVoided(task_id)] if rewritten else [])
        case DeleteTask(task_id=task_id):
            return None, _revoked_events(tx.delete_task(task_id), suspend=False)
        case PauseTask(task_id=task_id):
            revoked = tx.pause_task(task_id, now)
            return revoked.task, _revoked_events(revoked, suspend=True)
        case ResumeTask(task_id=task_id):
            task = tx.resume_task(task_id, now)
            return task, _waiting_events(task)
        case RetryTask(task_id=task_id):
            task = tx.retry_task(task_id, now)
            return task, _waiting_events(task)
        case ClaimTasks(worker_ids=worker_ids):
            return tx.claim(worker_ids, now), []
        case FinishTask(retry_after=float() as delay, error=str() as error):
            at = now + timedelta(seconds=delay)
            written = tx.schedule_retry(
                command.task_id, command.attempt, error=error, at=at, now=now
            )
            return written, [TaskScheduled(at)] if written else []
        case WithdrawClaim():
            return None, []
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
        case ReportProgress(task_id=task_id, attempt=attempt, progress=progress):
            return tx.record_progress(task_id, attempt, progress, now), []
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


def _revoked_events(revoked: Revoked, *, suspend: bool) -> list[Event]:
    if revoked.worker_id is not None:
        return [TaskRevoked(revoked.task.id, revoked.worker_id, suspend)]
    if suspend:
        return []
    return [SuspensionVoided(revoked.task.id)]


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
            case TaskRevoked() | SuspensionVoided() | WorkerStatusChanged():
                _send(dispatcher, event)


def _send(inbox: trio.MemorySendChannel[Any], event: Event | Committed) -> None:
    try:
        inbox.send_nowait(event)
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        log.debug("dropped %r: its receiver has stopped", event)
