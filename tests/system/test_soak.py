"""A bounded soak: steady HTTP load with pauses, resumes and deletes, memory sampled.

The real process runs for ``TASKQ_SOAK_SECONDS`` (60 by default, as in CI;
docs/reliability.md gives the longer run) under a paced load from several
clients: creates of short tasks (some scheduled a moment ahead), pauses,
resumes and deletes of their own tasks. It passes when no request got an
error (the one refusal allowed is the documented 404 "Task not found or cannot be
paused" for a pause of a task that has already finished or is paused), the queue drains at the
end with every task surviving as it should, and the resident memory at the end
is within ``TASKQ_SOAK_RSS_MARGIN_MIB`` (32) of the memory after the warm-up
(the first fifth of the run). The figures are printed (``pytest -s``).
"""

from __future__ import annotations

import collections
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.system.conftest import Launcher, eventually, utc_in

pytestmark = pytest.mark.sqlite_only

SOAK_SECONDS = float(os.environ.get("TASKQ_SOAK_SECONDS", "60"))
RSS_MARGIN_MIB = float(os.environ.get("TASKQ_SOAK_RSS_MARGIN_MIB", "32"))
WARM_UP_FRACTION = 0.2
CLIENTS = 4
# Each client's pace; together about 160 requests a second, well below what the
# process sustains, so the run measures a steady state rather than a backlog.
REQUESTS_PER_SECOND_PER_CLIENT = 40
SAMPLE_EVERY_SECONDS = 1.0
# A pause goes to one of a client's newest tasks.
RECENT = 5
DRAIN_WITHIN_SECONDS = 60.0
MIB = 1024 * 1024
# docs/API.md: the answer to a pause of a task that is not pending, scheduled or running.
CANNOT_PAUSE = (
    "Task not found or cannot be paused (must be in PENDING, SCHEDULED, or RUNNING state)"
)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@dataclass
class Tally:
    """What every client saw, merged under a lock."""

    requests: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: list[str] = field(default_factory=list)
    created: set[int] = field(default_factory=set)
    deleted: set[int] = field(default_factory=set)
    paused: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Client:
    """One client's loop: create, and act on its own earlier tasks."""

    def __init__(self, url: str, tally: Tally, rng: random.Random, stop: threading.Event) -> None:
        self.http = httpx.Client(base_url=url, timeout=30)
        self.tally = tally
        self.rng = rng
        self.stop = stop
        self.mine: list[int] = []
        self.paused: set[int] = set()

    def run(self) -> None:
        interval = 1 / REQUESTS_PER_SECOND_PER_CLIENT
        next_at = time.monotonic()
        while not self.stop.is_set():
            self.step()
            next_at += interval
            # Pacing the load, not waiting for anything: a steady rate is the point.
            time.sleep(max(0.0, next_at - time.monotonic()))

    def step(self) -> None:
        roll = self.rng.random()
        if roll < 0.6 or not self.mine:
            self.create()
        elif roll < 0.75:
            # The newest tasks: most are still waiting (scheduled ahead, or queued).
            self.pause(self.rng.choice(self.mine[-RECENT:]))
        elif roll < 0.9 and self.paused:
            self.resume(self.rng.choice(sorted(self.paused)))
        else:
            self.delete(self.mine.pop(self.rng.randrange(len(self.mine))))

    def create(self) -> None:
        body: dict[str, object] = {"name": "taskq.echo", "payload": {"n": self.rng.random()}}
        if self.rng.random() < 0.3:
            body = {"name": "taskq.sleep", "payload": {"seconds": 0.05}}
        if self.rng.random() < 0.3:
            body["scheduled_at"] = utc_in(self.rng.uniform(0.2, 2.0))
        response = self.http.post("/api/tasks/", json=body)
        if self.record("create", response, {201}):
            task_id = response.json()["id"]
            self.mine.append(task_id)
            with self.tally.lock:
                self.tally.created.add(task_id)

    def pause(self, task_id: int) -> None:
        response = self.http.patch(f"/api/tasks/{task_id}/pause")
        if response.status_code == 404 and response.json()["detail"] == CANNOT_PAUSE:
            self.record("pause", response, {404})
        elif self.record("pause", response, {200}):
            self.paused.add(task_id)

    def resume(self, task_id: int) -> None:
        response = self.http.patch(f"/api/tasks/{task_id}/resume")
        if self.record("resume", response, {200}):
            self.paused.discard(task_id)

    def delete(self, task_id: int) -> None:
        response = self.http.delete(f"/api/tasks/{task_id}")
        if self.record("delete", response, {204}):
            self.paused.discard(task_id)
            with self.tally.lock:
                self.tally.deleted.add(task_id)

    def record(self, what: str, response: httpx.Response, allowed: set[int]) -> bool:
        with self.tally.lock:
            self.tally.requests[f"{what} {response.status_code}"] += 1
            if response.status_code not in allowed:
                self.tally.errors.append(f"{what}: {response.status_code} {response.text}")
                return False
        return True

    def resume_all_and_close(self) -> None:
        try:
            for task_id in sorted(self.paused):
                self.resume(task_id)
        finally:
            self.http.close()


@pytest.mark.timeout(SOAK_SECONDS + 180)
def test_soak_steady_load_keeps_memory_flat_answers_no_errors_and_drains(
    launch: Launcher,
) -> None:
    seed = int(os.environ.get("TASKQ_FAULTS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"random seed: {seed}")
    rng = random.Random(seed)
    server = launch("--workers", "8")
    pid = server.process.pid
    tally = Tally()
    stop = threading.Event()
    clients = [Client(server.url, tally, random.Random(rng.random()), stop) for _ in range(CLIENTS)]
    threads = [threading.Thread(target=client.run) for client in clients]
    samples: list[tuple[float, int]] = []
    started = time.monotonic()
    samples.append((0.0, rss_bytes(pid)))
    for thread in threads:
        thread.start()
    try:
        while (elapsed := time.monotonic() - started) < SOAK_SECONDS and not tally.errors:
            time.sleep(SAMPLE_EVERY_SECONDS)  # the sampling period of the memory figure
            samples.append((elapsed, rss_bytes(pid)))
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert tally.errors == [], tally.errors[:10]

    for client in clients:
        client.resume_all_and_close()
    assert tally.errors == [], tally.errors[:10]

    def drained() -> bool:
        counts = server.client.get("/api/stats").json()["by_status"]
        return all(counts.get(status, 0) == 0 for status in ("pending", "running", "scheduled"))

    eventually(drained, within=DRAIN_WITHIN_SECONDS, interval=0.2, what="the queue drained")
    samples.append((time.monotonic() - started, rss_bytes(pid)))

    listed = {task["id"]: task for task in server.tasks()}
    survivors = tally.created - tally.deleted
    assert set(listed) == survivors
    not_completed = [task for task in listed.values() if task["status"] != "completed"]
    assert not_completed == [], not_completed[:5]

    warm = max(rss for at, rss in samples if at <= SOAK_SECONDS * WARM_UP_FRACTION)
    end = samples[-1][1]
    peak = max(rss for _, rss in samples)
    requests = sum(tally.requests.values())
    print(
        f"soak: {SOAK_SECONDS:g} s, {requests} requests ({dict(sorted(tally.requests.items()))}), "
        f"{len(tally.created)} tasks created, {len(tally.deleted)} deleted, "
        f"{len(survivors)} completed; RSS start {samples[0][1] / MIB:.1f} MiB, "
        f"after warm-up {warm / MIB:.1f} MiB, end {end / MIB:.1f} MiB, peak {peak / MIB:.1f} MiB"
    )
    assert end <= warm + RSS_MARGIN_MIB * MIB, (
        f"RSS grew from {warm / MIB:.1f} MiB after the warm-up to {end / MIB:.1f} MiB"
    )
