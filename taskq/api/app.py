"""The Quart-Trio app: validate, send one command through the ``Queue``, shape the reply.

No route touches the database or an actor's state; each is a translation
between HTTP and a command of ``taskq.queue.Queue``.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Quart
from quart_schema import QuartSchema, validate_querystring, validate_request
from quart_trio import QuartTrio

from taskq.api import errors
from taskq.api.errors import parse_id
from taskq.api.schemas import (
    TaskBatchCreate,
    TaskCreate,
    TaskListQuery,
    TaskUpdate,
    WorkerCreate,
    WorkerStatusUpdate,
    task_json,
    worker_json,
)
from taskq.models import NewTask, Priority, TaskChanges, WorkerStatus
from taskq.queue import Queue

Response = tuple[Any, int]


def create_app(queue: Queue) -> Quart:
    app = QuartTrio("taskq")
    QuartSchema(app, openapi_path="/openapi.json", swagger_ui_path=None, redoc_ui_path=None)
    # Fields in the order the API document lists them; after QuartSchema, which
    # installs its own JSON provider.
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.register_blueprint(_tasks(queue))
    app.register_blueprint(_workers(queue))
    errors.register(app)
    return app


def _tasks(queue: Queue) -> Blueprint:
    tasks = Blueprint("tasks", __name__, url_prefix="/api/tasks")

    @tasks.post("/", strict_slashes=False)
    @validate_request(TaskCreate)
    async def create_task(data: TaskCreate) -> Response:
        new = _new_task(data)
        task = await queue.submit(
            new.name, new.payload, priority=new.priority, scheduled_at=new.scheduled_at
        )
        return task_json(task), 201

    @tasks.post("/batch")
    @validate_request(TaskBatchCreate)
    async def create_tasks(data: TaskBatchCreate) -> Response:
        created = await queue.submit_many([_new_task(item) for item in data.tasks])
        return {"tasks": [task_json(task) for task in created]}, 201

    @tasks.get("/", strict_slashes=False)
    @validate_querystring(TaskListQuery)
    async def list_tasks(query_args: TaskListQuery) -> Response:
        found = await queue.list_tasks(
            skip=query_args.skip, limit=query_args.limit, status=query_args.status
        )
        return [task_json(task) for task in found], 200

    @tasks.get("/<task_id>")
    async def get_task(task_id: str) -> Response:
        return task_json(await queue.get_task(parse_id(task_id, "task_id"))), 200

    @tasks.put("/<task_id>")
    @validate_request(TaskUpdate)
    async def update_task(task_id: str, data: TaskUpdate) -> Response:
        changes = TaskChanges(
            fields=frozenset(data.model_fields_set),
            name=data.name,
            payload=data.payload,
            priority=None if data.priority is None else Priority(data.priority),
            scheduled_at=data.scheduled_at,
        )
        task = await queue.update_task(parse_id(task_id, "task_id"), changes)
        return task_json(task), 200

    @tasks.delete("/<task_id>")
    async def delete_task(task_id: str) -> Response:
        await queue.delete_task(parse_id(task_id, "task_id"))
        return "", 204

    @tasks.patch("/<task_id>/pause")
    async def pause_task(task_id: str) -> Response:
        return task_json(await queue.pause_task(parse_id(task_id, "task_id"))), 200

    @tasks.patch("/<task_id>/resume")
    async def resume_task(task_id: str) -> Response:
        return task_json(await queue.resume_task(parse_id(task_id, "task_id"))), 200

    return tasks


def _new_task(data: TaskCreate) -> NewTask:
    return NewTask(data.name, data.payload, Priority(data.priority), data.scheduled_at)


def _workers(queue: Queue) -> Blueprint:
    workers = Blueprint("workers", __name__, url_prefix="/api/workers")

    @workers.post("/", strict_slashes=False)
    @validate_request(WorkerCreate)
    async def create_worker(data: WorkerCreate) -> Response:
        return worker_json(await queue.create_worker(data.name)), 201

    @workers.get("/", strict_slashes=False)
    async def list_workers() -> Response:
        return [worker_json(worker) for worker in await queue.list_workers()], 200

    @workers.get("/<worker_id>")
    async def get_worker(worker_id: str) -> Response:
        return worker_json(await queue.get_worker(parse_id(worker_id, "worker_id"))), 200

    @workers.patch("/<worker_id>/heartbeat")
    async def heartbeat(worker_id: str) -> Response:
        return worker_json(await queue.heartbeat(parse_id(worker_id, "worker_id"))), 200

    @workers.patch("/<worker_id>/status")
    @validate_request(WorkerStatusUpdate)
    async def set_status(worker_id: str, data: WorkerStatusUpdate) -> Response:
        worker = await queue.set_worker_status(
            parse_id(worker_id, "worker_id"), WorkerStatus(data.status)
        )
        return worker_json(worker), 200

    return workers
