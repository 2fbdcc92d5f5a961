"""The bounds on what one request may ask of the process, beyond what pydantic checks.

The body size is Quart's ``MAX_CONTENT_LENGTH`` (checked against
``Content-Length`` and again while a chunked body arrives); the payload depth is
checked here, after validation, because the limit is a setting of the running
process and not part of the request models.
"""

from __future__ import annotations

import math
from typing import Any

from taskq.api.errors import InvalidInput


def depth(value: Any, stop_after: int) -> int:
    """How many levels of objects and arrays ``value`` nests, counting no further than
    ``stop_after + 1``; iterative, so a deep value cannot exhaust the stack."""
    deepest = 0
    level: list[Any] = [value]
    while level and deepest <= stop_after:
        containers = [item for item in level if isinstance(item, dict | list)]
        if not containers:
            break
        deepest += 1
        level = [
            child
            for container in containers
            for child in (container.values() if isinstance(container, dict) else container)
        ]
    return deepest


def finite(value: Any) -> bool:
    """No NaN or Infinity anywhere in ``value``: Python's JSON parser lets them through.

    A look at the numbers, in any order, far cheaper than encoding the value again
    to see whether the encoder refuses it; iterative, like ``depth``.
    """
    waiting: list[Any] = [value]
    while waiting:
        item = waiting.pop()
        if isinstance(item, dict):
            waiting.extend(item.values())
        elif isinstance(item, list):
            waiting.extend(item)
        elif isinstance(item, float) and not math.isfinite(item):
            return False
    return True


def check_depth(payload: Any, limit: int, where: str = "payload") -> None:
    """A 422 naming the field, in the words of the other validation errors."""
    if depth(payload, limit) > limit:
        raise InvalidInput(f"{where}: nested deeper than {limit} levels")
