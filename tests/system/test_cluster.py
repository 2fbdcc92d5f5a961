"""Several real taskq processes on one PostgreSQL database: a cluster.

Each process is a node with its own workers. These tests check what the
cluster promises (docs/cluster.md): every acknowledged task completes, none
runs twice while every node is healthy, each node's claims follow priority
order, the tasks of a killed node run again elsewhere once its heartbeats
stop, and the nodes ride out a PostgreSQL restart by themselves.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import make_url

from tests.conftest import POSTGRESQL_SERVER
from tests.system.conftest import (
    HTTP_TIMEOUT_SECONDS,
    Launcher,
    Task,
    Taskq,
    eventually,
    parse_time,
    read_runs,
)

pytestmark = pytest.mark.postgresql_only

NODES = 3
# The acceptance figure; TASKQ_TEST_CLUSTER_TASKS lowers it for a quick run on a busy machine.
CLUSTER_TASKS = int(os.environ.get("TASKQ_TEST_CLUSTER_TASKS", "10000"))
SUBMITTERS = 24
WORKERS_PER_NODE = 8
# Short, so that a killed node's tasks come back within the test; the heartbeat
# follows it (a quarter of it), so a live node is never taken for dead.
DEAD_AFTER_SECONDS = "2"


def _start_nodes(launch: Launcher, *args: str) -> list[Taskq]:
    return [launch("--node", f"node-{n}", *args) for n in range(NODES)]


def _start_nodes_with_workers(launch: Launcher, *args: str) -> list[tuple[Taskq, set[int]]]:
    """Start the nodes one by one; pair each with the boot workers it added.

    The API lists every worker of the cluster, so a node's own are the ones
    that appeared when it started.
    """
    started: list[tuple[Taskq, set[int]]] = []
    known: set[int] = set()
    for n in range(NODES):
        server = launch("--node", f"node-{n}", *args)
        listed = {worker["id"] for worker in server.workers()}
        started.append((server, listed - known))
        known |= listed
    return started


def _add_workers(server: Taskq, count: int) -> set[int]:
    ids = set()
    for n in range(count):
        response = server.client.post("/api/workers/", json={"name": f"extra-{n}"})
        assert response.status_code == 201, response.text
        ids.add(response.json()["id"])
    return ids


def _submit_spread(servers: list[Taskq], payloads: list[dict[str, Any]], name: str) -> list[Task]:
    """Submit over HTTP from several threads, round-robin across the nodes."""
    submitted: list[Task] = []
    lock = threading.Lock()
    chunks = [payloads[n::SUBMITTERS] for n in range(SUBMITTERS)]

    def submit(number: int) -> None:
        clients = [httpx.Client(base_url=s.url, timeout=HTTP_TIMEOUT_SECONDS) for s in servers]
        try:
            for payload, client in zip(chunks[number], itertools.cycle(clients), strict=False):
                body = {"name": name, "payload": payload, "priority": payload["priority"]}
                response = client.post("/api/tasks/", json=body)
                assert response.status_code == 201, response.text
                with lock:
                    submitted.append(response.json())
        finally:
            for client in clients:
                client.close()

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(SUBMITTERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(submitted) == len(payloads)
    return submitted


def _nothing_waiting(server: Taskq) -> bool:
    return not server.tasks("pending") and not server.tasks("running")


def _assert_node_claims_in_priority_order(
    tasks: list[Task], node_of_worker: dict[int, int]
) -> None:
    """Each node's successive claims hand out tasks in ready order, never one out of turn.

    A claim's tasks share the node and ``started_at`` (one transaction, one
    clock). Every task was pending before the first claim and none came
    back, so a later claim of a node may only take tasks that come after all
    of its earlier claim's tasks in (priority high first, then oldest) order;
    other nodes' claims took what lies between.
    """
    claims: dict[int, dict[str, list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
    for task in tasks:
        node = node_of_worker[task["worker_id"]]
        claims[node][task["started_at"]].append((-task["priority"], task["id"]))
    assert len(claims) == NODES, "every node should have run tasks"
    for node, by_time in claims.items():
        ordered = [sorted(by_time[at]) for at in sorted(by_time, key=parse_time)]
        for earlier, later in itertools.pairwise(ordered):
            assert earlier[-1] < later[0], f"node {node} claimed {later} after {earlier}"


@pytest.mark.timeout(900)
def test_three_nodes_run_ten_thousand_tasks_once_each_in_priority_order(
    launch: Launcher, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    servers = _start_nodes(launch, "--workers", "0")
    total = CLUSTER_TASKS
    payloads = [{"log": str(log), "priority": 1 + n % 4, "n": n} for n in range(total)]
    submitted = _submit_spread(servers, payloads, "tests.record")

    # Workers come only now: every claim chooses among all the tasks.
    node_of_worker = {
        worker_id: number
        for number, server in enumerate(servers)
        for worker_id in _add_workers(server, WORKERS_PER_NODE)
    }
    eventually(
        lambda: len(read_runs(log)) == total, within=780, what="every task to run", interval=0.5
    )
    eventually(lambda: _nothing_waiting(servers[0]), what="every outcome recorded", interval=0.5)

    tasks = servers[1].tasks()
    assert sorted(task["id"] for task in tasks) == sorted(task["id"] for task in submitted)
    assert all(task["status"] == "completed" for task in tasks)
    assert all(task["result"] == {"attempt": 1} for task in tasks)
    runs = read_runs(log)
    assert all(runs[task["id"]] == [1] for task in tasks), "a task ran more than once"
    _assert_node_claims_in_priority_order(tasks, node_of_worker)


@pytest.mark.timeout(120)
def test_the_tasks_of_a_killed_node_run_again_on_the_others(
    launch: Launcher, tmp_path: Path
) -> None:
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    started = _start_nodes_with_workers(
        launch, "--workers", "2", "--dead-after", DEAD_AFTER_SECONDS
    )
    servers = [server for server, _ in started]
    victim, victim_workers = started[-1]
    assert len(victim_workers) == 2
    held = [
        servers[n % NODES].submit("tests.gated", {"log": str(log), "gate": str(gate)}, priority=4)
        for n in range(2 * NODES)
    ]
    queued = [servers[n % NODES].submit("tests.record", {"log": str(log)}) for n in range(30)]

    def held_everywhere() -> bool:
        running = servers[0].tasks("running")
        return {task["id"] for task in running} == {task["id"] for task in held}

    eventually(held_everywhere, what="every worker of every node holding a gated task")
    on_victim = {
        task["id"] for task in servers[0].tasks("running") if task["worker_id"] in victim_workers
    }
    assert len(on_victim) == 2
    victim.kill()
    gate.touch()

    everything = {task["id"] for task in held + queued}
    eventually(
        lambda: {t["id"] for t in servers[0].tasks("completed")} == everything,
        within=30,
        what="every task completed on the surviving nodes",
    )
    runs = read_runs(log)
    for task_id in on_victim:
        assert runs[task_id] == [1, 2], f"task {task_id} of the killed node did not run again"
        assert servers[1].task(task_id)["worker_id"] not in victim_workers
    assert all(runs[task["id"]] == [1] for task in queued)
    statuses = {w["id"]: w["status"] for w in servers[0].workers()}
    assert all(statuses[worker_id] == "offline" for worker_id in victim_workers)
    assert sum(status == "active" for status in statuses.values()) == 2 * (NODES - 1)


@pytest.mark.timeout(120)
def test_pausing_on_one_node_stops_the_task_running_on_another(
    launch: Launcher, tmp_path: Path
) -> None:
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    front = launch("--node", "front", "--workers", "0")
    back = launch("--node", "back", "--workers", "1")
    held = front.submit("tests.gated", {"log": str(log), "gate": str(gate)}, priority=4)
    eventually(lambda: front.task(held["id"])["status"] == "running", what="the task on back")
    waiting = front.submit("tests.record", {"log": str(log)})

    response = front.client.patch(f"/api/tasks/{held['id']}/pause")
    assert response.status_code == 200, response.text

    # back's only worker is free again only if the paused handler was stopped there.
    eventually(
        lambda: back.task(waiting["id"])["status"] == "completed",
        within=4,
        what="the next task to run on back",
    )
    assert front.task(held["id"])["status"] == "paused"
    gate.touch()
    assert front.client.patch(f"/api/tasks/{held['id']}/resume").status_code == 200
    eventually(lambda: back.task(held["id"])["status"] == "completed", what="the resumed task")
    assert read_runs(log)[held["id"]] == [1, 2]


# Restarting the server disturbs every other user of it, so this test runs only
# when asked: CI asks (README: "TASKQ_TEST_RESTART_POSTGRESQL=1 make test").
RESTART_POSTGRESQL = os.environ.get("TASKQ_TEST_RESTART_POSTGRESQL") == "1"
LOCAL_HOSTS = {None, "", "127.0.0.1", "localhost", "::1"}
RESTART_WITHIN_SECONDS = 120
# Generous: on a loaded machine three nodes and a restarting server share the cores.
FLOWING_WITHIN_SECONDS = 120
RECOVER_WITHIN_SECONDS = 240
COMPLETE_WITHIN_SECONDS = 300
TASKS_EACH_SIDE = 300
# After a refusal the load waits this long before its next request, so that a
# node answering 503 at once is not flooded while the server is down.
REFUSED_PAUSE_SECONDS = 0.05


def _local_cluster() -> tuple[str, str]:
    """The version and name (for pg_ctlcluster) of the local cluster the suite's server is."""
    server = make_url(POSTGRESQL_SERVER)
    if server.host not in LOCAL_HOSTS:
        pytest.fail(f"TASKQ_TEST_RESTART_POSTGRESQL=1 needs a local server, not {server.host}")
    if shutil.which("pg_lsclusters") is None or shutil.which("pg_ctlcluster") is None:
        pytest.fail("TASKQ_TEST_RESTART_POSTGRESQL=1 needs pg_lsclusters and pg_ctlcluster")
    port = server.port or 5432
    listed = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True
    ).stdout
    for line in listed.splitlines():
        version, name, cluster_port, *_ = line.split()
        if int(cluster_port) == port:
            return version, name
    pytest.fail(f"no local PostgreSQL cluster listens on port {port}: {listed}")


def _restart_postgresql(version: str, name: str) -> None:
    """Returns once the server accepts connections again (pg_ctlcluster waits for it)."""
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "restart"],
        check=True,
        timeout=RESTART_WITHIN_SECONDS,
    )


class _Load:
    """Submits tasks round-robin to the nodes from a thread; keeps the ids answered 201.

    Every other answer is kept too, for the test to judge: an assertion in
    this thread would go unseen.
    """

    def __init__(self, servers: list[Taskq], payload: dict[str, Any]) -> None:
        self.acknowledged: list[int] = []
        self.refusals: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._urls = [server.url for server in servers]
        self._payload = payload
        self._thread = threading.Thread(target=self._submit)

    def __enter__(self) -> _Load:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _submit(self) -> None:
        clients = [httpx.Client(base_url=url, timeout=HTTP_TIMEOUT_SECONDS) for url in self._urls]
        body = {"name": "tests.record", "payload": self._payload}
        try:
            for client in itertools.cycle(clients):
                if self._stop.is_set():
                    return
                try:
                    response = client.post("/api/tasks/", json=body)
                except httpx.HTTPError:
                    self._stop.wait(REFUSED_PAUSE_SECONDS)
                    continue
                if response.status_code == 201:
                    self.acknowledged.append(response.json()["id"])
                else:
                    self.refusals.append((response.status_code, response.text))
                    self._stop.wait(REFUSED_PAUSE_SECONDS)
        finally:
            for client in clients:
                client.close()


def _completed(server: Taskq) -> set[int]:
    """The completed tasks' ids; empty while the node cannot answer (the server restarting)."""
    try:
        return {task["id"] for task in server.tasks("completed")}
    except (AssertionError, httpx.HTTPError):
        return set()


@pytest.mark.skipif(
    not RESTART_POSTGRESQL,
    reason="restarts the shared PostgreSQL server: runs with TASKQ_TEST_RESTART_POSTGRESQL=1",
)
@pytest.mark.timeout(900)
def test_the_nodes_ride_out_a_postgresql_restart(launch: Launcher, tmp_path: Path) -> None:
    cluster = _local_cluster()
    log = tmp_path / "runs.log"
    servers = _start_nodes(launch, "--workers", "2")
    with _Load(servers, {"log": str(log)}) as load:
        eventually(
            lambda: len(load.acknowledged) >= TASKS_EACH_SIDE,
            within=FLOWING_WITHIN_SECONDS,
            what="tasks flowing before the restart",
        )
        _restart_postgresql(*cluster)
        after_restart = len(load.acknowledged)
        eventually(
            lambda: len(load.acknowledged) >= after_restart + TASKS_EACH_SIDE,
            within=RECOVER_WITHIN_SECONDS,
            what="the nodes taking tasks again after the restart",
        )
    for status, body in load.refusals:
        assert status == 503, body
        assert "detail" in json.loads(body), body

    acknowledged = set(load.acknowledged)
    eventually(
        lambda: acknowledged <= _completed(servers[0]),
        within=COMPLETE_WITHIN_SECONDS,
        what="every acknowledged task completed",
        interval=0.5,
    )
    assert acknowledged <= set(read_runs(log))
    assert all(server.process.poll() is None for server in servers), "a node exited"
