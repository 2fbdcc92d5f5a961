"""The limits on one request: body size, payload depth, name length, page size, backlog.

Each is refused with a JSON ``detail`` that names what was too large, never
with a 500 or an HTML page; just inside each limit is accepted.
"""

from __future__ import annotations

import functools
import json
import math
from typing import Any

import pytest
import trio
import trio.testing
from quart.typing import TestClientProtocol as Client

from taskq import system
from taskq.api.app import create_app
from taskq.api.limits import depth, finite
from taskq.config import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_PAYLOAD_DEPTH_MAX,
    LIST_LIMIT_MAX,
    RETRY_AFTER_SECONDS,
    TASK_NAME_MAX_LENGTH,
    Settings,
)
from taskq.errors import Overloaded
from taskq.messages import SupervisorMessage, WriterCommand
from taskq.queue import Queue
from tests.api.conftest import create_task, get_task, list_tasks, read

JSON_HEADERS = {"Content-Type": "application/json"}


def nested(levels: int) -> dict[str, Any]:
    """A payload ``levels`` deep: objects and arrays in turn, the payload itself level 1."""
    value: Any = 1
    for level in range(levels - 1):
        value = [value] if level % 2 else {"k": value}
    return {"k": value}


def body_of_size(size: int) -> bytes:
    """A valid task body of exactly ``size`` bytes."""
    empty = json.dumps({"name": "taskq.echo", "payload": {"pad": ""}}).encode()
    return json.dumps(
        {"name": "taskq.echo", "payload": {"pad": "x" * (size - len(empty))}}
    ).encode()


def small_app(running: system.Running, **limits: Any) -> Client:
    return create_app(running.queue, running.monitor, Settings(**limits)).test_client()


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(
    "place",
    [lambda x: {"n": x}, lambda x: {"a": [1, {"b": [2.5, x]}]}, lambda x: {"a": [[[[x]]]], "b": 1}],
    ids=["top", "nested", "deep"],
)
def test_finite_finds_a_nan_or_infinity_wherever_it_is(number: float, place: Any) -> None:
    assert not finite(place(number))
    assert finite(place(1.5))


def test_finite_takes_every_json_value_but_those() -> None:
    assert finite({"s": "NaN", "n": None, "t": True, "i": 10**30, "f": -0.0, "l": [], "o": {}})


def test_nested_counts_the_payload_itself_as_the_first_level() -> None:
    assert depth({}, 10) == 1
    assert depth({"a": 1, "b": "text"}, 10) == 1
    assert depth(nested(5), 10) == 5
    assert depth(nested(50), 10) == 11


async def test_a_body_at_the_limit_is_accepted(client: Client) -> None:
    body = body_of_size(DEFAULT_MAX_BODY_BYTES)
    assert len(body) == DEFAULT_MAX_BODY_BYTES
    await read(await client.post("/api/tasks/", data=body, headers=JSON_HEADERS), 201)


async def test_a_body_over_the_limit_is_413_with_a_detail(client: Client) -> None:
    body = body_of_size(DEFAULT_MAX_BODY_BYTES + 1)
    response = await client.post("/api/tasks/", data=body, headers=JSON_HEADERS)
    error = await read(response, 413)
    assert error == {"detail": f"the request body is larger than {DEFAULT_MAX_BODY_BYTES} bytes"}
    assert await list_tasks(client) == []


async def test_a_chunked_body_without_length_is_cut_off_at_the_limit(
    running: system.Running,
) -> None:
    client = small_app(running, max_body_bytes=1000)
    connection = client.request("/api/tasks/", method="POST", headers=JSON_HEADERS)
    async with connection:
        for _ in range(5):
            await connection.send(b" " * 300)
        await connection.send_complete()
    error = await read(await connection.as_response(), 413)
    assert error == {"detail": "the request body is larger than 1000 bytes"}


async def test_the_body_limit_is_a_setting(running: system.Running) -> None:
    client = small_app(running, max_body_bytes=1000)
    await read(await client.post("/api/tasks/", data=body_of_size(1000), headers=JSON_HEADERS), 201)
    response = await client.post("/api/tasks/", data=body_of_size(1001), headers=JSON_HEADERS)
    await read(response, 413)


async def test_a_payload_at_the_depth_limit_is_accepted(client: Client) -> None:
    task = await create_task(client, payload=nested(DEFAULT_PAYLOAD_DEPTH_MAX))
    assert task["payload"] == nested(DEFAULT_PAYLOAD_DEPTH_MAX)


@pytest.mark.parametrize("levels", [DEFAULT_PAYLOAD_DEPTH_MAX + 1, 500])
async def test_a_deeper_payload_is_422_naming_the_field(client: Client, levels: int) -> None:
    response = await client.post(
        "/api/tasks/", json={"name": "taskq.echo", "payload": nested(levels)}
    )
    error = await read(response, 422)
    assert error == {"detail": f"payload: nested deeper than {DEFAULT_PAYLOAD_DEPTH_MAX} levels"}


async def test_batch_and_update_check_the_depth_too(client: Client) -> None:
    deep = nested(DEFAULT_PAYLOAD_DEPTH_MAX + 1)
    items = [{"name": "taskq.echo", "payload": {}}, {"name": "taskq.echo", "payload": deep}]
    error = await read(await client.post("/api/tasks/batch", json={"tasks": items}), 422)
    assert (
        error["detail"]
        == f"tasks[1].payload: nested deeper than {DEFAULT_PAYLOAD_DEPTH_MAX} levels"
    )
    task = await create_task(client, scheduled_at="2999-01-01T00:00:00")
    response = await client.put(f"/api/tasks/{task['id']}", json={"payload": deep})
    assert (await read(response, 422))["detail"].startswith("payload: nested deeper")
    assert (await get_task(client, task["id"]))["payload"] == {}


async def test_the_depth_limit_is_a_setting(running: system.Running) -> None:
    client = small_app(running, payload_depth_max=2)
    await create_task(client, payload=nested(2))
    response = await client.post("/api/tasks/", json={"name": "taskq.echo", "payload": nested(3)})
    assert await read(response, 422) == {"detail": "payload: nested deeper than 2 levels"}


async def test_a_name_is_at_most_255_characters(client: Client) -> None:
    longest = "n" * TASK_NAME_MAX_LENGTH
    assert (await create_task(client, name=longest))["name"] == longest
    response = await client.post("/api/tasks/", json={"name": longest + "n", "payload": {}})
    error = await read(response, 422)
    assert error["detail"].startswith("name: ")
    assert str(TASK_NAME_MAX_LENGTH) in error["detail"]


async def test_a_page_is_at_most_the_documented_maximum(client: Client) -> None:
    assert await list_tasks(client, f"?limit={LIST_LIMIT_MAX}") == []
    error = await read(await client.get(f"/api/tasks/?limit={LIST_LIMIT_MAX + 1}"), 422)
    assert "limit" in error["detail"]
    assert str(LIST_LIMIT_MAX) in error["detail"]


async def test_the_limits_are_in_the_openapi_document(client: Client) -> None:
    document = await read(await client.get("/openapi.json"), 200)
    assert f"at most {DEFAULT_MAX_BODY_BYTES} bytes" in document["info"]["description"]
    create = document["paths"]["/api/tasks/"]["post"]["responses"]
    assert create["413"]["content"]["application/json"]["schema"]["required"] == ["detail"]
    listing = document["paths"]["/api/tasks/"]["get"]["parameters"]
    (limit,) = [each for each in listing if each["name"] == "limit"]
    assert limit["schema"]["maximum"] == LIST_LIMIT_MAX


# --- the writer's inbox: a flood is refused, not queued without bound ---


def stalled_queue() -> tuple[Queue, trio.MemoryReceiveChannel[WriterCommand]]:
    """A queue whose writer never answers: every command stays in its inbox."""
    writer, inbox = trio.open_memory_channel[WriterCommand](math.inf)
    supervisor, _ = trio.open_memory_channel[SupervisorMessage](math.inf)
    return Queue(writer, supervisor), inbox


async def test_a_bounded_queue_refuses_once_its_backlog_waits() -> None:
    queue, inbox = stalled_queue()
    bounded = queue.bounded(2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bounded.get_task, 1)
        nursery.start_soon(bounded.get_task, 2)
        await trio.testing.wait_all_tasks_blocked()
        assert inbox.statistics().current_buffer_used == 2
        with pytest.raises(Overloaded):
            await bounded.get_task(3)
        # The unbounded queue (the Python API, the actors) still waits its turn.
        nursery.start_soon(queue.get_task, 4)
        await trio.testing.wait_all_tasks_blocked()
        assert inbox.statistics().current_buffer_used == 3
        nursery.cancel_scope.cancel()


async def test_a_flooded_writer_gets_503_with_retry_after() -> None:
    queue, inbox = stalled_queue()
    client = create_app(queue, settings=Settings(http_backlog=2)).test_client()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.get, "/api/tasks/1")
        create = functools.partial(client.post, json={"name": "taskq.echo", "payload": {}})
        nursery.start_soon(create, "/api/tasks/")
        await trio.testing.wait_all_tasks_blocked()
        assert inbox.statistics().current_buffer_used == 2
        response = await client.get("/api/tasks/3")
        error = await read(response, 503)
        assert error == {"detail": "taskq is busy; try again shortly"}
        assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
        assert inbox.statistics().current_buffer_used == 2
        nursery.cancel_scope.cancel()
