"""Bulk creation: ``POST /api/tasks/batch`` and ``Queue.submit_many``, one transaction each."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from quart.typing import TestClientProtocol as Client

from taskq.config import BATCH_TASKS_MAX
from taskq.models import NewTask, Priority, TaskStatus
from taskq.system import Running
from tests.api.conftest import (
    FAR_FUTURE,
    TASK_FIELDS,
    Json,
    deactivate_workers,
    get_task,
    list_tasks,
    read,
    wait_for_status,
)
from tests.conftest import eventually


def echo(number: int, **fields: Any) -> Json:
    return {"name": "taskq.echo", "payload": {"n": number}} | fields


async def post_batch(client: Client, items: list[Any], status: int) -> Json:
    body: Json = await read(await client.post("/api/tasks/batch", json={"tasks": items}), status)
    return body


async def test_a_batch_answers_201_with_every_task_in_the_order_sent(client: Client) -> None:
    items = [echo(0), echo(1, priority=4), echo(2, scheduled_at=FAR_FUTURE)]

    created = (await post_batch(client, items, 201))["tasks"]

    assert [list(task) for task in created] == [TASK_FIELDS] * 3
    assert [task["payload"] for task in created] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert [task["priority"] for task in created] == [2, 4, 2]
    assert created[2]["status"] == "scheduled"
    assert [await get_task(client, task["id"]) for task in created[2:]] == created[2:]


async def test_batch_tasks_run_like_any_other(client: Client) -> None:
    created = (await post_batch(client, [echo(7), echo(8)], 201))["tasks"]

    for task in created:
        done = await wait_for_status(client, task["id"], "completed")
        assert done["result"] == task["payload"]


async def test_a_bad_item_refuses_the_whole_batch_and_names_every_bad_item(
    client: Client,
) -> None:
    items = [echo(0), echo(1, priority=9), echo(2), {"payload": {}}]

    refused = await post_batch(client, items, 422)

    assert "tasks[1].priority" in refused["detail"]
    assert "tasks[3].name" in refused["detail"]
    assert "tasks[0]" not in refused["detail"]
    assert await list_tasks(client) == []


async def test_a_batch_holds_one_to_the_maximum_number_of_tasks(client: Client) -> None:
    await deactivate_workers(client)
    assert "tasks" in (await post_batch(client, [], 422))["detail"]
    too_many = [echo(number) for number in range(BATCH_TASKS_MAX + 1)]
    assert "tasks" in (await post_batch(client, too_many, 422))["detail"]
    assert await list_tasks(client) == []

    full = await post_batch(client, too_many[:BATCH_TASKS_MAX], 201)

    assert len(full["tasks"]) == BATCH_TASKS_MAX
    assert len(await list_tasks(client, "?limit=1000")) == BATCH_TASKS_MAX


async def test_a_batch_body_must_be_an_object_with_tasks(client: Client) -> None:
    for body in ([echo(0)], {"tasks": echo(0)}, {"tasks": [echo(0)], "extra": 1}):
        response = await client.post("/api/tasks/batch", json=body)
        assert "detail" in await read(response, 422)


async def test_submit_many_creates_all_in_order(running: Running) -> None:
    later = datetime.fromisoformat(FAR_FUTURE)
    news = [NewTask("taskq.echo", {"n": n}, Priority(1 + n % 4), later) for n in range(5)]

    created = await running.queue.submit_many(news)

    assert [(task.payload, task.priority) for task in created] == [
        (new.payload, new.priority) for new in news
    ]
    assert [await running.queue.get_task(task.id) for task in created] == created
    assert await running.queue.submit_many([]) == []


async def test_submitted_many_all_complete(running: Running) -> None:
    created = await running.queue.submit_many([NewTask("taskq.echo", {"n": n}) for n in range(50)])

    async def all_done() -> bool:
        done = await running.queue.list_tasks(status=TaskStatus.COMPLETED, limit=100)
        return len(done) == len(created)

    await eventually(all_done, what="every submitted task to complete")
