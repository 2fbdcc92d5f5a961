"""The dispatcher through its channels; the test plays the writer and the workers."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import outcome
import pytest
import trio
import trio.testing

from taskq.actors import dispatcher
from taskq.config import CLAIM_AHEAD_SECONDS, RETRY_FIRST_SECONDS
from taskq.errors import Unavailable
from taskq.messages import (
    ClaimTasks,
    DispatcherMessage,
    RunTasks,
    SetActive,
    StopDispatching,
    StopTask,
    TaskRevoked,
    TasksReady,
    WithdrawClaim,
    WorkerIdle,
    WorkerJoined,
    WorkerMessage,
    WorkerStatusChanged,
    WriterCommand,
    answer,
    request,
)
from taskq.models import Priority, Task, WorkerStatus
from tests.actors.conftest import receive, running_task


@dataclass
class Harness:
    inbox: trio.MemorySendChannel[DispatcherMessage]
    writer: trio.MemoryReceiveChannel[WriterCommand]
    workers: dict[int, trio.MemoryReceiveChannel[WorkerMessage]] = field(default_factory=dict)

    def join(self, *worker_ids: int) -> None:
        for worker_id in worker_ids:
            send, receive = trio.open_memory_channel[WorkerMessage](math.inf)
            self.workers[worker_id] = receive
            self.inbox.send_nowait(WorkerJoined(worker_id, send))

    def idle(self, *worker_ids: int) -> None:
        for worker_id in worker_ids:
            self.inbox.send_nowait(WorkerIdle(worker_id))

    async def claim(self, tasks: list[Task]) -> tuple[int, ...]:
        """Answer the claim the dispatcher sends next with ``tasks``; return whom it was for."""
        command = await receive(self.writer)
        assert isinstance(command, ClaimTasks)
        answer(command.reply, outcome.Value(tasks))
        return command.worker_ids

    async def no_claim(self) -> None:
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.WouldBlock):
            self.writer.receive_nowait()

    async def received(self, worker_id: int) -> list[WorkerMessage]:
        """Everything delivered to ``worker_id`` so far."""
        await trio.testing.wait_all_tasks_blocked()
        messages = []
        while True:
            try:
                messages.append(self.workers[worker_id].receive_nowait())
            except trio.WouldBlock:
                return messages


@pytest.fixture
async def harness(nursery: trio.Nursery) -> AsyncIterator[Harness]:
    inbox_send, inbox = trio.open_memory_channel[DispatcherMessage](math.inf)
    writer_send, writer = trio.open_memory_channel[WriterCommand](math.inf)
    nursery.start_soon(dispatcher.run, inbox, writer_send)
    yield Harness(inbox_send, writer)
    nursery.cancel_scope.cancel()


async def make_claims_short(harness: Harness, worker_id: int) -> None:
    """Idle ``worker_id`` and answer its claim with nothing, as a withdrawal would: the
    dispatcher claims for it again at once."""
    harness.idle(worker_id)
    assert await harness.claim([]) == (worker_id,)


async def test_claims_once_for_all_idle_workers_and_the_claim_waits(harness: Harness) -> None:
    harness.join(1, 2, 3)
    harness.idle(1, 2, 3)

    command = await receive(harness.writer)

    assert isinstance(command, ClaimTasks)
    assert (command.worker_ids, command.wait) == ((1, 2, 3), True)
    await harness.no_claim()


async def test_one_claim_is_out_at_a_time(harness: Harness) -> None:
    harness.join(1, 2)
    harness.idle(1)
    command = await receive(harness.writer)
    harness.idle(2)
    await harness.no_claim()

    answer(command.reply, outcome.Value([running_task(5, 1)]))

    assert await harness.claim([]) == (2,)


async def test_delivers_each_claimed_task_to_its_worker(harness: Harness) -> None:
    harness.join(1, 2, 3)
    await make_claims_short(harness, 1)
    harness.idle(2, 3)
    harness.inbox.send_nowait(TasksReady())

    await harness.claim([running_task(10, 3), running_task(11, 1)])

    assert await harness.received(1) == [RunTasks((running_task(11, 1),))]
    assert await harness.received(2) == []
    assert await harness.received(3) == [RunTasks((running_task(10, 3),))]


async def claim_after_reports(
    nursery: trio.Nursery, task_seconds: float | None, workers: tuple[int, ...] = (1, 2)
) -> tuple[Harness, ClaimTasks]:
    """A dispatcher that may hand up to 3 tasks per worker; ``workers`` went idle
    saying their tasks took ``task_seconds`` each."""
    inbox_send, inbox = trio.open_memory_channel[DispatcherMessage](math.inf)
    writer_send, writer = trio.open_memory_channel[WriterCommand](math.inf)
    nursery.start_soon(functools.partial(dispatcher.run, inbox, writer_send, per_worker_max=3))
    harness = Harness(inbox_send, writer)
    harness.join(*workers)
    for worker_id in workers:
        inbox_send.send_nowait(WorkerIdle(worker_id, task_seconds))
    command = await receive(harness.writer)
    assert isinstance(command, ClaimTasks)
    return harness, command


async def test_short_tasks_are_claimed_several_per_worker_each_share_in_one_message(
    nursery: trio.Nursery,
) -> None:
    harness, command = await claim_after_reports(nursery, CLAIM_AHEAD_SECONDS / 100)
    assert (command.worker_ids, command.per_worker) == ((1, 2), 3)

    handed = [running_task(10, 1), running_task(11, 2), running_task(12, 1)]
    answer(command.reply, outcome.Value(handed))

    assert await harness.received(1) == [RunTasks((handed[0], handed[2]))]
    assert await harness.received(2) == [RunTasks((handed[1],))]
    await harness.no_claim()


@pytest.mark.parametrize("task_seconds", [None, CLAIM_AHEAD_SECONDS * 2])
async def test_long_or_unknown_tasks_are_claimed_one_per_worker(
    nursery: trio.Nursery, task_seconds: float | None
) -> None:
    _, command = await claim_after_reports(nursery, task_seconds)

    assert command.per_worker == 1


async def test_a_claim_that_serves_some_is_followed_by_one_for_the_rest(
    harness: Harness,
) -> None:
    harness.join(1, 2)
    harness.idle(1, 2)

    assert await harness.claim([running_task(5, 1)]) == (1, 2)

    assert await harness.claim([]) == (2,)


async def test_a_claim_the_database_failed_is_made_again_after_a_pause_for_all_asking(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    harness.join(1, 2)
    harness.idle(1)
    failed = await receive(harness.writer)
    failed_at = trio.current_time()

    answer(failed.reply, outcome.Error(Unavailable("the database is away")))
    await trio.testing.wait_all_tasks_blocked()
    harness.idle(2)

    command = await receive(harness.writer)
    assert trio.current_time() - failed_at >= RETRY_FIRST_SECONDS
    assert isinstance(command, ClaimTasks)
    assert (command.worker_ids, command.wait) == ((1, 2), True)


async def test_a_waiting_claim_is_withdrawn_when_one_of_its_workers_stops(
    harness: Harness,
) -> None:
    harness.join(1, 2)
    harness.idle(1, 2)
    waiting = await receive(harness.writer)
    assert isinstance(waiting, ClaimTasks)

    harness.inbox.send_nowait(WorkerStatusChanged(2, WorkerStatus.INACTIVE))

    assert isinstance(await receive(harness.writer), WithdrawClaim)
    answer(waiting.reply, outcome.Value([]))
    assert await harness.claim([]) == (1,)


async def test_tasks_made_ready_by_another_node_make_the_waiting_claim_run_again(
    harness: Harness,
) -> None:
    harness.join(1)
    harness.idle(1)
    waiting = await receive(harness.writer)
    harness.inbox.send_nowait(TasksReady())
    await harness.no_claim()

    harness.inbox.send_nowait(TasksReady(from_other_node=True))

    assert isinstance(await receive(harness.writer), WithdrawClaim)
    answer(waiting.reply, outcome.Value([]))
    assert await harness.claim([running_task(5, 1)]) == (1,)


async def test_a_full_claim_keeps_claiming_for_the_next_idle_worker(harness: Harness) -> None:
    harness.join(1, 2)
    harness.idle(1)
    assert await harness.claim([running_task(5, 1)]) == (1,)

    harness.idle(2)

    assert await harness.claim([]) == (2,)


async def test_claimed_workers_are_no_longer_idle(harness: Harness) -> None:
    harness.join(1, 2)
    await make_claims_short(harness, 1)
    harness.idle(2)
    harness.inbox.send_nowait(TasksReady())
    await harness.claim([running_task(5, 1)])

    harness.inbox.send_nowait(TasksReady())

    assert await harness.claim([]) == (2,)


async def test_idle_from_an_unknown_worker_is_ignored(harness: Harness) -> None:
    harness.idle(42)
    await harness.no_claim()


async def test_a_revoked_task_is_stopped_on_its_worker(harness: Harness) -> None:
    harness.join(1, 2)

    harness.inbox.send_nowait(TaskRevoked(task_id=7, worker_id=2))

    assert await harness.received(2) == [StopTask(7)]
    assert await harness.received(1) == []


async def test_an_inactive_worker_is_not_idle_and_is_told(harness: Harness) -> None:
    harness.join(1, 2)
    await make_claims_short(harness, 1)
    harness.idle(2)

    harness.inbox.send_nowait(WorkerStatusChanged(2, WorkerStatus.INACTIVE))
    harness.idle(2)
    harness.inbox.send_nowait(TasksReady())

    assert await harness.claim([]) == (1,)
    assert await harness.received(2) == [SetActive(False)]


async def test_an_active_again_worker_is_told_and_counts_when_idle(harness: Harness) -> None:
    harness.join(1)
    harness.inbox.send_nowait(WorkerStatusChanged(1, WorkerStatus.INACTIVE))
    harness.idle(1)
    await harness.no_claim()

    harness.inbox.send_nowait(WorkerStatusChanged(1, WorkerStatus.ACTIVE))
    harness.idle(1)

    assert await harness.claim([]) == (1,)
    assert await harness.received(1) == [SetActive(False), SetActive(True)]


async def test_stop_dispatching_answers_and_stops_claims(harness: Harness) -> None:
    harness.join(1)

    await request(harness.inbox, StopDispatching)
    harness.idle(1)

    await harness.no_claim()


async def test_stop_dispatching_withdraws_the_waiting_claim(harness: Harness) -> None:
    harness.join(1)
    harness.idle(1)
    waiting = await receive(harness.writer)

    await request(harness.inbox, StopDispatching)

    assert isinstance(await receive(harness.writer), WithdrawClaim)
    answer(waiting.reply, outcome.Value([]))
    await harness.no_claim()


async def test_a_gone_worker_is_forgotten(harness: Harness) -> None:
    harness.join(1)
    await harness.workers.pop(1).aclose()
    harness.idle(1)
    assert await harness.claim([running_task(5, 1)]) == (1,)

    harness.idle(1)

    await harness.no_claim()


# --- a claim waiting for a more urgent task, beside the claims on a deep queue ---


def low(task_id: int, worker_id: int) -> Task:
    return dataclasses.replace(running_task(task_id, worker_id), priority=Priority.LOW)


async def busy_on_a_deep_queue(nursery: trio.Nursery) -> Harness:
    """Workers 1 and 2 busy with full shares of short LOW tasks (3 each); worker 1 then
    idle again, and its claim sent."""
    harness, command = await claim_after_reports(nursery, CLAIM_AHEAD_SECONDS / 100)
    answer(command.reply, outcome.Value([low(10 + n, 1 + n % 2) for n in range(6)]))
    await trio.testing.wait_all_tasks_blocked()
    harness.idle(1)
    return harness


async def idle_and_urgent_claims(harness: Harness) -> tuple[ClaimTasks, ClaimTasks]:
    """The claim for idle workers and the claim for an urgent task, sent in either order."""
    commands = [await receive(harness.writer), await receive(harness.writer)]
    idle = next(command for command in commands if command.above is None)
    urgent = next(command for command in commands if command.above is not None)
    return idle, urgent


async def test_on_a_deep_queue_a_claim_for_a_more_urgent_task_goes_with_the_next(
    nursery: trio.Nursery,
) -> None:
    harness = await busy_on_a_deep_queue(nursery)

    first, second = await receive(harness.writer), await receive(harness.writer)

    urgent, idle = sorted((first, second), key=lambda command: command.worker_ids)[::-1]
    assert isinstance(urgent, ClaimTasks)
    assert isinstance(idle, ClaimTasks)
    assert (idle.worker_ids, idle.above) == ((1,), None)
    # For the busy worker handed to last, waiting at the writer for one task above LOW.
    assert (urgent.worker_ids, urgent.per_worker, urgent.wait) == ((2,), 1, True)
    assert urgent.above == Priority.LOW
    critical = dataclasses.replace(running_task(30, 2), priority=Priority.CRITICAL)
    answer(urgent.reply, outcome.Value([critical]))
    assert await harness.received(2) == [
        RunTasks((low(11, 2), low(13, 2), low(15, 2))),
        RunTasks((critical,)),
    ]


async def test_the_claim_for_an_urgent_task_is_made_again_only_with_the_next_claim(
    nursery: trio.Nursery,
) -> None:
    harness = await busy_on_a_deep_queue(nursery)
    idle, urgent = await idle_and_urgent_claims(harness)

    answer(urgent.reply, outcome.Value([]))
    await harness.no_claim()
    answer(idle.reply, outcome.Value([low(20, 1), low(21, 1), low(22, 1)]))
    await trio.testing.wait_all_tasks_blocked()
    harness.idle(1)

    again = [await receive(harness.writer), await receive(harness.writer)]
    assert sorted(command.above is None for command in again) == [False, True]


def critical(task_id: int, worker_id: int) -> Task:
    return dataclasses.replace(running_task(task_id, worker_id), priority=Priority.CRITICAL)


@pytest.mark.parametrize(
    "handed",
    [
        pytest.param([low(10, 1), low(11, 2)], id="the-claim-could-not-fill-the-shares"),
        pytest.param([critical(10 + n, 1 + n % 2) for n in range(6)], id="nothing-is-more-urgent"),
    ],
)
async def test_no_claim_for_an_urgent_task_where_none_could_come(
    nursery: trio.Nursery, handed: list[Task]
) -> None:
    harness, command = await claim_after_reports(nursery, CLAIM_AHEAD_SECONDS / 100)
    answer(command.reply, outcome.Value(handed))
    await trio.testing.wait_all_tasks_blocked()

    harness.idle(1)

    assert (await receive(harness.writer)).above is None
    await harness.no_claim()


async def test_stop_dispatching_withdraws_the_claim_for_an_urgent_task(
    nursery: trio.Nursery,
) -> None:
    harness = await busy_on_a_deep_queue(nursery)
    idle, _ = await idle_and_urgent_claims(harness)
    answer(idle.reply, outcome.Value([low(20, 1), low(21, 1), low(22, 1)]))
    await trio.testing.wait_all_tasks_blocked()

    await request(harness.inbox, StopDispatching)

    assert isinstance(await receive(harness.writer), WithdrawClaim)


async def test_an_empty_answer_while_the_urgent_claim_waits_withdraws_it(
    nursery: trio.Nursery,
) -> None:
    harness = await busy_on_a_deep_queue(nursery)
    idle, _ = await idle_and_urgent_claims(harness)

    # Nothing ready: the writer parked the urgent claim and answered this one.
    answer(idle.reply, outcome.Value([]))

    assert isinstance(await receive(harness.writer), WithdrawClaim)
    assert await harness.claim([]) == (1,)


# --- on a deep queue, a claim waits for the workers about to finish their shares ---


async def three_on_short_tasks(nursery: trio.Nursery, handed: int) -> Harness:
    """Workers 1, 2 and 3 handed ``handed`` short LOW tasks, in shares of up to 3."""
    workers = (1, 2, 3)
    harness, command = await claim_after_reports(nursery, CLAIM_AHEAD_SECONDS / 100, workers)
    answer(command.reply, outcome.Value([low(10 + n, 1 + n % 3) for n in range(handed)]))
    await trio.testing.wait_all_tasks_blocked()
    return harness


def another_worker_goes_idle(harness: Harness, _clock: trio.testing.MockClock) -> None:
    harness.idle(2)


def a_share_s_length_passes(_harness: Harness, clock: trio.testing.MockClock) -> None:
    clock.jump(CLAIM_AHEAD_SECONDS * 0.02)


@pytest.mark.parametrize(
    ("ends_the_wait", "claimed_for"),
    [(another_worker_goes_idle, (1, 2)), (a_share_s_length_passes, (1,))],
)
async def test_on_a_deep_queue_a_claim_waits_for_half_the_workers_or_a_share_s_length(
    nursery: trio.Nursery,
    mock_clock: trio.testing.MockClock,
    ends_the_wait: Callable[[Harness, trio.testing.MockClock], None],
    claimed_for: tuple[int, ...],
) -> None:
    harness = await three_on_short_tasks(nursery, handed=9)
    harness.idle(1)
    await harness.no_claim()
    mock_clock.jump(CLAIM_AHEAD_SECONDS * 0.99)
    await harness.no_claim()

    ends_the_wait(harness, mock_clock)

    idle, _ = await idle_and_urgent_claims(harness)
    assert idle.worker_ids == claimed_for


async def test_a_claim_that_could_not_fill_the_shares_makes_the_next_wait_for_no_one(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    harness = await three_on_short_tasks(nursery, handed=6)

    harness.idle(1)

    assert await harness.claim([]) == (1,)


async def test_a_stop_while_a_claim_waits_for_busy_workers_sends_no_claim(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    harness = await three_on_short_tasks(nursery, handed=9)
    harness.idle(1)
    await harness.no_claim()

    await request(harness.inbox, StopDispatching)
    mock_clock.jump(CLAIM_AHEAD_SECONDS * 2)

    await harness.no_claim()
