"""The whole message protocol between actors, in one module.

Requests carry their own one-slot reply channel (``reply``); ``request`` is the
one helper that sends and awaits the answer. Replies are ``outcome.Outcome``
values so that a domain error (``NotFound``, ``Conflict``) travels back to the
caller and is raised there, not in the actor that found it.

Inboxes:
    writer      WriterCommand
    dispatcher  DispatcherMessage
    worker      WorkerMessage
    scheduler   SchedulerMessage
    supervisor  SupervisorMessage
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias, TypeVar

import outcome
import trio

from taskq.errors import Unavailable
from taskq.models import NewTask, Task, TaskChanges, TaskStatus, WorkerStatus

Reply: TypeAlias = trio.MemorySendChannel[outcome.Outcome[Any]]
M = TypeVar("M")


async def request(inbox: trio.MemorySendChannel[M], build: Callable[[Reply], M]) -> Any:
    """Send ``build(reply)`` to ``inbox`` and return the answer (or raise its error).

    A reply channel closed without an answer means the actor died with the
    request in hand; the caller gets ``Unavailable`` rather than waiting forever.
    """
    reply_send, reply_receive = trio.open_memory_channel[outcome.Outcome[Any]](1)
    with reply_receive:
        try:
            await inbox.send(build(reply_send))
        except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
            raise Unavailable("taskq is shutting down") from exc
        try:
            answer = await reply_receive.receive()
        except trio.EndOfChannel as exc:
            raise Unavailable("taskq could not complete the request; try again") from exc
    return answer.unwrap()


def answer(reply: Reply | None, result: outcome.Outcome[Any]) -> None:
    """Deliver a reply without ever blocking the answering actor.

    A reply channel has one slot and one answer, so ``send_nowait`` cannot
    block; a caller that gave up (cancelled) has closed its end, which is fine.
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
class GetTask:
    task_id: int
    reply: Reply | None


@dataclass(frozen=True, slots=True)
class ListTasks:
    skip: int
    limit: int
    status: TaskStatus | None
    reply: Reply | None


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
class ClaimTasks:
    """Give one pending task to each of ``worker_ids``, in order, as far as they go."""

    worker_ids: tuple[int, ...]
    reply: Reply | None


@dataclass(frozen=True, slots=True)
class FinishTask:
    """A handler's outcome; written only if the task still runs this ``attempt``."""

    task_id: int
    attempt: int
    succeeded: bool
    result: Any
    error: str | None
    reply: Reply | None


@dataclass(frozen=True, slots=True)
class PromoteDueTasks:
    """Make scheduled tasks due at ``now`` pending; answers the next due time."""

    now: datetime
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
    """Take offline the other nodes' workers silent since ``cutoff``; re-queue their tasks."""

    cutoff: datetime
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
    | GetTask
    | ListTasks
    | UpdateTask
    | DeleteTask
    | PauseTask
    | ResumeTask
    | ClaimTasks
    | FinishTask
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


# --- Events the writer publishes after each commit ---


@dataclass(frozen=True, slots=True)
class TasksReady:
    """At least one task became pending: idle workers should claim."""


@dataclass(frozen=True, slots=True)
class TaskScheduled:
    """A task waits for ``at``: the scheduler must wake by then."""

    at: datetime


@dataclass(frozen=True, slots=True)
class TaskRevoked:
    """A running task was paused or deleted: its worker must stop it."""

    task_id: int
    worker_id: int


@dataclass(frozen=True, slots=True)
class WorkerStatusChanged:
    worker_id: int
    status: WorkerStatus


Event: TypeAlias = TasksReady | TaskScheduled | TaskRevoked | WorkerStatusChanged


# --- Dispatcher inbox ---


@dataclass(frozen=True, slots=True)
class WorkerJoined:
    worker_id: int
    inbox: trio.MemorySendChannel[WorkerMessage]


@dataclass(frozen=True, slots=True)
class WorkerIdle:
    worker_id: int


@dataclass(frozen=True, slots=True)
class StopDispatching:
    """Shutdown: hand out no more tasks."""

    reply: Reply | None


DispatcherMessage: TypeAlias = (
    WorkerJoined | WorkerIdle | StopDispatching | TasksReady | TaskRevoked | WorkerStatusChanged
)


# --- Worker inbox ---


@dataclass(frozen=True, slots=True)
class RunTask:
    task: Task


@dataclass(frozen=True, slots=True)
class StopTask:
    task_id: int


@dataclass(frozen=True, slots=True)
class SetActive:
    active: bool


@dataclass(frozen=True, slots=True)
class AnnounceIdle:
    """Sent by a (re)started dispatcher: say again whether you are idle."""


@dataclass(frozen=True, slots=True)
class TaskDone:
    """From the worker's own execution task back to its loop."""

    task_id: int


@dataclass(frozen=True, slots=True)
class Drain:
    """Shutdown: answer once no task is running (new ones are not coming)."""

    reply: Reply | None


WorkerMessage: TypeAlias = RunTask | StopTask | SetActive | AnnounceIdle | TaskDone | Drain


# --- Scheduler and supervisor inboxes ---

SchedulerMessage: TypeAlias = TaskScheduled


@dataclass(frozen=True, slots=True)
class SpawnWorker:
    worker_id: int
    reply: Reply | None


SupervisorMessage: TypeAlias = SpawnWorker
