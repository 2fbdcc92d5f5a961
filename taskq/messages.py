"""The whole message protocol between actors, in one module.

Requests carry their own reply (``taskq.reply.Reply``); ``request`` is the
one helper that sends and awaits the answer. Replies are ``outcome.Outcome``
values so that a domain error (``NotFound``, ``Conflict``) travels back to the
caller and is raised there, not in the actor that found it.

Inboxes:
    writer      WriterCommand
    dispatcher  DispatcherMessage
    worker      WorkerMessage
    scheduler   SchedulerMessage
    supervisor  SupervisorMessage
    hub         HubMessage
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias, TypeVar

import outcome
import trio

from taskq.errors import Overloaded, Unavailable
from taskq.models import Change, NewTask, Priority, Task, TaskChanges, TaskStatus, WorkerStatus
from taskq.reply import Reply as Reply

M = TypeVar("M")


async def request(
    inbox: trio.MemorySendChannel[M],
    build: Callable[[Reply], M],
    *,
    backlog_max: int | None = None,
) -> Any:
    """Send ``build(reply)`` to ``inbox`` and return the answer (or raise its error).

    With ``backlog_max``, a request finding that many messages already waiting
    is refused at once with ``Overloaded`` instead of waiting for room.
    A reply closed without an answer means the actor died with the request in
    hand; the caller gets ``Unavailable`` rather than waiting forever.
    """
    reply = Reply()
    try:
        try:
            if backlog_max is None:
                await inbox.send(build(reply))
            elif inbox.statistics().current_buffer_used >= backlog_max:
                raise Overloaded("taskq is busy; try again shortly")
            else:
                inbox.send_nowait(build(reply))
        except trio.WouldBlock as exc:
            raise Overloaded("taskq is busy; try again shortly") from exc
        except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
            raise Unavailable("taskq is shutting down") from exc
        try:
            answer = await reply.receive()
        except trio.EndOfChannel as exc:
            raise Unavailable("taskq could not complete the request; try again") from exc
    finally:
        reply.stop_waiting()
    return answer.unwrap()


def drain(inbox: trio.MemoryReceiveChannel[M], most: int) -> list[M]:
    """Up to ``most`` messages already waiting in ``inbox``, without waiting for more:
    what an actor takes beside its first message to handle them as one batch."""
    waiting: list[M] = []
    while len(waiting) < most:
        try:
            waiting.append(inbox.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    return waiting


def answer(reply: Reply | None, result: outcome.Outcome[Any]) -> None:
    """Deliver a reply without ever blocking the answering actor.

    A reply has one slot and one answer, so ``send_nowait`` cannot block; a
    caller that gave up (cancelled) no longer waits, which is fine.
    """
    if reply is None:
        return
    with reply, contextlib.suppress(trio.BrokenResourceError):
        reply.send_nowait(result)


# --- Commands to the writer (each answered after its transaction commits) ---


@dataclass(frozen=True, slots=True)
class CreateTask:
    task: NewTask
    reply: Reply | None


@dataclass(frozen=True, slots=True)
class CreateTasks:
    """Several tasks in one transaction: all of them are created, or none."""

    tasks: tuple[NewTask, ...]
    reply: Reply | None


@dataclass(frozen=True, slots=True)
class GetTask:
    task_id: int
    reply: Reply | None


@dataclass(frozen=True, slots=True)
class ListTasks:
    skip: int
    limit: int
    status: TaskStatus | None
    reply: Reply | None
    name: str | None = None
    priority: Priority | None = None
    newest_first: bool = False


@dataclass(frozen=True, slots=True)
class UpdateTask:
    task_id: int
    changes: TaskChanges
    reply: Reply | None


@dataclass(frozen=True, slots=True)
class DeleteTask:
    task_id: int
    reply: Reply | None


@dataclass(frozen=True, slots=True)
class PauseTask:
    task_id: int
    reply: Reply | None


@dataclass(frozen=True, slots=True)
class ResumeTask:
    task_id: int
    reply: Reply | None


@dataclass(frozen=True, slots=True)
class RetryTask:
    task_id: int
    reply: Reply | None


@dataclass(frozen=True, slots=True)
class ClaimTasks:
    """Give up to ``per_worker`` pending tasks to each of ``worker_ids``, dealt in
    rounds (one each, in order, then a second each...) as far as they go.

    With ``wait``, a claim that finds nothing is not answered but parked: the
    writer runs it again at the end of every later batch, inside that batch's
    transaction, and answers as soon as it gets at least one task. A task
    created (or promoted, resumed, re-queued) while workers wait is so claimed
    in the very commit that made it ready.
    """

    worker_ids: tuple[int, ...]
    reply: Reply | None
    wait: bool = False
    per_worker: int = 1
    # Only tasks more urgent than this (None: any): a claim that waits for such a task.
    above: Priority | None = None


@dataclass(frozen=True, slots=True)
class WithdrawClaim:
    """Answer the parked claim, if any, with no tasks (its workers changed)."""

    reply: Reply | None = None


@dataclass(frozen=True, slots=True)
class FinishTask:
    """A handler's outcome; written only if the task still runs this ``attempt``.

    A failure with ``retry_after`` (seconds) set is not final: the task waits that
    long as ``scheduled`` and runs again. ``result_json`` is the result as JSON
    text (None: no result), checked where the handler ran: the store writes it as
    it is instead of encoding the result a second time on the writer's thread.
    """

    task_id: int
    attempt: int
    succeeded: bool
    result_json: str | None
    error: str | None
    reply: Reply | None
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class ReportProgress:
    """A handler's latest progress; fenced by ``attempt`` like ``FinishTask``."""

    task_id: int
    attempt: int
    progress: Any
    reply: Reply | None


@dataclass(frozen=True, slots=True)
class PromoteDueTasks:
    """Make pending the scheduled tasks due by ``due_by`` (a moment ahead of now: their
    workers hold them until their time); answers the next due time after that."""

    due_by: datetime
    reply: Reply | None


@dataclass(frozen=True, slots=True)
class RequeueRunning:
    """Put running tasks back in the queue: those of ``worker_id``, or all of them."""

    worker_id: int | None
    reply: Reply | None


@dataclass(frozen=True, slots=True)
class RequeueNode:
    """Put back in the queue the running tasks of this node's workers (start-up, shutdown)."""

    reply: Reply | None


@dataclass(frozen=True, slots=True)
class ReapDeadWorkers:
    """Reap the other nodes' workers silent for ``dead_after_seconds`` (database clock)."""

    dead_after_seconds: float
    reply: Reply | None


@dataclass(frozen=True, slots=True)
class WorkerHeartbeat:
    """A worker actor's own heartbeat; answers the held task ids it must stop.

    ``holding`` pairs each task the worker runs or has waiting with its
    attempt. Running tasks of this worker that it does not hold and that
    started more than ``min_age_seconds`` ago go back to the queue.
    """

    worker_id: int
    holding: tuple[tuple[int, int], ...]
    min_age_seconds: float
    reply: Reply | None


@dataclass(frozen=True, slots=True)
class CreateWorker:
    name: str
    reply: Reply | None


@dataclass(frozen=True, slots=True)
class RestoreWorkers:
    """At start-up: keep ``boot_workers`` boot workers, answer every worker to run."""

    boot_workers: int
    reply: Reply | None


@dataclass(frozen=True, slots=True)
class CountTasks:
    """How many tasks each (status, priority) pair holds; answers ``TaskCounts``."""

    reply: Reply | None


@dataclass(frozen=True, slots=True)
class GetWorker:
    worker_id: int
    reply: Reply | None


@dataclass(frozen=True, slots=True)
class ListWorkers:
    reply: Reply | None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    worker_id: int
    reply: Reply | None


@dataclass(frozen=True, slots=True)
class SetWorkerStatus:
    worker_id: int
    status: WorkerStatus
    reply: Reply | None


WriterCommand: TypeAlias = (
    CreateTask
    | CreateTasks
    | GetTask
    | ListTasks
    | CountTasks
    | UpdateTask
    | DeleteTask
    | PauseTask
    | ResumeTask
    | RetryTask
    | ClaimTasks
    | WithdrawClaim
    | FinishTask
    | ReportProgress
    | PromoteDueTasks
    | RequeueRunning
    | RequeueNode
    | ReapDeadWorkers
    | WorkerHeartbeat
    | CreateWorker
    | RestoreWorkers
    | GetWorker
    | ListWorkers
    | Heartbeat
    | SetWorkerStatus
)

# Read-only commands, answered by the reader on a connection of its own.
ReaderCommand: TypeAlias = GetTask | ListTasks | CountTasks | GetWorker | ListWorkers


# --- Events the writer publishes after each commit ---


@dataclass(frozen=True, slots=True)
class TasksReady:
    """At least one task became pending: idle workers should claim.

    The writer's own claims see its commits; a task made ready by another node
    (``from_other_node``) needs a parked claim to be run again.
    """

    from_other_node: bool = False


@dataclass(frozen=True, slots=True)
class TaskScheduled:
    """A task waits for ``at``: the scheduler must wake by then."""

    at: datetime


@dataclass(frozen=True, slots=True)
class TaskRevoked:
    """A running task was paused or deleted: its worker must stop it.

    ``suspend`` (a pause) lets a handler that checkpoints stop at its next
    checkpoint and wait there to be resumed, instead of being cancelled.
    """

    task_id: int
    worker_id: int
    suspend: bool = False


@dataclass(frozen=True, slots=True)
class SuspensionVoided:
    """A task that is not running was deleted or rewritten: a suspended execution
    of it (from an earlier pause) must end rather than be resumed."""

    task_id: int


@dataclass(frozen=True, slots=True)
class WorkerStatusChanged:
    worker_id: int
    status: WorkerStatus


Event: TypeAlias = TasksReady | TaskScheduled | TaskRevoked | SuspensionVoided | WorkerStatusChanged


# --- Dispatcher inbox ---


@dataclass(frozen=True, slots=True)
class WorkerJoined:
    worker_id: int
    inbox: trio.MemorySendChannel[WorkerMessage]


@dataclass(frozen=True, slots=True)
class WorkerIdle:
    """``task_seconds``: how long each task of the worker's last busy spell took on
    average, a hint for how many tasks a claim may hand a worker at once."""

    worker_id: int
    task_seconds: float | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class StopDispatching:
    """Shutdown: hand out no more tasks."""

    reply: Reply | None


DispatcherMessage: TypeAlias = (
    WorkerJoined
    | WorkerIdle
    | StopDispatching
    | TasksReady
    | TaskRevoked
    | SuspensionVoided
    | WorkerStatusChanged
)


# --- Worker inbox ---


@dataclass(frozen=True, slots=True)
class RunTasks:
    """The tasks one claim gave this worker, most urgent first: one message, so the
    worker wakes once per claim rather than once per task."""

    tasks: tuple[Task, ...]


@dataclass(frozen=True, slots=True)
class StopTask:
    """Stop the task's execution: cancel it, or with ``suspend`` park it at a checkpoint."""

    task_id: int
    suspend: bool = False


@dataclass(frozen=True, slots=True)
class SetActive:
    active: bool


@dataclass(frozen=True, slots=True)
class AnnounceIdle:
    """Sent by a (re)started dispatcher: say again whether you are idle."""


@dataclass(frozen=True, slots=True)
class Drain:
    """Shutdown: answer once no task is running (new ones are not coming)."""

    reply: Reply | None


WorkerMessage: TypeAlias = RunTasks | StopTask | SetActive | AnnounceIdle | Drain


# --- Scheduler and supervisor inboxes ---

SchedulerMessage: TypeAlias = TaskScheduled


@dataclass(frozen=True, slots=True)
class SpawnWorker:
    worker_id: int
    reply: Reply | None


SupervisorMessage: TypeAlias = SpawnWorker


# --- Events hub inbox ---


@dataclass(frozen=True, slots=True)
class Committed:
    """One committed writer batch: its commands and their outcomes, in order.

    The writer hands over what it already holds and nothing more; turning it
    into events (and any encoding) is the hub's work, off the writer's path.
    """

    commands: tuple[WriterCommand, ...]
    results: tuple[outcome.Outcome[Any], ...]
    at: datetime
    # Wall time of applying and committing the batch on the writer's thread.
    seconds: float


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Open a stream of changes; replay first those after ``after`` still in the ring.

    Answers a ``Subscription``. A subscriber that falls ``buffer`` changes
    behind is dropped: its channel closes, and it may reconnect and resume.
    """

    after: int | None
    buffer: int
    reply: Reply | None


@dataclass(frozen=True, slots=True)
class EndStreams:
    """Shutdown: end every subscriber's stream, and those opened from now on, at once.

    Open streams would otherwise hold the HTTP server's graceful stop until its timeout.
    """


HubMessage: TypeAlias = Committed | Subscribe | EndStreams


@dataclass(frozen=True, slots=True)
class Subscription:
    """The hub's answer to ``Subscribe``: the stream, closed if the subscriber falls behind."""

    changes: trio.MemoryReceiveChannel[Change]
    # False when changes after the requested id have already left the ring:
    # the subscriber missed some and should re-read the state it shows.
    complete: bool
