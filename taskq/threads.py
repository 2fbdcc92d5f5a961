"""One blocking call on a thread and back, at the cost of two hand-offs and nothing more.

The writer and the reader each make one blocking call at a time (a batch, on
their own database connection) and await it. ``trio.to_thread.run_sync`` adds
to each such call what those actors do not need (a limiter, a copy of the
context, the thread renamed twice: about 40 us of CPU) and takes longer to
start the thread and to wake its caller. On the writer that is on the path of
every commit, so of every task's dispatch. ``run_sync`` here hands the call
straight to Trio's thread cache (the same threads, so they keep their names)
and is woken by the thread's ``run_sync_soon`` when it returns.

It yields once before the hand-off, as the limiter did: what the caller's
last answers woke (a worker starting the task it was just handed) runs before
the thread competes with it for the GIL.

Like ``to_thread.run_sync`` without ``abandon_on_cancel``, a cancellation
waits for the call to return: the caller's next call never starts while the
previous one still runs, which is what keeps one connection on one thread at a
time.

While a call is out, ``GilHandOff`` makes sure its thread gets the GIL from a
busy event loop. CPython forces a thread holding the GIL to let go only when
another has waited a whole switch interval without the GIL changing hands, and
a busy Trio loop lets go of it and takes it back at every scheduler round (its
``epoll`` call with a timeout of 0): each time that counts as a change of hands,
and each time the loop takes it back before the waiting thread wakes. With 32
workers running handlers that compute in short steps between awaits, a writer's
batch of two creates waited up to 3.5 s for the GIL, one SQLite call at a time.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from typing import TypeVar, TypeVarTuple, Unpack

import outcome
import trio

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# The Trio tasks whose call is on a thread now, from any Trio run of the process (the
# GIL they wait for is the process's one), with when each call went out.
_calls_out: dict[trio.lowlevel.Task, float] = {}


async def run_sync(fn: Callable[[Unpack[Ts]], T], *args: *Ts) -> T:
    """``fn(*args)`` on a thread; its result, or its exception raised here."""
    await trio.lowlevel.checkpoint()
    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()

    def deliver(result: outcome.Outcome[T]) -> None:
        # On the thread, as the call returns: the round that wakes the caller is not
        # held up by a hand-off for a call that is over.
        del _calls_out[task]
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(trio.lowlevel.reschedule, task, outcome.Value(result))

    _calls_out[task] = time.perf_counter()
    try:
        trio.lowlevel.start_thread_soon(functools.partial(fn, *args), deliver)
    except BaseException:
        del _calls_out[task]
        raise
    result: outcome.Outcome[T] = await trio.lowlevel.wait_task_rescheduled(_wait_for_the_call)
    return result.unwrap()


def _wait_for_the_call(_raise_cancel: Callable[[], object]) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


def oldest_call_out() -> float | None:
    """When the longest-running call now on its thread went out (``time.perf_counter``),
    or None when no call is out.

    A thread ends its call by deleting it here; ``min`` over the floats is one C call
    that keeps the GIL throughout, so no delete lands in the middle of it.
    """
    return min(_calls_out.values(), default=None)


class GilHandOff(trio.abc.Instrument):
    """Before a scheduler round that will not wait for I/O, once a call has been on its
    thread for ``after`` seconds, the loop lets go of the GIL for a moment (``seconds``,
    at least the kernel's timer slack, about 50 us): long enough for the waiting
    thread to take it.

    A call that is quick, as nearly all are, never meets it: a dispatch's commit
    does not wait on it. An idle loop waits in ``epoll`` without the GIL anyway.
    """

    def __init__(
        self,
        seconds: float,
        after: float,
        *,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.seconds = seconds
        self.after = after
        self._clock = clock
        self._sleep = sleep

    def before_io_wait(self, timeout: float) -> None:
        if timeout > 0 or not _calls_out:
            return
        oldest = oldest_call_out()
        if oldest is not None and self._clock() - oldest >= self.after:
            self._sleep(self.seconds)
