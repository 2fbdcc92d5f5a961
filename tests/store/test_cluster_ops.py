"""The store's cluster operations: what a node owns, restores, re-queues and reaps."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text, update

from taskq.errors import NotFound
from taskq.messages import (
    SuspensionVoided,
    TaskRevoked,
    TaskScheduled,
    TasksReady,
    WorkerStatusChanged,
)
from taskq.models import NewTask, TaskStatus, WorkerStatus, utcnow
from taskq.store import Store, notices
from taskq.store.cluster import Beat
from taskq.store.schema import workers
from taskq.store.workers import database_utcnow

# The nodes' clocks: every test's is years off the database's (now), which
# stamps and judges heartbeats on its own.
NOW = datetime(2030, 1, 1, 12, 0, 0)
LONG_AGO = NOW - timedelta(minutes=5)
DEAD_AFTER_SECONDS = 30.0


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


def _silence(store: Store, worker_id: int, seconds: float) -> None:
    """As if the worker's last heartbeat came ``seconds`` ago by the database's clock."""
    with store.transaction() as tx:
        tx.connection.execute(
            update(workers)
            .where(workers.c.id == worker_id)
            .values(last_heartbeat=database_utcnow(tx.connection, seconds))
        )


def _worker_status(store: Store, worker_id: int) -> WorkerStatus:
    with store.transaction() as tx:
        return tx.get_worker(worker_id).status


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
    assert [(w.id, w.status) for w in again] == [(w.id, w.status) for w in my_workers]
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
        silent = tx.create_worker("silent", NOW)
        alive = tx.create_worker("alive", NOW)
    with mine.transaction() as tx:
        my_silent = tx.create_worker("mine", NOW)
    lost = _running_task(other, silent.id)
    kept = _running_task(other, alive.id)
    my_task = _running_task(mine, my_silent.id)
    _silence(other, silent.id, DEAD_AFTER_SECONDS + 1)
    _silence(mine, my_silent.id, DEAD_AFTER_SECONDS + 1)
    _silence(other, alive.id, DEAD_AFTER_SECONDS - 5)

    with mine.transaction() as tx:
        dead, requeued = tx.reap_dead(DEAD_AFTER_SECONDS, NOW)
    with other.transaction() as tx:
        # A second reaper (here: the other node itself) finds nothing left to reap.
        assert tx.reap_dead(DEAD_AFTER_SECONDS, NOW) == ([my_silent.id], 1)

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


def test_heartbeats_of_several_workers_are_judged_each_against_its_own_tasks(mine: Store) -> None:
    """One set of statements for many beats must not mix up whose task is whose."""
    with mine.transaction() as tx:
        one, two = tx.create_worker("one", NOW), tx.create_worker("two", NOW)
    ones = _running_task(mine, one.id, at=LONG_AGO)
    twos_forgotten = _running_task(mine, two.id, at=LONG_AGO)
    twos_paused = _running_task(mine, two.id)
    with mine.transaction() as tx:
        tx.pause_task(twos_paused, NOW)
        beats = [
            # Worker two also claims to hold worker one's task: that is not two's to run.
            Beat(two.id, {twos_paused: 1, ones: 1}, NOW - timedelta(seconds=5)),
            Beat(404, {}, NOW - timedelta(seconds=5)),
            Beat(one.id, {ones: 1}, NOW - timedelta(seconds=5)),
        ]
        lost, requeued = tx.worker_heartbeats(beats, NOW)

    assert (lost, requeued) == ([[twos_paused, ones], None, []], 1)
    assert _status(mine, ones) == TaskStatus.RUNNING
    assert _status(mine, twos_forgotten) == TaskStatus.PENDING


def test_a_heartbeat_of_an_unknown_worker_is_refused(mine: Store) -> None:
    with mine.transaction() as tx, pytest.raises(NotFound):
        tx.worker_heartbeat(404, {}, NOW, NOW)


def test_heartbeats_are_stamped_and_judged_by_the_database_clock(mine: Store, other: Store) -> None:
    """Nodes whose clocks are a year ahead or a day behind: only the database's time counts."""
    ahead, behind = utcnow() + timedelta(days=365), utcnow() - timedelta(days=1)
    with mine.transaction() as tx:
        if tx.connection.dialect.name == "postgresql":
            # Far from UTC: the stamp must still be naive UTC, like every stored time.
            tx.connection.execute(text("SET LOCAL TIME ZONE 'Pacific/Kiritimati'"))
        fresh = tx.create_worker("fresh", behind)
        beating = tx.create_worker("beating", behind)
        tx.worker_heartbeat(beating.id, {}, behind, ahead)
        tx.heartbeat(fresh.id, behind)
    with other.transaction() as tx:
        by_the_future = tx.reap_dead(DEAD_AFTER_SECONDS, ahead)
    _silence(mine, beating.id, DEAD_AFTER_SECONDS + 1)
    with other.transaction() as tx:
        by_the_past = tx.reap_dead(DEAD_AFTER_SECONDS, behind)
        stamps = {w.id: w.last_heartbeat for w in tx.list_workers()}

    assert by_the_future == ([], 0), "a node whose clock runs ahead reaped live workers"
    assert by_the_past == ([beating.id], 0), "a node whose clock lags missed a dead worker"
    assert stamps[fresh.id] is not None
    assert abs(stamps[fresh.id] - utcnow()) < timedelta(minutes=1)
    assert _worker_status(mine, fresh.id) == WorkerStatus.ACTIVE


def test_heartbeat_brings_a_reaped_worker_back(mine: Store, other: Store) -> None:
    with mine.transaction() as tx:
        worker = tx.create_worker("w", NOW)
    _silence(mine, worker.id, DEAD_AFTER_SECONDS + 1)
    with other.transaction() as tx:
        assert tx.reap_dead(DEAD_AFTER_SECONDS, NOW) == ([worker.id], 0)
    with mine.transaction() as tx:
        tx.worker_heartbeat(worker.id, {}, NOW, NOW)
        assert tx.get_worker(worker.id).status == WorkerStatus.ACTIVE


def test_a_reaped_worker_comes_back_with_the_status_it_had_or_the_operators(
    mine: Store, other: Store
) -> None:
    with mine.transaction() as tx:
        inactive = tx.create_worker("inactive", NOW)
        tx.set_worker_status(inactive.id, WorkerStatus.INACTIVE, NOW)
        reset = tx.create_worker("set while offline", NOW)
    for worker_id in (inactive.id, reset.id):
        _silence(mine, worker_id, DEAD_AFTER_SECONDS + 1)
    with other.transaction() as tx:
        assert tx.reap_dead(DEAD_AFTER_SECONDS, NOW) == ([inactive.id, reset.id], 0)
        tx.set_worker_status(reset.id, WorkerStatus.INACTIVE, NOW)
    assert _worker_status(mine, inactive.id) == WorkerStatus.OFFLINE

    with mine.transaction() as tx:
        for worker_id in (inactive.id, reset.id):
            tx.worker_heartbeat(worker_id, {}, NOW, NOW)

    assert _worker_status(mine, inactive.id) == WorkerStatus.INACTIVE
    assert _worker_status(mine, reset.id) == WorkerStatus.INACTIVE


def test_a_node_restarting_takes_back_its_reaped_workers_as_they_were(
    mine: Store, other: Store
) -> None:
    with mine.transaction() as tx:
        slot_1, slot_2 = tx.restore_workers(2, NOW)
        api = tx.create_worker("api", NOW)
        tx.set_worker_status(slot_2.id, WorkerStatus.INACTIVE, NOW)
    for worker_id in (slot_1.id, slot_2.id, api.id):
        _silence(mine, worker_id, DEAD_AFTER_SECONDS + 1)
    with other.transaction() as tx:
        assert tx.reap_dead(DEAD_AFTER_SECONDS, NOW) == ([slot_1.id, slot_2.id, api.id], 0)

    with mine.transaction() as tx:
        restored = tx.restore_workers(2, NOW)
    with other.transaction() as tx:
        # Restored workers count as heard from: the node is up again.
        assert tx.reap_dead(DEAD_AFTER_SECONDS, NOW) == ([], 0)

    assert [(w.id, w.status) for w in restored] == [
        (slot_1.id, WorkerStatus.ACTIVE),
        (slot_2.id, WorkerStatus.INACTIVE),
        (api.id, WorkerStatus.ACTIVE),
    ]


def test_a_boot_slot_taken_offline_and_wanted_again_keeps_its_status(mine: Store) -> None:
    with mine.transaction() as tx:
        tx.restore_workers(2, NOW)
        tx.set_worker_status(2, WorkerStatus.INACTIVE, NOW)
        assert [w.name for w in tx.restore_workers(1, NOW)] == ["worker-1"]
    assert _worker_status(mine, 2) == WorkerStatus.OFFLINE

    with mine.transaction() as tx:
        again = tx.restore_workers(2, NOW)

    assert [(w.name, w.status) for w in again] == [
        ("worker-1", WorkerStatus.ACTIVE),
        ("worker-2", WorkerStatus.INACTIVE),
    ]


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
