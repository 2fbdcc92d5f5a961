"""Faults under the real process: random SIGKILLs under load, misbehaving handlers,
a full disk, SIGTERM with tasks running. Nothing acknowledged is ever lost.

The random kills are seeded; the seed is printed, and ``TASKQ_FAULTS_SEED``
replays a run. Handlers that misbehave live in ``tests/system/fault_handlers.py``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.system.conftest import Launcher, Task, eventually, read_runs, utc_in

pytestmark = pytest.mark.sqlite_only

FAULT_HANDLERS = "tests.system.fault_handlers"
KILLS = 5
SUBMITTERS = 4
TERMINAL = {"completed", "failed"}
# docs/API.md: the answers to a pause or a resume the task's state does not allow.
CANNOT_PAUSE = (
    "Task not found or cannot be paused (must be in PENDING, SCHEDULED, or RUNNING state)"
)
CANNOT_RESUME = "Task not found or cannot be resumed (must be in PAUSED state)"
FAST_RETRIES = ("--retry-backoff", "0.05", "--retry-backoff-max", "0.2")


def _seed() -> int:
    seed = int(os.environ.get("TASKQ_FAULTS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"random seed: {seed} (replay with TASKQ_FAULTS_SEED={seed})")
    return seed


# --- SIGKILL at random moments, five times over, on one database ---


@dataclass
class Load:
    """What the clients were told: every acknowledged task with its kind, and the
    tasks whose pause was acknowledged and not yet undone by a resume."""

    kinds: dict[int, str] = field(default_factory=dict)
    paused: set[int] = field(default_factory=set)
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _body(kind: str, rng: random.Random) -> dict[str, Any]:
    match kind:
        case "echo":
            return {"name": "taskq.echo", "payload": {"n": rng.randrange(10**6)}}
        case "sleep" | "paused":
            return {"name": "taskq.sleep", "payload": {"seconds": rng.choice([0.05, 0.2, 0.5])}}
        case "fail":
            return {"name": "taskq.fail", "payload": {"message": "on purpose"}}
        case "fail_retried":
            return {"name": "taskq.fail", "payload": {"message": "again"}, "max_attempts": 3}
        case "flaky":
            return {"name": "tests.flaky", "payload": {"succeed_at": 3}, "max_attempts": 4}
        case "scheduled":
            return {
                "name": "taskq.echo",
                "payload": {"at": True},
                "scheduled_at": utc_in(rng.uniform(0.2, 3.0)),
            }
    raise AssertionError(kind)


KINDS = ["echo", "echo", "sleep", "fail", "fail_retried", "flaky", "scheduled", "paused"]


def _submit_until_killed(url: str, load: Load, rng: random.Random) -> None:
    """Create tasks of every kind, pause some and resume them later, until the server
    goes away. Every answer but 201, 200 and a documented 404 refusal is recorded as
    unexpected."""
    with httpx.Client(base_url=url, timeout=10) as client:
        try:
            while True:
                kind = rng.choice(KINDS)
                response = client.post("/api/tasks/", json=_body(kind, rng))
                if response.status_code != 201:
                    load.unexpected.append(f"create: {response.status_code} {response.text}")
                    return
                task_id = response.json()["id"]
                with load.lock:
                    load.kinds[task_id] = kind
                if kind == "paused":
                    _pause(client, load, task_id)
                with load.lock:
                    waiting = sorted(load.paused)
                if waiting and rng.random() < 0.3:
                    _resume(client, load, rng.choice(waiting))
        except httpx.TransportError:
            return


def _pause(client: httpx.Client, load: Load, task_id: int) -> None:
    response = client.patch(f"/api/tasks/{task_id}/pause")
    if response.status_code == 200:
        with load.lock:
            load.paused.add(task_id)
    elif not _documented_refusal(response, CANNOT_PAUSE):  # it may have finished already
        load.unexpected.append(f"pause: {response.status_code} {response.text}")


def _resume(client: httpx.Client, load: Load, task_id: int) -> None:
    with load.lock:
        if task_id not in load.paused:
            return
        load.paused.discard(task_id)
    response = client.patch(f"/api/tasks/{task_id}/resume")
    # Refused: an earlier resume of it was committed, its answer lost in a kill.
    if response.status_code != 200 and not _documented_refusal(response, CANNOT_RESUME):
        load.unexpected.append(f"resume: {response.status_code} {response.text}")


def _documented_refusal(response: httpx.Response, detail: str) -> bool:
    return response.status_code == 404 and response.json() == {"detail": detail}


def _assert_consistent_with_its_kind(task: Task, kind: str) -> None:
    match kind:
        case "echo" | "scheduled":
            assert (task["status"], task["result"]) == ("completed", task["payload"]), task
            if kind == "scheduled":
                assert task["started_at"] >= task["scheduled_at"], task
        case "sleep" | "paused":
            assert task["status"] == "completed", task
            assert task["result"] == {"slept": task["payload"]["seconds"]}, task
        case "fail":
            assert (task["status"], task["error"], task["attempts"]) == (
                "failed",
                "TaskFailed: on purpose",
                1,
            ), task
        case "fail_retried":
            assert (task["status"], task["error"], task["attempts"]) == (
                "failed",
                "TaskFailed: again",
                3,
            ), task
        case "flaky":
            assert task["status"] == "completed", task
            assert task["attempts"] <= 3, task
        case _:
            raise AssertionError(kind)


@pytest.mark.timeout(240)
def test_random_sigkills_under_a_mixed_load_lose_no_acknowledged_task(launch: Launcher) -> None:
    rng = random.Random(_seed())
    load = Load()
    kills: list[tuple[int, int]] = []
    args = ("--workers", "4", "--tasks", FAULT_HANDLERS, *FAST_RETRIES)
    for round_number in range(KILLS):
        server = launch(*args)
        target = len(load.kinds) + rng.randint(30, 150)
        submitters = [
            threading.Thread(
                target=_submit_until_killed,
                args=(server.url, load, random.Random(rng.random())),
            )
            for _ in range(SUBMITTERS)
        ]
        for submitter in submitters:
            submitter.start()
        try:
            eventually(
                lambda target=target: len(load.kinds) >= target or bool(load.unexpected),
                within=60,
                what=f"{target} acknowledged tasks in round {round_number + 1}",
            )
        finally:
            server.kill()
            for submitter in submitters:
                submitter.join(timeout=30)
        kills.append((round_number + 1, len(load.kinds)))
        assert load.unexpected == []

    last = launch(*args)
    for task in last.tasks("paused"):
        response = last.client.patch(f"/api/tasks/{task['id']}/resume")
        assert response.status_code == 200, response.text

    def all_terminal() -> bool:
        return all(task["status"] in TERMINAL for task in last.tasks())

    eventually(all_terminal, within=60, interval=0.2, what="every task finished")
    listed = last.tasks()
    ids = [task["id"] for task in listed]
    assert len(ids) == len(set(ids)), "a task listed twice"
    by_id = {task["id"]: task for task in listed}
    missing = set(load.kinds) - set(by_id)
    assert missing == set(), f"acknowledged and lost: {sorted(missing)}"
    # A create in flight at a kill may be committed without its 201 reaching the client.
    unacknowledged = set(by_id) - set(load.kinds)
    assert len(unacknowledged) <= KILLS * SUBMITTERS
    for task_id, kind in load.kinds.items():
        _assert_consistent_with_its_kind(by_id[task_id], kind)
    print(
        f"{len(load.kinds)} acknowledged tasks over {KILLS} SIGKILLs (round, acknowledged so "
        f"far: {kills}); {len(unacknowledged)} committed without their answer; "
        f"statuses: { {s: sum(t['status'] == s for t in listed) for s in TERMINAL} }"
    )


# --- handlers that crash, hang, leak or kill their process ---


def _pid_gone(pid_file: Path) -> bool:
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A killed worker process stays a zombie until its parent reaps it.
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "zombie" in status.read_text()


@pytest.mark.timeout(120)
def test_handlers_that_crash_hang_or_leak_are_stopped_and_the_worker_keeps_serving(
    launch: Launcher, tmp_path: Path
) -> None:
    server = launch("--workers", "1", "--tasks", FAULT_HANDLERS)
    pids = {name: tmp_path / f"{name}.pid" for name in ("spin", "leak", "suicide")}
    misbehaving = [
        server.submit("tests.escape", {}),
        server.submit("tests.hang", {}, timeout=0.5),
        server.submit("tests.hang_thread", {"seconds": 30}, timeout=0.5),
        server.submit("tests.spin", {"pid_file": str(pids["spin"])}, timeout=3),
        server.submit("tests.leak", {"pid_file": str(pids["leak"]), "mib": 200}, timeout=5),
        server.submit("tests.suicide", {"pid_file": str(pids["suicide"])}),
    ]
    after = [server.submit("taskq.echo", {"n": n}) for n in range(10)]

    def all_finished() -> bool:
        return all(task["status"] in TERMINAL for task in server.tasks())

    eventually(all_finished, within=60, interval=0.1, what="every task finished")
    errors = {task["name"]: task["error"] for task in map(server.task, _ids(misbehaving))}
    assert errors["tests.escape"] == "Escape: out of the handler"
    assert errors["tests.hang"] == "timed out after 0.5 s"
    assert errors["tests.hang_thread"] == "timed out after 0.5 s"
    assert errors["tests.spin"] == "timed out after 3 s"
    assert errors["tests.leak"] == "timed out after 5 s"
    assert errors["tests.suicide"] == (
        "ProcessDied: the handler's worker process died: killed by SIGKILL"
    )
    for name, pid_file in pids.items():
        assert pid_file.exists(), f"{name} never started"
        eventually(lambda pid_file=pid_file: _pid_gone(pid_file), what=f"{name}'s process gone")
    worker_ids = {w["id"] for w in server.workers()}
    for task in map(server.task, _ids(after)):
        assert (task["status"], task["result"]) == ("completed", task["payload"]), task
        assert task["worker_id"] in worker_ids
    assert server.process.poll() is None
    ready = server.client.get("/readyz")
    assert ready.status_code == 200, ready.text


def _ids(tasks: list[Task]) -> list[int]:
    return [task["id"] for task in tasks]


# --- the SQLite file's disk full ---


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs of the test's own: filling it fills the database's disk.

    Mounting needs root (as in CI); elsewhere the test is skipped, and
    ``tests/actors/test_writer_faults.py`` still covers SQLITE_FULL.
    """
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(folder: Path) -> Path:
    """Write zeros until the disk refuses more.

    Unbuffered: a buffered file keeps what a short write left over and tries it again on
    close, where the full disk's ENOSPC would escape (as it did, now and then, depending on
    how much room the database had left).
    """
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 65536)
        except OSError:
            pass
    return filler


@pytest.mark.timeout(120)
def test_a_full_disk_refuses_writes_with_503_serves_reads_and_recovers_alone(
    launch: Launcher, small_disk: Path
) -> None:
    # A short dead-after makes heartbeats frequent: an outcome lost to the full disk
    # leaves its task running, and the next heartbeat puts it back in the queue.
    server = launch(
        "--workers", "2", "--db", f"sqlite:///{small_disk / 'taskq.db'}", "--dead-after", "2"
    )
    before = [server.submit("taskq.echo", {"n": n}) for n in range(20)]
    eventually(
        lambda: all(server.task(t["id"])["status"] == "completed" for t in before),
        what="the first tasks completed",
    )
    running = [server.submit("taskq.sleep", {"seconds": 1}) for _ in range(2)]
    eventually(
        lambda: all(server.task(t["id"])["status"] == "running" for t in running),
        what="two sleeps running",
    )
    filler = _fill(small_disk)

    acknowledged: list[Task] = []
    refusals: list[dict[str, Any]] = []
    big = {"blob": "x" * 256 * 1024}
    for _ in range(5):
        response = server.client.post("/api/tasks/", json={"name": "taskq.echo", "payload": big})
        if response.status_code == 201:
            acknowledged.append(response.json())
        else:
            assert response.status_code == 503, response.text
            refusals.append(response.json())
    assert len(refusals) >= 4, refusals
    for refusal in refusals:
        assert "database or disk is full" in refusal["detail"], refusal
        assert "sqlalche" not in refusal["detail"], refusal
    assert server.task(before[0]["id"])["result"] == {"n": 0}
    assert len(server.tasks()) >= len(before) + len(running)
    stats = server.client.get("/api/stats")
    assert stats.status_code == 200, stats.text

    filler.unlink()
    after = server.client.post("/api/tasks/", json={"name": "taskq.echo", "payload": big})
    assert after.status_code == 201, after.text
    acknowledged.append(after.json())

    everything = before + running + acknowledged

    def all_completed() -> bool:
        return all(server.task(t["id"])["status"] == "completed" for t in everything)

    eventually(all_completed, within=30, interval=0.1, what="every acknowledged task completed")
    ids = _ids(server.tasks())
    assert len(ids) == len(set(ids))
    assert set(_ids(everything)) <= set(ids)


# --- SIGTERM with tasks running ---


@pytest.mark.timeout(120)
def test_sigterm_drains_what_fits_in_the_grace_requeues_the_rest_and_a_restart_finishes_all(
    launch: Launcher, tmp_path: Path
) -> None:
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    first = launch("--workers", "4", "--grace", "3")
    gated = [
        first.submit("tests.gated", {"log": str(log), "gate": str(gate)}, priority=4)
        for _ in range(2)
    ]
    short = [first.submit("taskq.sleep", {"seconds": 0.5}, priority=4) for _ in range(2)]
    queued = [first.submit("tests.record", {"log": str(log)}) for _ in range(20)]
    held = set(_ids(gated + short))
    eventually(
        lambda: {t["id"] for t in first.tasks("running")} >= held,
        what="the gated and short tasks all running",
    )
    first.send_signal(signal.SIGTERM)
    assert first.wait_exit(within=15) == 0
    assert "Traceback" not in first.stderr()

    second = launch("--workers", "0")
    for task in map(second.task, _ids(short)):
        assert (task["status"], task["result"]) == ("completed", {"slept": 0.5}), task
    for task in map(second.task, _ids(gated)):
        assert (task["status"], task["worker_id"], task["attempts"]) == ("pending", None, 0)
    statuses = {task["id"]: task["status"] for task in second.tasks()}
    assert "running" not in statuses.values()
    gate.touch()
    response = second.client.post("/api/workers/", json={"name": "after-restart"})
    assert response.status_code == 201, response.text
    everything = gated + short + queued
    eventually(
        lambda: all(second.task(t["id"])["status"] == "completed" for t in everything),
        what="every task completed after the restart",
    )
    runs = read_runs(log)
    for task_id in _ids(gated):
        assert runs[task_id] == [1, 2], "cut short by the grace, run again once"
    for task_id in _ids(queued):
        assert len(runs[task_id]) == 1, f"task {task_id} ran {runs[task_id]}"
