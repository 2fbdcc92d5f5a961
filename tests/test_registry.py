"""Registration: runtimes, per-handler defaults, and what a worker process can import."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from taskq.registry import ExecutionDefaults, Registry, Runtime
from tests.actors import runtime_handlers

SYSTEM = ExecutionDefaults(max_attempts=1, timeout=None)


async def trio_handler(payload: Mapping[str, Any]) -> None:
    return None


def plain_handler(payload: Mapping[str, Any]) -> None:
    return None


@pytest.fixture
def registry() -> Registry:
    return Registry()


def test_the_runtime_follows_the_kind_of_function(registry: Registry) -> None:
    registry.task("a")(trio_handler)
    registry.task("b")(plain_handler)

    found = [registry.get(name) for name in "ab"]
    assert [each.runtime if each else None for each in found] == [Runtime.TRIO, Runtime.THREAD]


def test_a_process_handler_must_be_importable_by_name(registry: Registry) -> None:
    registry.task("ok", runtime="process")(runtime_handlers.square)

    def closure(payload: Mapping[str, Any]) -> None:
        return None

    for handler in (closure, lambda payload: None):
        with pytest.raises(TypeError, match="must be a function defined at module level"):
            registry.task("bad", runtime="process")(handler)
    assert registry.get("bad") is None


def test_a_process_handler_takes_only_the_payload(registry: Registry) -> None:
    with pytest.raises(TypeError, match="takes only the payload"):
        registry.task("ctx", runtime="process")(runtime_handlers.with_context)


@pytest.mark.parametrize(
    ("handler", "runtime"),
    [(plain_handler, "trio"), (plain_handler, "asyncio"), (trio_handler, "thread")],
)
def test_a_runtime_that_does_not_fit_the_function_is_refused(
    registry: Registry, handler: Any, runtime: str
) -> None:
    with pytest.raises(TypeError, match=f"runtime='{runtime}' must be"):
        registry.task("x", runtime=runtime)(handler)


def test_an_unknown_runtime_is_refused_naming_the_choices(registry: Registry) -> None:
    with pytest.raises(ValueError, match="'trio', 'asyncio', 'thread', 'process'"):
        registry.task("x", runtime="gevent")(plain_handler)


@pytest.mark.parametrize("limits", [{"max_attempts": 0}, {"timeout": 0}, {"timeout": -1.0}])
def test_out_of_range_defaults_are_refused(registry: Registry, limits: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(limits))):
        registry.task("x", **limits)


def test_defaults_come_from_the_registration_then_the_system(registry: Registry) -> None:
    registry.task("own", max_attempts=5)(trio_handler)
    registry.task("timed", timeout=9.0)(trio_handler)

    assert registry.defaults("own", SYSTEM) == ExecutionDefaults(5, None)
    assert registry.defaults("timed", SYSTEM) == ExecutionDefaults(1, 9.0)
    assert registry.defaults("unknown", ExecutionDefaults(3, 2.0)) == ExecutionDefaults(3, 2.0)
