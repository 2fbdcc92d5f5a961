"""Request models (validated by pydantic through quart-schema) and response shapes.

Times: a naive datetime in a request is UTC, an aware one is converted to UTC;
responses carry naive UTC in ISO 8601 as the API document shows, with
microseconds where the time has them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    StrictStr,
    WithJsonSchema,
    model_validator,
)

from taskq.api.limits import finite
from taskq.config import (
    BATCH_TASKS_MAX,
    LIST_LIMIT_DEFAULT,
    LIST_LIMIT_MAX,
    MAX_ATTEMPTS_LIMIT,
    TASK_NAME_MAX_LENGTH,
    TIMEOUT_MAX_SECONDS,
    WORKER_NAME_MAX_LENGTH,
)
from taskq.models import Change, Priority, Task, TaskCounts, TaskStatus, Worker


def _as_naive_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC).replace(tzinfo=None)
    except OverflowError as exc:
        raise ValueError("is out of range once converted to UTC") from exc


def _iso_text(value: Any) -> Any:
    """Pydantic reads a number (or a string of digits) as a Unix time; the API says ISO 8601."""
    if not isinstance(value, str) or value.strip().lstrip("-").replace(".", "", 1).isdigit():
        raise ValueError("must be an ISO 8601 date-time string")
    return value


def _strict_json(value: dict[str, Any]) -> dict[str, Any]:
    """Python's JSON parser lets NaN and Infinity through; no other client could read them."""
    if not finite(value):
        raise ValueError("must be standard JSON (no NaN or Infinity)")
    return value


UtcDatetime = Annotated[datetime, BeforeValidator(_iso_text), AfterValidator(_as_naive_utc)]
# What a response carries, documented as such: JSON Schema's "date-time" would demand an offset.
Timestamp = Annotated[
    datetime,
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?$",
            "description": "naive UTC, ISO 8601",
        }
    ),
]


def _not_null(schema: dict[str, Any]) -> None:
    """Documents a ``_left_out`` field as its type alone: null is no value it takes."""
    schema.pop("default", None)
    for alternative in schema.pop("anyOf", []):
        if alternative != {"type": "null"}:
            schema.update(alternative)


def _left_out() -> Any:
    """The default of a field that may be left out but, when given, may not be null.

    ``_TaskBody`` refuses the null; the field stays ``X | None`` for pydantic, so that
    its errors read as those of ``X``.
    """
    return Field(None, json_schema_extra=_not_null)


Payload = Annotated[dict[str, Any], AfterValidator(_strict_json)]


def _no_nul(value: str) -> str:
    """PostgreSQL text cannot hold NUL; refused on every backend, so that the API is one."""
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (\\u0000)")
    return value


# The pattern only documents what ``_no_nul`` checks (with a clearer error than a pattern's).
_NO_NUL = Field(json_schema_extra={"pattern": "^[^\\u0000]*$"})
TaskName = Annotated[
    StrictStr,
    Field(min_length=1, max_length=TASK_NAME_MAX_LENGTH),
    _NO_NUL,
    AfterValidator(_no_nul),
]
WorkerName = Annotated[
    StrictStr,
    Field(min_length=1, max_length=WORKER_NAME_MAX_LENGTH),
    _NO_NUL,
    AfterValidator(_no_nul),
]
# Strict: "3" or 3.0 or true are not priorities.
PriorityValue = Annotated[int, Field(strict=True, ge=Priority.LOW, le=Priority.CRITICAL)]
MaxAttempts = Annotated[int, Field(strict=True, ge=1, le=MAX_ATTEMPTS_LIMIT)]
# Strict: a number of seconds, not "30" or true; no NaN or Infinity either.
TimeoutSeconds = Annotated[
    float, Field(strict=True, gt=0, le=TIMEOUT_MAX_SECONDS, allow_inf_nan=False)
]


class _Body(BaseModel):
    # A misspelt field is an error, not something silently ignored.
    model_config = ConfigDict(extra="forbid")


class _TaskBody(_Body):
    """Null is a value only for ``scheduled_at`` (now) and ``timeout`` (none)."""

    @model_validator(mode="after")
    def _no_null_where_a_value_is_needed(self) -> Self:
        for field in ("name", "payload", "priority", "max_attempts"):
            if field in self.model_fields_set and getattr(self, field) is None:
                raise ValueError(f"{field} may not be null")
        return self


class TaskCreate(_TaskBody):
    """``max_attempts`` and ``timeout`` left out take the handler's or the system's default."""

    name: TaskName
    payload: Payload
    priority: PriorityValue = Priority.MEDIUM
    scheduled_at: UtcDatetime | None = None
    max_attempts: MaxAttempts | None = _left_out()
    timeout: TimeoutSeconds | None = None


class TaskBatchCreate(_Body):
    tasks: Annotated[list[TaskCreate], Field(min_length=1, max_length=BATCH_TASKS_MAX)]


class TaskUpdate(_TaskBody):
    """Every field optional; only those present are changed."""

    name: TaskName | None = _left_out()
    payload: Payload | None = _left_out()
    priority: PriorityValue | None = _left_out()
    scheduled_at: UtcDatetime | None = None
    max_attempts: MaxAttempts | None = _left_out()
    timeout: TimeoutSeconds | None = None


class TaskListQuery(BaseModel):
    # Bounded by the database's 64-bit integers: a larger offset would crash the writer.
    skip: int = Field(0, ge=0, le=2**63 - 1)
    limit: int = Field(LIST_LIMIT_DEFAULT, ge=0, le=LIST_LIMIT_MAX)
    status: TaskStatus | None = None
    name: TaskName | None = None
    priority: int | None = Field(None, ge=Priority.LOW, le=Priority.CRITICAL)
    # "asc": oldest first (the default); "desc": newest first.
    order: Literal["asc", "desc"] = "asc"


class EventsQuery(BaseModel):
    """Where to resume; the ``Last-Event-ID`` header, when sent, takes precedence."""

    after: int | None = Field(None, ge=0, le=2**63 - 1)


class EventsHeaders(BaseModel):
    """``Last-Event-ID``: the id of the last change seen, to resume after it."""

    last_event_id: int | None = Field(None, ge=0, le=2**63 - 1)


# --- Response shapes, for the OpenAPI document (the routes build the JSON) ---


class TaskOut(BaseModel):
    """A task."""

    id: int
    name: str
    payload: dict[str, Any]
    priority: int = Field(ge=Priority.LOW, le=Priority.CRITICAL)
    scheduled_at: Timestamp | None
    status: TaskStatus
    created_at: Timestamp
    updated_at: Timestamp
    started_at: Timestamp | None
    completed_at: Timestamp | None
    worker_id: int | None
    result: Any
    error: str | None
    attempts: int = Field(ge=0, description="executions started within the current budget")
    max_attempts: int = Field(ge=1)
    timeout: float | None = Field(description="seconds an execution may take; null: no limit")
    progress: Any = Field(description="the handler's last reported progress, or null")


class TaskListOut(RootModel[list[TaskOut]]):
    """A page of tasks, in the order asked for."""


class TaskBatchOut(BaseModel):
    """The created tasks, in the order they were given."""

    tasks: list[TaskOut]


class WorkerOut(BaseModel):
    """A worker."""

    id: int
    name: str
    status: Literal["active", "inactive", "offline"]
    last_heartbeat: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp


class WorkerListOut(RootModel[list[WorkerOut]]):
    """Every worker, by id."""


class ErrorOut(BaseModel):
    """The request was refused; ``detail`` says why."""

    detail: str


class StatusOut(BaseModel):
    """The process answers."""

    status: str


class StatsOut(BaseModel):
    """How many tasks there are, by status and by priority."""

    total: int
    by_status: dict[str, int]
    by_priority: dict[str, int]


class WorkerCreate(_Body):
    name: WorkerName


class WorkerStatusUpdate(_Body):
    status: Literal["active", "inactive"]


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def task_json(task: Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "name": task.name,
        "payload": task.payload,
        "priority": int(task.priority),
        "scheduled_at": _time(task.scheduled_at),
        "status": str(task.status),
        "created_at": _time(task.created_at),
        "updated_at": _time(task.updated_at),
        "started_at": _time(task.started_at),
        "completed_at": _time(task.completed_at),
        "worker_id": task.worker_id,
        "result": task.result,
        "error": task.error,
        "attempts": task.attempts,
        "max_attempts": task.max_attempts,
        "timeout": task.timeout,
        "progress": task.progress,
    }


def worker_json(worker: Worker) -> dict[str, Any]:
    return {
        "id": worker.id,
        "name": worker.name,
        "status": str(worker.status),
        "last_heartbeat": _time(worker.last_heartbeat),
        "created_at": _time(worker.created_at),
        "updated_at": _time(worker.updated_at),
    }


def change_json(change: Change) -> dict[str, Any]:
    return {
        "id": change.id,
        "kind": str(change.kind),
        "at": _time(change.at),
        "task_id": change.task_id,
        "task": None if change.task is None else task_json(change.task),
        "worker": None if change.worker is None else worker_json(change.worker),
        "detail": dict(change.detail),
    }


def stats_json(counts: TaskCounts) -> dict[str, Any]:
    by_status = dict.fromkeys(map(str, TaskStatus), 0)
    by_priority = dict.fromkeys((str(int(p)) for p in Priority), 0)
    for (status, priority), count in counts.items():
        by_status[str(status)] += count
        by_priority[str(int(priority))] += count
    return {"total": sum(by_status.values()), "by_status": by_status, "by_priority": by_priority}
