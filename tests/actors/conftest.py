"""Helpers of the actor tests: records as the writer hands them out, and bounded waits.

Every wait on an actor has a deadline, so a broken actor fails its test at once
instead of hanging until the suite's per-test timeout.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

import trio

from taskq.models import Priority, Task, TaskStatus

NOW = datetime(2030, 1, 1, 12, 0, 0)
DEADLINE_SECONDS = 5.0
T = TypeVar("T")


async def receive(channel: trio.MemoryReceiveChannel[T]) -> T:
    with trio.fail_after(DEADLINE_SECONDS):
        return await channel.receive()


async def wait(event: trio.Event) -> None:
    with trio.fail_after(DEADLINE_SECONDS):
        await event.wait()


def running_task(
    task_id: int,
    worker_id: int,
    *,
    name: str = "job",
    payload: Mapping[str, Any] | None = None,
    attempt: int = 1,
) -> Task:
    """A task as a claim returns it: running, held by ``worker_id``."""
    return Task(
        id=task_id,
        name=name,
        payload=payload or {},
        priority=Priority.MEDIUM,
        scheduled_at=None,
        status=TaskStatus.RUNNING,
        created_at=NOW,
        updated_at=NOW,
        started_at=NOW,
        completed_at=None,
        worker_id=worker_id,
        result=None,
        error=None,
        attempt=attempt,
    )
