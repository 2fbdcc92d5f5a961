"""Workers when something breaks: a handler that escapes its execution, a worker that dies.

The whole system runs in-process on the test's database; the faults are a
handler raising what no ``except Exception`` catches, and a bug injected into
a worker actor while it holds a task. Either way the task ends with a clear
error or runs again, the supervisor restarts what crashed, and no other task
is lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import trio

from taskq import system
from taskq.actors import worker
from taskq.config import Settings
from taskq.models import Task, TaskStatus
from taskq.registry import Registry, TaskContext
from tests.actors.conftest import wait
from tests.conftest import eventually

OTHERS = 20


class Escape(BaseException):
    """Not an ``Exception``: what a handler's own ``except Exception`` never stops."""


async def _start(nursery: trio.Nursery, settings: Settings, registry: Registry) -> system.Running:
    running: system.Running = await nursery.start(
        lambda task_status: system.run(
            settings, registry, serve_http=False, task_status=task_status
        )
    )
    return running


async def _settled(running: system.Running, task_id: int, status: TaskStatus) -> Task:
    async def reached() -> bool:
        return (await running.queue.get_task(task_id)).status == status

    await eventually(reached, what=f"task {task_id} {status}")
    return await running.queue.get_task(task_id)


async def _all_completed(running: system.Running, tasks: list[Task]) -> None:
    for task in tasks:
        done = await _settled(running, task.id, TaskStatus.COMPLETED)
        assert done.result == task.payload


@pytest.mark.parametrize("escaping", [Escape("out of the handler"), KeyboardInterrupt("mine")])
async def test_a_handler_raising_a_base_exception_fails_its_task_and_nothing_else(
    nursery: trio.Nursery, settings: Settings, registry: Registry, escaping: BaseException
) -> None:
    runs = 0

    @registry.task("escape", max_attempts=2)
    async def escape(payload: Mapping[str, Any]) -> None:
        nonlocal runs
        runs += 1
        raise escaping

    running = await _start(nursery, settings, registry)
    task = await running.queue.submit("escape", {})
    others = [await running.queue.submit("taskq.echo", {"n": n}) for n in range(OTHERS)]

    failed = await _settled(running, task.id, TaskStatus.FAILED)

    assert failed.error == f"{type(escaping).__name__}: {escaping}"
    assert (failed.attempts, runs) == (2, 2), "retried like any failure"
    await _all_completed(running, others)
    assert running.monitor.liveness.down_names() == []
    after = await running.queue.submit("taskq.echo", {"still": "serving"})
    await _all_completed(running, [after])


async def test_a_worker_that_crashes_holding_a_task_is_restarted_and_the_task_runs_again(
    nursery: trio.Nursery,
    settings: Settings,
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started, cancelled, crash = trio.Event(), trio.Event(), trio.Event()
    holder: list[int] = []
    beats: list[int] = []

    @registry.task("victim")
    async def victim(payload: Mapping[str, Any], context: TaskContext) -> dict[str, int]:
        if not holder:
            holder.append(context.worker_id)
            started.set()
            try:
                await trio.sleep_forever()
            finally:
                cancelled.set()
        return {"attempt": context.attempt}

    real_heartbeat = worker._heartbeat

    async def heartbeat_with_a_bug(worker_id: int, *args: Any) -> None:
        """A fault in the worker's own code, beside the execution it holds."""
        beats.append(worker_id)
        if beats.count(worker_id) == 1:
            await crash.wait()
            if worker_id == holder[0]:
                raise RuntimeError("injected: the worker actor crashes")
        await real_heartbeat(worker_id, *args)

    monkeypatch.setattr(worker, "_heartbeat", heartbeat_with_a_bug)
    running = await _start(nursery, settings, registry)
    task = await running.queue.submit("victim", {})
    await wait(started)
    before = [await running.queue.submit("taskq.echo", {"n": n}) for n in range(OTHERS)]

    crash.set()
    await wait(cancelled)
    during = [await running.queue.submit("taskq.echo", {"n": n}) for n in range(OTHERS)]

    done = await _settled(running, task.id, TaskStatus.COMPLETED)
    # The crashed execution gave its attempt back; the fence moved on to a new claim.
    assert (done.attempts, done.attempt, done.result) == (1, 2, {"attempt": 2})
    assert beats.count(holder[0]) == 2, "the crashed worker was started again"
    await _all_completed(running, before + during)
    assert running.monitor.liveness.down_names() == []
