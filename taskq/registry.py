"""Handlers registered by name, and the built-in ones.

A task's name is only ever a key into this registry: it never becomes an
import path, so a client cannot make the server run code it was not given.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

Handler = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a handler may want to know about the execution it is part of."""

    task_id: int
    name: str
    attempt: int
    worker_id: int


@dataclass(frozen=True, slots=True)
class Registration:
    name: str
    handler: Handler
    is_async: bool
    takes_context: bool

    async def invoke(self, payload: Mapping[str, Any], context: TaskContext) -> Any:
        """Run the handler; a plain ``def`` goes to a thread so the loop never blocks.

        Cancelling a thread handler abandons the thread (Python cannot stop it);
        its eventual result is discarded by the attempt fence.
        """
        args = (payload, context) if self.takes_context else (payload,)
        if self.is_async:
            return await self.handler(*args)
        call = functools.partial(self.handler, *args)
        return await trio.to_thread.run_sync(call, abandon_on_cancel=True)


class Registry:
    """Handlers by task name; a new registry starts with the built-in ``taskq.*`` ones."""

    def __init__(self) -> None:
        self._registrations: dict[str, Registration] = {}
        for name, handler in BUILTINS.items():
            self.task(name)(handler)

    def task(self, name: str) -> Callable[[Handler], Handler]:
        """Register the decorated function as the handler of tasks called ``name``."""

        def register(handler: Handler) -> Handler:
            existing = self._registrations.get(name)
            if existing is not None and existing.handler is not handler:
                raise ValueError(f"a handler for {name!r} is already registered")
            self._registrations[name] = Registration(
                name=name,
                handler=handler,
                is_async=inspect.iscoroutinefunction(handler),
                takes_context=len(inspect.signature(handler).parameters) >= 2,
            )
            return handler

        return register

    def get(self, name: str) -> Registration | None:
        return self._registrations.get(name)

    def names(self) -> list[str]:
        return sorted(self._registrations)


class TaskFailed(Exception):
    """Raised by ``taskq.fail``; any exception fails a task the same way."""


async def echo(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    return payload


async def sleep(payload: Mapping[str, Any]) -> dict[str, float]:
    seconds = float(payload["seconds"])
    await trio.sleep(seconds)
    return {"slept": seconds}


async def fail(payload: Mapping[str, Any]) -> None:
    raise TaskFailed(str(payload.get("message", "failed on purpose")))


# Always registered: for smoke tests, demos and benchmarks.
BUILTINS: dict[str, Handler] = {"taskq.echo": echo, "taskq.sleep": sleep, "taskq.fail": fail}

# The process-wide registry that ``@taskq.task`` fills and ``python -m taskq`` runs.
registry = Registry()
task = registry.task
