"""What the Writer does on its thread: apply one batch of commands in one transaction.

Consecutive commands of the same kind share statements: a run of creates is
one executemany insert, a run of successful outcomes nobody waits for is one
executemany update, a run of workers' heartbeats is three statements. A claim
for many workers is two statements.

Any error while applying a batch (a database error, or a bug in one command)
fails the batch; each command is then retried in a transaction of its own, so
one bad command cannot fail its neighbours, and a command that still fails is
answered ``Unavailable`` (never a false success).

On PostgreSQL the events of a transaction are also sent to the other nodes
from inside it (``Tx.announce``, NOTIFY): they arrive on commit, or never.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import outcome
import psycopg
from sqlalchemy.exc import DBAPIError

from taskq.errors import NotFound, TaskqError, Unavailable
from taskq.messages import (
    ClaimTasks,
    CountTasks,
    CreateTask,
    CreateTasks,
    CreateWorker,
    DeleteTask,
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
    ReportProgress,
    RequeueNode,
    RequeueRunning,
    RestoreWorkers,
    ResumeTask,
    RetryTask,
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
)
from taskq.models import NewTask, Task, TaskStatus, waiting_status
from taskq.store import Completion, Revoked, Store, Tx
from taskq.store.cluster import Beat
from taskq.store.workers import WORKER_NOT_FOUND

log = logging.getLogger(__name__)

Applied = tuple[list[outcome.Outcome[Any]], list[Event]]


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
            failure = f"taskq could not apply this request ({_describe(exc)}); try again later"
            result, new_events = outcome.Error(Unavailable(failure)), []
        results.append(result)
        events.extend(new_events)
    return results, events


def _describe(exc: Exception) -> str:
    """The database's own words ("database or disk is full", "attempt to write a
    readonly database"), without the SQL and the links SQLAlchemy adds to them."""
    said = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(said, sqlite3.Error | psycopg.Error):
        return f"the database said: {str(said).strip()}"
    return f"{type(exc).__name__}: {exc}"


def _apply_all(tx: Tx, batch: Sequence[WriterCommand], now: datetime) -> Applied:
    results: list[outcome.Outcome[Any]] = []
    events: list[Event] = []
    for kind, run in itertools.groupby(batch, key=_bulk_kind):
        commands = list(run)
        if kind is CreateTask:
            _create_run(tx, commands, now, results, events)
        elif kind is FinishTask:
            _complete_run(tx, commands, now, results)
        elif kind is WorkerHeartbeat:
            _heartbeat_run(tx, commands, now, results, events)
        else:
            for command in commands:
                _apply_one(tx, command, now, results, events)
    tx.announce(events)
    return results, events


def _bulk_kind(command: WriterCommand) -> type | None:
    """Which run a command can share statements with; None: it is applied on its own."""
    if type(command) is FinishTask:
        # Most commands of a busy writer, told apart before any pattern is tried.
        return FinishTask if command.succeeded and command.reply is None else None
    match command:
        case CreateTask() | CreateTasks():
            return CreateTask
        case WorkerHeartbeat():
            return WorkerHeartbeat
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
            Completion(command.task_id, command.attempt, command.result_json)
            for command in commands
            if isinstance(command, FinishTask)
        ],
        now,
    )
    results.extend(outcome.Value(each) for each in written)


def _heartbeat_run(
    tx: Tx,
    commands: Sequence[WriterCommand],
    now: datetime,
    results: list[outcome.Outcome[Any]],
    events: list[Event],
) -> None:
    """Workers started together beat together: their beats share three statements."""
    beats = [
        Beat(
            command.worker_id,
            dict(command.holding),
            now - timedelta(seconds=command.min_age_seconds),
        )
        for command in commands
        if isinstance(command, WorkerHeartbeat)
    ]
    answers, requeued = tx.worker_heartbeats(beats, now)
    results.extend(
        outcome.Error(NotFound(WORKER_NOT_FOUND)) if lost is None else outcome.Value(lost)
        for lost in answers
    )
    if requeued:
        events.append(TasksReady())


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
        case ClaimTasks(worker_ids=worker_ids, per_worker=per_worker, above=above):
            return tx.claim(worker_ids, now, per_worker, above), []
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
                result_json=command.result_json,
                error=command.error,
                now=now,
            )
            return written, []
        case ReportProgress(task_id=task_id, attempt=attempt, progress=progress):
            return tx.record_progress(task_id, attempt, progress, now), []
        case PromoteDueTasks(due_by=due_by):
            promoted, next_due = tx.promote_due(due_by, now)
            return next_due, [TasksReady()] if promoted else []
        case RequeueRunning(worker_id=worker_id):
            requeued = tx.requeue_running(worker_id, now)
            return requeued, [TasksReady()] if requeued else []
        case RequeueNode():
            requeued = tx.requeue_node(now)
            return requeued, [TasksReady()] if requeued else []
        case ReapDeadWorkers(dead_after_seconds=dead_after_seconds):
            dead, requeued = tx.reap_dead(dead_after_seconds, now)
            return dead, [TasksReady()] if requeued else []
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
