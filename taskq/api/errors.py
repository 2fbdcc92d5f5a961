"""Every error leaves the HTTP layer as JSON with a ``detail``: never HTML, never a 500 page."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from quart import Quart, current_app, request
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from taskq.config import RETRY_AFTER_SECONDS
from taskq.errors import Conflict, NotFound, Overloaded, TaskqError, Unavailable

log = logging.getLogger(__name__)

# A database id is a signed 64-bit integer; anything larger cannot name a row.
MAX_ID = 2**63 - 1

Response = tuple[dict[str, Any], int]
Headers = dict[str, str]
ResponseWithHeaders = tuple[dict[str, Any], int, Headers]


class InvalidInput(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def parse_id(raw: str, what: str) -> int:
    """Path ids arrive as text so that a non-integer is a 422, not a routing 404."""
    if not raw.isascii() or not raw.isdigit() or int(raw) > MAX_ID:
        raise InvalidInput(f"{what} must be a positive integer, got {raw!r}")
    return int(raw)


def describe(error: ValidationError) -> str:
    """Pydantic's errors as one readable line: 'priority: Input should be ... ; name: ...'.

    List positions read as indexes, so a bad item of a batch is 'tasks[3].priority'.
    """
    parts = []
    for item in error.errors(include_url=False):
        where = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in item["loc"]
        ).removeprefix(".")
        parts.append(f"{where}: {item['msg']}" if where else item["msg"])
    return "; ".join(parts)


def register(app: Quart) -> None:
    @app.errorhandler(RequestSchemaValidationError)
    async def invalid_request(error: RequestSchemaValidationError) -> Response:
        validation = error.validation_error
        if isinstance(validation, ValidationError):
            if (await request.get_json(silent=True)) is None and request.method != "GET":
                return {
                    "detail": "the request body must be a JSON object "
                    "sent with Content-Type: application/json"
                }, 422
            return {"detail": describe(validation)}, 422
        return {"detail": str(validation)}, 422

    @app.errorhandler(InvalidInput)
    async def invalid_input(error: InvalidInput) -> Response:
        return {"detail": error.detail}, 422

    @app.errorhandler(TaskqError)
    async def refused(error: TaskqError) -> Response | ResponseWithHeaders:
        if isinstance(error, Overloaded):
            return {"detail": error.detail}, 503, {"Retry-After": str(RETRY_AFTER_SECONDS)}
        return {"detail": error.detail}, _status_of(error)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response | ResponseWithHeaders:
        code = error.code or 500
        if code == 400:
            return {"detail": "the request body is not valid JSON"}, 400
        if code == 413:
            limit = current_app.config["MAX_CONTENT_LENGTH"]
            return {"detail": f"the request body is larger than {limit} bytes"}, 413
        detail = {"detail": error.description or error.name}
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            # A 405 says which methods the resource does allow (RFC 9110).
            return detail, code, {"Allow": ", ".join(sorted(error.valid_methods))}
        return detail, code

    @app.errorhandler(UnicodeDecodeError)
    async def undecodable_body(error: UnicodeDecodeError) -> Response:
        # Quart-Trio decodes a JSON body before parsing it, outside its own 400 handling.
        return {"detail": "the request body is not valid JSON (not UTF-8 text)"}, 400

    @app.errorhandler(RecursionError)
    async def too_deep(error: RecursionError) -> Response:
        # Python's JSON parser gives up on deep nesting with this, not a ValueError.
        return {"detail": "the request body is nested too deeply to parse"}, 400

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return {"detail": "internal error"}, 500


def _status_of(error: TaskqError) -> int:
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, Conflict):
        return 409
    if isinstance(error, Unavailable):
        return 503
    return 400
