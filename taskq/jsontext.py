"""JSON text from a C encoder built once.

``json.dumps`` and ``JSONEncoder.encode`` build a new C encoder at every call,
which costs more than encoding a small value, and the hot paths encode one value
per task (a created task's payload on the writer's thread, a handler's result on
the Trio thread). An encoder made here is built once and answers the very text
``JSONEncoder(allow_nan=...).encode`` would. It keeps the markers of the
containers it is inside, so each thread that encodes needs its own.
"""

from __future__ import annotations

import json
from _json import encode_basestring_ascii, make_encoder
from collections.abc import Callable
from typing import Any


def encoder(*, allow_nan: bool) -> Callable[[Any], str]:
    """``json.JSONEncoder(allow_nan=allow_nan).encode``, built once, for one thread."""
    markers: dict[int, Any] = {}
    settings = json.JSONEncoder(allow_nan=allow_nan)
    encode = make_encoder(
        markers,
        settings.default,
        encode_basestring_ascii,
        None,
        settings.key_separator,
        settings.item_separator,
        False,
        False,
        allow_nan,
    )

    def text(value: Any) -> str:
        try:
            return "".join(encode(value, 0))
        except BaseException:
            # A failed encoding leaves its containers marked as if still open.
            markers.clear()
            raise

    return text
