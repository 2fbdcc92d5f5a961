"""Invalid input: a 422 (400 for a body that is not JSON) with a JSON ``detail``, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from tests.api.conftest import FAR_FUTURE, Json, create_task, list_tasks, read

VALID_TASK = {"name": "taskq.echo", "payload": {}}
JSON_HEADERS = {"Content-Type": "application/json"}

BAD_TASK_FIELDS: list[Json] = [
    {"name": 1},
    {"name": ""},
    {"name": None},
    {"name": ["taskq.echo"]},
    {"name": "x" * 256},
    {"payload": []},
    {"payload": "text"},
    {"payload": None},
    {"payload": 1},
    {"priority": 0},
    {"priority": 5},
    {"priority": -1},
    {"priority": "3"},
    {"priority": True},
    {"priority": 2.5},
    {"priority": 3.0},
    {"priority": None},
    {"scheduled_at": "tomorrow"},
    {"scheduled_at": ""},
    {"scheduled_at": "2023-13-01T10:00:00"},
    {"scheduled_at": "2023-10-01T25:00:00"},
    {"scheduled_at": "2023-10-01T10:00:00+25:00"},
    {"scheduled_at": 1700000000},
    {"scheduled_at": "1700000000"},
    {"scheduled_at": True},
    {"scheduled_at": {"at": "2023-10-01T10:00:00"}},
    {"scheduled_at": "9999-12-31T23:00:00-05:00"},
    {"scheduled_at": "0001-01-01T00:00:00+05:00"},
    {"max_attempts": 0},
    {"max_attempts": 1001},
    {"max_attempts": "3"},
    {"max_attempts": True},
    {"max_attempts": 2.5},
    {"max_attempts": None},
    {"timeout": 0},
    {"timeout": -1},
    {"timeout": "30"},
    {"timeout": True},
    {"timeout": 10**9},
    {"timeout": [5]},
    {"unknown": 1},
    {"status": "completed"},
    {"attempts": 0},
    {"progress": 0.5},
    {"id": 5},
]


def _detail_is_text(body: Any) -> str:
    assert isinstance(body, dict)
    assert list(body) == ["detail"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    detail: str = body["detail"]
    return detail


# --- task bodies ---


@pytest.mark.parametrize("fields", BAD_TASK_FIELDS)
async def test_create_with_a_bad_field_is_422(client: Client, fields: Json) -> None:
    response = await client.post("/api/tasks/", json=VALID_TASK | fields)
    detail = _detail_is_text(await read(response, 422))
    assert next(iter(fields)) in detail
    assert await list_tasks(client) == []


@pytest.mark.parametrize("missing", ["name", "payload"])
async def test_create_without_a_required_field_is_422(client: Client, missing: str) -> None:
    body = {key: value for key, value in VALID_TASK.items() if key != missing}
    detail = _detail_is_text(await read(await client.post("/api/tasks/", json=body), 422))
    assert missing in detail


@pytest.mark.parametrize("body", [[], [VALID_TASK], "text", 1, True])
async def test_create_with_a_json_body_that_is_not_an_object_is_422(
    client: Client, body: Any
) -> None:
    _detail_is_text(await read(await client.post("/api/tasks/", json=body), 422))


TOO_DEEP = b'{"name": "taskq.echo", "payload": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"name": "taskq.echo", "payload": {}', b"", b"\xff\xfe", TOO_DEEP],
    ids=["garbage", "truncated", "empty", "not-utf8", "too-deep"],
)
async def test_create_with_a_body_that_is_not_json_is_400(client: Client, raw: bytes) -> None:
    response = await client.post("/api/tasks/", data=raw, headers=JSON_HEADERS)
    _detail_is_text(await read(response, 400))


@pytest.mark.parametrize("raw", [b"null", b'{"name": "x", "payload": {"n": NaN}}'])
async def test_create_with_json_no_client_could_send_is_422(client: Client, raw: bytes) -> None:
    response = await client.post("/api/tasks/", data=raw, headers=JSON_HEADERS)
    _detail_is_text(await read(response, 422))


@pytest.mark.parametrize("headers", [{}, {"Content-Type": "text/plain"}])
async def test_create_without_a_json_content_type_is_422(
    client: Client, headers: dict[str, str]
) -> None:
    raw = b'{"name": "taskq.echo", "payload": {}}'
    response = await client.post("/api/tasks/", data=raw, headers=headers)
    assert "JSON" in _detail_is_text(await read(response, 422))
    assert await list_tasks(client) == []


@pytest.mark.parametrize(
    "fields",
    [
        {"name": None},
        {"payload": None},
        {"priority": None},
        *[fields for fields in BAD_TASK_FIELDS if None not in fields.values()],
    ],
)
async def test_update_with_a_bad_field_is_422_and_changes_nothing(
    client: Client, fields: Json
) -> None:
    task = await create_task(client, scheduled_at=FAR_FUTURE)
    response = await client.put(f"/api/tasks/{task['id']}", json=fields)
    _detail_is_text(await read(response, 422))
    assert await list_tasks(client) == [task]


async def test_update_with_a_body_that_is_not_json_is_400(client: Client) -> None:
    task = await create_task(client, scheduled_at=FAR_FUTURE)
    response = await client.put(f"/api/tasks/{task['id']}", data=b"{", headers=JSON_HEADERS)
    _detail_is_text(await read(response, 400))
    assert await list_tasks(client) == [task]


# --- worker bodies ---


@pytest.mark.parametrize(
    "body",
    [{}, {"name": 5}, {"name": ""}, {"name": None}, {"name": "w", "extra": 1}, [], "w"],
)
async def test_create_worker_with_bad_body_is_422(client: Client, body: Any) -> None:
    before = await read(await client.get("/api/workers/"), 200)
    _detail_is_text(await read(await client.post("/api/workers/", json=body), 422))
    assert await read(await client.get("/api/workers/"), 200) == before


@pytest.mark.parametrize(
    ("path", "method"),
    [("/api/workers/", "post"), ("/api/workers/1/status", "patch")],
)
async def test_worker_body_that_is_not_json_is_400(client: Client, path: str, method: str) -> None:
    response = await getattr(client, method)(path, data=b"{oops", headers=JSON_HEADERS)
    _detail_is_text(await read(response, 400))


async def test_worker_body_without_json_content_type_is_422(client: Client) -> None:
    response = await client.post("/api/workers/", data=b'{"name": "w"}')
    _detail_is_text(await read(response, 422))


# --- query strings ---


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("skip=-1", "skip"),
        ("limit=-1", "limit"),
        ("limit=1001", "limit"),
        ("skip=9223372036854775808", "skip"),
        ("skip=99999999999999999999999", "skip"),
        ("skip=abc", "skip"),
        ("limit=1.5", "limit"),
        ("limit=", "limit"),
        ("status=bogus", "status"),
        ("status=PENDING", "status"),
        ("status=", "status"),
    ],
)
async def test_bad_list_query_is_422(client: Client, query: str, named: str) -> None:
    response = await client.get(f"/api/tasks/?{query}")
    assert named in _detail_is_text(await read(response, 422))


async def test_list_query_bounds_are_accepted(client: Client) -> None:
    task = await create_task(client, scheduled_at=FAR_FUTURE)
    assert await list_tasks(client, "?skip=0&limit=1000&status=scheduled") == [task]
    assert await list_tasks(client, "?limit=0") == []
    assert await list_tasks(client, "?skip=9223372036854775807") == []


# --- ids ---

ID_ROUTES = [
    ("get", "/api/tasks/{}", None),
    ("put", "/api/tasks/{}", {"priority": 3}),
    ("delete", "/api/tasks/{}", None),
    ("patch", "/api/tasks/{}/pause", None),
    ("patch", "/api/tasks/{}/resume", None),
    ("get", "/api/workers/{}", None),
    ("patch", "/api/workers/{}/heartbeat", None),
    ("patch", "/api/workers/{}/status", {"status": "active"}),
]
BAD_IDS = ["abc", "1.5", "-1", "1e3", "0x10", "99999999999999999999999", "%C2%B2", "%201"]


@pytest.mark.parametrize("bad_id", BAD_IDS)
@pytest.mark.parametrize(("method", "route", "body"), ID_ROUTES)
async def test_non_integer_ids_are_422(
    client: Client, method: str, route: str, body: Json | None, bad_id: str
) -> None:
    response = await getattr(client, method)(route.format(bad_id), json=body)
    assert "_id" in _detail_is_text(await read(response, 422))


# --- anything else ---


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("delete", "/api/tasks/"),
        ("put", "/api/tasks/"),
        ("post", "/api/tasks/1"),
        ("get", "/api/tasks/1/pause"),
        ("post", "/api/tasks/1/resume"),
        ("delete", "/api/workers/1"),
        ("put", "/api/workers/1/status"),
    ],
)
async def test_wrong_method_is_a_json_405(client: Client, method: str, path: str) -> None:
    _detail_is_text(await read(await getattr(client, method)(path), 405))


async def test_unknown_route_is_a_json_404(client: Client) -> None:
    _detail_is_text(await read(await client.get("/api/nothing-here"), 404))


async def test_a_batch_of_bad_requests_leaves_stored_tasks_unchanged(client: Client) -> None:
    await create_task(client, scheduled_at=FAR_FUTURE, payload={"keep": 1})
    await create_task(client, scheduled_at=FAR_FUTURE, priority=4)
    before = await list_tasks(client)
    first = before[0]["id"]

    for fields in BAD_TASK_FIELDS:
        assert (await client.post("/api/tasks/", json=VALID_TASK | fields)).status_code == 422
        assert (await client.put(f"/api/tasks/{first}", json=fields)).status_code == 422
    for raw in (b"{", b"[1", b"nul"):
        response = await client.put(f"/api/tasks/{first}", data=raw, headers=JSON_HEADERS)
        assert response.status_code == 400
    for bad_id in BAD_IDS:
        assert (await client.delete(f"/api/tasks/{bad_id}")).status_code == 422
        assert (await client.patch(f"/api/tasks/{bad_id}/pause")).status_code == 422
    assert (await client.get("/api/tasks/?limit=-5")).status_code == 422

    assert await list_tasks(client) == before
