"""The execution model over HTTP: retry budget fields, their defaults, and POST .../retry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from taskq.registry import Registry, TaskContext
from tests.api.conftest import (
    FAR_FUTURE,
    Json,
    Probe,
    create_task,
    deactivate_workers,
    get_task,
    read,
    wait_for_status,
)

EXECUTION_FIELDS = ("attempts", "max_attempts", "timeout", "progress")


class Flaky:
    """Fails its first execution of each task, succeeds after."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    async def __call__(self, payload: Mapping[str, Any], context: TaskContext) -> str:
        if context.task_id not in self.seen:
            self.seen.add(context.task_id)
            raise RuntimeError("first time fails")
        return "second time works"


@pytest.fixture
def registry(registry: Registry) -> Registry:
    registry.task("test.flaky")(Flaky())
    registry.task("test.patient", max_attempts=4, timeout=30.0)(Flaky())
    return registry


async def test_a_new_task_shows_its_budget_after_the_documented_fields(client: Client) -> None:
    task = await create_task(client)

    assert {field: task[field] for field in EXECUTION_FIELDS} == {
        "attempts": 0,
        "max_attempts": 1,
        "timeout": None,
        "progress": None,
    }


async def test_the_handlers_registration_sets_the_defaults(client: Client) -> None:
    await deactivate_workers(client)

    task = await create_task(client, name="test.patient")

    assert (task["max_attempts"], task["timeout"]) == (4, 30.0)


async def test_the_body_overrides_the_defaults_and_null_means_no_time_limit(
    client: Client,
) -> None:
    await deactivate_workers(client)

    task = await create_task(client, name="test.patient", max_attempts=2, timeout=None)

    assert (task["max_attempts"], task["timeout"]) == (2, None)


async def test_update_sets_the_budget(client: Client) -> None:
    task = await create_task(client, scheduled_at=FAR_FUTURE)

    response = await client.put(f"/api/tasks/{task['id']}", json={"max_attempts": 7, "timeout": 2})
    updated = await read(response, 200)

    assert (updated["max_attempts"], updated["timeout"]) == (7, 2.0)
    assert updated["name"] == task["name"]


async def test_a_task_with_attempts_left_is_retried_and_completes(client: Client) -> None:
    task = await create_task(client, name="test.flaky", max_attempts=2)

    done = await wait_for_status(client, task["id"], "completed")

    assert (done["result"], done["attempts"], done["error"]) == ("second time works", 2, None)


# --- POST /api/tasks/{id}/retry ---


async def test_retry_of_a_failed_task_gives_it_a_fresh_budget_and_runs_it(
    client: Client,
) -> None:
    task = await create_task(client, name="test.flaky")
    failed = await wait_for_status(client, task["id"], "failed")
    assert (failed["attempts"], failed["error"]) == (1, "RuntimeError: first time fails")

    response = await client.post(f"/api/tasks/{task['id']}/retry")
    retried = await read(response, 200)

    assert retried["status"] in ("pending", "running", "completed")
    assert retried["completed_at"] is None
    done = await wait_for_status(client, task["id"], "completed")
    assert (done["result"], done["attempts"]) == ("second time works", 1)


async def _task_in(client: Client, probe: Probe, status: str) -> Json:
    """A task in ``status``, reached the way a client would."""
    if status == "running":
        task = await create_task(client, name="test.hold")
        await probe.wait_started(task["id"])
        return task
    if status == "completed":
        return await wait_for_status(client, (await create_task(client))["id"], "completed")
    await deactivate_workers(client)
    if status == "scheduled":
        return await create_task(client, scheduled_at=FAR_FUTURE)
    task = await create_task(client)
    if status == "paused":
        await read(await client.patch(f"/api/tasks/{task['id']}/pause"), 200)
    return task


@pytest.mark.parametrize("status", ["pending", "scheduled", "running", "paused", "completed"])
async def test_retry_of_a_task_that_has_not_failed_is_a_conflict(
    client: Client, probe: Probe, status: str
) -> None:
    task = await _task_in(client, probe, status)

    response = await client.post(f"/api/tasks/{task['id']}/retry")

    assert await read(response, 409) == {
        "detail": "Task cannot be retried (must be in FAILED state)"
    }
    assert (await get_task(client, task["id"]))["status"] == status
    probe.release(task["id"])


async def test_retry_of_a_missing_task_is_404_with_the_documented_body(client: Client) -> None:
    assert await read(await client.post("/api/tasks/999/retry"), 404) == {
        "detail": "Task not found"
    }


async def test_retry_with_an_id_that_is_not_a_number_is_422(client: Client) -> None:
    body = await read(await client.post("/api/tasks/abc/retry"), 422)
    assert "task_id" in body["detail"]
