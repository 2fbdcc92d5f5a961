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
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import TypeVar, TypeVarTuple, Unpack

import outcome
import trio

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


async def run_sync(fn: Callable[[Unpack[Ts]], T], *args: *Ts) -> T:
    """``fn(*args)`` on a thread; its result, or its exception raised here."""
    await trio.lowlevel.checkpoint()
    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()

    def deliver(result: outcome.Outcome[T]) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(trio.lowlevel.reschedule, task, outcome.Value(result))

    trio.lowlevel.start_thread_soon(functools.partial(fn, *args), deliver)
    result: outcome.Outcome[T] = await trio.lowlevel.wait_task_rescheduled(_wait_for_the_call)
    return result.unwrap()


def _wait_for_the_call(_raise_cancel: Callable[[], object]) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED
