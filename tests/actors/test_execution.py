"""Executions end to end through the real writer, scheduler, dispatcher and workers.

Retries, timeouts in every runtime, pause at a checkpoint, progress. The wall
clock of the writer and the scheduler is tied to Trio's, so tests that ask for
``autojump_clock`` see backoffs and time limits in mock time; the process tests
run on the real clock, since a worker process lives in real time.

The mock clock here autojumps only once the loop has idled for 0.3 s of real
time: the writer works on a thread (a commit waits for the disk), which Trio
counts as idle, and a jump in the middle of its work would fire deadlines early. For the same
reason waits carry generous deadlines (pytest-timeout bounds every test), and
mock-time tests wait on the handlers' own events across long spans of mock
time, polling the database only for the last short step.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from taskq.actors import dispatcher, scheduler, worker, writer
from taskq.config import SCHEDULE_LEAD_SECONDS
from taskq.execution import Permanent
from taskq.messages import (
    CreateTask,
    CreateWorker,
    DeleteTask,
    DispatcherMessage,
    GetTask,
    PauseTask,
    ResumeTask,
    SchedulerMessage,
    WorkerJoined,
    WorkerMessage,
    WriterCommand,
    request,
)
from taskq.models import NewTask, Task, TaskStatus
from taskq.registry import Registry, Runtime, TaskContext
from taskq.runtimes import RetryPolicy, open_runtimes
from taskq.store import Store
from tests.actors import runtime_handlers
from tests.conftest import eventually

EPOCH = datetime(2030, 1, 1)
SEED = 1234
RETRY = RetryPolicy(backoff_seconds=10.0, backoff_max_seconds=15.0)
GRACE_SECONDS = 3.0
WAIT_SECONDS = 3600.0


def wall_clock() -> datetime:
    return EPOCH + timedelta(seconds=trio.current_time())


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.3)


@dataclass
class Pipeline:
    writer: trio.MemorySendChannel[WriterCommand]
    worker_ids: list[int] = field(default_factory=list)

    async def submit(
        self, name: str, payload: Mapping[str, Any] | None = None, **fields: Any
    ) -> Task:
        new = NewTask(name, payload or {}, **fields)
        task: Task = await request(self.writer, lambda reply: CreateTask(new, reply))
        return task

    async def get(self, task_id: int) -> Task:
        task: Task = await request(self.writer, lambda reply: GetTask(task_id, reply))
        return task

    async def settled(self, task_id: int, *statuses: TaskStatus) -> Task:
        """Wait until the task's committed status is one of ``statuses``."""
        found: list[Task] = []

        async def reached() -> bool:
            found[:] = [await self.get(task_id)]
            return found[0].status in statuses

        await eventually(reached, within=WAIT_SECONDS, what=f"task {task_id} in {statuses}")
        return found[0]

    async def pause(self, task_id: int) -> None:
        await request(self.writer, lambda reply: PauseTask(task_id, reply))

    async def resume(self, task_id: int) -> None:
        await request(self.writer, lambda reply: ResumeTask(task_id, reply))

    async def delete(self, task_id: int) -> None:
        await request(self.writer, lambda reply: DeleteTask(task_id, reply))


@pytest.fixture
async def pipeline(
    store: Store, registry: Registry, nursery: trio.Nursery
) -> AsyncIterator[Pipeline]:
    """Two workers and everything they need, heartbeats off (they would move mock time)."""
    writer_send, writer_inbox = trio.open_memory_channel[WriterCommand](math.inf)
    dispatcher_send, dispatcher_inbox = trio.open_memory_channel[DispatcherMessage](math.inf)
    scheduler_send, scheduler_inbox = trio.open_memory_channel[SchedulerMessage](math.inf)
    nursery.start_soon(
        functools.partial(
            writer.run, writer_inbox, store, dispatcher_send, scheduler_send, clock=wall_clock
        )
    )
    nursery.start_soon(
        functools.partial(scheduler.run, scheduler_inbox, writer_send, clock=wall_clock)
    )
    async with open_runtimes(
        retry=RETRY, checkpoint_grace=GRACE_SECONDS, rng=random.Random(SEED)
    ) as runtimes:
        nursery.start_soon(
            functools.partial(
                dispatcher.run, dispatcher_inbox, writer_send, void_suspension=runtimes.void
            )
        )
        found = Pipeline(writer_send)
        handlers = worker.Handlers(registry, runtimes, clock=wall_clock)
        for name in ("w1", "w2"):
            me = await request(writer_send, lambda reply, name=name: CreateWorker(name, reply))
            inbox_send, inbox = trio.open_memory_channel[WorkerMessage](math.inf)
            links = worker.Links(inbox, inbox_send, dispatcher_send, writer_send)
            dispatcher_send.send_nowait(WorkerJoined(me.id, inbox_send))
            nursery.start_soon(
                functools.partial(worker.run, me.id, links, handlers, heartbeat_interval=math.inf)
            )
            found.worker_ids.append(me.id)
        yield found
        nursery.cancel_scope.cancel()


class Starts:
    """Handlers that note when they start, fail, or are cancelled."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.send, self.receive = trio.open_memory_channel[float](math.inf)
        self._cancelled, self.cancellations = trio.open_memory_channel[float](math.inf)

    def note(self) -> None:
        self.times.append(trio.current_time())
        self.send.send_nowait(trio.current_time())

    async def started(self) -> float:
        return await self.receive.receive()

    async def cancelled(self) -> float:
        """The next cancellation of a handler: when it came."""
        return await self.cancellations.receive()

    async def flaky(self, payload: Mapping[str, Any]) -> None:
        self.note()
        raise ValueError(f"failure {len(self.times)}")

    async def refuse(self, payload: Mapping[str, Any]) -> None:
        self.note()
        raise Permanent("card declined")

    async def leave(self, payload: Mapping[str, Any]) -> None:
        self.note()
        raise SystemExit(3)

    async def hang(self, payload: Mapping[str, Any]) -> None:
        self.note()
        try:
            await trio.sleep_forever()
        finally:
            self._cancelled.send_nowait(trio.current_time())

    async def hang_asyncio(self, payload: Mapping[str, Any]) -> None:
        self.note()
        try:
            await asyncio.sleep(3600)
        finally:
            self._cancelled.send_nowait(trio.current_time())


@pytest.fixture
def starts(registry: Registry) -> Starts:
    found = Starts()
    registry.task("flaky")(found.flaky)
    registry.task("refuse")(found.refuse)
    registry.task("hang")(found.hang)
    registry.task("leave")(found.leave)
    registry.task("hang_asyncio", runtime="asyncio")(found.hang_asyncio)
    return found


# --- scheduled tasks ---


async def test_a_scheduled_task_is_handed_ahead_and_starts_at_its_time(
    pipeline: Pipeline, starts: Starts, mock_clock: trio.testing.MockClock
) -> None:
    """The commit that hands it to a worker comes ``SCHEDULE_LEAD_SECONDS`` early; the
    handler starts at the task's time by the wall clock, never before, and that time is
    its ``started_at``."""
    due = wall_clock() + timedelta(seconds=10)
    task = await pipeline.submit("hang", scheduled_at=due)

    begun = EPOCH + timedelta(seconds=await starts.started())
    held = await pipeline.settled(task.id, TaskStatus.RUNNING)

    assert due <= begun < due + timedelta(milliseconds=1)
    assert held.started_at == due
    assert held.updated_at == due - timedelta(seconds=SCHEDULE_LEAD_SECONDS)


# --- retries ---


async def test_a_failing_task_retries_after_capped_jittered_backoff_then_fails(
    pipeline: Pipeline, starts: Starts, mock_clock: trio.testing.MockClock
) -> None:
    rng = random.Random(SEED)
    first_wait, second_wait = RETRY.delay(1, rng), RETRY.delay(2, rng)
    assert 5.0 <= first_wait <= 10.0
    assert 7.5 <= second_wait <= 15.0  # capped: 10 * 2 would be 20

    task = await pipeline.submit("flaky", max_attempts=3)
    begun = await starts.started()
    waiting = await pipeline.settled(task.id, TaskStatus.SCHEDULED)
    assert (waiting.error, waiting.attempts, waiting.worker_id) == (
        "ValueError: failure 1",
        1,
        None,
    )
    assert waiting.scheduled_at == pytest.approx(
        EPOCH + timedelta(seconds=begun + first_wait), abs=timedelta(milliseconds=1)
    )

    # The claim after the promotion may add a poll's 10 ms of mock time.
    assert await starts.started() - begun == pytest.approx(first_wait, abs=0.05)
    assert await starts.started() - begun == pytest.approx(first_wait + second_wait, abs=0.1)

    failed = await pipeline.settled(task.id, TaskStatus.FAILED)
    assert (failed.error, failed.attempts, failed.max_attempts) == ("ValueError: failure 3", 3, 3)
    assert len(starts.times) == 3


async def test_one_attempt_by_default_means_no_retry(pipeline: Pipeline, starts: Starts) -> None:
    task = await pipeline.submit("flaky")

    failed = await pipeline.settled(task.id, TaskStatus.FAILED)

    assert (failed.attempts, failed.max_attempts, len(starts.times)) == (1, 1, 1)


async def test_a_permanent_error_fails_at_once_with_attempts_left(
    pipeline: Pipeline, starts: Starts
) -> None:
    task = await pipeline.submit("refuse", max_attempts=5)

    failed = await pipeline.settled(task.id, TaskStatus.FAILED)

    assert (failed.error, failed.attempts, len(starts.times)) == ("Permanent: card declined", 1, 1)


async def test_a_handler_calling_sys_exit_fails_its_task_and_nothing_else(
    pipeline: Pipeline, starts: Starts, mock_clock: trio.testing.MockClock
) -> None:
    task = await pipeline.submit("leave", max_attempts=2)
    await starts.started()
    await starts.started()  # retried after its backoff, in mock time

    failed = await pipeline.settled(task.id, TaskStatus.FAILED)

    assert (failed.error, failed.attempts) == ("SystemExit: 3", 2)
    after = await pipeline.submit("taskq.echo", {"still": "here"})
    assert (await pipeline.settled(after.id, TaskStatus.COMPLETED)).result == {"still": "here"}


# --- timeouts ---


async def test_a_timeout_cancels_a_trio_handler_and_fails_the_task(
    pipeline: Pipeline, starts: Starts, mock_clock: trio.testing.MockClock
) -> None:
    task = await pipeline.submit("hang", timeout=5.0)
    begun = await starts.started()

    assert await starts.cancelled() == pytest.approx(begun + 5.0, abs=0.1)
    failed = await pipeline.settled(task.id, TaskStatus.FAILED)

    assert failed.error == "timed out after 5 s"
    assert failed.completed_at == pytest.approx(
        EPOCH + timedelta(seconds=begun + 5.0), abs=timedelta(milliseconds=100)
    )


async def test_a_timeout_cancels_an_asyncio_handler(
    pipeline: Pipeline, starts: Starts, mock_clock: trio.testing.MockClock
) -> None:
    task = await pipeline.submit("hang_asyncio", timeout=2.5)

    begun = await starts.started()
    assert await starts.cancelled() == pytest.approx(begun + 2.5, abs=0.1)
    failed = await pipeline.settled(task.id, TaskStatus.FAILED)

    assert failed.error == "timed out after 2.5 s"


async def test_a_timed_out_task_with_attempts_left_is_retried(
    pipeline: Pipeline, starts: Starts, mock_clock: trio.testing.MockClock
) -> None:
    task = await pipeline.submit("hang", timeout=1.0, max_attempts=2)
    for _ in range(2):
        begun = await starts.started()
        assert await starts.cancelled() == pytest.approx(begun + 1.0, abs=0.1)

    failed = await pipeline.settled(task.id, TaskStatus.FAILED)

    assert (len(starts.times), failed.attempts, failed.error) == (2, 2, "timed out after 1 s")


def _process_is_gone(pid: int) -> bool:
    """Killed and reaped, or at least dead (a zombie is not running code)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def _read_pid(pid_file: Path) -> int | None:
    text = pid_file.read_text() if pid_file.exists() else ""
    return int(text) if text else None


async def _pid_written(pid_file: Path) -> int:
    await eventually(
        _async(_read_pid, pid_file), within=WAIT_SECONDS, what="the process handler to start"
    )
    pid = _read_pid(pid_file)
    assert pid is not None
    return pid


@pytest.fixture
def process_handlers(registry: Registry) -> Registry:
    registry.task("spin", runtime=Runtime.PROCESS)(runtime_handlers.spin)
    registry.task("square", runtime=Runtime.PROCESS)(runtime_handlers.square)
    return registry


async def test_a_timeout_kills_a_busy_process_handler_and_the_pool_goes_on(
    pipeline: Pipeline, process_handlers: Registry, tmp_path: Path
) -> None:
    warm = await pipeline.submit("square", {"n": 2})
    assert (await pipeline.settled(warm.id, TaskStatus.COMPLETED)).result["square"] == 4
    pid_file = tmp_path / "pid"

    task = await pipeline.submit("spin", {"pid_file": str(pid_file)}, timeout=1.0)
    pid = await _pid_written(pid_file)
    failed = await pipeline.settled(task.id, TaskStatus.FAILED)

    assert failed.error == "timed out after 1 s"
    await eventually(_async(_process_is_gone, pid), within=WAIT_SECONDS, what="the kill")
    after = await pipeline.submit("square", {"n": 3})
    done = await pipeline.settled(after.id, TaskStatus.COMPLETED)
    assert done.result["square"] == 9
    assert done.result["pid"] != pid


async def test_deleting_a_running_process_task_kills_its_process(
    pipeline: Pipeline, process_handlers: Registry, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    task = await pipeline.submit("spin", {"pid_file": str(pid_file)})
    pid = await _pid_written(pid_file)

    await pipeline.delete(task.id)

    await eventually(_async(_process_is_gone, pid), within=WAIT_SECONDS, what="the kill")
    after = await pipeline.submit("square", {"n": 5})
    assert (await pipeline.settled(after.id, TaskStatus.COMPLETED)).result["square"] == 25


async def test_with_process_handlers_registered_the_pool_starts_one_process_per_core() -> None:
    async with open_runtimes(warm_processes=True) as runtimes:

        def all_up() -> bool:
            return bool(runtimes.processes.statistics().idle_workers == (os.cpu_count() or 1))

        await eventually(_async(all_up), within=WAIT_SECONDS, what="the warm-up")


def _async(check: Any, *args: Any) -> Any:
    async def checked() -> bool:
        return bool(check(*args))

    return checked


# --- results every runtime must refuse, and asyncio's loop ---


@pytest.mark.parametrize(
    ("handler", "runtime"),
    [
        (runtime_handlers.trio_not_json, Runtime.TRIO),
        (runtime_handlers.asyncio_not_json, Runtime.ASYNCIO),
        (runtime_handlers.thread_not_json, Runtime.THREAD),
        (runtime_handlers.process_not_json, Runtime.PROCESS),
    ],
)
async def test_a_result_that_is_not_json_fails_the_task_in_every_runtime(
    pipeline: Pipeline, registry: Registry, handler: Any, runtime: Runtime
) -> None:
    registry.task("odd", runtime=runtime, max_attempts=3)(handler)

    task = await pipeline.submit("odd", max_attempts=3)
    failed = await pipeline.settled(task.id, TaskStatus.FAILED)

    assert failed.error == (
        "the handler's result is not JSON-serialisable: "
        "Object of type datetime is not JSON serializable"
    )
    assert failed.attempts == 1  # not retried: it would return the same again
    after = await pipeline.submit("taskq.echo", {"still": "fine"})
    assert (await pipeline.settled(after.id, TaskStatus.COMPLETED)).result == {"still": "fine"}


async def test_a_result_json_could_not_write_does_not_spoil_the_next_result(
    pipeline: Pipeline, registry: Registry
) -> None:
    # The same containers come back, fixed: nothing of the failed encoding may linger.
    shared: list[dict[str, Any]] = [{"when": datetime(2026, 1, 1)}]

    @registry.task("shared")
    async def give_shared(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
        return shared

    failed = await pipeline.settled((await pipeline.submit("shared")).id, TaskStatus.FAILED)
    assert failed.error is not None
    assert "Object of type datetime is not JSON serializable" in failed.error
    shared[0]["when"] = "2026-01-01"
    task = await pipeline.submit("shared")
    completed = await pipeline.settled(task.id, TaskStatus.COMPLETED)
    assert completed.result == [{"when": "2026-01-01"}]


async def test_asyncio_handlers_run_on_the_shared_asyncio_loop(
    pipeline: Pipeline, registry: Registry
) -> None:
    registry.task("aio", runtime="asyncio")(runtime_handlers.asyncio_echo)

    task = await pipeline.submit("aio", {"n": 1})

    done = await pipeline.settled(task.id, TaskStatus.COMPLETED)
    assert done.result == {"loop": "TrioEventLoop", "n": 1}


# --- pause at a checkpoint ---


class Stepper:
    """Counts up one step at a time, keeping its sum in a local variable."""

    def __init__(self) -> None:
        self.starts = 0
        self.steps: list[int] = []
        self.cancelled = trio.Event()
        self._go, self._steps = trio.open_memory_channel[None](math.inf)
        self._at_step, self.at_step = trio.open_memory_channel[int](math.inf)

    def step(self) -> None:
        """Let the handler take one more step."""
        self._go.send_nowait(None)

    async def reached(self) -> int:
        return await self.at_step.receive()

    async def count(self, payload: Mapping[str, Any], context: TaskContext) -> dict[str, Any]:
        self.starts += 1
        total = 0
        try:
            for n in range(1, payload["steps"] + 1):
                await self._steps.receive()
                total += n
                self.steps.append(context.worker_id)
                await context.progress({"done": n})
                self._at_step.send_nowait(n)
                await context.checkpoint()
        except trio.Cancelled:
            self.cancelled.set()
            raise
        return {"total": total}

    async def oblivious(self, payload: Mapping[str, Any]) -> str:
        self.starts += 1
        try:
            await self._steps.receive()
        except trio.Cancelled:
            self.cancelled.set()
            raise
        return "done"

    async def stuck(self, payload: Mapping[str, Any], context: TaskContext) -> str:
        """Checkpoints once, then never again."""
        self.starts += 1
        await context.checkpoint()
        self._at_step.send_nowait(1)
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.cancelled.set()
            raise
        return "never"


@pytest.fixture
def stepper(registry: Registry) -> Stepper:
    found = Stepper()
    registry.task("count")(found.count)
    registry.task("oblivious")(found.oblivious)
    registry.task("stuck")(found.stuck)
    return found


async def test_pause_suspends_at_a_checkpoint_and_resume_continues_with_local_state(
    pipeline: Pipeline, stepper: Stepper, registry: Registry
) -> None:
    task = await pipeline.submit("count", {"steps": 3})
    stepper.step()
    assert await stepper.reached() == 1
    await pipeline.pause(task.id)
    await trio.testing.wait_all_tasks_blocked()  # the pause has reached the worker
    # Paused between checkpoints: it takes its step, then stops at the next checkpoint.
    stepper.step()
    assert await stepper.reached() == 2

    paused = await pipeline.get(task.id)
    assert (paused.status, paused.attempts) == (TaskStatus.PAUSED, 0)
    # Both workers are free while the execution waits: two other tasks run at once.
    held = trio.Event()
    both_running = trio.Event()
    running: list[int] = []

    async def pair(payload: Mapping[str, Any]) -> int:
        running.append(1)
        if len(running) == 2:
            both_running.set()
        await both_running.wait()
        await held.wait()
        return len(running)

    registry.task("pair")(pair)
    others = [await pipeline.submit("pair"), await pipeline.submit("pair")]
    await both_running.wait()
    held.set()
    for other in others:
        await pipeline.settled(other.id, TaskStatus.COMPLETED)

    await pipeline.resume(task.id)
    stepper.step()
    assert await stepper.reached() == 3

    done = await pipeline.settled(task.id, TaskStatus.COMPLETED)
    assert done.result == {"total": 6}  # 1 + 2 + 3: the sum survived the pause
    assert stepper.starts == 1
    assert not stepper.cancelled.is_set()
    assert (done.progress, done.attempts) == ({"done": 3}, 1)
    assert set(stepper.steps) <= set(pipeline.worker_ids)


async def test_progress_is_written_while_the_handler_runs(
    pipeline: Pipeline, stepper: Stepper
) -> None:
    task = await pipeline.submit("count", {"steps": 2})
    stepper.step()
    await stepper.reached()

    async def reported() -> bool:
        return (await pipeline.get(task.id)).progress == {"done": 1}

    await eventually(reported, within=WAIT_SECONDS, what="the progress write")
    stepper.step()
    await pipeline.settled(task.id, TaskStatus.COMPLETED)


async def test_a_handler_that_never_checkpoints_is_cancelled_and_rerun_on_resume(
    pipeline: Pipeline, stepper: Stepper
) -> None:
    task = await pipeline.submit("oblivious")
    await eventually(_async(lambda: stepper.starts == 1), within=WAIT_SECONDS, what="a start")

    await pipeline.pause(task.id)

    await stepper.cancelled.wait()
    await pipeline.resume(task.id)
    await eventually(_async(lambda: stepper.starts == 2), within=WAIT_SECONDS, what="a rerun")
    stepper.step()
    assert (await pipeline.settled(task.id, TaskStatus.COMPLETED)).result == "done"


async def test_a_checkpointing_handler_stuck_past_the_grace_is_cancelled(
    pipeline: Pipeline, stepper: Stepper, mock_clock: trio.testing.MockClock
) -> None:
    task = await pipeline.submit("stuck")
    await stepper.reached()
    await pipeline.pause(task.id)
    paused_at = trio.current_time()

    await stepper.cancelled.wait()

    assert trio.current_time() - paused_at == pytest.approx(GRACE_SECONDS, abs=0.1)
    await pipeline.resume(task.id)
    assert await stepper.reached() == 1
    assert stepper.starts == 2


async def test_deleting_a_paused_task_ends_its_suspended_execution(
    pipeline: Pipeline, stepper: Stepper
) -> None:
    task = await pipeline.submit("count", {"steps": 5})
    stepper.step()
    await stepper.reached()
    await pipeline.pause(task.id)
    assert (await pipeline.get(task.id)).status == TaskStatus.PAUSED

    await pipeline.delete(task.id)

    await stepper.cancelled.wait()
    assert stepper.starts == 1


async def test_a_suspended_execution_does_not_use_up_its_time_limit(
    pipeline: Pipeline, stepper: Stepper, mock_clock: trio.testing.MockClock
) -> None:
    task = await pipeline.submit("count", {"steps": 3}, timeout=10.0)
    stepper.step()
    await stepper.reached()
    await pipeline.pause(task.id)
    await trio.testing.wait_all_tasks_blocked()
    stepper.step()
    await stepper.reached()
    await trio.sleep(60)  # mock time: far past the time limit, while suspended

    await pipeline.resume(task.id)
    stepper.step()
    await stepper.reached()

    assert (await pipeline.settled(task.id, TaskStatus.COMPLETED)).result == {"total": 6}
    assert stepper.starts == 1
