"""Handlers registered by name, how each one runs, and the built-in ones.

A task's name is only ever a key into this registry: it never becomes an
import path, so a client cannot make the server run code it was not given.
(A ``process`` handler is pickled by reference for its worker process, which
is why it must be a module-level function: the server's own code, by name.)
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from taskq.config import MAX_ATTEMPTS_LIMIT, TIMEOUT_MAX_SECONDS
from taskq.context import TaskContext as TaskContext

Handler = Callable[..., Any]


class Runtime(enum.StrEnum):
    """Where a handler's code runs; see ``taskq.execution`` for how each is stopped."""

    TRIO = "trio"  # async def on Trio: in the worker, cancelled at its next await
    ASYNCIO = "asyncio"  # async def on asyncio: in the process's one asyncio loop
    THREAD = "thread"  # def: in a thread, abandoned (not stopped) when cancelled
    PROCESS = "process"  # def: in a worker process, killed when cancelled


@dataclass(frozen=True, slots=True)
class ExecutionDefaults:
    """A task's retry budget and time limit when its create body does not set them."""

    max_attempts: int
    timeout: float | None


@dataclass(frozen=True, slots=True)
class Registration:
    name: str
    handler: Handler
    runtime: Runtime
    takes_context: bool
    # None: the system's default applies.
    max_attempts: int | None = None
    timeout: float | None = None

    def defaults(self, system: ExecutionDefaults) -> ExecutionDefaults:
        return ExecutionDefaults(
            max_attempts=system.max_attempts if self.max_attempts is None else self.max_attempts,
            timeout=system.timeout if self.timeout is None else self.timeout,
        )


class Registry:
    """Handlers by task name; a new registry starts with the built-in ``taskq.*`` ones."""

    def __init__(self) -> None:
        self._registrations: dict[str, Registration] = {}
        for name, handler in BUILTINS.items():
            self.task(name)(handler)

    def task(
        self,
        name: str,
        *,
        runtime: Runtime | str | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
    ) -> Callable[[Handler], Handler]:
        """Register the decorated function as the handler of tasks called ``name``.

        ``runtime`` defaults to ``trio`` for ``async def`` and ``thread`` for
        ``def``; ``max_attempts`` and ``timeout`` are the defaults of this
        handler's tasks (a task's create body may still set its own).
        """
        _check_limits(max_attempts, timeout)

        def register(handler: Handler) -> Handler:
            existing = self._registrations.get(name)
            if existing is not None and existing.handler is not handler:
                raise ValueError(f"a handler for {name!r} is already registered")
            chosen = _runtime_of(handler, runtime)
            takes_context = len(inspect.signature(handler).parameters) >= 2
            if chosen == Runtime.PROCESS:
                _check_process_handler(name, handler, takes_context)
            self._registrations[name] = Registration(
                name, handler, chosen, takes_context, max_attempts, timeout
            )
            return handler

        return register

    def get(self, name: str) -> Registration | None:
        return self._registrations.get(name)

    def names(self) -> list[str]:
        return sorted(self._registrations)

    def uses(self, runtime: Runtime) -> bool:
        return any(each.runtime == runtime for each in self._registrations.values())

    def defaults(self, name: str, system: ExecutionDefaults) -> ExecutionDefaults:
        """The defaults of a task called ``name``: its handler's, else the system's."""
        registration = self._registrations.get(name)
        return system if registration is None else registration.defaults(system)


def _runtime_of(handler: Handler, asked: Runtime | str | None) -> Runtime:
    # An object with an ``async def __call__`` is as async as a coroutine function.
    is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        type(handler).__call__
    )
    if asked is None:
        return Runtime.TRIO if is_async else Runtime.THREAD
    try:
        runtime = Runtime(asked)
    except ValueError:
        choices = ", ".join(repr(str(each)) for each in Runtime)
        raise ValueError(f"runtime must be one of {choices}, got {asked!r}") from None
    wants_async = runtime in (Runtime.TRIO, Runtime.ASYNCIO)
    if wants_async != is_async:
        kind = "an async def" if wants_async else "a plain def (not async)"
        raise TypeError(f"a handler with runtime={str(runtime)!r} must be {kind}")
    return runtime


def _check_process_handler(name: str, handler: Handler, takes_context: bool) -> None:
    """A worker process imports the handler by module and name, so it must have both."""
    qualname = getattr(handler, "__qualname__", None)
    module = getattr(handler, "__module__", None)
    if qualname is None or module is None or "<" in qualname or module == "__main__":
        raise TypeError(
            f"the handler of {name!r} runs in a worker process, which imports it by name: "
            f"it must be a function defined at module level in an importable module "
            f"(not a lambda, a closure or a function of __main__), got {handler!r}"
        )
    if takes_context:
        raise TypeError(
            f"the handler of {name!r} runs in a worker process and takes only the payload"
        )


def _check_limits(max_attempts: int | None, timeout: float | None) -> None:
    if max_attempts is not None and not 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT:
        raise ValueError(f"max_attempts must be 1 to {MAX_ATTEMPTS_LIMIT}, got {max_attempts}")
    if timeout is not None and not 0 < timeout <= TIMEOUT_MAX_SECONDS:
        raise ValueError(
            f"timeout must be more than 0 and at most {TIMEOUT_MAX_SECONDS:g} s, got {timeout}"
        )


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
