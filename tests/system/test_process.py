"""Kill, restart and stop the real process: what was acknowledged is never lost.

A SIGKILL runs no shutdown code at all, so these tests check what the database
alone carries across a crash: every task answered 201 is there once and ends
completed, tasks that were ``running`` run again (at-least-once), scheduled and
paused tasks keep their state, and worker rows are reused, not piled up.
"""

from __future__ import annotations

import itertools
import random
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.system.conftest import Launcher, Task, Taskq, eventually, read_runs, utc_in

# The real process on its default backend, an SQLite file; docs/cluster.md's
# PostgreSQL cluster has its own process tests in test_cluster.py.
pytestmark = pytest.mark.sqlite_only

SUBMITTERS = 8


def _by_id(tasks: list[Task]) -> dict[int, Task]:
    return {task["id"]: task for task in tasks}


def _assert_listed_once(server: Taskq, submitted: dict[int, Task]) -> list[Task]:
    listed = server.tasks()
    ids = [task["id"] for task in listed]
    assert len(ids) == len(set(ids)) == len(submitted)
    assert set(ids) == set(submitted)
    return listed


def _all_done(server: Taskq, ids: set[int]) -> bool:
    statuses = {task["id"]: task["status"] for task in server.tasks()}
    assert not any(statuses.get(task_id) == "failed" for task_id in ids), statuses
    return all(statuses.get(task_id) == "completed" for task_id in ids)


def _submit_mix(server: Taskq, log: Path, echoes: int, records: int) -> list[Task]:
    """Echo and record tasks interleaved, in submission order."""
    names = ["taskq.echo"] * echoes + ["tests.record"] * records
    random.Random(len(names)).shuffle(names)
    submitted = []
    for number, name in enumerate(names):
        payload: dict[str, Any] = {"n": number}
        if name == "tests.record":
            payload["log"] = str(log)
        submitted.append(server.submit(name, payload))
    return submitted


def _assert_results(task: Task) -> None:
    assert task["status"] == "completed", task
    if task["name"] == "taskq.echo":
        assert task["result"] == task["payload"]
    elif task["name"] == "taskq.sleep":
        assert task["result"] == {"slept": task["payload"]["seconds"]}


@pytest.mark.timeout(120)
def test_sigkill_while_tasks_run_loses_nothing_and_reruns_the_running(
    launch: Launcher, tmp_path: Path
) -> None:
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    first = launch("--workers", "4")
    workers_before = first.workers()
    # Three tasks hold three of the four workers until the gate opens (after the
    # kill); the fourth works through the rest until it takes a sleep, behind
    # which the last batch stays queued.
    gated = [
        first.submit("tests.gated", {"log": str(log), "gate": str(gate)}, priority=4)
        for _ in range(3)
    ]
    early = _submit_mix(first, log, echoes=25, records=10)
    sleeps = [first.submit("taskq.sleep", {"seconds": 3}) for _ in range(2)]
    late = _submit_mix(first, log, echoes=25, records=10)
    submitted = _by_id(gated + early + sleeps + late)
    gated_ids = {task["id"] for task in gated}

    def some_running_some_queued() -> bool:
        running = {task["id"] for task in first.tasks("running")}
        return gated_ids <= running and len(first.tasks("pending")) > 0

    eventually(some_running_some_queued, what="gated tasks running and others queued")
    before = {task["id"]: task["status"] for task in first.tasks()}
    first.kill()

    gate.touch()
    second = launch("--workers", "4")
    eventually(lambda: _all_done(second, set(submitted)), within=30, what="every task completed")

    for task in _assert_listed_once(second, submitted):
        _assert_results(task)
    runs = read_runs(log)
    for task_id in gated_ids:
        assert runs[task_id][0] == 1
        assert len(runs[task_id]) >= 2, f"task {task_id} was running at the kill: must run again"
    record_ids = {task_id for task_id, task in submitted.items() if task["name"] == "tests.record"}
    assert record_ids <= set(runs)
    for task_id in record_ids:
        if before[task_id] == "completed":
            assert runs[task_id] == [1], f"task {task_id} was completed at the kill: ran again"
    assert [w["id"] for w in second.workers()] == [w["id"] for w in workers_before]


@pytest.mark.timeout(120)
def test_sigkill_while_tasks_are_queued_keeps_every_state(launch: Launcher, tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    first = launch("--workers", "0")
    queued = _submit_mix(first, log, echoes=30, records=20)
    later = first.submit("taskq.echo", {"later": True}, scheduled_at=utc_in(3600))
    soon = first.submit("tests.record", {"log": str(log)}, scheduled_at=utc_in(2))
    paused = first.submit("tests.record", {"log": str(log)})
    response = first.client.patch(f"/api/tasks/{paused['id']}/pause")
    assert response.status_code == 200
    assert response.json()["status"] == "paused"
    submitted = _by_id([*queued, later, soon, paused])
    assert {task["status"] for task in queued} == {"pending"}
    assert (later["status"], soon["status"]) == ("scheduled", "scheduled")
    assert first.workers() == []
    first.kill()

    second = launch("--workers", "3")
    runnable = {task["id"] for task in queued} | {soon["id"]}
    eventually(lambda: _all_done(second, runnable), within=30, what="queued tasks completed")

    listed = _by_id(_assert_listed_once(second, submitted))
    for task_id in runnable:
        _assert_results(listed[task_id])
    assert listed[later["id"]]["status"] == "scheduled"
    assert listed[later["id"]]["scheduled_at"] == later["scheduled_at"]
    assert listed[paused["id"]]["status"] == "paused"
    assert listed[soon["id"]]["started_at"] >= soon["scheduled_at"]
    # Nothing ran before the kill (no workers), so each ran exactly once after it.
    assert read_runs(log) == {
        task_id: [1] for task_id in runnable if submitted[task_id]["name"] == "tests.record"
    }
    assert len(second.workers()) == 3

    response = second.client.patch(f"/api/tasks/{paused['id']}/resume")
    assert response.status_code == 200
    eventually(lambda: _all_done(second, {paused["id"]}), what="the resumed task completed")
    assert read_runs(log)[paused["id"]] == [1]


def test_sigkill_during_a_stream_of_submissions_keeps_every_acknowledged_task(
    launch: Launcher,
) -> None:
    first = launch("--workers", "4")
    acknowledged: list[int] = []
    refused: list[BaseException] = []
    answered_otherwise: list[str] = []

    def submit_until_killed() -> None:
        with httpx.Client(base_url=first.url, timeout=10) as client:
            for number in itertools.count():
                try:
                    response = client.post(
                        "/api/tasks/", json={"name": "taskq.echo", "payload": {"n": number}}
                    )
                except httpx.TransportError as exc:
                    refused.append(exc)
                    return
                if response.status_code != 201:
                    answered_otherwise.append(response.text)
                    return
                acknowledged.append(response.json()["id"])

    submitters = [threading.Thread(target=submit_until_killed) for _ in range(SUBMITTERS)]
    for submitter in submitters:
        submitter.start()
    try:
        eventually(lambda: len(acknowledged) >= 300, what="300 acknowledged submissions")
    finally:
        first.kill()
        for submitter in submitters:
            submitter.join(timeout=30)
    assert answered_otherwise == []
    assert len(refused) == SUBMITTERS, "every submitter stops at the kill, not before"

    second = launch("--workers", "4")
    listed = second.tasks()
    ids = [task["id"] for task in listed]
    assert len(ids) == len(set(ids))
    assert set(acknowledged) <= set(ids)
    # A request in flight at the kill may have been committed without its answer.
    assert len(ids) <= len(acknowledged) + SUBMITTERS
    eventually(lambda: _all_done(second, set(ids)), within=30, what="every task completed")
    for task in second.tasks():
        _assert_results(task)


def test_restarts_reuse_worker_rows(launch: Launcher) -> None:
    first = launch("--workers", "2")
    response = first.client.post("/api/workers/", json={"name": "extra"})
    assert response.status_code == 201
    extra = response.json()
    before = first.workers()
    assert len(before) == 3
    first.send_signal(signal.SIGTERM)
    assert first.wait_exit() == 0

    second = launch("--workers", "2")
    assert [w["id"] for w in second.workers()] == [w["id"] for w in before]
    second.kill()

    third = launch("--workers", "2")
    after = third.workers()
    assert [(w["id"], w["name"], w["status"]) for w in after] == [
        (w["id"], w["name"], w["status"]) for w in before
    ]
    # The worker created over the API came back as an actor that takes tasks.
    for worker in after:
        if worker["id"] != extra["id"]:
            response = third.client.patch(
                f"/api/workers/{worker['id']}/status", json={"status": "inactive"}
            )
            assert response.status_code == 200
    task = third.submit("taskq.echo", {"who": "extra"})
    eventually(lambda: third.task(task["id"])["status"] == "completed", what="echo completed")
    assert third.task(task["id"])["worker_id"] == extra["id"]


def test_sigterm_lets_a_short_task_finish_within_the_grace(launch: Launcher) -> None:
    first = launch("--workers", "1", "--grace", "10")
    task = first.submit("taskq.sleep", {"seconds": 1})
    eventually(lambda: first.task(task["id"])["status"] == "running", what="the sleep running")
    first.send_signal(signal.SIGTERM)
    assert first.wait_exit() == 0
    assert "received SIGTERM" in first.stderr()
    assert "Traceback" not in first.stderr()

    second = launch("--workers", "0")
    finished = second.task(task["id"])
    assert finished["status"] == "completed"
    assert finished["result"] == {"slept": 1}


def test_sigterm_requeues_a_task_that_outlives_the_grace(launch: Launcher, tmp_path: Path) -> None:
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    first = launch("--workers", "1", "--grace", "0.5")
    task = first.submit("tests.gated", {"log": str(log), "gate": str(gate)})
    eventually(lambda: first.task(task["id"])["status"] == "running", what="the task running")
    first.send_signal(signal.SIGTERM)
    assert first.wait_exit(within=5) == 0
    assert "Traceback" not in first.stderr()

    second = launch("--workers", "0")
    requeued = second.task(task["id"])
    assert (requeued["status"], requeued["worker_id"], requeued["started_at"]) == (
        "pending",
        None,
        None,
    )
    gate.touch()
    response = second.client.post("/api/workers/", json={"name": "after-restart"})
    assert response.status_code == 201
    eventually(lambda: second.task(task["id"])["status"] == "completed", what="task completed")
    assert read_runs(log) == {task["id"]: [1, 2]}


def test_sigint_exits_zero(launch: Launcher) -> None:
    server = launch("--workers", "1")
    task = server.submit("taskq.echo", {"x": 1})
    eventually(lambda: server.task(task["id"])["status"] == "completed", what="echo completed")
    server.send_signal(signal.SIGINT)
    assert server.wait_exit() == 0
    assert "received SIGINT" in server.stderr()
    assert "Traceback" not in server.stderr()
