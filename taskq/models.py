"""The vocabulary shared by the database, the API and the messages.

Statuses, priorities and the records the store hands out live here so that no
layer invents its own spelling of them. ``SOURCES`` is the single table of
which statuses each action may start from; the store turns it into its ``WHERE
status ...`` conditions, so the rule and the SQL cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeAlias, TypeVar


class TaskStatus(enum.StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"


class Priority(enum.IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


class WorkerStatus(enum.StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"
    # Set by taskq itself (a boot worker no longer wanted); not settable over the API.
    OFFLINE = "offline"


SETTABLE_WORKER_STATUSES = (WorkerStatus.ACTIVE, WorkerStatus.INACTIVE)


class Action(enum.StrEnum):
    """Everything that changes a task's status."""

    PROMOTE = "promote"  # its scheduled time has come
    CLAIM = "claim"  # a worker takes it
    FINISH = "finish"  # its handler returned or raised
    REQUEUE = "requeue"  # its execution was lost (crash, shutdown)
    PAUSE = "pause"
    RESUME = "resume"
    UPDATE = "update"
    DELETE = "delete"
    RETRY = "retry"  # a failed task gets a fresh attempt budget


_ANY = frozenset(TaskStatus)

SOURCES: Mapping[Action, frozenset[TaskStatus]] = {
    Action.PROMOTE: frozenset({TaskStatus.SCHEDULED}),
    Action.CLAIM: frozenset({TaskStatus.PENDING}),
    Action.FINISH: frozenset({TaskStatus.RUNNING}),
    Action.REQUEUE: frozenset({TaskStatus.RUNNING}),
    Action.PAUSE: frozenset({TaskStatus.PENDING, TaskStatus.SCHEDULED, TaskStatus.RUNNING}),
    Action.RESUME: frozenset({TaskStatus.PAUSED}),
    Action.UPDATE: _ANY - {TaskStatus.RUNNING},
    Action.DELETE: _ANY,
    Action.RETRY: frozenset({TaskStatus.FAILED}),
}


def allowed(action: Action, status: TaskStatus) -> bool:
    return status in SOURCES[action]


def utcnow() -> datetime:
    """Naive UTC, the one form every timestamp takes inside taskq."""
    return datetime.now(UTC).replace(tzinfo=None)


def waiting_status(scheduled_at: datetime | None, now: datetime) -> TaskStatus:
    """The status of a task that may run: scheduled while its time is ahead."""
    if scheduled_at is not None and scheduled_at > now:
        return TaskStatus.SCHEDULED
    return TaskStatus.PENDING


@dataclass(frozen=True, slots=True)
class NewTask:
    name: str
    payload: Mapping[str, Any]
    priority: Priority = Priority.MEDIUM
    scheduled_at: datetime | None = None
    max_attempts: int = 1
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class TaskChanges:
    """A partial update: only the fields named in ``fields`` are applied."""

    fields: frozenset[str]
    name: str | None = None
    payload: Mapping[str, Any] | None = None
    priority: Priority | None = None
    scheduled_at: datetime | None = None
    max_attempts: int | None = None
    timeout: float | None = None


_Frozen = TypeVar("_Frozen")


def filled_by_slot(cls: type[_Frozen]) -> type[_Frozen]:
    """Give a frozen slotted dataclass an ``__init__`` that fills each slot through its
    descriptor, with the signature and defaults of the one ``dataclass`` writes.

    That one sets each field with ``object.__setattr__``, which looks the name up on
    the class every time; a claim makes a ``Task`` (18 fields) per task it hands out.
    Made the way ``dataclass`` makes its own: source built from the fields, once.
    """
    declared = dataclasses.fields(cls)  # type: ignore[arg-type]
    if any(each.default_factory is not dataclasses.MISSING for each in declared):
        raise TypeError(f"{cls.__name__}: a default factory needs the generated __init__")
    parameters = [
        each.name if each.default is dataclasses.MISSING else f"{each.name}=_default_{each.name}"
        for each in declared
    ]
    body = "".join(f"    _set_{each.name}(self, {each.name})\n" for each in declared)
    namespace: dict[str, Any] = {}
    for each in declared:
        namespace[f"_set_{each.name}"] = getattr(cls, each.name).__set__
        namespace[f"_default_{each.name}"] = each.default
    exec(f"def __init__(self, {', '.join(parameters)}):\n{body}", namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__annotations__ = {each.name: each.type for each in declared} | {"return": None}
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


@filled_by_slot
@dataclass(frozen=True, slots=True)
class Task:
    id: int
    name: str
    payload: Mapping[str, Any]
    priority: Priority
    scheduled_at: datetime | None
    status: TaskStatus
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    worker_id: int | None
    result: Any
    error: str | None
    # The fencing token: bumped by every claim, checked by every result, never reset.
    attempt: int
    # The executions counted against ``max_attempts``: a claim adds one, an execution
    # taken away without failing (pause, crash, shutdown) gives its one back, and
    # ``retry`` starts a fresh budget at 0. So ``attempts - 1`` failures came before
    # the execution now running, and a failure retries while ``attempts < max_attempts``.
    attempts: int = 0
    max_attempts: int = 1
    # Seconds an execution may run before it is stopped and counted as a failure.
    timeout: float | None = None
    # What the handler last reported through ``TaskContext.progress``.
    progress: Any = None


@dataclass(frozen=True, slots=True)
class Worker:
    id: int
    name: str
    status: WorkerStatus
    last_heartbeat: datetime | None
    created_at: datetime
    updated_at: datetime


# Tasks per (status, priority); a pair with no task is absent.
TaskCounts: TypeAlias = dict[tuple[TaskStatus, Priority], int]


class ChangeKind(enum.StrEnum):
    """What an event of the change stream says happened."""

    TASK_CREATED = "task.created"
    # A new snapshot of one task: claimed, paused, resumed, edited.
    TASK_UPDATED = "task.updated"
    # A handler's outcome was written; read the task for its new state.
    TASK_FINISHED = "task.finished"
    # A running handler reported progress (``detail["progress"]``).
    TASK_PROGRESS = "task.progress"
    TASK_DELETED = "task.deleted"
    # Several tasks changed at once (re-queued, promoted): re-read the list.
    TASKS_CHANGED = "tasks.changed"
    WORKER_UPDATED = "worker.updated"


@dataclass(frozen=True, slots=True)
class Change:
    """One committed change, numbered in commit order by the events hub."""

    id: int
    kind: ChangeKind
    at: datetime
    task: Task | None = None
    worker: Worker | None = None
    # The task changed (also where no whole row is in hand), if one task was.
    task_id: int | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
