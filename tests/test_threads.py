"""The hand-off of one blocking call to a thread and back."""

from __future__ import annotations

import threading

import pytest
import trio
import trio.testing

from taskq import threads


async def test_the_call_runs_on_another_thread_and_its_result_comes_back() -> None:
    here = threading.get_ident()

    ident, total = await threads.run_sync(lambda a, b: (threading.get_ident(), a + b), 2, 3)

    assert ident != here
    assert total == 5


async def test_the_calls_exception_is_raised_in_the_caller() -> None:
    def fail() -> None:
        raise LookupError("from the thread")

    with pytest.raises(LookupError, match="from the thread"):
        await threads.run_sync(fail)


async def test_a_cancelled_caller_waits_for_the_call_to_return() -> None:
    release = threading.Event()
    returned = threading.Event()
    waited = False

    def blocking() -> None:
        release.wait()
        returned.set()

    async def caller(scope: trio.CancelScope) -> None:
        nonlocal waited
        with scope:
            await threads.run_sync(blocking)
        waited = returned.is_set()

    scope = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller, scope)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        release.set()

    assert waited


async def test_a_caller_cancelled_before_the_call_never_starts_it() -> None:
    started = threading.Event()

    with trio.CancelScope() as scope:
        scope.cancel()
        await threads.run_sync(started.set)

    assert not started.is_set()
