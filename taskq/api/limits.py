"""The bounds on what one request may ask of the process, beyond what pydantic checks.

The body size is Quart's ``MAX_CONTENT_LENGTH`` (checked against
``Content-Length`` and again while a chunked body arrives); the payload depth is
checked here, after validation, because the limit is a setting of the running
process and not part of the request models.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from taskq.api.errors import InvalidInput


def levels(value: Any) -> Iterator[list[Any]]:
    """``[value]``, then the items of the objects and arrays in it, level by level.

    Iterative, so a deep value cannot exhaust the stack; each level is built only
    when the caller asks for it, so a walk that stops early costs no more.
    """
    level: list[Any] = [value]
    while level:
        yield level
        level = [
            child
            for container in level
            if isinstance(container, dict | list)
            for child in (container.values() if isinstance(container, dict) else container)
        ]


def depth(value: Any, stop_after: int) -> int:
    """How many levels of objects and arrays ``value`` nests, counting no further than
    ``stop_after + 1``."""
    deepest = 0
    for level in levels(value):
        if deepest > stop_after or not any(isinstance(item, dict | list) for item in level):
            break
        deepest += 1
    return deepest


def finite(value: Any) -> bool:
    """No NaN or Infinity anywhere in ``value``: Python's JSON parser lets them through.

    A look at the numbers only, far cheaper than encoding the value again to see
    whether the encoder refuses it.
    """
    return all(
        math.isfinite(item) for level in levels(value) for item in level if isinstance(item, float)
    )


def check_depth(payload: Any, limit: int, where: str = "payload") -> None:
    """A 422 naming the field, in the words of the other validation errors."""
    if depth(payload, limit) > limit:
        raise InvalidInput(f"{where}: nested deeper than {limit} levels")
