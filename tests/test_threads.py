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


async def test_a_call_counts_as_out_from_its_hand_off_until_it_returns() -> None:
    seen_on_the_thread: list[float | None] = []
    before = threads.oldest_call_out()

    await threads.run_sync(lambda: seen_on_the_thread.append(threads.oldest_call_out()))

    assert before is None
    assert seen_on_the_thread[0] is not None
    assert threads.oldest_call_out() is None


async def test_a_call_is_over_before_its_caller_is_woken() -> None:
    """The round that wakes the caller must not hand the GIL off for a call that is over."""
    calls_out_when_woken: list[float | None] = []

    class Watch(trio.abc.Instrument):
        def task_scheduled(self, task: trio.lowlevel.Task) -> None:
            if task is caller:
                calls_out_when_woken.append(threads.oldest_call_out())

    caller = trio.lowlevel.current_task()
    watch = Watch()
    trio.lowlevel.add_instrument(watch)
    try:
        await threads.run_sync(lambda: None)
    finally:
        trio.lowlevel.remove_instrument(watch)

    assert calls_out_when_woken
    assert all(out is None for out in calls_out_when_woken)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _hand_off(clock: _Clock, slept: list[float]) -> threads.GilHandOff:
    return threads.GilHandOff(0.00002, 0.005, clock=clock, sleep=slept.append)


async def test_a_busy_loop_hands_the_gil_off_once_a_call_has_been_out_long_enough() -> None:
    release = threading.Event()
    clock, slept = _Clock(), []
    hand_off = _hand_off(clock, slept)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(threads.run_sync, release.wait)
        await trio.testing.wait_all_tasks_blocked()
        out = threads.oldest_call_out()
        assert out is not None

        clock.now = out + 0.004
        hand_off.before_io_wait(0)
        clock.now = out + 0.006
        hand_off.before_io_wait(0)
        hand_off.before_io_wait(0.5)
        release.set()

    assert slept == [0.00002]


def test_no_call_out_no_hand_off() -> None:
    clock, slept = _Clock(), []
    clock.now = 1e9

    _hand_off(clock, slept).before_io_wait(0)

    assert slept == []
