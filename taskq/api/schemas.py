"""Request models (validated by pydantic through quart-schema) and response shapes.

Times: a naive datetime in a request is UTC, an aware one is converted to UTC;
responses carry naive UTC in ISO 8601 as the API document shows, with
microseconds where the time has them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    model_validator,
)

from taskq.config import (
    BATCH_TASKS_MAX,
    LIST_LIMIT_DEFAULT,
    LIST_LIMIT_MAX,
    TASK_NAME_MAX_LENGTH,
    WORKER_NAME_MAX_LENGTH,
)
from taskq.models import Priority, Task, TaskStatus, Worker


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
    try:
        json.dumps(value, allow_nan=False)
    except ValueError as exc:
        raise ValueError("must be standard JSON (no NaN or Infinity)") from exc
    return value


UtcDatetime = Annotated[datetime, BeforeValidator(_iso_text), AfterValidator(_as_naive_utc)]
Payload = Annotated[dict[str, Any], AfterValidator(_strict_json)]
TaskName = Annotated[StrictStr, Field(min_length=1, max_length=TASK_NAME_MAX_LENGTH)]
WorkerName = Annotated[StrictStr, Field(min_length=1, max_length=WORKER_NAME_MAX_LENGTH)]
# Strict: "3" or 3.0 or true are not priorities.
PriorityValue = Annotated[int, Field(strict=True, ge=Priority.LOW, le=Priority.CRITICAL)]


class _Body(BaseModel):
    # A misspelt field is an error, not something silently ignored.
    model_config = ConfigDict(extra="forbid")


class TaskCreate(_Body):
    name: TaskName
    payload: Payload
    priority: PriorityValue = Priority.MEDIUM
    scheduled_at: UtcDatetime | None = None


class TaskBatchCreate(_Body):
    tasks: Annotated[list[TaskCreate], Field(min_length=1, max_length=BATCH_TASKS_MAX)]


class TaskUpdate(_Body):
    """Every field optional; only those present are changed (null only for scheduled_at)."""

    name: TaskName | None = None
    payload: Payload | None = None
    priority: PriorityValue | None = None
    scheduled_at: UtcDatetime | None = None

    @model_validator(mode="after")
    def _no_null_where_a_value_is_needed(self) -> Self:
        for field in ("name", "payload", "priority"):
            if field in self.model_fields_set and getattr(self, field) is None:
                raise ValueError(f"{field} may not be null")
        return self


class TaskListQuery(BaseModel):
    # Bounded by the database's 64-bit integers: a larger offset would crash the writer.
    skip: int = Field(0, ge=0, le=2**63 - 1)
    limit: int = Field(LIST_LIMIT_DEFAULT, ge=0, le=LIST_LIMIT_MAX)
    status: TaskStatus | None = None


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
