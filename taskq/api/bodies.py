"""JSON in and out of the routes, with the models validated once per request and no more.

quart-schema's decorators build a pydantic ``TypeAdapter`` for every request
they validate, and its response hook builds another for every dict a route
returns, before Quart encodes it again: together more CPU than the rest of a
create. Here a body or query string is validated by the model itself (the same
pydantic validation, the same errors, raised as quart-schema's own exceptions
so the error handlers answer as before), and a reply is encoded once, as
Quart's JSON provider would (compact, ASCII, a final newline).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from pydantic import BaseModel, ValidationError
from quart import Response, request
from quart_schema.validation import (
    QUART_SCHEMA_QUERYSTRING_ATTRIBUTE,
    QUART_SCHEMA_REQUEST_ATTRIBUTE,
    DataSource,
    QuerystringValidationError,
    RequestSchemaValidationError,
)

Route = Callable[..., Awaitable[Any]]

JSON_MEDIA_TYPE = "application/json"
# Made once: ``json.dumps`` with any option builds a new encoder for every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def reply(value: Any, status: int) -> Response:
    """``value`` as the JSON body of a ``status`` response, encoded once."""
    body = _ENCODER.encode(value).encode() + b"\n"
    return Response(body, status, mimetype=JSON_MEDIA_TYPE)


def json_body(model: type[BaseModel]) -> Callable[[Route], Route]:
    """Validate the JSON body with ``model``; the route gets it as ``data``.

    Documented in the OpenAPI document as quart-schema's ``validate_request`` is.
    """

    def decorate(route: Route) -> Route:
        setattr(route, QUART_SCHEMA_REQUEST_ATTRIBUTE, (model, DataSource.JSON))

        @wraps(route)
        async def validated(*args: Any, **kwargs: Any) -> Any:
            raw = await request.get_json()
            try:
                data = model.model_validate(raw)
            except (ValidationError, TypeError, ValueError) as error:
                raise RequestSchemaValidationError(error) from error
            return await route(*args, data=data, **kwargs)

        return validated

    return decorate


def query(model: type[BaseModel]) -> Callable[[Route], Route]:
    """Validate the query string with ``model``; the route gets it as ``query_args``.

    Read as quart-schema's ``validate_querystring`` reads it: ``key[]`` and a
    repeated key give a list, any other key its one value.
    """

    def decorate(route: Route) -> Route:
        setattr(route, QUART_SCHEMA_QUERYSTRING_ATTRIBUTE, model)

        @wraps(route)
        async def validated(*args: Any, **kwargs: Any) -> Any:
            given: dict[str, Any] = {}
            for key in request.args:
                values = request.args.getlist(key)
                if key.endswith("[]"):
                    given[key.removesuffix("[]")] = values
                else:
                    given[key] = values if len(values) > 1 else values[0]
            try:
                query_args = model.model_validate(given)
            except (ValidationError, TypeError, ValueError) as error:
                raise QuerystringValidationError(error) from error
            return await route(*args, query_args=query_args, **kwargs)

        return validated

    return decorate
