"""The OpenAPI document: quart-schema's, plus what it cannot infer.

quart-schema documents JSON bodies from pydantic models. ``responds`` adds
the rest: the error statuses a route really answers (each ``{"detail": ...}``),
bodies that are not JSON (``text/event-stream``, Prometheus text, HTML) and
empty ones (204). Path ids are documented as the integers they must be, and
a JSON body as required. Every route taking a body may answer 413; when API
tokens are configured, every route but the probes may answer 401 and the
document says which need the token. Links say where the id of a task or a
worker that an operation answers can go next, so that a client (or a fuzzer)
can follow them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from quart_schema import document_response
from quart_schema.openapi import OpenAPIProvider
from werkzeug.routing import Rule
from werkzeug.routing.converters import BaseConverter

from taskq.api.schemas import ErrorOut

# The bearer scheme as quart-schema's ``security_schemes`` takes it.
BEARER: dict[str, Any] = {"bearer": {"type": "http", "scheme": "bearer"}}
# Routes that answer without a token.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/login"})

F = TypeVar("F", bound=Callable[..., Any])

_RAW = "_taskq_raw_responses"

# What each error status means, wherever it is documented.
ERRORS = {
    400: "The body is not valid JSON",
    401: "An API token is required and none, or a wrong one, was sent",
    404: "No such task or worker (or, for pause and resume, not in a state that allows it)",
    409: "The task's state does not allow this",
    413: "The request body is larger than the configured limit",
    422: "A field, query parameter or path id is invalid",
    503: "taskq is stopping or could not complete the request; try again",
}

# The operations on one task or one worker, by operationId, and what names it in their path.
TASK_OPERATIONS = (
    "get_get_task",
    "put_update_task",
    "delete_delete_task",
    "patch_pause_task",
    "patch_resume_task",
    "post_retry_task",
)
WORKER_OPERATIONS = ("get_get_worker", "patch_heartbeat", "patch_set_status")
# Operation → (its success status, the path parameter its answer's id fills, where that id
# is in the answer, the operations that take it).
LINKS: dict[str, tuple[int, str, str, tuple[str, ...]]] = {
    "post_create_task": (201, "task_id", "$response.body#/id", TASK_OPERATIONS),
    "post_create_tasks": (201, "task_id", "$response.body#/tasks/0/id", TASK_OPERATIONS),
    **{
        operation: (200, "task_id", "$response.body#/id", TASK_OPERATIONS)
        for operation in TASK_OPERATIONS
        if operation != "delete_delete_task"
    },
    "post_create_worker": (201, "worker_id", "$response.body#/id", WORKER_OPERATIONS),
    **{
        operation: (200, "worker_id", "$response.body#/id", WORKER_OPERATIONS)
        for operation in WORKER_OPERATIONS
    },
}


def responds(
    status: int,
    model: Any = None,
    *,
    errors: tuple[int, ...] = (),
    media_type: str | None = None,
    description: str = "",
    schema: dict[str, Any] | None = None,
) -> Callable[[F], F]:
    """Document a route's success response and the error statuses it may answer.

    ``model`` is a pydantic model for a JSON body; without one, the body is
    ``media_type`` (``schema`` says what it holds, text by default), or
    nothing at all when that is None too.
    """

    def decorate(route: F) -> F:
        for code in errors:
            route = document_response(ErrorOut, code)(route)
        if model is not None:
            return document_response(model, status)(route)
        raw: dict[int, tuple[str | None, str, dict[str, Any]]] = dict(getattr(route, _RAW, {}))
        raw[status] = (media_type, description, schema or {"type": "string"})
        setattr(route, _RAW, raw)
        return route

    return decorate


class Provider(OpenAPIProvider):
    def schema(self) -> dict[str, Any]:
        document = super().schema()
        operations = {
            operation["operationId"]: operation
            for path in document["paths"].values()
            for operation in path.values()
        }
        for source, (status, parameter, expression, targets) in LINKS.items():
            unknown = {source, *targets} - operations.keys()
            if unknown:
                raise KeyError(f"links name operations that do not exist: {sorted(unknown)}")
            operations[source]["responses"][status]["links"] = {
                target: {"operationId": target, "parameters": {parameter: expression}}
                for target in targets
            }
        return document

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        route = self._app.view_functions[rule.endpoint]
        secured = self._extension.security is not None
        for operations in paths.values():
            for operation in operations.values():
                extra = {413} if "requestBody" in operation else set()
                if secured and rule.rule in OPEN_PATHS:
                    operation["security"] = []
                elif secured:
                    extra.add(401)
                responses = operation["responses"]
                for code in sorted(extra):
                    responses = {**responses, str(code): _error_response()}
                operation["responses"] = _described(responses, route)
                if "requestBody" in operation:
                    operation["requestBody"] = operation["requestBody"] | {"required": True}
        return paths, components

    def build_path_parameter(self, name: str, converter: BaseConverter) -> dict[str, Any]:
        parameter = super().build_path_parameter(name, converter)
        if name.endswith("_id"):
            parameter["schema"] = {"type": "integer", "minimum": 0}
        return parameter


def _described(responses: dict[Any, Any], route: Callable[..., Any]) -> dict[Any, Any]:
    """Copies, so that operations sharing quart-schema's dict are not changed twice."""
    described: dict[Any, Any] = {}
    for status, response in responses.items():
        response = dict(response)
        if int(status) in ERRORS:
            response["description"] = ERRORS[int(status)]
        described[status] = response
    for status, (media_type, description, schema) in getattr(route, _RAW, {}).items():
        response = {"description": description}
        if media_type is not None:
            response["content"] = {media_type: {"schema": schema}}
        described[status] = response
    return described


def _error_response() -> dict[str, Any]:
    return {
        "description": "",
        "content": {"application/json": {"schema": ErrorOut.model_json_schema()}},
    }
