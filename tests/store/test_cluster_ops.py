"""The store's cluster operations: what a node owns, restores, re-queues and reaps."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from taskq.messages import (
    SuspensionVoided,
    TaskRevoked,
    TaskScheduled,
    TasksReady,
    WorkerStatusChanged,
)
from taskq.models import NewTask, TaskStatus, WorkerStatus
from taskq.store import Store, notices

NOW = datetime(2030, 1, 1, 12, 0, 0)
LONG_AGO = NOW - timedelta(minutes=5)


@pytest.fixture
def other(db_url: str) -> Iterator[Store]:
    """The same database as seen by a second node."""
    opened = Store.open(db_url, node="other")
    yield opened
    opened.close()


@pytest.fixture
def mine(db_url: str) -> Iterator[Store]:
    opened = Store.open(db_url, node="mine")
    yield opened
    opened.close()


def _running_task(store: Store, worker_id: int, at: datetime = NOW) -> int:
    with store.transaction() as tx:
        task = tx.create_task(NewTask("job", {}), at)
        (claimed,) = tx.claim([worker_id], at)
    assert claimed.id == task.id
    return task.id


def _status(store: Store, task_id: int) -> TaskStatus:
    with store.transaction() as tx:
        return tx.get_task(task_id).status


def test_boot_slots_are_per_node_and_each_node_restores_only_its_own(
    mine: Store, other: Store
) -> None:
    with mine.transaction() as tx:
        my_workers = tx.restore_workers(2, NOW)
    with other.transaction() as tx:
        their_workers = tx.restore_workers(1, NOW)
        tx.create_worker("api", NOW)
    with mine.transaction() as tx:
        again = tx.restore_workers(2, NOW)

    assert [w.name for w in my_workers] == ["worker-1", "worker-2"]
    assert [w.name for w in their_workers] == ["worker-1"]
    assert again == my_workers
    with mine.transaction() as tx:
        assert len(tx.list_workers()) == 4


def test_requeue_node_leaves_other_nodes_tasks_running(mine: Store, other: Store) -> None:
    with mine.transaction() as tx:
        my_worker = tx.create_worker("m", NOW)
    with other.transaction() as tx:
        their_worker = tx.create_worker("o", NOW)
    my_task = _running_task(mine, my_worker.id)
    their_task = _running_task(other, their_worker.id)

    with mine.transaction() as tx:
        assert tx.requeue_node(NOW) == 1

    assert _status(mine, my_task) == TaskStatus.PENDING
    assert _status(mine, their_task) == TaskStatus.RUNNING


def test_reap_takes_silent_workers_of_other_nodes_offline_and_requeues_their_tasks(
    mine: Store, other: Store
) -> None:
    with other.transaction() as tx:
        silent = tx.create_worker("silent", LONG_AGO)
        alive = tx.create_worker("alive", NOW)
    with mine.transaction() as tx:
        my_silent = tx.create_worker("mine", LONG_AGO)
    lost = _running_task(other, silent.id)
    kept = _running_task(other, alive.id)
    my_task = _running_task(mine, my_silent.id)

    with mine.transaction() as tx:
        dead, requeued = tx.reap_dead(NOW - timedelta(seconds=30), NOW)
    with other.transaction() as tx:
        # A second reaper (here: the other node itself) finds nothing left to reap.
        assert tx.reap_dead(NOW - timedelta(seconds=30), NOW) == ([my_silent.id], 1)

    assert (dead, requeued) == ([silent.id], 1)
    assert _status(mine, lost) == TaskStatus.PENDING
    assert _status(mine, kept) == TaskStatus.RUNNING
    assert _status(mine, my_task) == TaskStatus.PENDING
    with mine.transaction() as tx:
        statuses = {w.id: w.status for w in tx.list_workers()}
    assert statuses[silent.id] == WorkerStatus.OFFLINE
    assert statuses[alive.id] == WorkerStatus.ACTIVE


def test_heartbeat_answers_held_tasks_that_are_no_longer_the_workers(mine: Store) -> None:
    with mine.transaction() as tx:
        worker = tx.create_worker("w", NOW)
    paused = _running_task(mine, worker.id)
    still = _running_task(mine, worker.id)
    with mine.transaction() as tx:
        tx.pause_task(paused, NOW)
        attempt = tx.get_task(still).attempt
        lost, requeued = tx.worker_heartbeat(worker.id, {paused: 1, still: attempt}, LONG_AGO, NOW)

    assert (lost, requeued) == ([paused], 0)
    assert _status(mine, still) == TaskStatus.RUNNING


def test_heartbeat_requeues_stale_tasks_the_worker_does_not_hold(mine: Store) -> None:
    """An outcome lost with a dropped connection: the task must not stay running forever."""
    with mine.transaction() as tx:
        worker = tx.create_worker("w", NOW)
    forgotten = _running_task(mine, worker.id, at=LONG_AGO)
    just_claimed = _running_task(mine, worker.id, at=NOW)

    with mine.transaction() as tx:
        lost, requeued = tx.worker_heartbeat(worker.id, {}, NOW - timedelta(seconds=5), NOW)

    assert (lost, requeued) == ([], 1)
    assert _status(mine, forgotten) == TaskStatus.PENDING
    assert _status(mine, just_claimed) == TaskStatus.RUNNING


def test_heartbeat_brings_a_reaped_worker_back(mine: Store, other: Store) -> None:
    with mine.transaction() as tx:
        worker = tx.create_worker("w", LONG_AGO)
    with other.transaction() as tx:
        assert tx.reap_dead(NOW, NOW) == ([worker.id], 0)
    with mine.transaction() as tx:
        tx.worker_heartbeat(worker.id, {}, NOW, NOW)
        assert tx.get_worker(worker.id).status == WorkerStatus.ACTIVE


def test_notices_read_back_as_the_events_they_carry() -> None:
    events = [
        TasksReady(),
        TasksReady(),
        TaskScheduled(NOW + timedelta(hours=1)),
        TaskScheduled(NOW),
        TaskRevoked(3, 4),
        TaskRevoked(6, 4, suspend=True),
        SuspensionVoided(7),
        WorkerStatusChanged(5, WorkerStatus.INACTIVE),
    ]
    decoded = [notices.decode(payload) for payload in notices.encode("n1", events)]
    assert decoded == [
        ("n1", TasksReady(from_other_node=True)),
        ("n1", TaskRevoked(3, 4)),
        ("n1", TaskRevoked(6, 4, suspend=True)),
        ("n1", SuspensionVoided(7)),
        ("n1", WorkerStatusChanged(5, WorkerStatus.INACTIVE)),
        ("n1", TaskScheduled(NOW)),
    ]
    assert notices.decode('{"node": "n1", "event": "unheard-of"}') is None
    assert notices.decode("not json") is None
