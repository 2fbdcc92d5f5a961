"""The events hub through its channels: numbering, ring resume, slow subscribers, metrics."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator
from datetime import timedelta

import outcome
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from taskq.actors import hub
from taskq.messages import (
    ClaimTasks,
    Committed,
    CreateTask,
    CreateTasks,
    DeleteTask,
    EndStreams,
    FinishTask,
    GetTask,
    HubMessage,
    ReapDeadWorkers,
    ReportProgress,
    RequeueNode,
    RequeueRunning,
    RestoreWorkers,
    Subscribe,
    Subscription,
    WriterCommand,
    request,
)
from taskq.metrics import Metrics
from taskq.models import Change, ChangeKind, NewTask, Task, TaskStatus, Worker, WorkerStatus
from tests.actors.conftest import NOW, receive, running_task

RING = 4


class Hub:
    def __init__(self, inbox: trio.MemorySendChannel[HubMessage], metrics: Metrics) -> None:
        self.inbox = inbox
        self.metrics = metrics

    async def subscribe(self, after: int | None = None, buffer: int = 16) -> Subscription:
        subscription: Subscription = await request(
            self.inbox, lambda reply: Subscribe(after, buffer, reply)
        )
        return subscription

    async def commit(self, *pairs: tuple[WriterCommand, object], seconds: float = 0.002) -> None:
        commands = tuple(command for command, _ in pairs)
        results = tuple(outcome.Value(result) for _, result in pairs)
        await self.inbox.send(Committed(commands, results, NOW, seconds))


@pytest.fixture
async def events(nursery: trio.Nursery) -> AsyncIterator[Hub]:
    send, inbox = trio.open_memory_channel[HubMessage](math.inf)
    metrics = Metrics()
    nursery.start_soon(hub.run, inbox, hub.HubState(RING), metrics)
    yield Hub(send, metrics)
    await send.aclose()


def pending(task_id: int, name: str = "job") -> Task:
    claimed = running_task(task_id, 1, name=name)
    return dataclasses.replace(claimed, status=TaskStatus.PENDING, worker_id=None, started_at=None)


def created(task_id: int, name: str = "job") -> tuple[WriterCommand, Task]:
    return CreateTask(NewTask(name, {}), None), pending(task_id, name)


async def take(subscription: Subscription, count: int) -> list[Change]:
    return [await receive(subscription.changes) for _ in range(count)]


async def test_changes_are_numbered_in_commit_order(events: Hub) -> None:
    subscription = await events.subscribe()
    claimed = running_task(1, 7)
    await events.commit(created(1), (GetTask(1, None), pending(1)))
    await events.commit((ClaimTasks((7,), None), [claimed]))
    await events.commit((FinishTask(1, 1, True, '{"ok": 1}', None, None), True))
    changes = await take(subscription, 3)
    assert [change.id for change in changes] == [1, 2, 3]
    assert [change.kind for change in changes] == [
        ChangeKind.TASK_CREATED,
        ChangeKind.TASK_UPDATED,
        ChangeKind.TASK_FINISHED,
    ]
    assert changes[1].task == claimed
    assert changes[2].task_id == 1
    assert changes[2].detail == {"succeeded": True, "error": None, "retry_after": None}


async def test_a_failure_that_will_retry_and_progress_reach_the_stream(events: Hub) -> None:
    subscription = await events.subscribe()
    await events.commit((ReportProgress(1, 1, {"fraction": 0.5}, None), True))
    await events.commit((ReportProgress(1, 0, {"fraction": 0.9}, None), False))
    failed = FinishTask(1, 1, False, None, "ValueError: flaky", None, retry_after=2.0)
    await events.commit((failed, True))
    progress, finished = await take(subscription, 2)
    assert progress.kind == ChangeKind.TASK_PROGRESS
    assert (progress.task_id, progress.detail) == (1, {"progress": {"fraction": 0.5}})
    assert finished.kind == ChangeKind.TASK_FINISHED
    assert finished.detail == {
        "succeeded": False,
        "error": "ValueError: flaky",
        "retry_after": 2.0,
    }


async def test_refused_and_fenced_commands_change_nothing(events: Hub) -> None:
    subscription = await events.subscribe()
    refused = outcome.Error(LookupError("no such task"))
    await events.inbox.send(Committed((DeleteTask(9, None),), (refused,), NOW, 0.0))
    await events.commit((FinishTask(1, 1, True, None, None, None), False))
    await events.commit((RequeueRunning(None, None), 0))
    await events.commit((DeleteTask(2, None), None))
    (change,) = await take(subscription, 1)
    assert (change.id, change.kind, change.task_id) == (1, ChangeKind.TASK_DELETED, 2)


async def test_a_subscriber_resumes_after_the_last_id_it_saw(events: Hub) -> None:
    await events.commit(created(1), created(2), created(3))
    resumed = await events.subscribe(after=1)
    assert resumed.complete
    assert [change.task_id for change in await take(resumed, 2)] == [2, 3]
    await events.commit(created(4))
    assert [change.id for change in await take(resumed, 1)] == [4]


async def test_resuming_from_beyond_the_ring_says_changes_were_missed(events: Hub) -> None:
    await events.commit(*(created(task_id) for task_id in range(1, RING + 3)))
    # The ring holds ids 3..6: resuming after 2 misses nothing, after 1 misses id 2.
    assert (await events.subscribe(after=2)).complete
    missed = await events.subscribe(after=1)
    assert not missed.complete
    assert [change.id for change in await take(missed, RING)] == [3, 4, 5, 6]
    # An id this hub never handed out (an earlier process's) cannot be resumed either.
    assert not (await events.subscribe(after=99)).complete


async def test_a_stuck_subscriber_is_dropped_without_holding_up_the_others(events: Hub) -> None:
    stuck = await events.subscribe(buffer=2)
    reader = await events.subscribe(buffer=2)
    for task_id in range(1, 6):
        await events.commit(created(task_id))
        (change,) = await take(reader, 1)
        assert change.task_id == task_id
    # The stuck one got what fitted in its buffer, then its stream ended.
    assert [change.id for change in await take(stuck, 2)] == [1, 2]
    with pytest.raises(trio.EndOfChannel):
        await receive(stuck.changes)


async def test_a_subscriber_that_left_is_forgotten(events: Hub) -> None:
    gone = await events.subscribe()
    await gone.changes.aclose()
    staying = await events.subscribe()
    await events.commit(created(1))
    assert [change.id for change in await take(staying, 1)] == [1]


async def test_metrics_follow_tasks_from_creation_to_outcome(events: Hub) -> None:
    subscription = await events.subscribe()
    claimed = dataclasses.replace(
        running_task(1, 7, name="mail"), started_at=NOW + timedelta(seconds=2)
    )
    await events.commit(created(1, "mail"), created(2, "mail"))
    await events.commit((ClaimTasks((7,), None), [claimed]))
    finish_at = NOW + timedelta(seconds=5)
    done = FinishTask(1, 1, False, None, "boom", None)
    await events.inbox.send(Committed((done,), (outcome.Value(True),), finish_at, 0.004))
    await take(subscription, 4)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(events.metrics.render({}, []).decode())
        for sample in family.samples
    }
    assert samples[("taskq_tasks_created_total", (("name", "mail"),))] == 2
    finished = ("taskq_tasks_finished_total", (("name", "mail"), ("outcome", "failed")))
    assert samples[finished] == 1
    assert samples[("taskq_task_wait_seconds_sum", (("name", "mail"),))] == 2.0
    assert samples[("taskq_task_run_seconds_sum", (("name", "mail"),))] == 3.0
    assert samples[("taskq_writer_batch_commands_count", ())] == 3
    assert samples[("taskq_writer_batch_commands_sum", ())] == 4


async def test_end_streams_closes_open_streams_and_later_ones(events: Hub) -> None:
    opened = await events.subscribe()
    await events.inbox.send(EndStreams())
    with pytest.raises(trio.EndOfChannel):
        await receive(opened.changes)
    late = await events.subscribe()
    with pytest.raises(trio.EndOfChannel):
        await receive(late.changes)


@dataclasses.dataclass(frozen=True)
class RowChangingCommand:
    """Stands for a writer command the hub has no case for."""

    task_id: int


async def test_a_command_the_hub_does_not_know_that_answers_a_row_is_an_update(
    events: Hub,
) -> None:
    subscription = await events.subscribe()
    paused = dataclasses.replace(pending(3), status=TaskStatus.PAUSED)
    await events.commit((RowChangingCommand(3), paused))  # type: ignore[arg-type]
    (change,) = await take(subscription, 1)
    assert (change.kind, change.task) == (ChangeKind.TASK_UPDATED, paused)


async def test_numbering_and_the_ring_outlive_a_restart_of_the_hub() -> None:
    state = hub.HubState(RING)
    send, inbox = trio.open_memory_channel[HubMessage](math.inf)
    before = Hub(send, Metrics())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.run, inbox, state, before.metrics)
        first = await before.subscribe()
        await before.commit(created(1), created(2))
        await take(first, 2)
        nursery.cancel_scope.cancel()
    # The crashed incarnation's subscribers see their stream end.
    with pytest.raises(trio.EndOfChannel):
        await receive(first.changes)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.run, inbox, state, before.metrics)
        resumed = await before.subscribe(after=1)
        await before.commit(created(3))
        assert resumed.complete
        assert [change.id for change in await take(resumed, 2)] == [2, 3]
        nursery.cancel_scope.cancel()


async def test_a_batch_create_reaches_the_stream_and_the_metrics(events: Hub) -> None:
    subscription = await events.subscribe()
    news = tuple(NewTask(name, {}) for name in ("mail", "mail", "resize"))
    tasks = [pending(1, "mail"), pending(2, "mail"), pending(3, "resize")]
    await events.commit((CreateTasks(news, None), tasks))
    changes = await take(subscription, 3)
    assert [(change.id, change.kind, change.task) for change in changes] == [
        (1, ChangeKind.TASK_CREATED, tasks[0]),
        (2, ChangeKind.TASK_CREATED, tasks[1]),
        (3, ChangeKind.TASK_CREATED, tasks[2]),
    ]
    created = metric_samples(events.metrics, "taskq_tasks_created_total")
    assert created == {(("name", "mail"),): 2, (("name", "resize"),): 1}


def metric_samples(metrics: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(metrics.render({}, []).decode())
        for sample in family.samples
        if sample.name == name
    }


def mixed_batches() -> list[Committed]:
    """Batches of 0 to RING + 2 changes, reads and refusals among them."""
    batches = []
    for number in range(12):
        first = 10 * number + 1
        pairs: list[tuple[WriterCommand, object]] = [
            created(task_id) for task_id in range(first, first + number % (RING + 3))
        ]
        pairs.append((GetTask(first, None), pending(first)))
        commands = (*(command for command, _ in pairs), DeleteTask(first, None))
        results = tuple(outcome.Value(result) for _, result in pairs)
        refused = outcome.Error(LookupError("no such task"))
        batches.append(Committed(commands, (*results, refused), NOW, 0.001))
    return batches


async def test_unwatched_changes_are_numbered_as_if_they_had_been_watched() -> None:
    watched, unwatched = hub.HubState(RING), hub.HubState(RING)
    for batch in mixed_batches():
        watched.number(batch)
        watched.make()
        unwatched.number(batch)
        # Nobody asked: nothing is made, however many changes go by.
        assert not unwatched.ring
        assert len(unwatched.unmade) <= RING
    assert unwatched.last_id == watched.last_id == sum(n % (RING + 3) for n in range(12))
    for after in range(watched.last_id + 2):
        assert unwatched.since(after) == watched.since(after)


async def test_a_subscriber_resumes_through_batches_nobody_watched(events: Hub) -> None:
    for batch in mixed_batches():
        await events.inbox.send(batch)
    resumed = await events.subscribe(after=0)
    assert not resumed.complete
    changes = await take(resumed, RING)
    # 31 tasks were created (changes 1..31); the ring holds the last batch's four.
    assert [change.id for change in changes] == [28, 29, 30, 31]
    assert [change.task_id for change in changes] == [111, 112, 113, 114]
    await events.commit(created(200))
    assert [change.id for change in await take(resumed, 1)] == [32]


async def test_a_new_subscriber_gets_only_what_commits_after_it(events: Hub) -> None:
    await events.commit(created(1), created(2))
    subscription = await events.subscribe()
    await events.commit(created(3))
    (change,) = await take(subscription, 1)
    assert (change.id, change.task_id) == (3, 3)


async def test_one_batch_counts_each_name_and_outcome_apart(events: Hub) -> None:
    subscription = await events.subscribe()
    claimed = [running_task(task_id, 7, name=name) for task_id, name in enumerate("aabb", 1)]
    await events.commit((ClaimTasks((7,), None), claimed))
    outcomes = [(1, True), (2, False), (3, True), (4, True)]
    await events.commit(
        *((FinishTask(task_id, 1, ok, None, None, None), True) for task_id, ok in outcomes)
    )
    await take(subscription, len(claimed) + len(outcomes))
    finished = metric_samples(events.metrics, "taskq_tasks_finished_total")
    assert finished == {
        (("name", "a"), ("outcome", "completed")): 1,
        (("name", "a"), ("outcome", "failed")): 1,
        (("name", "b"), ("outcome", "completed")): 2,
        (("name", "b"), ("outcome", "failed")): 0,
    }
    runs = metric_samples(events.metrics, "taskq_task_run_seconds_count")
    assert runs == {(("name", "a"),): 2, (("name", "b"),): 2}


def counted_commands() -> list[tuple[WriterCommand, object]]:
    """Each command the hub counts from its value, answered with effect and without."""
    tasks = [running_task(1, 7), running_task(2, 7)]
    workers = [
        Worker(number, f"w{number}", WorkerStatus.ACTIVE, NOW, NOW, NOW) for number in (1, 2)
    ]
    return [
        (FinishTask(1, 1, True, None, None, None), True),
        (FinishTask(1, 1, True, None, None, None), False),
        (ReportProgress(1, 1, 0.5, None), True),
        (ReportProgress(1, 1, 0.5, None), False),
        (RequeueRunning(7, None), 2),
        (RequeueRunning(None, None), 0),
        (RequeueNode(None), 3),
        (RequeueNode(None), 0),
        (ReapDeadWorkers(30.0, None), [7, 8]),
        (ReapDeadWorkers(30.0, None), []),
        (CreateTasks((NewTask("job", {}), NewTask("job", {})), None), tasks),
        (ClaimTasks((7,), None), tasks),
        (ClaimTasks((7,), None), []),
        (RestoreWorkers(2, None), workers),
        (RestoreWorkers(0, None), []),
    ]


@pytest.mark.parametrize(("command", "value"), counted_commands())
def test_a_command_is_counted_as_the_changes_it_makes(
    command: WriterCommand, value: object
) -> None:
    assert hub._count(command, value) == len(list(hub._changes(command, value)))
