"""The Quart-Trio app: validate, send one command through the ``Queue``, shape the reply.

No route touches the database or an actor's state; each is a translation
between HTTP and a command of ``taskq.queue.Queue``.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from quart import Blueprint, Quart, request
from quart import Response as QuartResponse
from quart_schema import QuartSchema
from werkzeug.routing import BaseConverter

from taskq.api import auth, dashboard, errors, ops
from taskq.api.bodies import json_body, query, reply
from taskq.api.errors import parse_id
from taskq.api.limits import check_depth
from taskq.api.openapi import BEARER, Provider, responds
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
from taskq.config import LIST_LIMIT_MAX, TASK_NAME_MAX_LENGTH, Settings
from taskq.models import Priority, TaskChanges, WorkerStatus
from taskq.monitor import Monitor
from taskq.queue import DEFAULT, Queue

Response = QuartResponse | tuple[str, int]


class TaskIdConverter(BaseConverter):
    """A task id segment: any text (``parse_id`` makes a bad one a 422) but ``batch``.

    So ``PUT /api/tasks/batch`` is a 405 that names the batch route's POST,
    not a task id that is not a number.
    """

    regex = r"(?!batch$)[^/]+"


def create_app(
    queue: Queue, monitor: Monitor | None = None, settings: Settings | None = None
) -> Quart:
    """The app over ``queue``; ``monitor`` (the running system's) feeds the operator routes.

    ``settings`` gives the limits and the API tokens. The app's commands are
    refused (503) rather than queued once ``settings.http_backlog`` wait for the
    writer: memory stays bounded however many requests arrive.
    """
    monitor = monitor or Monitor()
    settings = settings or Settings()
    queue = queue.bounded(settings.http_backlog)
    app = ops.TimedApp("taskq", monitor.metrics, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    QuartSchema(
        app,
        openapi_path="/openapi.json",
        swagger_ui_path=None,
        redoc_ui_path=None,
        scalar_ui_path=None,
        info={
            "title": "taskq",
            "version": metadata.version("taskq"),
            "description": _limits(settings),
        },
        openapi_provider_class=Provider,
        security_schemes=BEARER,
        security=[{"bearer": []}] if settings.api_tokens else None,
    )
    # Fields in the order the API document lists them; after QuartSchema, which
    # installs its own JSON provider.
    app.json.sort_keys = False  # type: ignore[attr-defined]
    _pass_responses_through(app)
    app.url_map.converters["task_id"] = TaskIdConverter
    app.register_blueprint(_tasks(queue, settings.payload_depth_max))
    app.register_blueprint(_workers(queue))
    app.register_blueprint(ops.blueprint(queue, monitor))
    app.register_blueprint(dashboard.blueprint())
    app.before_request(_read_body)
    auth.install(app, settings.api_tokens)
    errors.register(app)
    return app


def _limits(settings: Settings) -> str:
    return (
        f"Limits: a request body of at most {settings.max_body_bytes} bytes (413 above); "
        f"a payload nested at most {settings.payload_depth_max} levels and a name of at most "
        f"{TASK_NAME_MAX_LENGTH} characters (422); a page of at most {LIST_LIMIT_MAX} tasks "
        f"(422). When {settings.http_backlog} requests already wait for the database, "
        "further ones get 503 with Retry-After. When API tokens are configured, every "
        "route but /healthz and /readyz needs `Authorization: Bearer <token>` (401 otherwise)."
    )


def _pass_responses_through(app: Quart) -> None:
    """A finished ``Response`` goes out as it is, as Quart's own ``make_response`` sends it.

    quart-schema wraps ``make_response`` to turn a returned pydantic model into
    JSON. The routes here return responses already encoded (``reply``), in which
    that conversion finds nothing to do, at a cost per request as large as the
    route's own encoding. Other results (the error handlers' dicts) still go
    through it.
    """
    converting = app.make_response

    async def make_response(result: Any) -> Any:
        if isinstance(result, QuartResponse):
            return result
        return await converting(result)

    app.make_response = make_response  # type: ignore[method-assign]


async def _read_body() -> None:
    """Every request body is read before the answer, even where the route takes none.

    Hypercorn (h11) stops reading a keep-alive connection when the rest of a
    body arrives after the response went out (a 404, a 405, a DELETE sent with
    a body): the client's next request on that connection then hangs.
    """
    await request.get_data()


def _tasks(queue: Queue, depth_max: int) -> Blueprint:
    tasks = Blueprint("tasks", __name__, url_prefix="/api/tasks")

    @tasks.post("/", strict_slashes=False)
    @json_body(TaskCreate)
    @responds(201, TaskOut, errors=(400, 422, 503))
    async def create_task(data: TaskCreate) -> Response:
        """Create a task; 201 once it is on disk."""
        check_depth(data.payload, depth_max)
        task = await queue.submit(data.name, data.payload, **_options(data))
        return reply(task_json(task), 201)

    @tasks.post("/batch")
    @json_body(TaskBatchCreate)
    @responds(201, TaskBatchOut, errors=(400, 422, 503))
    async def create_tasks(data: TaskBatchCreate) -> Response:
        """Create up to 1000 tasks in one transaction; 201 once all are on disk."""
        for index, item in enumerate(data.tasks):
            check_depth(item.payload, depth_max, f"tasks[{index}].payload")
        news = [queue.new_task(item.name, item.payload, **_options(item)) for item in data.tasks]
        created = await queue.submit_many(news)
        return reply({"tasks": [task_json(task) for task in created]}, 201)

    @tasks.get("/", strict_slashes=False)
    @query(TaskListQuery)
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
        return reply([task_json(task) for task in found], 200)

    @tasks.get("/<task_id:task_id>")
    @responds(200, TaskOut, errors=(404, 422, 503))
    async def get_task(task_id: str) -> Response:
        """One task."""
        return reply(task_json(await queue.get_task(parse_id(task_id, "task_id"))), 200)

    @tasks.put("/<task_id:task_id>")
    @json_body(TaskUpdate)
    @responds(200, TaskOut, errors=(400, 404, 409, 422, 503))
    async def update_task(task_id: str, data: TaskUpdate) -> Response:
        """Change the fields given; refused while the task runs."""
        check_depth(data.payload, depth_max)
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
        return reply(task_json(task), 200)

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
        return reply(task_json(await queue.pause_task(parse_id(task_id, "task_id"))), 200)

    @tasks.patch("/<task_id:task_id>/resume")
    @responds(200, TaskOut, errors=(404, 422, 503))
    async def resume_task(task_id: str) -> Response:
        """Resume a paused task."""
        return reply(task_json(await queue.resume_task(parse_id(task_id, "task_id"))), 200)

    @tasks.post("/<task_id:task_id>/retry")
    @responds(200, TaskOut, errors=(404, 409, 422, 503))
    async def retry_task(task_id: str) -> Response:
        """Put a failed task back in the queue with a fresh attempt budget."""
        return reply(task_json(await queue.retry_task(parse_id(task_id, "task_id"))), 200)

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
    @json_body(WorkerCreate)
    @responds(201, WorkerOut, errors=(400, 422, 503))
    async def create_worker(data: WorkerCreate) -> Response:
        """Register a worker; its actor starts at once."""
        return reply(worker_json(await queue.create_worker(data.name)), 201)

    @workers.get("/", strict_slashes=False)
    @responds(200, WorkerListOut, errors=(503,))
    async def list_workers() -> Response:
        """Every worker."""
        return reply([worker_json(worker) for worker in await queue.list_workers()], 200)

    @workers.get("/<worker_id>")
    @responds(200, WorkerOut, errors=(404, 422, 503))
    async def get_worker(worker_id: str) -> Response:
        """One worker."""
        return reply(worker_json(await queue.get_worker(parse_id(worker_id, "worker_id"))), 200)

    @workers.patch("/<worker_id>/heartbeat")
    @responds(200, WorkerOut, errors=(404, 422, 503))
    async def heartbeat(worker_id: str) -> Response:
        """Record a heartbeat."""
        return reply(worker_json(await queue.heartbeat(parse_id(worker_id, "worker_id"))), 200)

    @workers.patch("/<worker_id>/status")
    @json_body(WorkerStatusUpdate)
    @responds(200, WorkerOut, errors=(400, 404, 422, 503))
    async def set_status(worker_id: str, data: WorkerStatusUpdate) -> Response:
        """Set a worker active or inactive."""
        worker = await queue.set_worker_status(
            parse_id(worker_id, "worker_id"), WorkerStatus(data.status)
        )
        return reply(worker_json(worker), 200)

    return workers
