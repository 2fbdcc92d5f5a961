"""Fixtures and helpers of the HTTP API tests.

``probe`` adds handlers to the test's registry before the system starts:
``test.hold`` runs until the test releases it (so a task stays ``running`` as
long as a test needs), ``test.record`` returns at once, ``test.too_deep``
returns what no JSON encoder can write. The first two note every start, and
``test.hold`` notes its cancellation, so tests wait on what a handler saw
instead of sleeping.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import trio
from quart.typing import TestClientProtocol as Client

from taskq.registry import Registry, TaskContext
from tests.conftest import eventually

Json = dict[str, Any]

TASK_FIELDS = [
    "id",
    "name",
    "payload",
    "priority",
    "scheduled_at",
    "status",
    "created_at",
    "updated_at",
    "started_at",
    "completed_at",
    "worker_id",
    "result",
    "error",
    "attempts",
    "max_attempts",
    "timeout",
    "progress",
]
WORKER_FIELDS = ["id", "name", "status", "last_heartbeat", "created_at", "updated_at"]
# The API document's format: no offset, microseconds only where the time has them.
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?")
FAR_FUTURE = "2999-01-01T00:00:00"
WAIT_SECONDS = 10.0
CANCEL_SECONDS = 2.0


class Probe:
    def __init__(self) -> None:
        self.starts: list[int] = []
        self.cancelled: set[int] = set()
        self._released: set[int] = set()
        self._changed = trio.Event()

    def _note(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def release(self, task_id: int) -> None:
        self._released.add(task_id)
        self._note()

    async def hold(self, payload: Mapping[str, Any], context: TaskContext) -> Json:
        self.starts.append(context.task_id)
        self._note()
        try:
            while context.task_id not in self._released:
                await self._changed.wait()
        except trio.Cancelled:
            self.cancelled.add(context.task_id)
            self._note()
            raise
        return {"released": context.task_id}

    async def record(self, payload: Mapping[str, Any], context: TaskContext) -> Json:
        self.starts.append(context.task_id)
        self._note()
        return dict(payload)

    async def too_deep(self, payload: Mapping[str, Any]) -> list[Any]:
        """A result no JSON encoder can write: nested past the recursion limit."""
        result: list[Any] = []
        for _ in range(sys.getrecursionlimit() * 2):
            result = [result]
        return result

    async def wait_until(
        self, check: Callable[[], bool], what: str, within: float = WAIT_SECONDS
    ) -> None:
        with trio.move_on_after(within):
            while not check():
                await self._changed.wait()
            return
        pytest.fail(f"timed out after {within} s waiting for {what}")

    async def wait_started(self, task_id: int, times: int = 1) -> None:
        await self.wait_until(
            lambda: self.starts.count(task_id) >= times, f"task {task_id} to start {times}x"
        )

    async def wait_cancelled(self, task_id: int) -> None:
        """A pause or a delete stops a handler promptly, not at some later poll."""
        await self.wait_until(
            lambda: task_id in self.cancelled, f"task {task_id} cancelled", CANCEL_SECONDS
        )


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def registry(registry: Registry, probe: Probe) -> Registry:
    registry.task("test.hold")(probe.hold)
    registry.task("test.record")(probe.record)
    registry.task("test.too_deep")(probe.too_deep)
    return registry


async def read(response: Any, status: int) -> Any:
    """The JSON body of ``response``, after checking its status and that it is JSON."""
    body = await response.get_data(as_text=True)
    assert response.status_code == status, body
    assert response.content_type == "application/json", body
    return await response.get_json()


async def create_task(client: Client, **fields: Any) -> Json:
    body = {"name": "taskq.echo", "payload": {}} | fields
    created: Json = await read(await client.post("/api/tasks/", json=body), 201)
    return created


async def get_task(client: Client, task_id: int) -> Json:
    found: Json = await read(await client.get(f"/api/tasks/{task_id}"), 200)
    return found


async def list_tasks(client: Client, query: str = "") -> list[Json]:
    found: list[Json] = await read(await client.get(f"/api/tasks/{query}"), 200)
    return found


async def wait_for_status(client: Client, task_id: int, *statuses: str) -> Json:
    """Wait until the task's committed status is one of ``statuses``; return the task."""
    seen: Json = {}

    async def reached() -> bool:
        seen.update(await get_task(client, task_id))
        return seen["status"] in statuses

    await eventually(reached, within=WAIT_SECONDS, what=f"task {task_id} to be {statuses}")
    return seen


async def set_worker_status(client: Client, worker_id: int, status: str) -> Json:
    response = await client.patch(f"/api/workers/{worker_id}/status", json={"status": status})
    worker: Json = await read(response, 200)
    assert worker["status"] == status
    return worker


async def worker_ids(client: Client) -> list[int]:
    workers: list[Json] = await read(await client.get("/api/workers/"), 200)
    return [worker["id"] for worker in workers]


async def deactivate_workers(client: Client) -> list[int]:
    """Set every worker inactive so that new tasks wait; return their ids."""
    ids = await worker_ids(client)
    for worker_id in ids:
        await set_worker_status(client, worker_id, "inactive")
    return ids


async def one_active_worker(client: Client) -> int:
    """Leave only the first worker active; tasks then run one at a time on it."""
    first, *others = await worker_ids(client)
    for worker_id in others:
        await set_worker_status(client, worker_id, "inactive")
    return first
