"""Values of the per-task statements, converted exactly as the columns' own
SQLAlchemy types would, and cheaper (``taskq.store.hot`` runs them once per task).

tests/store/test_hot.py compares each with the column's own conversion.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from psycopg.types.json import Json
from sqlalchemy import JSON, Float
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

from taskq import jsontext

Processor = Callable[[Any], Any] | None


def unchanged(value: Any) -> Any:
    return value


def once_each(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``convert``, run once per distinct value: what it answers must be immutable."""
    done: dict[Any, Any] = {}

    def converted(value: Any) -> Any:
        try:
            return done[value]
        except KeyError:
            done[value] = result = convert(value)
            return result

    return converted


def result_processor(column_type: TypeEngine[Any], dialect: Dialect) -> Processor:
    """The column's own conversion of what the driver returns; drivers return floats as
    floats already (and PostgreSQL's numeric processors want the wire type's code)."""
    if isinstance(column_type, Float):
        return None
    if isinstance(column_type, JSON) and dialect.name == "sqlite":
        return sqlite_json
    return column_type.dialect_impl(dialect).result_processor(dialect, None)


# ``json.loads``'s own decoder, without the layers that skip whitespace around the value.
_JSON_DECODER = json.JSONDecoder()


def sqlite_json(value: Any) -> Any:
    """A SQLite JSON column's value as the column's own conversion reads it, cheaper.

    That conversion is ``json.loads`` behind two Python wrappers, with a number
    given back as it is (JSON text of a number, stored under SQLite's NUMERIC
    affinity, comes back as one). For text that is one JSON value and nothing
    more, as ``json.dumps`` writes it, the decoder's ``raw_decode`` alone answers
    the same value; anything else goes to ``json.loads`` itself.
    """
    if isinstance(value, str):
        try:
            decoded, end = _JSON_DECODER.raw_decode(value)
        except ValueError:
            return json.loads(value)
        return decoded if end == len(value) else json.loads(value)
    if isinstance(value, int | float):
        return value
    return json.loads(value)


# What ``json.dumps`` writes with its default arguments; only the writer's thread
# encodes payloads.
_dumps = jsontext.encoder(allow_nan=True)


def sqlite_json_text(value: Any) -> str | None:
    """``json.dumps(value)`` (None stays NULL), as SQLite's JSON column writes it."""
    return None if value is None else _dumps(value)


def json_text_for_psycopg(text: str | None) -> Any:
    """psycopg takes JSON text wrapped, as the column's own conversion does, with the
    text standing for its own encoding (SQLite takes the text as it stores it)."""
    return None if text is None else Json(text, dumps=unchanged)
