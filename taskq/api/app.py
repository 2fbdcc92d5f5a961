"""The Quart-Trio app: validate, send one command through the ``Queue``, shape the reply.

No route touches the database or an actor's state; each is a translation
between HTTP and a command of ``taskq.queue.Queue``.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from quart import Blueprint, Quart, request
from quart_schema import QuartSchema, validate_querystring, validate_request
from quart_trio import QuartTrio
from werkzeug.routing import BaseConverter

from taskq.api import dashboard, errors, ops
from taskq.api.errors import parse_id
from taskq.api.openapi import Provider, responds
from taskq.api.schemas import (
    TaskBatchCreate,
    TaskBatchOut,
    TaskCreate,
    TaskListOut,
    TaskListQuery,
    TaskOut,
    TaskUpdate,
    WorkerCreate,
    WorkerListOut,
    WorkerOut,
    WorkerStatusUpdate,
    task_json,
    worker_json,
)
from taskq.models import Priority, TaskChanges, WorkerStatus
from taskq.monitor import Monitor
from taskq.queue import DEFAULT, Queue

Response = tuple[Any, int]


class TaskIdConverter(BaseConverter):
    """A task id segment: any text (``parse_id`` makes a bad one a 422) but ``batch``.

    So ``PUT /api/tasks/batch`` is a 405 that names the batch route's POST,
    not a task id that is not a number.
    """

    regex = r"(?!batch$)[^/]+"


def create_app(queue: Queue, monitor: Monitor | None = None) -> Quart:
    """The app over ``queue``; ``monitor`` (the running system's) feeds the operator routes."""
    monitor = monitor or Monitor()
    app = QuartTrio("taskq", static_folder=None)
    QuartSchema(
        app,
        openapi_path="/openapi.json",
        swagger_ui_path=None,
        redoc_ui_path=None,
        scalar_ui_path=None,
        info={"title": "taskq", "version": metadata.version("taskq")},
        openapi_provider_class=Provider,
    )
    # Fields in the order the API document lists them; after QuartSchema, which
    # installs its own JSON provider.
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.url_map.converters["task_id"] = TaskIdConverter
    app.register_blueprint(_tasks(queue))
    app.register_blueprint(_workers(queue))
    app.register_blueprint(ops.blueprint(queue, monitor))
    app.register_blueprint(dashboard.blueprint())
    ops.time_requests(app, monitor.metrics)
    errors.register(app)
    app.before_request(_read_body)
    return app


async def _read_body() -> None:
    """Every request body is read before the answer, even where the route takes none.

    Hypercorn (h11) stops reading a keep-alive connection when the rest of a
    body arrives after the response went out (a 404, a 405, a DELETE sent with
    a body): the client's next request on that connection then hangs.
    """
    await request.get_data()


def _tasks(queue: Queue) -> Blueprint:
    tasks = Blueprint("tasks", __name__, url_prefix="/api/tasks")

    @tasks.post("/", strict_slashes=False)
    @validate_request(TaskCreate)
    @responds(201, TaskOut, errors=(400, 422, 503))
    async def create_task(data: TaskCreate) -> Response:
        """Create a task; 201 once it is on disk."""
        task = await queue.submit(data.name, data.payload, **_options(data))
        return task_json(task), 201

    @tasks.post("/batch")
    @validate_request(TaskBatchCreate)
    @responds(201, TaskBatchOut, errors=(400, 422, 503))
    async def create_tasks(data: TaskBatchCreate) -> Response:
        """Create up to 1000 tasks in one transaction; 201 once all are on disk."""
        news = [queue.new_task(item.name, item.payload, **_options(item)) for item in data.tasks]
        created = await queue.submit_many(news)
        return {"tasks": [task_json(task) for task in created]}, 201

    @tasks.get("/", strict_slashes=False)
    @validate_querystring(TaskListQuery)
    @responds(200, TaskListOut, errors=(422, 503))
    async def list_tasks(query_args: TaskListQuery) -> Response:
        """List tasks, filtered and paged."""
        found = await queue.list_tasks(
            skip=query_args.skip,
            limit=query_args.limit,
            status=query_args.status,
            name=query_args.name,
            priority=None if query_args.priority is None else Priority(query_args.priority),
            newest_first=query_args.order == "desc",
        )
        return [task_json(task) for task in found], 200

    @tasks.get("/<task_id:task_id>")
    @responds(200, TaskOut, errors=(404, 422, 503))
    async def get_task(task_id: str) -> Response:
        """One task."""
        return task_json(await queue.get_task(parse_id(task_id, "task_id"))), 200

    @tasks.put("/<task_id:task_id>")
    @validate_request(TaskUpdate)
    @responds(200, TaskOut, errors=(400, 404, 409, 422, 503))
    async def update_task(task_id: str, data: TaskUpdate) -> Response:
        """Change the fields given; refused while the task runs."""
        changes = TaskChanges(
            fields=frozenset(data.model_fields_set),
            name=data.name,
            payload=data.payload,
            priority=None if data.priority is None else Priority(data.priority),
            scheduled_at=data.scheduled_at,
            max_attempts=data.max_attempts,
            timeout=data.timeout,
        )
        task = await queue.update_task(parse_id(task_id, "task_id"), changes)
        return task_json(task), 200

    @tasks.delete("/<task_id:task_id>")
    @responds(204, description="Deleted", errors=(404, 422, 503))
    async def delete_task(task_id: str) -> Response:
        """Delete a task in any state; a running one is cancelled."""
        await queue.delete_task(parse_id(task_id, "task_id"))
        return "", 204

    @tasks.patch("/<task_id:task_id>/pause")
    @responds(200, TaskOut, errors=(404, 422, 503))
    async def pause_task(task_id: str) -> Response:
        """Pause a pending, scheduled or running task."""
        return task_json(await queue.pause_task(parse_id(task_id, "task_id"))), 200

    @tasks.patch("/<task_id:task_id>/resume")
    @responds(200, TaskOut, errors=(404, 422, 503))
    async def resume_task(task_id: str) -> Response:
        """Resume a paused task."""
        return task_json(await queue.resume_task(parse_id(task_id, "task_id"))), 200

    @tasks.post("/<task_id:task_id>/retry")
    @responds(200, TaskOut, errors=(404, 409, 422, 503))
    async def retry_task(task_id: str) -> Response:
        """Put a failed task back in the queue with a fresh attempt budget."""
        return task_json(await queue.retry_task(parse_id(task_id, "task_id"))), 200

    return tasks


def _options(data: TaskCreate) -> dict[str, Any]:
    """The body's options as ``Queue.submit`` takes them; a field left out takes its default."""
    return {
        "priority": Priority(data.priority),
        "scheduled_at": data.scheduled_at,
        "max_attempts": DEFAULT if data.max_attempts is None else data.max_attempts,
        "timeout": data.timeout if "timeout" in data.model_fields_set else DEFAULT,
    }


def _workers(queue: Queue) -> Blueprint:
    workers = Blueprint("workers", __name__, url_prefix="/api/workers")

    @workers.post("/", strict_slashes=False)
    @validate_request(WorkerCreate)
    @responds(201, WorkerOut, errors=(400, 422, 503))
    async def create_worker(data: WorkerCreate) -> Response:
        """Register a worker; its actor starts at once."""
        return worker_json(await queue.create_worker(data.name)), 201

    @workers.get("/", strict_slashes=False)
    @responds(200, WorkerListOut, errors=(503,))
    async def list_workers() -> Response:
        """Every worker."""
        return [worker_json(worker) for worker in await queue.list_workers()], 200

    @workers.get("/<worker_id>")
    @responds(200, WorkerOut, errors=(404, 422, 503))
    async def get_worker(worker_id: str) -> Response:
        """One worker."""
        return worker_json(await queue.get_worker(parse_id(worker_id, "worker_id"))), 200

    @workers.patch("/<worker_id>/heartbeat")
    @responds(200, WorkerOut, errors=(404, 422, 503))
    async def heartbeat(worker_id: str) -> Response:
        """Record a heartbeat."""
        return worker_json(await queue.heartbeat(parse_id(worker_id, "worker_id"))), 200

    @workers.patch("/<worker_id>/status")
    @validate_request(WorkerStatusUpdate)
    @responds(200, WorkerOut, errors=(400, 404, 422, 503))
    async def set_status(worker_id: str, data: WorkerStatusUpdate) -> Response:
        """Set a worker active or inactive."""
        worker = await queue.set_worker_status(
            parse_id(worker_id, "worker_id"), WorkerStatus(data.status)
        )
        return worker_json(worker), 200

    return workers
