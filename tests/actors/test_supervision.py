"""``supervise``: restart with backoff, give up loudly, return when the actor does."""

from __future__ import annotations

import functools

import pytest
import trio
import trio.testing

from taskq.supervision import Liveness, RestartPolicy, SystemFailure, supervise

POLICY = RestartPolicy(
    max_restarts=10, window_seconds=100.0, backoff_first_seconds=1.0, backoff_max_seconds=3.0
)


class Crashing:
    """An actor that crashes ``crashes`` times, noting when each run starts, then returns."""

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes
        self.started: list[float] = []

    async def __call__(self) -> None:
        self.started.append(trio.current_time())
        if len(self.started) <= self.crashes:
            raise RuntimeError(f"crash {len(self.started)}")


async def test_returns_when_the_actor_returns(autojump_clock: trio.testing.MockClock) -> None:
    actor = Crashing(0)
    await supervise("a", actor, POLICY)
    assert actor.started == [0.0]


async def test_restarts_a_crashing_actor_with_doubling_capped_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor = Crashing(4)

    await supervise("a", actor, POLICY)

    assert actor.started == [0.0, 1.0, 3.0, 6.0, 9.0]


async def test_calls_before_restart_before_each_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []

    async def actor() -> None:
        log.append("run")
        if log.count("run") < 3:
            raise RuntimeError("crash")

    await supervise("a", actor, POLICY, before_restart=lambda: log.append("before"))

    assert log == ["run", "before", "run", "before", "run"]


async def test_too_many_crashes_within_the_window_stop_the_system(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor = Crashing(1000)
    policy = RestartPolicy(
        max_restarts=2, window_seconds=100.0, backoff_first_seconds=1.0, backoff_max_seconds=1.0
    )

    with pytest.raises(SystemFailure, match="actor a crashed 3 times") as failure:
        await supervise("a", actor, policy)

    assert len(actor.started) == 3
    assert isinstance(failure.value.__cause__, RuntimeError)
    assert str(failure.value.__cause__) == "crash 3"


async def test_crashes_spread_beyond_the_window_are_forgiven(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor = Crashing(6)
    policy = RestartPolicy(
        max_restarts=2, window_seconds=5.0, backoff_first_seconds=10.0, backoff_max_seconds=10.0
    )

    await supervise("a", actor, policy)

    assert len(actor.started) == 7


async def test_cancellation_is_not_a_crash(autojump_clock: trio.testing.MockClock) -> None:
    actor = Crashing(0)

    async def forever() -> None:
        await actor()
        await trio.sleep_forever()

    with trio.move_on_after(10):
        await supervise("a", forever, POLICY)

    assert len(actor.started) == 1


async def test_liveness_shows_an_actor_down_from_its_crash_to_its_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    liveness = Liveness()
    seen: list[list[str]] = []
    crashed = trio.Event()

    async def actor() -> None:
        seen.append(liveness.down_names())
        if not crashed.is_set():
            crashed.set()
            raise RuntimeError("crash")
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(supervise, "a", actor, POLICY, liveness=liveness))
        await crashed.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert liveness.down_names() == ["a"]
        await trio.sleep(POLICY.backoff_first_seconds)
        await trio.testing.wait_all_tasks_blocked()
        assert liveness.down_names() == []
        nursery.cancel_scope.cancel()
    assert seen == [[], []]


async def test_liveness_shows_an_actor_down_once_it_returned() -> None:
    liveness = Liveness()
    await supervise("a", Crashing(0), POLICY, liveness=liveness)
    assert liveness.down_names() == ["a"]
