"""The per-task statements in numbers that take several statements of each size."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete
from sqlalchemy.dialects import sqlite

from taskq.models import NewTask, Priority, TaskStatus
from taskq.store import Completion, Store, conversions, hot
from taskq.store.schema import tasks

NOW = datetime(2030, 1, 1, 12, 0, 0)
LATER = NOW + timedelta(minutes=1)


@pytest.mark.parametrize("count", [0, 1, 3, 255, 256, 1234])
def test_chunks_cover_every_row_once_in_sizes_of_a_power_of_two(count: int) -> None:
    chunks = list(hot._chunks(count))
    covered = [row for chunk in chunks for row in range(count)[chunk]]
    assert covered == list(range(count))
    sizes = [chunk.stop - chunk.start for chunk in chunks]
    assert all(size & (size - 1) == 0 and size <= hot.STATEMENT_ROWS_MAX for size in sizes)
    assert sizes == sorted(sizes, reverse=True)


def test_created_tasks_have_the_ids_the_database_gave_them(store: Store) -> None:
    """Across statements and transactions, after the newest task was deleted (its id
    is never given again), each created task is exactly the row stored."""
    with store.transaction() as tx:
        doomed = tx.create_many([NewTask("doomed", {})], NOW)
        tx.connection.execute(delete(tasks).where(tasks.c.id == doomed[0].id))
    created = []
    for count in (1, 3, 700):
        with store.transaction() as tx:
            news = [
                NewTask(f"t{count}-{n}", {"n": n}, Priority(1 + n % 4), LATER if n % 5 else None)
                for n in range(count)
            ]
            created += tx.create_many(news, NOW)

    assert [task.id for task in created] == list(
        range(doomed[0].id + 1, doomed[0].id + 1 + len(created))
    )
    with store.transaction() as tx:
        stored = [tx.get_task(task.id) for task in created]
    assert stored == created


def test_a_claim_of_many_tasks_is_what_the_database_then_holds(store: Store) -> None:
    with store.transaction() as tx:
        tx.create_many([NewTask("job", {"n": n}, Priority(1 + n % 4)) for n in range(400)], NOW)
    workers = list(range(1, 38))

    with store.transaction() as tx:
        claimed = tx.claim(workers, NOW, per_worker=8)

    assert len(claimed) == 296
    assert [task.worker_id for task in claimed] == workers * 8
    assert [task.priority for task in claimed] == sorted(
        (task.priority for task in claimed), reverse=True
    )
    with store.transaction() as tx:
        assert [tx.get_task(task.id) for task in claimed] == claimed
        running = tx.list_tasks(0, 1000, TaskStatus.RUNNING)
    assert sorted(task.id for task in running) == sorted(task.id for task in claimed)


def test_completing_many_answers_which_were_written(store: Store) -> None:
    with store.transaction() as tx:
        tx.create_many([NewTask("job", {"n": n}) for n in range(300)], NOW)
        claimed = tx.claim(list(range(1, 301)), NOW)
    stale = {task.id for task in claimed[::7]}
    with store.transaction() as tx:
        for task_id in stale:
            tx.requeue_running(claimed[task_id - 1].worker_id, NOW)
    completions = [Completion(task.id, task.attempt, f'{{"n": {task.id}}}') for task in claimed]

    with store.transaction() as tx:
        written = tx.complete_many(completions, LATER)
        again = tx.complete_many(completions[:5], LATER + timedelta(seconds=1))

    assert written == [task.id not in stale for task in claimed]
    assert again == [False] * 5
    with store.transaction() as tx:
        done = {task.id: task for task in tx.list_tasks(0, 1000, TaskStatus.COMPLETED)}
    assert set(done) == {task.id for task in claimed} - stale
    assert all(
        task.result == {"n": task.id} and task.completed_at == LATER for task in done.values()
    )


def test_finish_counts_one_outcome_for_one_task(store: Store) -> None:
    with store.transaction() as tx:
        (task,) = tx.create_many([NewTask("job", {})], NOW)
        (running,) = tx.claim([1], NOW)
    with store.transaction() as tx:
        assert tx.finish(
            task.id, running.attempt, succeeded=False, result_json=None, error="x", now=LATER
        )
        assert not tx.finish(
            task.id, running.attempt, succeeded=True, result_json=None, error=None, now=LATER
        )
        failed = tx.get_task(task.id)
    assert (failed.status, failed.error, failed.result) == (TaskStatus.FAILED, "x", None)


JSON_READ = [
    '{"n": 1}',
    '{"nested": [1, {"x": null}], "s": "\\u00e9\\ud83d\\ude00"}',
    "[]",
    '"text"',
    "null",
    "1",
    "0.30000000000000004",
    "12345678901234567890123",
    "1e400",
    "NaN",
    "-Infinity",
    ' {"padded": true} ',
    "\ufeff{}",
    "",
    "{",
    "[1,]",
    '{"a": 1}x',
    5,
    -3,
    2**62,
    0.1,
    1e308,
    b'{"bytes": 1}',
]


def _outcome(convert: Callable[[Any], Any], value: Any) -> tuple[str, str]:
    try:
        converted = convert(value)
    except Exception as exc:  # the very failure is compared
        return type(exc).__name__, str(exc)
    return type(converted).__name__, repr(converted)


@pytest.mark.parametrize("value", JSON_READ)
def test_a_json_column_reads_as_the_columns_own_conversion_reads_it(value: Any) -> None:
    dialect = sqlite.dialect()
    own = tasks.c.payload.type.dialect_impl(dialect).result_processor(dialect, None)
    assert own is not None
    assert _outcome(conversions.sqlite_json, value) == _outcome(own, value)


@pytest.mark.sqlite_only
def test_claimed_json_values_are_the_stored_ones(store: Store) -> None:
    """Through the real column: a number's JSON text is stored as a number."""
    payloads = [{"s": "\u00e9\U0001f600", "big": 2**70, "f": 0.1 + 0.2}, {}, {"n": [None, True]}]
    with store.transaction() as tx:
        created = tx.create_many([NewTask("job", payload) for payload in payloads], NOW)
        claimed = tx.claim([1, 2, 3], NOW)
        for task, progress in zip(claimed, [0.30000000000000004, 7, {"at": "x"}], strict=True):
            tx.record_progress(task.id, task.attempt, progress, NOW)
        tx.requeue_running(None, NOW)
        again = tx.claim([1, 2, 3], LATER)
        stored = [tx.get_task(task.id) for task in again]

    assert [task.payload for task in again] == payloads == [task.payload for task in created]
    assert [task.progress for task in again] == [0.30000000000000004, 7, {"at": "x"}]
    assert again == stored


JSON_WRITTEN: list[Any] = [
    {"n": 1},
    {"s": "\u00e9\U0001f600", "nested": [1, {"x": None}], "t": True},
    {"f": 0.1 + 0.2, "big": 2**70, "nan": float("nan"), "inf": float("-inf")},
    {1: "int key", None: "null key", 2.5: "float key"},
    {},
    "text",
    [1, "two"],
    None,
]


@pytest.mark.parametrize("value", JSON_WRITTEN)
def test_a_payload_is_written_as_the_columns_own_conversion_writes_it(value: Any) -> None:
    dialect = sqlite.dialect()
    own = tasks.c.payload.type.dialect_impl(dialect).bind_processor(dialect)
    assert own is not None
    assert hot.statements_for(dialect).payload_to_db(value) == own(value)


def test_a_payload_json_cannot_write_fails_as_in_json_dumps_and_leaves_nothing_behind() -> None:
    to_db = hot.statements_for(sqlite.dialect()).payload_to_db
    circular: dict[str, Any] = {}
    circular["self"] = [circular]
    with pytest.raises(ValueError, match="Circular reference"):
        to_db(circular)
    with pytest.raises(TypeError, match="not JSON serializable"):
        to_db({"when": NOW})
    # A failure leaves no container marked as open: the same containers encode again.
    circular["self"] = [{"n": 1}]
    assert to_db(circular) == '{"self": [{"n": 1}]}'


def test_a_claim_across_creations_gives_each_task_its_own_times(store: Store) -> None:
    """Times are converted once per distinct stored value, never shared across values."""
    created = []
    for minute in range(3):
        at = NOW + timedelta(minutes=minute)
        with store.transaction() as tx:
            news = [NewTask("job", {"n": n}, scheduled_at=at if n % 2 else None) for n in range(4)]
            created += tx.create_many(news, at + timedelta(minutes=5))

    with store.transaction() as tx:
        claimed = tx.claim([1, 2, 3], LATER + timedelta(minutes=9), per_worker=4)
        stored = [tx.get_task(task.id) for task in claimed]

    assert claimed == stored
    assert sorted(task.id for task in claimed) == [task.id for task in created]
    assert len({task.created_at for task in claimed}) == 3
    assert {task.scheduled_at for task in claimed} == {
        None,
        NOW,
        NOW + timedelta(minutes=1),
        NOW + timedelta(minutes=2),
    }


def test_a_task_claimed_ahead_of_its_time_starts_at_its_scheduled_at(store: Store) -> None:
    """The scheduler promotes a moment early and the worker holds the task until its
    time, so that is when it starts; a task already due starts at the claim."""
    ahead = NOW + timedelta(milliseconds=25)
    with store.transaction() as tx:
        news = [
            NewTask("early", {}, scheduled_at=ahead),
            NewTask("due", {}, scheduled_at=NOW),
            NewTask("now", {}),
        ]
        early, due, unscheduled = tx.create_many(news, NOW - timedelta(seconds=2))
        tx.promote_due(ahead, NOW)
    with store.transaction() as tx:
        claimed = tx.claim([1, 2, 3], NOW)
        stored = [tx.get_task(task.id) for task in claimed]

    assert claimed == stored
    assert {task.id: task.started_at for task in claimed} == {
        early.id: ahead,
        due.id: NOW,
        unscheduled.id: NOW,
    }
