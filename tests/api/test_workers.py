"""The worker endpoints of API.md, and what a worker's status does to its work."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from tests.api.conftest import (
    TIMESTAMP,
    WORKER_FIELDS,
    Probe,
    create_task,
    deactivate_workers,
    get_task,
    one_active_worker,
    read,
    set_worker_status,
    wait_for_status,
    worker_ids,
)


async def test_create_answers_201_with_exactly_the_documented_fields(client: Client) -> None:
    worker = await read(await client.post("/api/workers/", json={"name": "worker-x"}), 201)

    assert list(worker) == WORKER_FIELDS
    assert isinstance(worker["id"], int)
    assert (worker["name"], worker["status"]) == ("worker-x", "active")
    for stamp in ("last_heartbeat", "created_at", "updated_at"):
        assert TIMESTAMP.fullmatch(worker[stamp])
    assert await read(await client.get(f"/api/workers/{worker['id']}"), 200) == worker


async def test_create_without_trailing_slash(client: Client) -> None:
    worker = await read(await client.post("/api/workers", json={"name": "w"}), 201)
    assert worker["id"] in await worker_ids(client)


async def test_list_shows_boot_workers_and_new_ones_by_id(client: Client) -> None:
    boot = await read(await client.get("/api/workers/"), 200)
    assert len(boot) == 2
    assert all(list(worker) == WORKER_FIELDS for worker in boot)
    assert all(worker["status"] == "active" for worker in boot)

    added = await read(await client.post("/api/workers/", json={"name": "extra"}), 201)

    listed = await read(await client.get("/api/workers"), 200)
    assert listed == [*boot, added]
    assert [worker["id"] for worker in listed] == sorted(worker["id"] for worker in listed)


async def test_new_worker_takes_tasks_at_once(client: Client) -> None:
    await deactivate_workers(client)
    waiting = await create_task(client, payload={"before": True})

    worker = await read(await client.post("/api/workers/", json={"name": "fresh"}), 201)
    after = await create_task(client, payload={"after": True})

    for task in (waiting, after):
        done = await wait_for_status(client, task["id"], "completed")
        assert (done["worker_id"], done["result"]) == (worker["id"], task["payload"])


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/api/workers/999999", None),
        ("patch", "/api/workers/999999/heartbeat", None),
        ("patch", "/api/workers/999999/status", {"status": "inactive"}),
    ],
)
async def test_missing_worker_is_404_with_the_documented_body(
    client: Client, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = await getattr(client, method)(path, json=body)
    assert await read(response, 404) == {"detail": "Worker not found"}


async def test_heartbeat_updates_last_heartbeat(client: Client) -> None:
    worker_id = (await worker_ids(client))[0]
    before = await read(await client.get(f"/api/workers/{worker_id}"), 200)

    beat = await read(await client.patch(f"/api/workers/{worker_id}/heartbeat"), 200)

    assert list(beat) == WORKER_FIELDS
    last = datetime.fromisoformat(beat["last_heartbeat"])
    assert last > datetime.fromisoformat(before["last_heartbeat"])
    assert {key: beat[key] for key in ("id", "name", "status", "created_at")} == {
        key: before[key] for key in ("id", "name", "status", "created_at")
    }
    assert await read(await client.get(f"/api/workers/{worker_id}"), 200) == beat


async def test_status_is_set_and_shown(client: Client) -> None:
    worker_id = (await worker_ids(client))[0]

    inactive = await set_worker_status(client, worker_id, "inactive")
    assert list(inactive) == WORKER_FIELDS
    assert await read(await client.get(f"/api/workers/{worker_id}"), 200) == inactive
    again = await set_worker_status(client, worker_id, "inactive")
    assert again["status"] == "inactive"
    active = await set_worker_status(client, worker_id, "active")
    assert (await read(await client.get(f"/api/workers/{worker_id}"), 200)) == active


async def test_inactive_worker_finishes_its_task_and_takes_no_new_one(
    client: Client, probe: Probe
) -> None:
    worker_id = await one_active_worker(client)
    held = await create_task(client, name="test.hold")
    await probe.wait_started(held["id"])
    assert (await get_task(client, held["id"]))["worker_id"] == worker_id

    await set_worker_status(client, worker_id, "inactive")
    waiting = await create_task(client, name="test.record")
    probe.release(held["id"])

    finished = await wait_for_status(client, held["id"], "completed", "failed")
    assert (finished["status"], finished["worker_id"]) == ("completed", worker_id)
    # A few round trips through the writer after the finish: still nobody took it.
    for _ in range(3):
        await client.patch(f"/api/workers/{worker_id}/heartbeat")
    assert (await get_task(client, waiting["id"]))["status"] == "pending"
    assert waiting["id"] not in probe.starts

    await set_worker_status(client, worker_id, "active")

    done = await wait_for_status(client, waiting["id"], "completed")
    assert done["worker_id"] == worker_id


@pytest.mark.parametrize("status", ["offline", "busy", "ACTIVE", "", 1, None, True])
async def test_other_statuses_are_422_naming_the_allowed_ones(
    client: Client, status: object
) -> None:
    worker_id = (await worker_ids(client))[0]
    before = await read(await client.get(f"/api/workers/{worker_id}"), 200)

    response = await client.patch(f"/api/workers/{worker_id}/status", json={"status": status})

    detail = (await read(response, 422))["detail"]
    assert "'active'" in detail
    assert "'inactive'" in detail
    assert await read(await client.get(f"/api/workers/{worker_id}"), 200) == before


async def test_status_without_a_value_is_422(client: Client) -> None:
    worker_id = (await worker_ids(client))[0]
    response = await client.patch(f"/api/workers/{worker_id}/status", json={})
    assert "status" in (await read(response, 422))["detail"]
