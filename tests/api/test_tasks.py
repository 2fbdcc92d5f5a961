"""The task endpoints of API.md, in-process, on the whole running system."""

from __future__ import annotations

import functools
from datetime import datetime

import pytest
import trio
from quart.typing import TestClientProtocol as Client

from taskq.system import Running
from tests.api.conftest import (
    FAR_FUTURE,
    TASK_FIELDS,
    TIMESTAMP,
    Probe,
    create_task,
    deactivate_workers,
    get_task,
    list_tasks,
    one_active_worker,
    read,
    set_worker_status,
    wait_for_status,
    worker_ids,
)

CANNOT_PAUSE = (
    "Task not found or cannot be paused (must be in PENDING, SCHEDULED, or RUNNING state)"
)
CANNOT_RESUME = "Task not found or cannot be resumed (must be in PAUSED state)"
PAST = "2000-01-01T00:00:00"


# --- create ---


async def test_create_answers_201_with_exactly_the_documented_fields(client: Client) -> None:
    body = {"name": "taskq.echo", "payload": {"key": "value"}}
    task = await read(await client.post("/api/tasks/", json=body), 201)

    assert list(task) == TASK_FIELDS
    assert isinstance(task["id"], int)
    assert task["name"] == "taskq.echo"
    assert task["payload"] == {"key": "value"}
    assert task["priority"] == 2
    assert task["scheduled_at"] is None
    assert task["status"] == "pending"
    assert TIMESTAMP.fullmatch(task["created_at"])
    assert task["updated_at"] == task["created_at"]
    for unset in ("started_at", "completed_at", "worker_id", "result", "error"):
        assert task[unset] is None


async def test_create_without_trailing_slash(client: Client) -> None:
    body = {"name": "taskq.echo", "payload": {}, "priority": 4}
    task = await read(await client.post("/api/tasks", json=body), 201)
    assert task["priority"] == 4
    assert (await get_task(client, task["id"]))["name"] == "taskq.echo"


async def test_create_in_the_future_is_scheduled(client: Client) -> None:
    task = await create_task(client, scheduled_at=FAR_FUTURE)
    assert task["status"] == "scheduled"
    assert task["scheduled_at"] == FAR_FUTURE
    assert await get_task(client, task["id"]) == task


@pytest.mark.parametrize("scheduled_at", [None, PAST])
async def test_create_now_or_in_the_past_is_pending(
    client: Client, scheduled_at: str | None
) -> None:
    task = await create_task(client, scheduled_at=scheduled_at)
    assert task["status"] == "pending"
    assert task["scheduled_at"] == scheduled_at


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("2999-10-01T10:00:00", "2999-10-01T10:00:00"),
        ("2999-10-01T12:00:00+02:00", "2999-10-01T10:00:00"),
        ("2999-10-01T10:00:00Z", "2999-10-01T10:00:00"),
        ("2999-10-01T08:30:00-01:30", "2999-10-01T10:00:00"),
        ("2999-10-01T10:00:00.123456", "2999-10-01T10:00:00.123456"),
        ("2999-10-01T12:00:00.5+02:00", "2999-10-01T10:00:00.500000"),
    ],
)
async def test_datetimes_are_stored_and_shown_as_naive_utc(
    client: Client, sent: str, stored: str
) -> None:
    task = await create_task(client, scheduled_at=sent)
    assert task["scheduled_at"] == stored
    assert (await get_task(client, task["id"]))["scheduled_at"] == stored


# --- execution ---


async def test_echo_task_completes_with_its_payload_as_result(client: Client) -> None:
    payload = {"key": "value", "nested": {"list": [1, 2.5, None, True]}}
    created = await create_task(client, name="taskq.echo", payload=payload)

    done = await wait_for_status(client, created["id"], "completed", "failed")

    assert done["status"] == "completed"
    assert done["result"] == payload
    assert done["error"] is None
    assert done["worker_id"] in await worker_ids(client)
    for stamp in ("started_at", "completed_at", "updated_at"):
        assert TIMESTAMP.fullmatch(done[stamp])
    started = datetime.fromisoformat(done["started_at"])
    assert datetime.fromisoformat(done["created_at"]) <= started
    assert started <= datetime.fromisoformat(done["completed_at"])


async def test_failing_task_ends_failed_with_its_message(client: Client) -> None:
    created = await create_task(client, name="taskq.fail", payload={"message": "boom 42"})
    done = await wait_for_status(client, created["id"], "completed", "failed")
    assert done["status"] == "failed"
    assert "boom 42" in done["error"]
    assert done["result"] is None
    assert done["completed_at"] is not None


async def test_unknown_task_name_fails_naming_it(client: Client) -> None:
    created = await create_task(client, name="no.such.handler")
    done = await wait_for_status(client, created["id"], "completed", "failed")
    assert done["status"] == "failed"
    assert "no.such.handler" in done["error"]


async def test_unwritable_result_fails_the_task_and_workers_carry_on(client: Client) -> None:
    bad = await create_task(client, name="test.too_deep")
    done = await wait_for_status(client, bad["id"], "completed", "failed")
    assert done["status"] == "failed"
    assert "JSON" in done["error"]
    after = await create_task(client, payload={"still": "working"})
    done = await wait_for_status(client, after["id"], "completed")
    assert done["result"] == {"still": "working"}


# --- list ---


async def test_pages_follow_ids_and_never_overlap_or_skip(client: Client) -> None:
    ids = [(await create_task(client, scheduled_at=FAR_FUTURE))["id"] for _ in range(7)]

    paged: list[int] = []
    for skip in range(0, 9, 3):
        page = await list_tasks(client, f"?skip={skip}&limit=3")
        assert len(page) == min(3, max(0, 7 - skip))
        paged.extend(task["id"] for task in page)

    assert paged == sorted(ids)
    assert [task["id"] for task in await list_tasks(client)] == sorted(ids)
    assert await list_tasks(client, "?skip=7") == []
    assert await list_tasks(client, "?limit=0") == []
    assert all(list(task) == TASK_FIELDS for task in await list_tasks(client))


async def test_list_limit_defaults_to_100_and_goes_up_to_1000(
    client: Client, running: Running
) -> None:
    submit = functools.partial(running.queue.submit, scheduled_at=datetime(2999, 1, 1))
    async with trio.open_nursery() as nursery:
        for _ in range(101):
            nursery.start_soon(submit, "taskq.echo", {})

    first_page = await list_tasks(client)
    everything = await list_tasks(client, "?limit=1000")

    assert len(first_page) == 100
    assert len(everything) == 101
    assert first_page == everything[:100]
    response = await client.get("/api/tasks/?limit=1001")
    assert "limit" in (await read(response, 422))["detail"]


async def test_list_filters_by_status(client: Client) -> None:
    echo = await create_task(client, name="taskq.echo")
    fail = await create_task(client, name="taskq.fail")
    later = [(await create_task(client, scheduled_at=FAR_FUTURE))["id"] for _ in range(2)]
    await wait_for_status(client, echo["id"], "completed")
    await wait_for_status(client, fail["id"], "failed")

    def ids(tasks: list[dict[str, object]]) -> list[object]:
        return [task["id"] for task in tasks]

    assert ids(await list_tasks(client, "?status=completed")) == [echo["id"]]
    assert ids(await list_tasks(client, "?status=failed")) == [fail["id"]]
    assert ids(await list_tasks(client, "?status=scheduled")) == later
    assert ids(await list_tasks(client, "?status=scheduled&skip=1&limit=5")) == later[1:]
    assert await list_tasks(client, "?status=pending") == []
    assert await list_tasks(client, "?status=paused") == []


# --- get ---


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/tasks/999999"),
        ("put", "/api/tasks/999999"),
        ("delete", "/api/tasks/999999"),
        ("get", "/api/tasks/9223372036854775807"),
    ],
)
async def test_missing_task_is_404_with_the_documented_body(
    client: Client, method: str, path: str
) -> None:
    await create_task(client)
    kwargs = {"json": {"priority": 3}} if method == "put" else {}
    response = await getattr(client, method)(path, **kwargs)
    assert await read(response, 404) == {"detail": "Task not found"}


# --- update ---


async def test_update_changes_only_the_fields_sent(client: Client) -> None:
    created = await create_task(
        client, name="taskq.echo", payload={"a": 1}, priority=1, scheduled_at=FAR_FUTURE
    )
    task_id = created["id"]

    renamed = await read(await client.put(f"/api/tasks/{task_id}", json={"name": "new"}), 200)
    assert list(renamed) == TASK_FIELDS
    assert renamed["name"] == "new"
    unchanged = ("payload", "priority", "scheduled_at", "status", "created_at")
    assert {key: renamed[key] for key in unchanged} == {key: created[key] for key in unchanged}
    assert datetime.fromisoformat(renamed["updated_at"]) >= datetime.fromisoformat(
        created["updated_at"]
    )

    changes = {"payload": {"b": [2]}, "priority": 4}
    updated = await read(await client.put(f"/api/tasks/{task_id}", json=changes), 200)
    assert (updated["name"], updated["payload"], updated["priority"]) == ("new", {"b": [2]}, 4)
    assert updated["scheduled_at"] == FAR_FUTURE
    assert await get_task(client, task_id) == updated

    same = await read(await client.put(f"/api/tasks/{task_id}", json={}), 200)
    assert same["name"] == "new"


async def test_update_of_scheduled_at_moves_between_pending_and_scheduled(
    client: Client,
) -> None:
    await deactivate_workers(client)
    task_id = (await create_task(client))["id"]

    async def put_scheduled_at(value: str | None) -> dict[str, object]:
        response = await client.put(f"/api/tasks/{task_id}", json={"scheduled_at": value})
        task: dict[str, object] = await read(response, 200)
        assert await get_task(client, task_id) == task
        return task

    later = await put_scheduled_at("2999-10-01T12:00:00+02:00")
    assert (later["status"], later["scheduled_at"]) == ("scheduled", "2999-10-01T10:00:00")
    now = await put_scheduled_at(None)
    assert (now["status"], now["scheduled_at"]) == ("pending", None)
    assert (await put_scheduled_at(FAR_FUTURE))["status"] == "scheduled"
    past = await put_scheduled_at(PAST)
    assert (past["status"], past["scheduled_at"]) == ("pending", PAST)


async def test_update_of_a_running_task_is_a_conflict(client: Client, probe: Probe) -> None:
    created = await create_task(client, name="test.hold")
    await probe.wait_started(created["id"])
    running = await get_task(client, created["id"])
    assert running["status"] == "running"

    response = await client.put(f"/api/tasks/{created['id']}", json={"priority": 4})

    detail = (await read(response, 409))["detail"]
    assert isinstance(detail, str)
    assert detail
    assert await get_task(client, created["id"]) == running
    probe.release(created["id"])
    assert (await wait_for_status(client, created["id"], "completed"))["priority"] == 2


# --- delete ---


async def test_delete_answers_204_then_the_task_is_gone(client: Client) -> None:
    task_id = (await create_task(client, scheduled_at=FAR_FUTURE))["id"]
    kept = (await create_task(client, scheduled_at=FAR_FUTURE))["id"]

    response = await client.delete(f"/api/tasks/{task_id}")

    assert response.status_code == 204
    assert await response.get_data() == b""
    missing = await client.get(f"/api/tasks/{task_id}")
    assert await read(missing, 404) == {"detail": "Task not found"}
    again = await client.delete(f"/api/tasks/{task_id}")
    assert await read(again, 404) == {"detail": "Task not found"}
    assert [task["id"] for task in await list_tasks(client)] == [kept]


async def test_delete_works_in_a_finished_state(client: Client) -> None:
    task_id = (await create_task(client, name="taskq.fail"))["id"]
    await wait_for_status(client, task_id, "failed")
    assert (await client.delete(f"/api/tasks/{task_id}")).status_code == 204
    assert (await client.get(f"/api/tasks/{task_id}")).status_code == 404


async def test_delete_of_a_running_task_cancels_it_and_frees_its_worker(
    client: Client, probe: Probe
) -> None:
    worker_id = await one_active_worker(client)
    held = await create_task(client, name="test.hold")
    await probe.wait_started(held["id"])
    waiting = await create_task(client, name="taskq.echo", payload={"next": True})
    assert (await get_task(client, waiting["id"]))["status"] == "pending"

    response = await client.delete(f"/api/tasks/{held['id']}")

    assert response.status_code == 204
    await probe.wait_cancelled(held["id"])
    done = await wait_for_status(client, waiting["id"], "completed")
    assert (done["worker_id"], done["result"]) == (worker_id, {"next": True})
    assert (await client.get(f"/api/tasks/{held['id']}")).status_code == 404


# --- pause and resume ---


async def test_pause_and_resume_a_waiting_task(client: Client) -> None:
    await deactivate_workers(client)
    pending = await create_task(client)
    scheduled = await create_task(client, scheduled_at=FAR_FUTURE)
    due = await create_task(client, scheduled_at=PAST)

    for task, back_to in ((pending, "pending"), (scheduled, "scheduled"), (due, "pending")):
        paused = await read(await client.patch(f"/api/tasks/{task['id']}/pause"), 200)
        assert list(paused) == TASK_FIELDS
        assert (paused["status"], paused["worker_id"]) == ("paused", None)
        assert await get_task(client, task["id"]) == paused
        assert [t["id"] for t in await list_tasks(client, "?status=paused")][-1] == task["id"]

        resumed = await read(await client.patch(f"/api/tasks/{task['id']}/resume"), 200)
        assert resumed["status"] == back_to
        assert resumed["scheduled_at"] == task["scheduled_at"]


async def test_pause_of_a_running_task_cancels_it_and_resume_runs_it_again(
    client: Client, probe: Probe
) -> None:
    task_id = (await create_task(client, name="test.hold", payload={"p": 1}))["id"]
    await probe.wait_started(task_id)
    assert (await get_task(client, task_id))["status"] == "running"

    paused = await read(await client.patch(f"/api/tasks/{task_id}/pause"), 200)

    assert (paused["status"], paused["worker_id"]) == ("paused", None)
    await probe.wait_cancelled(task_id)
    assert (await get_task(client, task_id))["status"] == "paused"
    assert probe.starts.count(task_id) == 1

    resumed = await read(await client.patch(f"/api/tasks/{task_id}/resume"), 200)
    assert resumed["status"] == "pending"
    await probe.wait_started(task_id, times=2)
    probe.release(task_id)
    done = await wait_for_status(client, task_id, "completed")
    assert done["result"] == {"released": task_id}
    assert done["payload"] == {"p": 1}
    assert done["worker_id"] is not None


async def test_pause_of_a_finished_task_is_refused(client: Client) -> None:
    task_id = (await create_task(client))["id"]
    await wait_for_status(client, task_id, "completed")

    for path in (f"/api/tasks/{task_id}/pause", "/api/tasks/999999/pause"):
        assert await read(await client.patch(path), 404) == {"detail": CANNOT_PAUSE}
    assert (await get_task(client, task_id))["status"] == "completed"


async def test_pause_of_a_paused_task_is_refused(client: Client) -> None:
    task_id = (await create_task(client, scheduled_at=FAR_FUTURE))["id"]
    await read(await client.patch(f"/api/tasks/{task_id}/pause"), 200)
    response = await client.patch(f"/api/tasks/{task_id}/pause")
    assert await read(response, 404) == {"detail": CANNOT_PAUSE}


async def test_resume_of_a_task_not_paused_is_refused(client: Client) -> None:
    scheduled = (await create_task(client, scheduled_at=FAR_FUTURE))["id"]
    completed = (await create_task(client))["id"]
    await wait_for_status(client, completed, "completed")

    for task_id in (scheduled, completed, 999999):
        response = await client.patch(f"/api/tasks/{task_id}/resume")
        assert await read(response, 404) == {"detail": CANNOT_RESUME}
    assert (await get_task(client, scheduled))["status"] == "scheduled"
    assert (await get_task(client, completed))["status"] == "completed"


# --- ready order ---


async def test_waiting_tasks_start_by_priority_then_age(client: Client, probe: Probe) -> None:
    first, *_ = await deactivate_workers(client)
    ids = {}
    for label, priority in (("low", 1), ("high", 3), ("medium", 2), ("critical", 4), ("high2", 3)):
        task = await create_task(client, name="test.record", priority=priority)
        ids[label] = task["id"]

    await set_worker_status(client, first, "active")

    expected = [ids[label] for label in ("critical", "high", "high2", "medium", "low")]
    await probe.wait_until(lambda: len(probe.starts) == 5, "all five tasks to start")
    assert probe.starts == expected
    done = [await wait_for_status(client, task_id, "completed") for task_id in expected]
    # Short tasks claimed together (several per worker) share their claim's time.
    started = [datetime.fromisoformat(task["started_at"]) for task in done]
    assert started == sorted(started)
    assert {task["worker_id"] for task in done} == {first}
