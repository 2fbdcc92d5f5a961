"""The transition table, exhaustively: as data, and as the store enforces it."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from taskq.errors import Conflict, NotFound
from taskq.models import SOURCES, Action, NewTask, Task, TaskChanges, TaskStatus, allowed
from taskq.store import Store

NOW = datetime(2030, 1, 1, 12, 0, 0)
LATER = NOW + timedelta(hours=1)
WORKER = 9

P, S, R, Z, C, F = (
    TaskStatus.PENDING,
    TaskStatus.SCHEDULED,
    TaskStatus.RUNNING,
    TaskStatus.PAUSED,
    TaskStatus.COMPLETED,
    TaskStatus.FAILED,
)

# Written out by hand on purpose: a change to SOURCES must be a change here too.
EXPECTED: dict[Action, set[TaskStatus]] = {
    Action.PROMOTE: {S},
    Action.CLAIM: {P},
    Action.FINISH: {R},
    Action.REQUEUE: {R},
    Action.PAUSE: {P, S, R},
    Action.RESUME: {Z},
    Action.UPDATE: {P, S, Z, C, F},
    Action.DELETE: {P, S, R, Z, C, F},
    Action.RETRY: {F},
}


def test_the_expected_table_covers_every_action() -> None:
    assert set(EXPECTED) == set(Action) == set(SOURCES)


@pytest.mark.parametrize("status", list(TaskStatus))
@pytest.mark.parametrize("action", list(Action))
def test_allowed_matches_the_table(action: Action, status: TaskStatus) -> None:
    assert allowed(action, status) is (status in EXPECTED[action])


def task_in(store: Store, status: TaskStatus) -> Task:
    """Bring a fresh task to ``status`` the way taskq itself would."""
    scheduled_at = LATER if status == TaskStatus.SCHEDULED else None
    with store.transaction() as tx:
        task = tx.create_task(NewTask("job", {}, scheduled_at=scheduled_at), NOW)
        if status in (R, Z, C, F):
            (task,) = tx.claim([WORKER], NOW)
        if status == Z:
            task = tx.pause_task(task.id, NOW).task
        if status in (C, F):
            assert tx.finish(
                task.id, task.attempt, succeeded=status == C, result_json=None, error=None, now=NOW
            )
            task = tx.get_task(task.id)
    assert task.status == status
    return task


def status_of(store: Store, task_id: int) -> TaskStatus:
    with store.transaction() as tx:
        return tx.get_task(task_id).status


statuses = pytest.mark.parametrize("status", list(TaskStatus))


@statuses
def test_store_pause(store: Store, status: TaskStatus) -> None:
    task = task_in(store, status)
    with store.transaction() as tx:
        if status in EXPECTED[Action.PAUSE]:
            assert tx.pause_task(task.id, NOW).task.status == TaskStatus.PAUSED
        else:
            with pytest.raises(NotFound):
                tx.pause_task(task.id, NOW)
    assert status_of(store, task.id) == (Z if status in EXPECTED[Action.PAUSE] else status)


@statuses
def test_store_resume(store: Store, status: TaskStatus) -> None:
    task = task_in(store, status)
    with store.transaction() as tx:
        if status in EXPECTED[Action.RESUME]:
            assert tx.resume_task(task.id, NOW).status == TaskStatus.PENDING
        else:
            with pytest.raises(NotFound):
                tx.resume_task(task.id, NOW)
            assert tx.get_task(task.id).status == status


@statuses
def test_store_update(store: Store, status: TaskStatus) -> None:
    task = task_in(store, status)
    changes = TaskChanges(frozenset({"name"}), name="renamed")
    with store.transaction() as tx:
        if status in EXPECTED[Action.UPDATE]:
            updated = tx.update_task(task.id, changes, NOW)
            assert (updated.name, updated.status) == ("renamed", status)
        else:
            with pytest.raises(Conflict):
                tx.update_task(task.id, changes, NOW)
            assert tx.get_task(task.id).name == "job"


@statuses
def test_store_delete(store: Store, status: TaskStatus) -> None:
    task = task_in(store, status)
    with store.transaction() as tx:
        revoked = tx.delete_task(task.id)
        with pytest.raises(NotFound):
            tx.get_task(task.id)
    assert revoked.worker_id == (WORKER if status == TaskStatus.RUNNING else None)


@statuses
def test_store_claim(store: Store, status: TaskStatus) -> None:
    task = task_in(store, status)
    with store.transaction() as tx:
        claimed = tx.claim([WORKER + 1], NOW)
    assert [t.id for t in claimed] == ([task.id] if status in EXPECTED[Action.CLAIM] else [])


@statuses
def test_store_finish(store: Store, status: TaskStatus) -> None:
    task = task_in(store, status)
    with store.transaction() as tx:
        written = tx.finish(
            task.id, task.attempt, succeeded=True, result_json="1", error=None, now=NOW
        )
    assert written is (status in EXPECTED[Action.FINISH])
    assert status_of(store, task.id) == (TaskStatus.COMPLETED if written else status)


@statuses
def test_store_promote(store: Store, status: TaskStatus) -> None:
    task = task_in(store, status)
    with store.transaction() as tx:
        promoted, _ = tx.promote_due(LATER, LATER)
    assert promoted == (1 if status in EXPECTED[Action.PROMOTE] else 0)
    assert status_of(store, task.id) == (TaskStatus.PENDING if promoted else status)


@statuses
def test_store_requeue(store: Store, status: TaskStatus) -> None:
    task = task_in(store, status)
    with store.transaction() as tx:
        requeued = tx.requeue_running(None, NOW)
    assert requeued == (1 if status in EXPECTED[Action.REQUEUE] else 0)
    assert status_of(store, task.id) == (TaskStatus.PENDING if requeued else status)


@statuses
def test_store_retry(store: Store, status: TaskStatus) -> None:
    task = task_in(store, status)
    with store.transaction() as tx:
        if status in EXPECTED[Action.RETRY]:
            retried = tx.retry_task(task.id, NOW)
            assert (retried.status, retried.attempts) == (TaskStatus.PENDING, 0)
        else:
            with pytest.raises(Conflict):
                tx.retry_task(task.id, NOW)
            assert tx.get_task(task.id).status == status


@statuses
def test_store_schedule_retry_is_fenced_like_finish(store: Store, status: TaskStatus) -> None:
    task = task_in(store, status)
    with store.transaction() as tx:
        written = tx.schedule_retry(task.id, task.attempt, error="boom", at=LATER, now=NOW)
    assert written is (status in EXPECTED[Action.FINISH])
    assert status_of(store, task.id) == (TaskStatus.SCHEDULED if written else status)
