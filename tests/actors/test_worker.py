"""A worker through its channels; the test plays the dispatcher and (mostly) a fake writer."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import outcome
import pytest
import trio
import trio.testing

from taskq.actors import worker, writer
from taskq.messages import (
    AnnounceIdle,
    ClaimTasks,
    CreateTask,
    CreateWorker,
    DispatcherMessage,
    Drain,
    FinishTask,
    GetTask,
    GetWorker,
    ReportProgress,
    RequeueRunning,
    RunTasks,
    SchedulerMessage,
    SetActive,
    StopTask,
    TasksReady,
    WorkerHeartbeat,
    WorkerIdle,
    WorkerMessage,
    WriterCommand,
    answer,
    request,
)
from taskq.models import NewTask, Priority, Task, TaskStatus, Worker, WorkerStatus
from taskq.registry import Registry, TaskContext
from taskq.runtimes import Runtimes
from taskq.store import Store
from tests.actors.conftest import DEADLINE_SECONDS, NOW, receive, running_task, wait

WORKER = 7


class Handlers:
    """Handlers that tell the test what they saw, so it waits on events, not time."""

    def __init__(self) -> None:
        self.started = trio.Event()
        self.cancelled = trio.Event()
        self.release = trio.Event()
        self.contexts: list[TaskContext] = []
        # The tasks ``gate`` was entered for, and those of them it was stopped in.
        self.entered: list[int] = []
        self.stopped: list[int] = []
        self.entering = trio.Event()

    async def double(self, payload: Mapping[str, Any], context: TaskContext) -> dict[str, int]:
        self.contexts.append(context)
        return {"x": payload["x"] * 2}

    async def hold(self, payload: Mapping[str, Any]) -> str:
        self.started.set()
        try:
            await wait(self.release)
        except trio.Cancelled:
            self.cancelled.set()
            raise
        return "released"

    async def gate(self, payload: Mapping[str, Any]) -> None:
        """Waits until stopped, saying when it entered and when it was stopped."""
        self.entered.append(payload["n"])
        self.entering.set()
        self.entering = trio.Event()
        try:
            await trio.sleep_forever()
        finally:
            self.stopped.append(payload["n"])

    async def stubborn(self, payload: Mapping[str, Any]) -> str:
        """Swallows its stop and returns all the same."""
        self.started.set()
        try:
            await wait(self.release)
        except trio.Cancelled:
            return "kept"
        return "released"

    async def plain(self, payload: Mapping[str, Any]) -> Mapping[str, Any]:
        return payload

    async def boom(self, payload: Mapping[str, Any]) -> None:
        raise ValueError("boom")

    async def unserialisable(self, payload: Mapping[str, Any]) -> object:
        return {"when": NOW}

    def blocking(self, payload: Mapping[str, Any]) -> int:
        return 42

    async def chatty(self, payload: Mapping[str, Any], context: TaskContext) -> int:
        for n in range(1, 101):
            await context.progress(n)
        return 100


class Harness:
    def __init__(self, registry: Registry, runtimes: Runtimes, nursery: trio.Nursery) -> None:
        self.handlers = Handlers()
        names = ("double", "hold", "gate", "stubborn", "plain", "boom", "unserialisable")
        for name in (*names, "blocking", "chatty"):
            registry.task(name)(getattr(self.handlers, name))
        self.handlers_in = worker.Handlers(registry, runtimes, clock=_wall_clock)
        self.nursery = nursery
        self.inbox, inbox = trio.open_memory_channel[WorkerMessage](math.inf)
        dispatcher_send, self.dispatcher = trio.open_memory_channel[DispatcherMessage](math.inf)
        writer_send, self._writer = trio.open_memory_channel[WriterCommand](math.inf)
        self.links = worker.Links(inbox, self.inbox, dispatcher_send, writer_send)
        self._finished_send, self.finished = trio.open_memory_channel[FinishTask](math.inf)
        self._progress_send, self.progress = trio.open_memory_channel[ReportProgress](math.inf)
        self.writes: list[type[WriterCommand]] = []

    def start(self, *, status: WorkerStatus = WorkerStatus.ACTIVE) -> None:
        self.nursery.start_soon(self._fake_writer, status)
        self.nursery.start_soon(
            lambda: worker.run(WORKER, self.links, self.handlers_in, heartbeat_interval=10.0)
        )

    async def _fake_writer(self, status: WorkerStatus) -> None:
        me = Worker(WORKER, "w", status, NOW, NOW, NOW)
        async for command in self._writer:
            self.writes.append(type(command))
            match command:
                case RequeueRunning(reply=reply):
                    answer(reply, outcome.Value(0))
                case GetWorker(reply=reply):
                    answer(reply, outcome.Value(me))
                case WorkerHeartbeat(reply=reply):
                    answer(reply, outcome.Value([]))
                case FinishTask():
                    self._finished_send.send_nowait(command)
                case ReportProgress():
                    self._progress_send.send_nowait(command)

    def run(self, task_id: int, name: str, payload: Mapping[str, Any] | None = None) -> None:
        self.run_all((task_id, name, payload))

    def run_all(self, *tasks: tuple[int, str, Mapping[str, Any] | None]) -> None:
        """Hand the worker ``tasks`` in one message, as one claim does."""
        handed = tuple(
            running_task(task_id, WORKER, name=name, payload=payload)
            for task_id, name, payload in tasks
        )
        self.inbox.send_nowait(RunTasks(handed))

    async def entered(self, *task_ids: int) -> None:
        while self.handlers.entered != list(task_ids):
            await wait(self.handlers.entering)

    async def announcements(self) -> list[DispatcherMessage]:
        await trio.testing.wait_all_tasks_blocked()
        found = []
        while True:
            try:
                found.append(self.dispatcher.receive_nowait())
            except trio.WouldBlock:
                return found

    async def no_finish(self) -> None:
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.WouldBlock):
            self.finished.receive_nowait()


def result_of(finished: FinishTask) -> Any:
    """The result a worker reported, from the JSON text it carries."""
    return None if finished.result_json is None else json.loads(finished.result_json)


@pytest.fixture
async def harness(registry: Registry, runtimes: Runtimes, nursery: trio.Nursery) -> Harness:
    return Harness(registry, runtimes, nursery)


@pytest.fixture
async def started(harness: Harness) -> Harness:
    harness.start()
    assert await harness.announcements() == [WorkerIdle(WORKER)]
    return harness


async def test_it_first_requeues_what_an_earlier_incarnation_left_running(
    harness: Harness,
) -> None:
    harness.start()
    await trio.testing.wait_all_tasks_blocked()
    assert harness.writes[:2] == [RequeueRunning, GetWorker]


# --- running tasks ---


async def test_runs_a_task_and_reports_its_outcome_fenced_by_the_attempt(
    started: Harness,
) -> None:
    task = running_task(5, WORKER, name="double", payload={"x": 21}, attempt=3)
    started.inbox.send_nowait(RunTasks((task,)))

    assert await receive(started.finished) == FinishTask(5, 3, True, '{"x": 42}', None, None)
    assert [(c.task_id, c.name, c.attempt, c.worker_id) for c in started.handlers.contexts] == [
        (5, "double", 3, WORKER)
    ]


async def test_runs_a_blocking_handler_in_a_thread(started: Harness) -> None:
    started.run(5, "blocking")

    finished = await receive(started.finished)

    assert (finished.succeeded, result_of(finished)) == (True, 42)


async def test_announces_idle_again_after_a_task(started: Harness) -> None:
    started.run(5, "double", {"x": 1})
    await receive(started.finished)

    assert await started.announcements() == [WorkerIdle(WORKER)]


async def test_a_task_arriving_while_busy_runs_next(started: Harness) -> None:
    started.run(5, "hold")
    started.run(6, "double", {"x": 1})
    await wait(started.handlers.started)
    await started.no_finish()

    started.handlers.release.set()

    assert [(await receive(started.finished)).task_id for _ in range(2)] == [5, 6]


async def test_a_more_urgent_task_handed_while_busy_runs_before_the_backlog(
    started: Harness,
) -> None:
    started.run(5, "hold")
    started.run_all((6, "plain", None), (7, "plain", None))
    low = dataclasses.replace(running_task(8, WORKER, name="plain"), priority=Priority.LOW)
    urgent = dataclasses.replace(running_task(9, WORKER, name="plain"), priority=Priority.CRITICAL)
    await wait(started.handlers.started)
    started.inbox.send_nowait(RunTasks((low,)))
    started.inbox.send_nowait(RunTasks((urgent,)))
    await started.no_finish()

    started.handlers.release.set()

    assert [(await receive(started.finished)).task_id for _ in range(5)] == [5, 9, 6, 7, 8]


async def test_tasks_handed_at_once_run_in_order_then_one_idle_announcement(
    started: Harness,
) -> None:
    started.run_all(*((task_id, "double", {"x": task_id}) for task_id in (5, 6, 7)))

    finished = [await receive(started.finished) for _ in range(3)]

    assert [(f.task_id, result_of(f)) for f in finished] == [
        (5, {"x": 10}),
        (6, {"x": 12}),
        (7, {"x": 14}),
    ]
    assert await started.announcements() == [WorkerIdle(WORKER)]


# --- stopping a task ---


async def test_stop_task_cancels_the_running_handler_and_reports_nothing(
    started: Harness,
) -> None:
    started.run(5, "hold")
    await wait(started.handlers.started)

    started.inbox.send_nowait(StopTask(5))

    await wait(started.handlers.cancelled)
    await started.no_finish()
    assert await started.announcements() == [WorkerIdle(WORKER)]


async def test_stop_task_for_another_task_leaves_the_handler_alone(started: Harness) -> None:
    started.run(5, "hold")
    await wait(started.handlers.started)

    started.inbox.send_nowait(StopTask(6))
    await trio.testing.wait_all_tasks_blocked()

    assert not started.handlers.cancelled.is_set()
    started.handlers.release.set()
    assert result_of(await receive(started.finished)) == "released"


async def test_stopping_the_running_task_moves_on_to_the_next_handed(started: Harness) -> None:
    started.run(5, "hold")
    started.run(6, "double", {"x": 1})
    await wait(started.handlers.started)

    started.inbox.send_nowait(StopTask(5))

    assert (await receive(started.finished)).task_id == 6
    assert started.handlers.cancelled.is_set()
    assert await started.announcements() == [WorkerIdle(WORKER)]


async def test_each_stop_ends_only_its_own_handler_and_the_rest_runs_on(
    started: Harness,
) -> None:
    started.run_all((5, "gate", {"n": 5}), (6, "gate", {"n": 6}), (7, "plain", {"n": 7}))
    await started.entered(5)

    started.inbox.send_nowait(StopTask(5))
    await started.entered(5, 6)
    started.inbox.send_nowait(StopTask(6))

    finished = await receive(started.finished)
    assert (finished.task_id, result_of(finished)) == (7, {"n": 7})
    assert started.handlers.stopped == [5, 6]
    await started.no_finish()
    assert await started.announcements() == [WorkerIdle(WORKER)]


async def test_a_handler_that_swallows_its_stop_reports_and_the_next_task_runs(
    started: Harness,
) -> None:
    started.run_all((5, "stubborn", None), (6, "plain", {"n": 6}))
    await wait(started.handlers.started)

    started.inbox.send_nowait(StopTask(5))

    assert [(f.task_id, result_of(f)) for f in [await receive(started.finished) for _ in "ab"]] == [
        (5, "kept"),
        (6, {"n": 6}),
    ]


async def test_runs_what_it_is_handed_spell_after_spell_and_after_a_stop(
    started: Harness,
) -> None:
    started.run(5, "gate", {"n": 5})
    await started.entered(5)
    started.inbox.send_nowait(StopTask(5))
    assert await started.announcements() == [WorkerIdle(WORKER)]

    for task_id in (6, 7):
        started.run(task_id, "plain", {"n": task_id})

        assert (await receive(started.finished)).task_id == task_id
        assert await started.announcements() == [WorkerIdle(WORKER)]
    await started.no_finish()


async def test_idle_announcements_tell_how_long_the_spell_took_per_task(
    started: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    started.run_all((5, "gate", {"n": 5}), (6, "plain", {"n": 6}))
    await started.entered(5)
    await trio.sleep(3)

    started.inbox.send_nowait(StopTask(5))

    (idle,) = await started.announcements()
    assert isinstance(idle, WorkerIdle)
    assert idle.task_seconds == pytest.approx(1.5)


async def test_stop_task_drops_a_waiting_task(started: Harness) -> None:
    started.run(5, "hold")
    started.run(6, "double", {"x": 1})
    await wait(started.handlers.started)

    started.inbox.send_nowait(StopTask(6))
    started.handlers.release.set()

    assert (await receive(started.finished)).task_id == 5
    await started.no_finish()


async def test_progress_reports_are_coalesced_and_written_before_the_outcome(
    started: Harness,
) -> None:
    started.run(5, "chatty")

    first = await receive(started.progress)
    assert (first.task_id, first.attempt) == (5, 1)
    assert first.progress < 100
    await started.no_finish()  # 99 more reports wait behind the write in flight
    answer(first.reply, outcome.Value(True))

    second = await receive(started.progress)
    assert second.progress == 100
    await started.no_finish()
    answer(second.reply, outcome.Value(True))

    assert result_of(await receive(started.finished)) == 100
    with pytest.raises(trio.WouldBlock):
        started.progress.receive_nowait()


# --- failures ---


async def test_a_raising_handler_fails_with_the_exception(started: Harness) -> None:
    started.run(5, "boom")

    finished = await receive(started.finished)

    assert (finished.succeeded, result_of(finished), finished.error) == (
        False,
        None,
        "ValueError: boom",
    )


async def test_a_non_json_result_fails_with_a_clear_error(started: Harness) -> None:
    started.run(5, "unserialisable")

    finished = await receive(started.finished)

    assert (finished.succeeded, result_of(finished)) == (False, None)
    assert finished.error is not None
    assert finished.error.startswith("the handler's result is not JSON-serialisable")


async def test_an_unknown_task_name_fails_naming_it(started: Harness) -> None:
    started.run(5, "no.such.task")

    finished = await receive(started.finished)

    assert (finished.succeeded, finished.attempt) == (False, 1)
    assert finished.error == "no handler is registered for task name 'no.such.task'"


# --- idle announcements ---


async def test_an_inactive_worker_does_not_announce_itself(harness: Harness) -> None:
    harness.start(status=WorkerStatus.INACTIVE)
    assert await harness.announcements() == []

    harness.inbox.send_nowait(SetActive(True))

    assert await harness.announcements() == [WorkerIdle(WORKER)]


async def test_announces_once_per_idle_spell(started: Harness) -> None:
    started.inbox.send_nowait(SetActive(True))

    assert await started.announcements() == []


async def test_set_inactive_then_active_announces_again(started: Harness) -> None:
    started.inbox.send_nowait(SetActive(False))
    assert await started.announcements() == []

    started.inbox.send_nowait(SetActive(True))

    assert await started.announcements() == [WorkerIdle(WORKER)]


async def test_announce_idle_makes_an_idle_worker_say_so_again(started: Harness) -> None:
    started.inbox.send_nowait(AnnounceIdle())

    assert await started.announcements() == [WorkerIdle(WORKER)]


async def test_a_busy_worker_does_not_answer_announce_idle(started: Harness) -> None:
    started.run(5, "hold")
    await wait(started.handlers.started)

    started.inbox.send_nowait(AnnounceIdle())

    assert await started.announcements() == []


# --- drain ---


async def test_drain_answers_once_the_current_task_ends(started: Harness) -> None:
    started.run(5, "hold")
    await wait(started.handlers.started)
    drained = trio.Event()

    async def drain() -> None:
        await request(started.inbox, Drain)
        drained.set()

    started.nursery.start_soon(drain)
    await trio.testing.wait_all_tasks_blocked()
    assert not drained.is_set()

    started.handlers.release.set()

    await wait(drained)
    assert (await receive(started.finished)).task_id == 5
    assert await started.announcements() == []


async def test_drain_of_an_idle_worker_answers_at_once(started: Harness) -> None:
    with trio.fail_after(DEADLINE_SECONDS):
        await request(started.inbox, Drain)


async def test_drain_drops_waiting_tasks_and_takes_no_more(started: Harness) -> None:
    started.run(5, "hold")
    started.run(6, "double", {"x": 1})
    await wait(started.handlers.started)

    started.nursery.start_soon(request, started.inbox, Drain)
    await trio.testing.wait_all_tasks_blocked()
    started.handlers.release.set()

    assert (await receive(started.finished)).task_id == 5
    await started.no_finish()
    assert started.handlers.contexts == []


# --- a task promoted ahead of its time ---


def _wall_clock() -> datetime:
    """The wall clock as the mock clock moves it."""
    return NOW + timedelta(seconds=trio.current_time())


def _due_in(seconds: float, task_id: int, name: str) -> Task:
    return dataclasses.replace(
        running_task(task_id, WORKER, name=name),
        scheduled_at=_wall_clock() + timedelta(seconds=seconds),
    )


async def test_a_task_handed_ahead_of_its_time_starts_at_that_instant_by_the_wall_clock(
    started: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    task = _due_in(3, 5, "hold")
    assert task.scheduled_at is not None
    started.inbox.send_nowait(RunTasks((task,)))

    await wait(started.handlers.started)

    assert task.scheduled_at <= _wall_clock() < task.scheduled_at + timedelta(milliseconds=1)


async def test_a_stop_while_a_task_waits_for_its_time_ends_it_unrun(
    started: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    started.inbox.send_nowait(RunTasks((_due_in(3, 5, "hold"),)))
    await trio.testing.wait_all_tasks_blocked()

    started.inbox.send_nowait(StopTask(5))
    await trio.sleep(10)

    assert not started.handlers.started.is_set()
    await started.no_finish()
    started.run(6, "plain", {"a": 1})
    assert (await receive(started.finished)).task_id == 6


# --- heartbeat ---


async def test_heartbeats_on_its_interval(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    harness.start()

    await trio.sleep(35)

    assert harness.writes.count(WorkerHeartbeat) == 3


async def test_workers_started_apart_heartbeat_together(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Their beats reach the writer at one instant, for one batch: a batch of beats
    costs about what one beat does, and each batch holds up every other write."""
    interval = 10.0
    writer_send, writes = trio.open_memory_channel[WriterCommand](math.inf)
    inbox_send, inbox = trio.open_memory_channel[WorkerMessage](math.inf)
    dispatcher_send, _ = trio.open_memory_channel[DispatcherMessage](math.inf)
    links = worker.Links(inbox, inbox_send, dispatcher_send, writer_send)
    beats: dict[int, list[float]] = {worker_id: [] for worker_id in range(1, 5)}

    async def record_beats() -> None:
        async for command in writes:
            assert isinstance(command, WorkerHeartbeat)
            beats[command.worker_id].append(trio.current_time())
            answer(command.reply, outcome.Value([]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(record_beats)
        for worker_id in beats:
            state = worker._State(active=True)
            nursery.start_soon(worker._heartbeat, worker_id, state, links, interval)
            await trio.sleep(interval * 0.3)
        await trio.sleep(3 * interval)
        nursery.cancel_scope.cancel()

    assert all(times == [10.0, 20.0, 30.0, 40.0] for times in beats.values())


# --- against the real writer ---


async def test_with_the_real_writer_the_outcome_lands_on_the_claimed_task(
    store: Store, registry: Registry, runtimes: Runtimes, nursery: trio.Nursery
) -> None:
    registry.task("double")(Handlers().double)
    writer_send, writer_inbox = trio.open_memory_channel[WriterCommand](math.inf)
    dispatcher_send, dispatcher = trio.open_memory_channel[DispatcherMessage](math.inf)
    scheduler_send, _ = trio.open_memory_channel[SchedulerMessage](math.inf)
    nursery.start_soon(writer.run, writer_inbox, store, dispatcher_send, scheduler_send)
    me = await request(writer_send, lambda r: CreateWorker("w", r))
    task = await request(writer_send, lambda r: CreateTask(NewTask("double", {"x": 4}), r))
    inbox_send, inbox = trio.open_memory_channel[WorkerMessage](math.inf)
    links = worker.Links(inbox, inbox_send, dispatcher_send, writer_send)
    handlers = worker.Handlers(registry, runtimes)
    nursery.start_soon(lambda: worker.run(me.id, links, handlers, heartbeat_interval=60.0))
    assert await receive(dispatcher) == TasksReady()
    assert await receive(dispatcher) == WorkerIdle(me.id)

    (claimed,) = await request(writer_send, lambda r: ClaimTasks((me.id,), r))
    inbox_send.send_nowait(RunTasks((claimed,)))

    assert await receive(dispatcher) == WorkerIdle(me.id)
    done = await request(writer_send, lambda r: GetTask(task.id, r))
    assert (done.status, done.result, done.attempt) == (TaskStatus.COMPLETED, {"x": 8}, 1)
