"""The operator routes in-process: health, readiness, metrics, counts, the change stream, docs."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families
from quart.typing import TestClientProtocol as Client

from taskq import system
from taskq.api.app import create_app
from taskq.api.dashboard import STATIC
from taskq.config import Settings
from taskq.registry import Registry
from tests.api.conftest import Json, create_task, read, wait_for_status

READ_SECONDS = 5.0


async def test_healthz_answers_while_the_process_runs(client: Client) -> None:
    assert await read(await client.get("/healthz"), 200) == {"status": "ok"}


async def test_readyz_is_ready_when_database_and_actors_are(client: Client) -> None:
    assert await read(await client.get("/readyz"), 200) == {"status": "ready"}


async def test_readyz_names_an_actor_that_is_down(running: system.Running) -> None:
    client = create_app(running.queue, running.monitor).test_client()
    running.monitor.liveness.down("scheduler")
    body = await read(await client.get("/readyz"), 503)
    assert body == {"detail": "actors not running: scheduler"}
    running.monitor.liveness.up("scheduler")
    await read(await client.get("/readyz"), 200)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_count_tasks_workers_commits_and_requests(client: Client) -> None:
    done = await create_task(client, name="taskq.echo", payload={"n": 1})
    failed = await create_task(client, name="taskq.fail", priority=4)
    await create_task(client, name="taskq.echo", scheduled_at="2999-01-01T00:00:00")
    await wait_for_status(client, done["id"], "completed")
    await wait_for_status(client, failed["id"], "failed")
    response = await client.get("/metrics")
    text = await response.get_data(as_text=True)
    assert response.status_code == 200, text
    assert response.content_type.startswith("text/plain; version=0.0.4")
    found = samples(text)
    assert found[("taskq_tasks_created_total", (("name", "taskq.echo"),))] == 2
    assert found[("taskq_tasks_created_total", (("name", "taskq.fail"),))] == 1
    completed = ("taskq_tasks_finished_total", (("name", "taskq.echo"), ("outcome", "completed")))
    assert found[completed] == 1
    fails = ("taskq_tasks_finished_total", (("name", "taskq.fail"), ("outcome", "failed")))
    assert found[fails] == 1
    assert found[("taskq_task_run_seconds_count", (("name", "taskq.echo"),))] == 1
    assert found[("taskq_task_wait_seconds_count", (("name", "taskq.fail"),))] == 1
    assert found[("taskq_tasks", (("priority", "2"), ("status", "completed")))] == 1
    assert found[("taskq_tasks", (("priority", "4"), ("status", "failed")))] == 1
    assert found[("taskq_tasks", (("priority", "2"), ("status", "scheduled")))] == 1
    assert found[("taskq_tasks", (("priority", "1"), ("status", "pending")))] == 0
    assert found[("taskq_workers", (("status", "active"),))] == 2
    assert found[("taskq_writer_batch_commands_count", ())] >= 1
    assert found[("taskq_writer_commit_seconds_count", ())] >= 1
    created = (("method", "POST"), ("route", "/api/tasks/"), ("status", "201"))
    assert found[("taskq_http_request_seconds_count", created)] == 3


async def test_stats_count_tasks_by_status_and_priority(client: Client) -> None:
    await create_task(client, scheduled_at="2999-01-01T00:00:00", priority=3)
    await create_task(client, scheduled_at="2999-01-01T00:00:00", priority=3)
    stats = await read(await client.get("/api/stats"), 200)
    assert stats["total"] == 2
    assert stats["by_status"]["scheduled"] == 2
    assert stats["by_status"]["pending"] == 0
    assert stats["by_priority"] == {"1": 0, "2": 0, "3": 2, "4": 0}


async def test_tasks_filter_by_name_and_priority_newest_first(client: Client) -> None:
    later = "2999-01-01T00:00:00"
    a = await create_task(client, name="a", scheduled_at=later, priority=1)
    b = await create_task(client, name="b", scheduled_at=later, priority=1)
    a2 = await create_task(client, name="a", scheduled_at=later, priority=4)

    async def ids(query: str) -> list[int]:
        return [task["id"] for task in await read(await client.get(f"/api/tasks/{query}"), 200)]

    assert await ids("?name=a") == [a["id"], a2["id"]]
    assert await ids("?priority=1") == [a["id"], b["id"]]
    assert await ids("?name=a&priority=4") == [a2["id"]]
    assert await ids("?order=desc") == [a2["id"], b["id"], a["id"]]
    assert await ids("?order=desc&skip=1&limit=1") == [b["id"]]
    await read(await client.get("/api/tasks/?priority=5"), 422)
    await read(await client.get("/api/tasks/?order=sideways"), 422)


# --- the change stream, over a real HTTP server (a stream is cut by disconnecting) ---


@dataclasses.dataclass
class Served:
    http: httpx.AsyncClient
    host: str
    port: int


@pytest.fixture
async def served(
    nursery: trio.Nursery, settings: Settings, registry: Registry
) -> AsyncIterator[Served]:
    running: system.Running = await nursery.start(
        lambda task_status: system.run(
            dataclasses.replace(settings, port=0), registry, task_status=task_status
        )
    )
    address = httpx.URL(str(running.url))
    async with httpx.AsyncClient(base_url=str(running.url), timeout=READ_SECONDS) as http:
        yield Served(http, str(address.host), int(address.port or 0))
    running.stop()


class Stream:
    """One open ``/api/events`` response, read event by event off the socket."""

    def __init__(self, socket: trio.SocketStream, rest: bytes) -> None:
        self.socket = socket
        self.buffer = rest

    async def event(self) -> Json:
        with trio.fail_after(READ_SECONDS):
            while b"\n\n" not in self.buffer:
                self.buffer += await self.socket.receive_some()
        block, self.buffer = self.buffer.split(b"\n\n", 1)
        fields = dict(line.split(": ", 1) for line in block.decode().splitlines())
        if "data" not in fields:  # the reconnect delay
            return await self.event()
        data: Json = json.loads(fields["data"])
        assert "id" not in fields or int(fields["id"]) == data["id"]
        return data

    async def events_until(self, kind: str, task_id: int) -> list[Json]:
        seen = [await self.event()]
        while (seen[-1]["kind"], seen[-1]["task_id"]) != (kind, task_id):
            seen.append(await self.event())
        return seen


@contextlib.asynccontextmanager
async def stream(served: Served, last_event_id: int | None = None) -> AsyncIterator[Stream]:
    """HTTP/1.0, so the body comes unchunked: the bytes after the head are the stream."""
    resume = "" if last_event_id is None else f"Last-Event-ID: {last_event_id}\r\n"
    async with await trio.open_tcp_stream(served.host, served.port) as socket:
        await socket.send_all(f"GET /api/events HTTP/1.0\r\n{resume}\r\n".encode())
        head = b""
        with trio.fail_after(READ_SECONDS):
            while b"\r\n\r\n" not in head:
                head += await socket.receive_some()
        head, rest = head.split(b"\r\n\r\n", 1)
        assert head.split(b" ", 2)[1] == b"200", head
        assert b"transfer-encoding" not in head.lower(), head
        assert b"content-type: text/event-stream" in head.lower(), head
        yield Stream(socket, rest)


async def submit(served: Served, **fields: Any) -> Json:
    body = {"name": "taskq.echo", "payload": {}} | fields
    response = await served.http.post("/api/tasks/", json=body)
    assert response.status_code == 201, response.text
    task: Json = response.json()
    return task


async def test_events_follow_a_task_from_creation_to_its_outcome(
    served: Served,
) -> None:
    async with stream(served) as changes:
        task = await submit(served, name="test.record", payload={"x": 1})
        seen = await changes.events_until("task.finished", task["id"])
    mine = [event for event in seen if event["task_id"] == task["id"]]
    assert [event["kind"] for event in mine] == ["task.created", "task.updated", "task.finished"]
    assert mine[0]["task"] == task
    assert mine[1]["task"]["status"] == "running"
    assert mine[2]["detail"] == {"succeeded": True, "error": None, "retry_after": None}
    ids = [event["id"] for event in seen]
    assert ids == sorted(ids)


async def test_events_resume_after_last_event_id(served: Served) -> None:
    later = {"scheduled_at": "2999-01-01T00:00:00"}
    async with stream(served) as changes:
        first = await submit(served, **later)
        last_seen = (await changes.events_until("task.created", first["id"]))[-1]["id"]
    second = await submit(served, **later)
    third = await submit(served, **later)
    async with stream(served, last_seen) as changes:
        replayed = [await changes.event(), await changes.event()]
    assert [event["task_id"] for event in replayed] == [second["id"], third["id"]]
    assert [event["id"] for event in replayed] == [last_seen + 1, last_seen + 2]


async def test_events_say_when_a_resume_is_impossible(served: Served) -> None:
    async with stream(served, 999999) as changes:
        assert await changes.event() == {"kind": "stream.reset"}


@pytest.mark.parametrize("query", ["?after=-1", "?after=x"])
async def test_events_refuse_a_bad_resume_point(client: Client, query: str) -> None:
    await read(await client.get(f"/api/events{query}"), 422)


async def test_events_refuse_a_bad_last_event_id(client: Client) -> None:
    body = await read(await client.get("/api/events", headers={"Last-Event-ID": "abc"}), 422)
    assert "Last-Event-ID" in body["detail"]


# --- documents and pages ---


async def test_openapi_is_valid_and_describes_every_route(client: Client) -> None:
    document = await read(await client.get("/openapi.json"), 200)
    validate(document)
    app = client.app
    for rule in app.url_map.iter_rules():
        if rule.rule == "/openapi.json":
            continue
        path = re.sub(r"<(?:[^:>]*:)?([^>]+)>", r"{\1}", rule.rule)
        assert path in document["paths"], path
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = document["paths"][path][method.lower()]
            assert operation["responses"], (method, path)


async def test_openapi_documents_the_errors_routes_answer(client: Client) -> None:
    paths = (await read(await client.get("/openapi.json"), 200))["paths"]
    expected = {
        ("/api/tasks/{task_id}", "get"): {"200", "404", "422", "503"},
        ("/api/tasks/{task_id}", "put"): {"200", "400", "404", "409", "413", "422", "503"},
        ("/api/tasks/{task_id}", "delete"): {"204", "404", "422", "503"},
        ("/api/tasks/", "post"): {"201", "400", "413", "422", "503"},
        ("/api/workers/{worker_id}/status", "patch"): {"200", "400", "404", "413", "422", "503"},
        ("/readyz", "get"): {"200", "503"},
    }
    for (path, method), statuses in expected.items():
        responses = paths[path][method]["responses"]
        assert set(map(str, responses)) == statuses, (path, method)
        for status in statuses - {"200", "201", "204"}:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema["required"] == ["detail"]
            assert schema["properties"]["detail"]["type"] == "string"
    events = paths["/api/events"]["get"]
    assert list(events["responses"]["200"]["content"]) == ["text/event-stream"]
    assert {parameter["name"] for parameter in events["parameters"]} == {"after", "last-event-id"}
    task_id = paths["/api/tasks/{task_id}"]["get"]["parameters"][0]
    assert task_id["schema"]["type"] == "integer"


@pytest.mark.parametrize(
    ("path", "type_"),
    [
        ("/", "text/html"),
        ("/docs", "text/html"),
        ("/static/dashboard.js", "text/javascript"),
        ("/static/docs.js", "text/javascript"),
        ("/static/dashboard.css", "text/css"),
    ],
)
async def test_pages_are_served_from_the_package(client: Client, path: str, type_: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.content_type.startswith(type_)


def test_pages_load_nothing_from_elsewhere() -> None:
    for page in Path(STATIC).iterdir():
        text = page.read_text()
        for elsewhere in ("http://", "https://", "//cdn"):
            assert elsewhere not in text, page.name


async def test_a_missing_asset_is_a_json_404(client: Client) -> None:
    body = await read(await client.get("/static/nothing.js"), 404)
    assert body["detail"]
