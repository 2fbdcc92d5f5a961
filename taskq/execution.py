"""One execution of a handler: its runtime, its time limit, its outcome, its pauses.

Where an execution lives: an execution that may be suspended (its handler takes
a context, so it may reach a checkpoint) is an ``Execution``, a Trio task in the
nursery of ``Runtimes`` (``taskq.runtimes``: opened once per process by the
supervisor, beside the process's one asyncio loop and its pool of worker
processes), not in a worker. A worker *holds* such an execution: it waits for
its ending and reports the outcome. A handler that takes no context cannot
reach a checkpoint, so it never outlives its worker's hold: its worker awaits
``outcome_of`` in its own Trio task and stops it by cancelling a scope of its
own, with no ``Execution`` at all. A pause at a checkpoint ends the hold but
not the execution: the handler waits inside ``checkpoint()``, local state
intact, listed in ``Runtimes.suspended`` under its task id, while its worker
takes other work. A resume puts the task back in the
queue; whichever worker claims it finds the execution there and adopts it under
its new claim (so the attempt fence still holds) instead of starting a second one.

How each runtime is stopped (pause, delete, timeout, shutdown): Trio handlers
are cancelled at their next ``await``; asyncio ones have their asyncio task
cancelled; process ones have their worker process killed (the pool starts a
fresh one); thread ones cannot be stopped by Python: they are abandoned, and
whatever they return later is discarded by the fence.
"""

from __future__ import annotations

import enum
import functools
import logging
import math
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio
import trio_asyncio
import trio_parallel

from taskq import jsontext
from taskq.context import TaskContext
from taskq.errors import TaskqError
from taskq.messages import ReportProgress, WriterCommand, request
from taskq.models import Task, filled_by_slot
from taskq.registry import Registration, Runtime
from taskq.runtimes import Runtimes

log = logging.getLogger(__name__)


class Permanent(Exception):
    """Raise it from a handler to fail the task at once, whatever attempts are left."""


# The same thing under the name some teams look for first.
NoRetry = Permanent


class ResultNotJson(Permanent):
    """The handler's result cannot be stored; running it again would not change that."""


class ProcessDied(Exception):
    """The worker process running a handler died under it (killed, crashed, out of memory);
    the pool starts a fresh one for the next task."""


class Ending(enum.Enum):
    """How a hold ends when the handler has no outcome to report."""

    SUSPENDED = "suspended"  # waits at a checkpoint; the worker moves on
    CANCELLED = "cancelled"  # stopped: the task was paused, deleted or re-queued
    HANDED_OVER = "handed over"  # resumed, and adopted by a new claim, before it suspended


@filled_by_slot  # made once per task
@dataclass(frozen=True, slots=True)
class Outcome:
    succeeded: bool
    # The result as checked JSON text, stored as it is; None: no result.
    result_json: str | None
    error: str | None
    # False: fail now, whatever attempts are left.
    retryable: bool = True


Ended = Outcome | Ending


@dataclass(eq=False)
class _Hold:
    """One worker's hold on an execution; ``ending`` is set once, with ``done``."""

    done: trio.Event = field(default_factory=trio.Event)
    ending: Ended = Ending.CANCELLED


class Execution:
    """A handler's run, from its start to its outcome, across the pauses in between."""

    def __init__(
        self,
        runtimes: Runtimes,
        registration: Registration,
        task: Task,
        worker_id: int,
        writer: trio.MemorySendChannel[WriterCommand],
    ) -> None:
        self.task = task
        self.context = TaskContext(task.id, task.name, task.attempt, worker_id, self)
        self._runtimes = runtimes
        self._registration = registration
        self._writer = writer
        self._scope = trio.CancelScope()
        self._hold = _Hold()
        self._limit: trio.CancelScope | None = None
        self._checkpoints = False
        self._pauses = 0
        # The pause this execution should suspend for at its next checkpoint; 0: none.
        self._pause_asked = 0
        self._resumed: trio.Event | None = None
        self._progress: Any = None
        self._progress_dirty = False
        self._flushing: trio.Event | None = None

    async def run(self) -> Ended:
        """Run the handler in the runtimes' nursery; answer how the first hold ended."""
        self._runtimes.nursery.start_soon(self._run)
        return await self.ending()

    async def ending(self) -> Ended:
        """Wait for the end of the current hold.

        A holder cancelled while it waits (its worker crashed or is shutting down)
        takes the execution down with it: nobody would report its outcome.
        """
        hold = self._hold
        try:
            await hold.done.wait()
        except trio.Cancelled:
            if self._hold is hold:
                self.cancel()
            raise
        return hold.ending

    def stop(self, *, suspend: bool) -> None:
        """Cancel now; or, for a pause of a handler that checkpoints, suspend at the
        next checkpoint, cancelling after the grace period if none comes."""
        if not (suspend and self._checkpoints):
            self.cancel()
            return
        if self._pause_asked:
            return
        self._pauses += 1
        self._pause_asked = self._pauses
        self._runtimes.suspended[self.task.id] = self
        self._runtimes.nursery.start_soon(self._cancel_unless_suspended, self._pauses)

    def cancel(self) -> None:
        self._scope.cancel()

    def adopt(self, task: Task, worker_id: int) -> None:
        """Continue under a new claim of the resumed task."""
        self._release(Ending.HANDED_OVER)
        self._hold = _Hold()
        self._pause_asked = 0
        self.task = task
        self.context.attempt = task.attempt
        self.context.worker_id = worker_id
        if self._resumed is not None:
            self._resumed.set()

    async def checkpoint(self) -> None:
        self._checkpoints = True
        if not self._pause_asked:
            await trio.lowlevel.checkpoint()
            return
        self._pause_asked = 0
        resumed = self._resumed = trio.Event()
        remaining = self._stop_the_clock()
        self._release(Ending.SUSPENDED)
        try:
            await resumed.wait()
        finally:
            self._resumed = None
        self._restart_the_clock(remaining)

    async def report_progress(self, progress: Any) -> None:
        _json_text(progress, "progress")
        self._progress = progress
        self._progress_dirty = True
        if self._flushing is None:
            self._flushing = trio.Event()
            self._runtimes.nursery.start_soon(self._flush_progress, self._flushing)
        await trio.lowlevel.checkpoint()

    async def _run(self) -> None:
        with self._scope:
            ended: Ended = await self._outcome()
            if self._flushing is not None:
                await self._flushing.wait()
        if self._scope.cancelled_caught:
            ended = Ending.CANCELLED
        if self._runtimes.suspended.get(self.task.id) is self:
            del self._runtimes.suspended[self.task.id]
        self._release(ended)

    async def _outcome(self) -> Outcome:
        self._limit = time_limit(self.task)
        try:
            return await outcome_of(
                self._runtimes, self._registration, self.task, self.context, self._limit
            )
        finally:
            self._limit = None

    async def _cancel_unless_suspended(self, pause: int) -> None:
        await trio.sleep(self._runtimes.checkpoint_grace)
        if self._pause_asked == pause:
            log.info("task %d reached no checkpoint in time; cancelling it", self.task.id)
            self.cancel()

    async def _flush_progress(self, flushed: trio.Event) -> None:
        """Write the latest progress; values reported while a write is in flight
        collapse into the next one."""
        try:
            while self._progress_dirty:
                self._progress_dirty = False
                report = functools.partial(
                    ReportProgress, self.task.id, self.task.attempt, self._progress
                )
                await request(self._writer, report)
        except TaskqError as exc:
            log.warning("task %d: progress not recorded (%s)", self.task.id, exc)
        finally:
            self._flushing = None
            flushed.set()

    def _release(self, ending: Ended) -> None:
        hold = self._hold
        if not hold.done.is_set():
            hold.ending = ending
            hold.done.set()

    def _stop_the_clock(self) -> float | None:
        """A suspended execution's time limit does not run while it is paused."""
        if self._limit is None or self._limit.deadline == math.inf:
            return None
        remaining = self._limit.deadline - trio.current_time()
        self._limit.deadline = math.inf
        return remaining

    def _restart_the_clock(self, remaining: float | None) -> None:
        if self._limit is not None and remaining is not None:
            self._limit.deadline = trio.current_time() + remaining


def time_limit(task: Task) -> trio.CancelScope | None:
    """The scope that ends a run at the task's time limit; None without a limit, so a
    task without one costs no scope."""
    if task.timeout is None:
        return None
    return trio.CancelScope(deadline=trio.current_time() + task.timeout)


async def outcome_of(
    runtimes: Runtimes,
    registration: Registration | None,
    task: Task,
    context: TaskContext | None,
    limit: trio.CancelScope | None,
) -> Outcome:
    """Run the handler (with ``context`` if it takes one) within ``limit``; its outcome.

    Cancellation from outside (a stop, a shutdown) is the only thing that escapes.
    """
    if registration is None:
        error = f"no handler is registered for task name {task.name!r}"
        return Outcome(False, None, error, retryable=False)
    if limit is None:
        return await _handled(runtimes, registration, task, context)
    with limit:
        return await _handled(runtimes, registration, task, context)
    return Outcome(False, None, f"timed out after {task.timeout:g} s")


async def _handled(
    runtimes: Runtimes, registration: Registration, task: Task, context: TaskContext | None
) -> Outcome:
    try:
        args = (task.payload,) if context is None else (task.payload, context)
        if registration.runtime is Runtime.TRIO:
            # Most handlers, and the shortest tasks: awaited right here, one coroutine
            # fewer per task than through ``_run_elsewhere``.
            result_json = _result_json(await registration.handler(*args))
        else:
            result_json = await _run_elsewhere(runtimes, registration, args)
    except ResultNotJson as exc:
        return Outcome(False, None, str(exc), retryable=False)
    except Exception as exc:
        log.info("task %d (%s) failed: %r", task.id, task.name, exc)
        error = f"{type(exc).__name__}: {exc}"
        return Outcome(False, None, error, retryable=not isinstance(exc, Permanent))
    except BaseException as exc:
        # Executions run beside the actors, unsupervised: anything but our own
        # cancellation escaping here (sys.exit(), a KeyboardInterrupt or another
        # BaseException raised by the handler) would stop the whole process.
        # The CLI takes SIGINT through a signal receiver, so a KeyboardInterrupt
        # here is the handler's own.
        if _carries_cancellation(exc):
            raise
        log.error("task %d (%s) crashed: %r", task.id, task.name, exc)
        return Outcome(False, None, f"{type(exc).__name__}: {exc}")
    return Outcome(True, result_json, None)


async def _run_elsewhere(
    runtimes: Runtimes, registration: Registration, args: tuple[Any, ...]
) -> str | None:
    """The result, as the JSON text that is stored (None: it returned None), of a
    handler that runs outside the worker's Trio task: on the asyncio loop, a thread or
    a process.

    Encoded once, where the handler ran, so a result JSON cannot write fails the
    task; the writer stores the text as it is.
    """
    handler = registration.handler
    match registration.runtime:
        case Runtime.ASYNCIO:
            result = await trio_asyncio.aio_as_trio(handler, loop=runtimes.loop)(*args)
        case Runtime.THREAD:
            result = await trio.to_thread.run_sync(
                functools.partial(handler, *args), abandon_on_cancel=True
            )
        case Runtime.PROCESS:
            try:
                text: str | None = await runtimes.processes.run_sync(
                    _run_in_process, handler, dict(args[0]), kill_on_cancel=True
                )
            except trio_parallel.BrokenWorkerError as exc:
                raise ProcessDied(_how_it_died(exc)) from None
            return text
        case Runtime.TRIO:
            raise AssertionError("a Trio handler is awaited in the worker's own task")
    return _result_json(result)


def _how_it_died(exc: BaseException) -> str:
    """trio-parallel reports a dead worker with its process object; say it in words."""
    codes = [code for arg in exc.args if isinstance(code := getattr(arg, "exitcode", None), int)]
    if not codes:
        return "the handler's worker process died"
    if codes[0] >= 0:
        return f"the handler's worker process died: exit code {codes[0]}"
    try:
        name = signal.Signals(-codes[0]).name
    except ValueError:
        name = f"signal {-codes[0]}"
    return f"the handler's worker process died: killed by {name}"


def _carries_cancellation(exc: BaseException) -> bool:
    if isinstance(exc, trio.Cancelled):
        return True
    return isinstance(exc, BaseExceptionGroup) and exc.subgroup(trio.Cancelled) is not None


# A result is written as strict JSON (no NaN or Infinity), on the Trio thread.
_strict_json_text = jsontext.encoder(allow_nan=False)


def _json_text(value: Any, what: str) -> str:
    try:
        return _strict_json_text(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ResultNotJson(f"{what} is not JSON-serialisable: {exc}") from None


def _result_json(result: Any) -> str | None:
    """A result of None is no result (stored as NULL), not JSON's ``null``."""
    return None if result is None else _json_text(result, "the handler's result")


def _run_in_process(
    handler: Callable[[Mapping[str, Any]], Any], payload: dict[str, Any]
) -> str | None:
    """Runs in the worker process: the result crosses back as JSON text, so a result
    that JSON cannot write fails there, with the same error as in any other runtime."""
    return _result_json(handler(payload))
