"""What one node tells the others through PostgreSQL's LISTEN/NOTIFY, and how it reads.

The writer sends a notice for each event of a transaction from inside that
transaction, so PostgreSQL delivers it on commit and never for a rollback. The
listener of every other node reads it back into the same event its own writer
would have published. Each notice names its sender: a node already told its
own actors, so it skips its own notices.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from taskq.messages import (
    Event,
    SuspensionVoided,
    TaskRevoked,
    TaskScheduled,
    TasksReady,
    WorkerStatusChanged,
)
from taskq.models import WorkerStatus

CHANNEL = "taskq"


def encode(node: str, events: Iterable[Event]) -> list[str]:
    """One payload per distinct event; a batch's many ``TasksReady`` become one.

    Of the scheduled times only the earliest is sent: a scheduler sleeps until
    its nearest time and learns the later ones when it promotes.
    """
    scheduled = [event for event in events if isinstance(event, TaskScheduled)]
    others: list[Event] = [event for event in events if not isinstance(event, TaskScheduled)]
    if scheduled:
        others.append(min(scheduled, key=lambda event: event.at))
    payloads = [json.dumps({"node": node, **_fields(event)}, sort_keys=True) for event in others]
    return list(dict.fromkeys(payloads))


def decode(payload: str) -> tuple[str, Event] | None:
    """The sender and the event of a notice; None for one this version does not know."""
    try:
        fields = json.loads(payload)
        node = str(fields["node"])
        match fields["event"]:
            case "ready":
                return node, TasksReady(from_other_node=True)
            case "scheduled":
                return node, TaskScheduled(datetime.fromisoformat(fields["at"]))
            case "revoked":
                task_id, worker_id = int(fields["task_id"]), int(fields["worker_id"])
                return node, TaskRevoked(task_id, worker_id, bool(fields.get("suspend", False)))
            case "voided":
                return node, SuspensionVoided(int(fields["task_id"]))
            case "status":
                return node, WorkerStatusChanged(
                    int(fields["worker_id"]), WorkerStatus(fields["status"])
                )
    except (ValueError, KeyError, TypeError):
        pass
    return None


def _fields(event: Event) -> dict[str, Any]:
    match event:
        case TasksReady():
            return {"event": "ready"}
        case TaskScheduled(at=at):
            return {"event": "scheduled", "at": at.isoformat()}
        case TaskRevoked(task_id=task_id, worker_id=worker_id, suspend=suspend):
            return {
                "event": "revoked",
                "task_id": task_id,
                "worker_id": worker_id,
                "suspend": suspend,
            }
        case SuspensionVoided(task_id=task_id):
            # A task paused at a checkpoint on another node was deleted or rewritten.
            return {"event": "voided", "task_id": task_id}
        case WorkerStatusChanged(worker_id=worker_id, status=status):
            return {"event": "status", "worker_id": worker_id, "status": str(status)}
    raise AssertionError(f"unknown event {event!r}")
