"""The writer on a real SQLite store: group commit, fencing, events, isolation of failures."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import outcome
import pytest
import trio
import trio.testing
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from taskq.actors import writer
from taskq.errors import NotFound, Unavailable
from taskq.messages import (
    ClaimTasks,
    CreateTask,
    CreateTasks,
    CreateWorker,
    DeleteTask,
    DispatcherMessage,
    FinishTask,
    GetTask,
    ListWorkers,
    PauseTask,
    PromoteDueTasks,
    Reply,
    RequeueRunning,
    ResumeTask,
    SchedulerMessage,
    SetWorkerStatus,
    SuspensionVoided,
    TaskRevoked,
    TaskScheduled,
    TasksReady,
    WithdrawClaim,
    WorkerHeartbeat,
    WorkerStatusChanged,
    WriterCommand,
    request,
)
from taskq.models import NewTask, Task, TaskStatus, WorkerStatus
from taskq.store import Store, Tx
from tests.actors.conftest import DEADLINE_SECONDS, NOW, receive
from tests.conftest import eventually

LATER = NOW + timedelta(hours=1)
Answer = trio.MemoryReceiveChannel[outcome.Outcome[Any]]


class Harness:
    """A writer on ``store``, with the test holding its inbox, its event outboxes and a
    count of the transactions it committed."""

    def __init__(self, store: Store, nursery: trio.Nursery) -> None:
        self.store = store
        self.nursery = nursery
        self.inbox, self._inbox = trio.open_memory_channel[WriterCommand](math.inf)
        self._dispatcher, self.dispatcher = trio.open_memory_channel[DispatcherMessage](math.inf)
        self._scheduler, self.scheduler = trio.open_memory_channel[SchedulerMessage](math.inf)
        self.commits = 0

    def start(self, *, batch_max: int = 512, linger_seconds: float = 0.002) -> None:
        self.nursery.start_soon(
            lambda: writer.run(
                self._inbox,
                self.store,
                self._dispatcher,
                self._scheduler,
                clock=lambda: NOW,
                batch_max=batch_max,
                linger_seconds=linger_seconds,
            )
        )

    def queue(self, build: Callable[[Reply], WriterCommand]) -> Answer:
        """Put a command in the inbox without waiting; its answer arrives on the result."""
        reply, answer = trio.open_memory_channel[outcome.Outcome[Any]](1)
        self.inbox.send_nowait(build(reply))
        return answer

    async def ask(self, build: Callable[[Reply], WriterCommand]) -> Any:
        with trio.fail_after(DEADLINE_SECONDS):
            return await request(self.inbox, build)

    async def create(self, new: NewTask | None = None) -> Task:
        task: Task = await self.ask(lambda r: CreateTask(new or NewTask("job", {}), r))
        return task

    async def events(self) -> tuple[list[DispatcherMessage], list[SchedulerMessage]]:
        """Everything published so far, to the dispatcher and to the scheduler."""
        await trio.testing.wait_all_tasks_blocked()
        return _drain(self.dispatcher), _drain(self.scheduler)

    def stored(self, task_id: int) -> Task:
        with self.store.transaction() as tx:
            return tx.get_task(task_id)


def _drain(channel: trio.MemoryReceiveChannel[Any]) -> list[Any]:
    found = []
    while True:
        try:
            found.append(channel.receive_nowait())
        except trio.WouldBlock:
            return found


@pytest.fixture
def harness(store: Store, nursery: trio.Nursery) -> Iterator[Harness]:
    made = Harness(store, nursery)

    def count(_connection: Connection) -> None:
        made.commits += 1

    event.listen(store.engine, "commit", count)
    yield made
    event.remove(store.engine, "commit", count)


@pytest.fixture
def started(harness: Harness) -> Harness:
    harness.start()
    return harness


# --- group commit ---


async def test_commands_waiting_together_are_applied_in_one_transaction(harness: Harness) -> None:
    answers = [harness.queue(lambda r: CreateTask(NewTask("job", {}), r)) for _ in range(5)]
    harness.start()

    tasks = [(await receive(answer)).unwrap() for answer in answers]

    assert harness.commits == 1
    assert [task.id for task in tasks] == [1, 2, 3, 4, 5]


async def test_a_batch_is_bounded_by_batch_max(harness: Harness) -> None:
    answers = [harness.queue(lambda r: CreateTask(NewTask("job", {}), r)) for _ in range(5)]
    harness.start(batch_max=2)

    for answer in answers:
        await receive(answer)

    assert harness.commits == 3


async def test_a_reply_describes_committed_state(started: Harness) -> None:
    task = await started.create()

    assert started.commits == 1
    assert started.stored(task.id) == task


async def test_a_commit_that_fails_never_gets_a_success_reply(
    harness: Harness, store: Store
) -> None:
    def fail(_connection: Connection) -> None:
        raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

    event.listen(store.engine, "commit", fail)
    answers = [harness.queue(lambda r: CreateTask(NewTask("job", {}), r)) for _ in range(2)]
    harness.start()

    for answer in answers:
        with pytest.raises(Unavailable, match="could not apply"):
            (await receive(answer)).unwrap()
    event.remove(store.engine, "commit", fail)

    with store.transaction() as tx:
        assert tx.list_tasks(0, 10, None) == []
    assert await harness.events() == ([], [])


async def test_a_bulk_create_is_one_transaction_answered_in_order(harness: Harness) -> None:
    news = (NewTask("a", {}), NewTask("b", {}, scheduled_at=LATER), NewTask("c", {}))
    single = harness.queue(lambda r: CreateTask(NewTask("alone", {}), r))
    bulk = harness.queue(lambda r: CreateTasks(news, r))
    harness.start()

    alone = (await receive(single)).unwrap()
    created = (await receive(bulk)).unwrap()

    assert harness.commits == 1
    assert [task.name for task in created] == ["a", "b", "c"]
    assert [task.id for task in created] == [alone.id + 1, alone.id + 2, alone.id + 3]
    assert [harness.stored(task.id) for task in created] == created
    assert await harness.events() == ([TasksReady()], [TaskScheduled(LATER)])


async def test_outcomes_nobody_waits_for_wait_for_the_next_claim(harness: Harness) -> None:
    harness.start(linger_seconds=DEADLINE_SECONDS * 10)
    first, second = await harness.create(), await harness.create()
    one, two = await harness.ask(lambda r: ClaimTasks((1, 2), r))
    committed = harness.commits
    harness.inbox.send_nowait(FinishTask(one.id, one.attempt, True, '"one"', None, None))
    harness.inbox.send_nowait(FinishTask(two.id, two.attempt, True, '"two"', None, None))
    await trio.testing.wait_all_tasks_blocked()
    assert harness.commits == committed

    assert await harness.ask(lambda r: ClaimTasks((1, 2), r)) == []

    assert harness.commits == committed + 1
    assert [harness.stored(task.id).result for task in (first, second)] == ["one", "two"]
    assert harness.stored(first.id).status == TaskStatus.COMPLETED


async def test_outcomes_coming_one_by_one_all_wait_for_the_claim(harness: Harness) -> None:
    harness.start(linger_seconds=DEADLINE_SECONDS * 10)
    tasks = [await harness.create() for _ in range(3)]
    running = await harness.ask(lambda r: ClaimTasks((1, 2, 3), r))
    committed = harness.commits
    for task in running:
        harness.inbox.send_nowait(FinishTask(task.id, task.attempt, True, '"ok"', None, None))
        await trio.testing.wait_all_tasks_blocked()
    assert harness.commits == committed

    assert await harness.ask(lambda r: ClaimTasks((1, 2, 3), r)) == []

    assert harness.commits == committed + 1
    assert {harness.stored(task.id).status for task in tasks} == {TaskStatus.COMPLETED}


async def test_outcomes_alone_are_committed_after_the_linger(harness: Harness) -> None:
    harness.start()
    task = await harness.create()
    (running,) = await harness.ask(lambda r: ClaimTasks((1,), r))
    harness.inbox.send_nowait(FinishTask(task.id, running.attempt, True, '"done"', None, None))

    async def completed() -> bool:
        return harness.stored(task.id).status == TaskStatus.COMPLETED

    await eventually(completed, within=DEADLINE_SECONDS, what="the outcome to be committed")


async def test_a_waiting_claim_is_parked_and_takes_a_new_task_in_its_commit(
    started: Harness,
) -> None:
    waiting = started.queue(lambda r: ClaimTasks((4, 5), r, wait=True))
    await started.ask(ListWorkers)
    with pytest.raises(trio.WouldBlock):
        waiting.receive_nowait()
    committed = started.commits

    task = await started.create()

    (claimed,) = (await receive(waiting)).unwrap()
    assert started.commits == committed + 1
    assert (claimed.id, claimed.worker_id) == (task.id, 4)
    assert started.stored(task.id) == claimed


async def test_a_claim_sees_a_task_created_later_in_its_own_batch(harness: Harness) -> None:
    waiting = harness.queue(lambda r: ClaimTasks((4,), r, wait=True))
    created = harness.queue(lambda r: CreateTask(NewTask("job", {}), r))
    harness.start()

    task = (await receive(created)).unwrap()

    (claimed,) = (await receive(waiting)).unwrap()
    assert harness.commits == 1
    assert (claimed.id, claimed.worker_id) == (task.id, 4)


async def test_a_withdrawal_answers_the_parked_claim_with_nothing(started: Harness) -> None:
    waiting = started.queue(lambda r: ClaimTasks((4,), r, wait=True))

    await started.ask(WithdrawClaim)

    assert (await receive(waiting)).unwrap() == []


async def test_no_claim_reaches_a_worker_set_inactive(started: Harness) -> None:
    worker = await started.ask(lambda r: CreateWorker("w", r))
    waiting = started.queue(lambda r: ClaimTasks((worker.id, 99), r, wait=True))
    await started.ask(lambda r: SetWorkerStatus(worker.id, WorkerStatus.INACTIVE, r))

    task = await started.create()

    (claimed,) = (await receive(waiting)).unwrap()
    assert (claimed.id, claimed.worker_id) == (task.id, 99)
    assert await started.ask(lambda r: ClaimTasks((worker.id,), r)) == []


async def test_heartbeats_share_a_commit_and_an_unknown_worker_is_refused_alone(
    harness: Harness,
) -> None:
    harness.start()
    kept, paused = await harness.create(), await harness.create()
    worker = await harness.ask(lambda r: CreateWorker("w", r))
    held = await harness.ask(lambda r: ClaimTasks((worker.id,), r, per_worker=2))
    await harness.ask(lambda r: PauseTask(paused.id, r))
    committed = harness.commits
    holding = tuple((task.id, task.attempt) for task in held)
    beat = harness.queue(lambda r: WorkerHeartbeat(worker.id, holding, 5.0, r))
    unknown = harness.queue(lambda r: WorkerHeartbeat(404, (), 5.0, r))

    assert (await receive(beat)).unwrap() == [paused.id]
    with pytest.raises(NotFound):
        (await receive(unknown)).unwrap()
    assert harness.commits == committed + 1
    assert harness.stored(kept.id).status == TaskStatus.RUNNING


# --- refusals and failures stay with their command ---


async def test_a_refused_command_does_not_fail_its_batch(harness: Harness) -> None:
    first = harness.queue(lambda r: CreateTask(NewTask("a", {}), r))
    refused = harness.queue(lambda r: PauseTask(404, r))
    last = harness.queue(lambda r: CreateTask(NewTask("b", {}), r))
    harness.start()

    assert (await receive(first)).unwrap().name == "a"
    with pytest.raises(NotFound):
        (await receive(refused)).unwrap()
    assert (await receive(last)).unwrap().name == "b"
    assert harness.commits == 1


async def test_a_database_error_fails_only_its_own_command(harness: Harness) -> None:
    first = harness.queue(lambda r: CreateTask(NewTask("a", {}), r))
    bad = harness.queue(lambda r: CreateTask(NewTask("bad", {"not json": object()}), r))
    last = harness.queue(lambda r: CreateTask(NewTask("b", {}), r))
    harness.start()

    a = (await receive(first)).unwrap()
    with pytest.raises(Unavailable, match="could not apply"):
        (await receive(bad)).unwrap()
    b = (await receive(last)).unwrap()

    assert (harness.stored(a.id).name, harness.stored(b.id).name) == ("a", "b")
    assert await harness.events() == ([TasksReady()], [])


async def test_an_unexpected_error_refuses_only_its_command_and_the_writer_carries_on(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_get_task = Tx.get_task

    def broken_for_404(tx: Tx, task_id: int) -> Task:
        if task_id == 404:
            raise RuntimeError("bug")
        return real_get_task(tx, task_id)

    monkeypatch.setattr(Tx, "get_task", broken_for_404)
    first = harness.queue(lambda r: CreateTask(NewTask("a", {}), r))
    bad = harness.queue(lambda r: GetTask(404, r))
    last = harness.queue(lambda r: CreateTask(NewTask("b", {}), r))
    harness.start()

    a = (await receive(first)).unwrap()
    with pytest.raises(Unavailable, match="RuntimeError"):
        (await receive(bad)).unwrap()
    b = (await receive(last)).unwrap()
    assert (harness.stored(a.id).name, harness.stored(b.id).name) == ("a", "b")
    assert (await harness.ask(lambda r: GetTask(b.id, r))).name == "b"


# --- fencing ---


def finish(task: Task, attempt: int) -> Callable[[Reply], FinishTask]:
    return lambda reply: FinishTask(task.id, attempt, True, '"done"', None, reply)


async def claim(harness: Harness, worker_id: int) -> Task:
    (claimed,) = await harness.ask(lambda r: ClaimTasks((worker_id,), r))
    assert isinstance(claimed, Task)
    return claimed


async def test_a_finish_after_a_pause_changes_nothing(started: Harness) -> None:
    task = await started.create()
    running = await claim(started, 1)
    paused = await started.ask(lambda r: PauseTask(task.id, r))

    assert await started.ask(finish(task, running.attempt)) is False
    assert started.stored(task.id) == paused


async def test_a_finish_of_an_earlier_attempt_changes_nothing(started: Harness) -> None:
    task = await started.create()
    first = await claim(started, 1)
    await started.ask(lambda r: PauseTask(task.id, r))
    await started.ask(lambda r: ResumeTask(task.id, r))
    second = await claim(started, 2)

    assert (first.attempt, second.attempt) == (1, 2)
    assert await started.ask(finish(task, first.attempt)) is False
    assert started.stored(task.id) == second
    assert await started.ask(finish(task, second.attempt)) is True
    assert started.stored(task.id).status == TaskStatus.COMPLETED


async def test_a_finish_after_a_requeue_changes_nothing(started: Harness) -> None:
    task = await started.create()
    running = await claim(started, 1)
    assert await started.ask(lambda r: RequeueRunning(None, r)) == 1

    assert await started.ask(finish(task, running.attempt)) is False
    assert started.stored(task.id).status == TaskStatus.PENDING


async def test_a_finish_after_a_delete_changes_nothing(started: Harness) -> None:
    task = await started.create()
    running = await claim(started, 1)
    await started.ask(lambda r: DeleteTask(task.id, r))

    assert await started.ask(finish(task, running.attempt)) is False


# --- events, published after the commit ---


async def test_a_pending_task_tells_the_dispatcher_once_per_batch(harness: Harness) -> None:
    answers = [harness.queue(lambda r: CreateTask(NewTask("job", {}), r)) for _ in range(3)]
    harness.start()
    for answer in answers:
        await receive(answer)

    assert await harness.events() == ([TasksReady()], [])


async def test_a_scheduled_task_tells_the_scheduler_its_time(started: Harness) -> None:
    task = await started.create(NewTask("job", {}, scheduled_at=LATER))

    assert task.status == TaskStatus.SCHEDULED
    assert await started.events() == ([], [TaskScheduled(LATER)])


async def test_pausing_a_running_task_revokes_it_to_suspend(started: Harness) -> None:
    task = await started.create()
    await claim(started, 3)
    await started.events()

    await started.ask(lambda r: PauseTask(task.id, r))

    assert await started.events() == ([TaskRevoked(task.id, 3, suspend=True)], [])


async def test_deleting_a_running_task_revokes_it(started: Harness) -> None:
    task = await started.create()
    await claim(started, 3)
    await started.events()

    await started.ask(lambda r: DeleteTask(task.id, r))

    assert await started.events() == ([TaskRevoked(task.id, 3)], [])


async def test_pausing_or_deleting_a_waiting_task_only_voids_its_suspension(
    started: Harness,
) -> None:
    paused, deleted = await started.create(), await started.create()
    await started.events()

    await started.ask(lambda r: PauseTask(paused.id, r))
    await started.ask(lambda r: DeleteTask(deleted.id, r))

    assert await started.events() == ([SuspensionVoided(deleted.id)], [])


async def test_resuming_a_task_makes_it_ready(started: Harness) -> None:
    task = await started.create()
    await started.ask(lambda r: PauseTask(task.id, r))
    await started.events()

    await started.ask(lambda r: ResumeTask(task.id, r))

    assert await started.events() == ([TasksReady()], [])


async def test_a_refused_command_publishes_nothing(started: Harness) -> None:
    with pytest.raises(NotFound):
        await started.ask(lambda r: ResumeTask(404, r))

    assert await started.events() == ([], [])


async def test_a_worker_status_change_tells_the_dispatcher(started: Harness) -> None:
    worker = await started.ask(lambda r: CreateWorker("w", r))

    await started.ask(lambda r: SetWorkerStatus(worker.id, WorkerStatus.INACTIVE, r))

    assert await started.events() == ([WorkerStatusChanged(worker.id, WorkerStatus.INACTIVE)], [])


async def test_promotion_answers_the_next_due_time_and_makes_tasks_ready(
    started: Harness,
) -> None:
    due = await started.create(NewTask("job", {}, scheduled_at=NOW + timedelta(minutes=1)))
    await started.create(NewTask("job", {}, scheduled_at=LATER))
    await started.events()

    next_due = await started.ask(lambda r: PromoteDueTasks(NOW + timedelta(minutes=1), r))

    assert next_due == LATER
    assert started.stored(due.id).status == TaskStatus.PENDING
    assert await started.events() == ([TasksReady()], [])


async def test_a_promotion_with_nothing_due_publishes_nothing(started: Harness) -> None:
    await started.create(NewTask("job", {}, scheduled_at=LATER))
    await started.events()

    assert await started.ask(lambda r: PromoteDueTasks(NOW, r)) == LATER
    assert await started.events() == ([], [])


async def test_the_writer_returns_once_its_inbox_is_closed(store: Store) -> None:
    inbox_send, inbox = trio.open_memory_channel[WriterCommand](math.inf)
    events, _ = trio.open_memory_channel[Any](math.inf)
    answer = trio.open_memory_channel[outcome.Outcome[Any]](1)
    inbox_send.send_nowait(CreateTask(NewTask("job", {}), answer[0]))
    inbox_send.close()

    await writer.run(inbox, store, events, events, clock=lambda: NOW)

    assert answer[1].receive_nowait().unwrap().id == 1
