"""The store's operations, one transaction at a time, on a real SQLite file."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Text, cast, delete, select, update

from taskq.errors import Conflict, NotFound
from taskq.models import NewTask, Priority, Task, TaskChanges, TaskStatus, WorkerStatus
from taskq.store import Completion, Store
from taskq.store.engine import open_engine
from taskq.store.schema import metadata, tasks, workers

NOW = datetime(2030, 1, 1, 12, 0, 0)
LATER = NOW + timedelta(hours=1)


def create(
    store: Store,
    name: str = "job",
    *,
    priority: Priority = Priority.MEDIUM,
    scheduled_at: datetime | None = None,
) -> Task:
    with store.transaction() as tx:
        return tx.create_task(NewTask(name, {"n": 1}, priority, scheduled_at), NOW)


def claim(store: Store, *worker_ids: int) -> list[Task]:
    with store.transaction() as tx:
        return tx.claim(worker_ids, NOW)


def get(store: Store, task_id: int) -> Task:
    with store.transaction() as tx:
        return tx.get_task(task_id)


# --- claim ---


def test_claim_takes_highest_priority_first_then_oldest(store: Store) -> None:
    low = create(store, priority=Priority.LOW)
    high_old = create(store, priority=Priority.HIGH)
    critical = create(store, priority=Priority.CRITICAL)
    high_new = create(store, priority=Priority.HIGH)

    claimed = claim(store, 1, 2, 3, 4)

    assert [task.id for task in claimed] == [critical.id, high_old.id, high_new.id, low.id]


def test_claim_gives_each_worker_one_task_in_the_order_given(store: Store) -> None:
    first, second = create(store), create(store)
    create(store)

    claimed = claim(store, 7, 3)

    assert [(task.id, task.worker_id) for task in claimed] == [(first.id, 7), (second.id, 3)]
    assert all(task.status == TaskStatus.RUNNING and task.started_at == NOW for task in claimed)
    assert [task.status for task in (get(store, first.id), get(store, second.id))] == [
        TaskStatus.RUNNING,
        TaskStatus.RUNNING,
    ]


def test_claim_bumps_the_attempt_each_time(store: Store) -> None:
    task = create(store)
    assert task.attempt == 0
    assert claim(store, 1)[0].attempt == 1
    with store.transaction() as tx:
        tx.requeue_running(None, NOW)
    assert claim(store, 2)[0].attempt == 2


def test_claim_with_more_workers_than_tasks_hands_out_what_there_is(store: Store) -> None:
    only = create(store)
    create(store, scheduled_at=LATER)

    assert [task.id for task in claim(store, 1, 2, 3)] == [only.id]
    assert claim(store, 1, 2, 3) == []


def test_claim_deals_up_to_per_worker_tasks_each_in_rounds(store: Store) -> None:
    tasks = [create(store) for _ in range(5)]
    create(store, priority=Priority.LOW)

    with store.transaction() as tx:
        claimed = tx.claim((7, 3), NOW, per_worker=2)

    expected = [(tasks[0].id, 7), (tasks[1].id, 3), (tasks[2].id, 7), (tasks[3].id, 3)]
    assert [(task.id, task.worker_id) for task in claimed] == expected
    assert [get(store, task.id).worker_id for task in tasks] == [7, 3, 7, 3, None]


def test_claim_above_a_priority_takes_only_more_urgent_tasks(store: Store) -> None:
    create(store, priority=Priority.LOW)
    with store.transaction() as tx:
        assert tx.claim((7,), NOW, above=Priority.LOW) == []
    high = create(store, priority=Priority.HIGH)
    critical = create(store, priority=Priority.CRITICAL)

    with store.transaction() as tx:
        claimed = tx.claim((7, 3), NOW, per_worker=2, above=Priority.MEDIUM)

    assert [(task.id, task.worker_id) for task in claimed] == [(critical.id, 7), (high.id, 3)]


def test_claim_per_worker_on_a_short_queue_gives_one_each_first(store: Store) -> None:
    first, second = create(store), create(store)

    with store.transaction() as tx:
        claimed = tx.claim((7, 3, 5), NOW, per_worker=4)

    assert [(task.id, task.worker_id) for task in claimed] == [(first.id, 7), (second.id, 3)]


# --- promote_due ---


def test_promote_due_promotes_only_due_tasks_and_answers_the_next_due_time(store: Store) -> None:
    """Due by a moment ahead of now (the scheduler's lead), stamped now."""
    due = create(store, scheduled_at=NOW + timedelta(minutes=1))
    next_up = create(store, scheduled_at=NOW + timedelta(minutes=5))
    create(store, scheduled_at=NOW + timedelta(minutes=9))

    with store.transaction() as tx:
        promoted, next_due = tx.promote_due(NOW + timedelta(minutes=1), NOW)

    assert (promoted, next_due) == (1, next_up.scheduled_at)
    assert (get(store, due.id).status, get(store, due.id).updated_at) == (TaskStatus.PENDING, NOW)
    assert get(store, next_up.id).status == TaskStatus.SCHEDULED


def test_promote_due_with_nothing_scheduled_answers_none(store: Store) -> None:
    create(store)
    with store.transaction() as tx:
        assert tx.promote_due(LATER, NOW) == (0, None)


# --- requeue_running ---


def test_requeue_running_puts_every_running_task_back(store: Store) -> None:
    first, second = create(store), create(store)
    claim(store, 1, 2)

    with store.transaction() as tx:
        assert tx.requeue_running(None, NOW) == 2

    for task_id in (first.id, second.id):
        task = get(store, task_id)
        assert (task.status, task.worker_id, task.started_at) == (TaskStatus.PENDING, None, None)


def test_requeue_running_of_one_worker_leaves_the_others_running(store: Store) -> None:
    first, second = create(store), create(store)
    claim(store, 1, 2)

    with store.transaction() as tx:
        assert tx.requeue_running(2, NOW) == 1

    assert get(store, first.id).status == TaskStatus.RUNNING
    assert get(store, second.id).status == TaskStatus.PENDING


# --- restore_workers ---


def restore(store: Store, boot_workers: int) -> list[tuple[str, WorkerStatus]]:
    with store.transaction() as tx:
        return [(w.name, w.status) for w in tx.restore_workers(boot_workers, NOW)]


def all_workers(store: Store) -> list[tuple[str, WorkerStatus]]:
    with store.transaction() as tx:
        return [(w.name, w.status) for w in tx.list_workers()]


def test_restore_workers_reuses_boot_slots_across_runs(store: Store) -> None:
    first = restore(store, 2)
    second = restore(store, 2)

    assert first == second == [("worker-1", WorkerStatus.ACTIVE), ("worker-2", WorkerStatus.ACTIVE)]
    assert len(all_workers(store)) == 2


def test_restore_workers_takes_slots_beyond_n_offline_and_back(store: Store) -> None:
    restore(store, 3)

    assert restore(store, 1) == [("worker-1", WorkerStatus.ACTIVE)]
    assert all_workers(store)[1:] == [
        ("worker-2", WorkerStatus.OFFLINE),
        ("worker-3", WorkerStatus.OFFLINE),
    ]
    assert restore(store, 2) == [
        ("worker-1", WorkerStatus.ACTIVE),
        ("worker-2", WorkerStatus.ACTIVE),
    ]
    assert len(all_workers(store)) == 3


def test_restore_workers_keeps_api_workers_and_inactive_slots(store: Store) -> None:
    restore(store, 1)
    with store.transaction() as tx:
        tx.create_worker("api", NOW)
        tx.set_worker_status(1, WorkerStatus.INACTIVE, NOW)

    assert restore(store, 1) == [
        ("worker-1", WorkerStatus.INACTIVE),
        ("api", WorkerStatus.ACTIVE),
    ]
    assert restore(store, 0) == [("api", WorkerStatus.ACTIVE)]


# --- update, pause, resume, delete ---


def test_update_of_a_running_task_is_a_conflict(store: Store) -> None:
    task = create(store)
    claim(store, 1)

    changes = TaskChanges(frozenset({"name"}), name="renamed")

    with pytest.raises(Conflict) as refused, store.transaction() as tx:
        tx.update_task(task.id, changes, NOW)
    assert refused.value.detail == "Task is running and cannot be updated; pause it first"
    assert get(store, task.id).name == "job"


def test_update_applies_only_the_named_fields(store: Store) -> None:
    task = create(store, priority=Priority.HIGH)
    changes = TaskChanges(frozenset({"name"}), name="renamed", priority=Priority.LOW)

    with store.transaction() as tx:
        updated = tx.update_task(task.id, changes, LATER)

    assert (updated.name, updated.priority, updated.updated_at) == ("renamed", Priority.HIGH, LATER)


def test_update_moving_scheduled_at_changes_a_waiting_status(store: Store) -> None:
    task = create(store)
    to_later = TaskChanges(frozenset({"scheduled_at"}), scheduled_at=LATER)
    to_none = TaskChanges(frozenset({"scheduled_at"}), scheduled_at=None)

    with store.transaction() as tx:
        assert tx.update_task(task.id, to_later, NOW).status == TaskStatus.SCHEDULED
        assert tx.update_task(task.id, to_none, NOW).status == TaskStatus.PENDING


def test_update_of_a_missing_task_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match=r"^Task not found$"), store.transaction() as tx:
        tx.update_task(404, TaskChanges(frozenset({"name"}), name="x"), NOW)


PAUSE_DETAIL = (
    "Task not found or cannot be paused (must be in PENDING, SCHEDULED, or RUNNING state)"
)
RESUME_DETAIL = "Task not found or cannot be resumed (must be in PAUSED state)"


def test_pause_and_resume_refuse_with_the_api_details(store: Store) -> None:
    task = create(store)

    with store.transaction() as tx:
        with pytest.raises(NotFound) as missing_pause:
            tx.pause_task(404, NOW)
        with pytest.raises(NotFound) as not_paused:
            tx.resume_task(task.id, NOW)
        tx.pause_task(task.id, NOW)
        with pytest.raises(NotFound) as already_paused:
            tx.pause_task(task.id, NOW)
        with pytest.raises(NotFound) as missing_resume:
            tx.resume_task(404, NOW)

    assert missing_pause.value.detail == already_paused.value.detail == PAUSE_DETAIL
    assert not_paused.value.detail == missing_resume.value.detail == RESUME_DETAIL


def test_pausing_a_running_task_revokes_it_from_its_worker(store: Store) -> None:
    task = create(store)
    claim(store, 5)

    with store.transaction() as tx:
        revoked = tx.pause_task(task.id, NOW)

    assert revoked.worker_id == 5
    assert (revoked.task.status, revoked.task.worker_id) == (TaskStatus.PAUSED, None)


def test_pausing_a_waiting_task_revokes_nothing(store: Store) -> None:
    task = create(store)
    with store.transaction() as tx:
        assert tx.pause_task(task.id, NOW).worker_id is None


def test_resume_returns_to_scheduled_while_the_time_is_ahead(store: Store) -> None:
    scheduled = create(store, scheduled_at=LATER)
    with store.transaction() as tx:
        tx.pause_task(scheduled.id, NOW)
        assert tx.resume_task(scheduled.id, NOW).status == TaskStatus.SCHEDULED
        tx.pause_task(scheduled.id, NOW)
        assert tx.resume_task(scheduled.id, LATER).status == TaskStatus.PENDING


def test_resume_after_a_paused_run_clears_started_at(store: Store) -> None:
    task = create(store)
    claim(store, 1)
    with store.transaction() as tx:
        tx.pause_task(task.id, NOW)
        resumed = tx.resume_task(task.id, LATER)

    assert (resumed.status, resumed.started_at, resumed.worker_id) == (
        TaskStatus.PENDING,
        None,
        None,
    )


def test_delete_of_a_running_task_returns_its_worker(store: Store) -> None:
    running, waiting = create(store), create(store)
    claim(store, 4)

    with store.transaction() as tx:
        assert tx.delete_task(running.id).worker_id == 4
        assert tx.delete_task(waiting.id).worker_id is None
    with pytest.raises(NotFound), store.transaction() as tx:
        tx.get_task(running.id)


def test_delete_of_a_missing_task_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match=r"^Task not found$"), store.transaction() as tx:
        tx.delete_task(404)


def test_ids_of_deleted_tasks_are_never_reused(store: Store) -> None:
    create(store)
    last = create(store)
    with store.transaction() as tx:
        tx.delete_task(last.id)

    assert create(store).id == last.id + 1


def test_the_declared_schema_never_reuses_ids_either(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'declared.db'}")
    metadata.create_all(engine)
    declared = Store(engine)
    try:
        last = create(declared)
        with declared.transaction() as tx:
            tx.delete_task(last.id)
        assert create(declared).id == last.id + 1
    finally:
        declared.close()


def test_ids_of_deleted_workers_are_never_reused(store: Store) -> None:
    with store.transaction() as tx:
        tx.create_worker("a", NOW)
        last = tx.create_worker("b", NOW)
        tx.connection.execute(delete(workers).where(workers.c.id == last.id))
        assert tx.create_worker("c", NOW).id == last.id + 1


# --- finish ---


def test_finish_records_the_outcome_of_the_current_attempt(store: Store) -> None:
    task = create(store)
    (claimed,) = claim(store, 1)

    with store.transaction() as tx:
        written = tx.finish(
            task.id, claimed.attempt, succeeded=True, result_json='{"ok": 1}', error=None, now=LATER
        )

    done = get(store, task.id)
    assert written
    assert (done.status, done.result, done.completed_at) == (TaskStatus.COMPLETED, {"ok": 1}, LATER)


@pytest.mark.parametrize("result", [{"ok": 1, "é": [1.5, None, True]}, "text", 7, None])
def test_a_result_is_stored_as_the_columns_own_conversion_stores_it(
    store: Store, result: object
) -> None:
    """The writer stores the worker's JSON text as it is: it must be the very value
    the column would have stored for the result itself."""
    by_text, by_value = create(store), create(store)
    first, _ = claim(store, 1, 2)
    text = None if result is None else json.dumps(result)
    with store.transaction() as tx:
        tx.finish(
            by_text.id, first.attempt, succeeded=True, result_json=text, error=None, now=LATER
        )
        tx.connection.execute(update(tasks).where(tasks.c.id == by_value.id).values(result=result))
        rows = tx.connection.execute(
            select(tasks.c.id, cast(tasks.c.result, Text)).where(
                tasks.c.id.in_([by_text.id, by_value.id])
            )
        )
        stored = {task_id: stored_text for task_id, stored_text in rows}

    assert stored[by_text.id] == stored[by_value.id]
    assert get(store, by_text.id).result == result


def test_finish_with_a_stale_attempt_changes_nothing(store: Store) -> None:
    task = create(store)
    claim(store, 1)
    with store.transaction() as tx:
        tx.requeue_running(None, NOW)
    (again,) = claim(store, 2)

    with store.transaction() as tx:
        stale = tx.finish(task.id, 1, succeeded=False, result_json=None, error="late", now=LATER)

    assert not stale
    assert get(store, task.id) == again


def test_worker_operations_on_a_missing_worker_are_not_found(store: Store) -> None:
    with store.transaction() as tx:
        with pytest.raises(NotFound, match=r"^Worker not found$"):
            tx.get_worker(404)
        with pytest.raises(NotFound, match=r"^Worker not found$"):
            tx.heartbeat(404, NOW)
        with pytest.raises(NotFound, match=r"^Worker not found$"):
            tx.set_worker_status(404, WorkerStatus.INACTIVE, NOW)


# --- many at once ---


def test_create_many_answers_each_task_in_order_as_stored(store: Store) -> None:
    news = [
        NewTask("a", {"n": 1}, Priority.LOW),
        NewTask("b", {"n": 2}, Priority.CRITICAL, LATER),
        NewTask("c", {"nested": [1, {"x": None}]}),
    ]
    with store.transaction() as tx:
        created = tx.create_many(news, NOW)

    assert [task.name for task in created] == ["a", "b", "c"]
    assert [task.status for task in created] == [
        TaskStatus.PENDING,
        TaskStatus.SCHEDULED,
        TaskStatus.PENDING,
    ]
    assert created[0].id < created[1].id < created[2].id
    assert [get(store, task.id) for task in created] == created


def test_create_many_spanning_several_statements_keeps_the_order(store: Store) -> None:
    news = [NewTask("job", {"n": number}) for number in range(1234)]
    with store.transaction() as tx:
        created = tx.create_many(news, NOW)

    assert [task.payload for task in created] == [{"n": number} for number in range(1234)]
    assert [get(store, task.id).payload for task in created[::97]] == [
        {"n": number} for number in range(0, 1234, 97)
    ]


def test_create_many_of_nothing_creates_nothing(store: Store) -> None:
    with store.transaction() as tx:
        assert tx.create_many([], NOW) == []
        assert tx.list_tasks(0, 10, None) == []


def test_a_claim_for_many_workers_is_what_the_database_then_holds(store: Store) -> None:
    for _ in range(5):
        create(store)

    claimed = claim(store, 11, 12, 13)

    assert [task.worker_id for task in claimed] == [11, 12, 13]
    assert [get(store, task.id) for task in claimed] == claimed


def test_complete_many_writes_current_attempts_and_fences_off_stale_ones(store: Store) -> None:
    first, second = create(store), create(store)
    claim(store, 1, 2)
    with store.transaction() as tx:
        tx.requeue_running(2, NOW)
    claim(store, 3)  # second runs again, as attempt 2

    with store.transaction() as tx:
        written = tx.complete_many(
            [Completion(first.id, 1, '{"ok": 1}'), Completion(second.id, 1, '"late"')], LATER
        )

    assert written == [True, False]

    done, rerun = get(store, first.id), get(store, second.id)
    assert (done.status, done.result, done.completed_at) == (TaskStatus.COMPLETED, {"ok": 1}, LATER)
    assert (rerun.status, rerun.attempt, rerun.result) == (TaskStatus.RUNNING, 2, None)
