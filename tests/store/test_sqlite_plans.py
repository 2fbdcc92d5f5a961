"""On SQLite each query of the queue's working set reads the partial index made for it.

SQLite uses a partial index only when the query's WHERE holds the index's own
term as written (``status = 'pending'``, not ``status IN ('pending')``): these
tests read the plans of the statements the store really runs, with and without
the statistics ``ANALYZE`` leaves, over a table mostly of finished tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, text, update

from taskq.models import TaskStatus
from taskq.store import Store, Tx, hot
from taskq.store.cluster import Beat
from taskq.store.schema import tasks, workers

pytestmark = pytest.mark.sqlite_only

NOW = datetime(2030, 1, 1, 12, 0, 0)
# Heartbeats are judged by the database's clock, not NOW.
LONG_AGO = datetime(2000, 1, 1)
QUEUED = 20_000
# The last LIVE rows are pending, scheduled or running in turn; the rest finished long ago.
LIVE = 2_000
WORKERS = 8


@pytest.fixture(params=["no statistics", "analyzed"])
def queue(request: pytest.FixtureRequest, store: Store) -> Store:
    """A store with QUEUED tasks, its running ones spread over WORKERS workers of
    another node (ids 1..WORKERS), silent for years, and none of this node's."""
    other = Store(store.engine, node="other")
    with other.transaction() as tx:
        for n in range(WORKERS):
            tx.create_worker(f"worker-{n}", NOW)
        tx.connection.execute(update(workers).values(last_heartbeat=LONG_AGO))
    live = (TaskStatus.PENDING, TaskStatus.SCHEDULED, TaskStatus.RUNNING)
    rows = []
    for n in range(QUEUED):
        status = live[n % 3] if n >= QUEUED - LIVE else TaskStatus.COMPLETED
        rows.append(
            {
                "name": "job",
                "payload": {},
                "priority": 1 + n % 4,
                "status": status,
                "scheduled_at": NOW + timedelta(seconds=n % 7 - 3),
                "created_at": NOW,
                "updated_at": NOW,
                "started_at": NOW,
                "worker_id": 1 + n % WORKERS if status == TaskStatus.RUNNING else None,
                "attempt": 1,
            }
        )
    with store.engine.begin() as connection:
        connection.execute(insert(tasks), rows)
        if request.param == "analyzed":
            connection.execute(text("ANALYZE"))
    return store


def plans_of(store: Store, operation: Callable[[Tx], Any]) -> dict[str, str]:
    """The plan of each statement on ``tasks`` that ``operation`` runs, by its SQL."""
    run: list[tuple[str, Any]] = []

    def record(_c: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "tasks" in statement:
            run.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        with store.transaction() as tx:
            operation(tx)
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    assert run, "the operation ran no statement on tasks"
    return {statement: explain(store, statement, parameters) for statement, parameters in run}


def explain(store: Store, statement: str, parameters: Any) -> str:
    with store.engine.connect() as connection:
        rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        return "\n".join(str(row[-1]) for row in rows)


def only_plan(plans: dict[str, str], starting: str) -> str:
    (plan,) = [plan for statement, plan in plans.items() if statement.startswith(starting)]
    return plan


def test_the_claim_walks_ix_tasks_ready_in_claim_order(queue: Store) -> None:
    with queue.engine.connect() as connection:
        plan = explain(queue, hot.statements_for(connection.dialect).ready, (256,))
    assert "INDEX ix_tasks_ready (status=?)" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


def test_the_claim_above_a_priority_walks_ix_tasks_ready_too(queue: Store) -> None:
    with queue.engine.connect() as connection:
        plan = explain(queue, hot.statements_for(connection.dialect).ready_above, (1, 256))
    assert "INDEX ix_tasks_ready" in plan, plan
    assert "TEMP B-TREE" not in plan, plan

    with queue.transaction() as tx:
        claimed = tx.claim(list(range(1, WORKERS + 1)), NOW, per_worker=8)
    assert [task.priority for task in claimed] == [4] * len(claimed)
    assert [task.id for task in claimed] == sorted(task.id for task in claimed)


def test_promoting_due_tasks_and_finding_the_next_read_ix_tasks_due(queue: Store) -> None:
    plans = plans_of(queue, lambda tx: tx.promote_due(NOW, NOW))
    assert len(plans) == 2
    for plan in plans.values():
        assert "INDEX ix_tasks_due (status=?" in plan, plan


def test_requeueing_a_workers_tasks_reads_ix_tasks_worker_running(queue: Store) -> None:
    plans = plans_of(queue, lambda tx: tx.requeue_running(3, NOW))
    plan = only_plan(plans, "UPDATE tasks")
    assert "INDEX ix_tasks_worker_running (worker_id=? AND status=?)" in plan, plan


def test_requeueing_a_nodes_tasks_reads_ix_tasks_worker_running(queue: Store) -> None:
    other = Store(queue.engine, node="other")
    plans = plans_of(other, lambda tx: tx.requeue_node(NOW))
    plan = only_plan(plans, "UPDATE tasks")
    assert "INDEX ix_tasks_worker_running (worker_id=? AND status=?)" in plan, plan


def test_reaping_requeues_through_ix_tasks_worker_running(queue: Store) -> None:
    reaped: list[list[int]] = []
    plans = plans_of(queue, lambda tx: reaped.append(tx.reap_dead(60, NOW)[0]))
    assert reaped == [list(range(1, WORKERS + 1))]
    plan = only_plan(plans, "UPDATE tasks")
    assert "INDEX ix_tasks_worker_running (worker_id=? AND status=?)" in plan, plan


def test_a_heartbeat_reads_only_the_tasks_of_its_workers(queue: Store) -> None:
    with queue.transaction() as tx:
        held = [task.id for task in tx.list_tasks(0, 3, TaskStatus.RUNNING)]
    beats = [Beat(worker_id, dict.fromkeys(held, 1), NOW) for worker_id in (1, 2)]
    plans = plans_of(queue, lambda tx: tx.worker_heartbeats(beats, NOW))
    requeue = only_plan(plans, "UPDATE tasks")
    assert "INDEX ix_tasks_worker_running (worker_id=? AND status=?)" in requeue, requeue
    running = only_plan(plans, "SELECT")
    assert "SCAN tasks" not in running, running
    assert "=?" in running, running


def test_every_statement_of_the_working_set_names_its_status_in_the_sql(queue: Store) -> None:
    """Bound, the status would let SQLite use a partial index only by re-preparing
    the statement at each execution; written out, it never has to."""
    operations: Iterator[Callable[[Tx], Any]] = iter(
        [
            lambda tx: tx.promote_due(NOW, NOW),
            lambda tx: tx.requeue_running(3, NOW),
            lambda tx: tx.reap_dead(60, NOW),
        ]
    )
    for operation in operations:
        for statement in plans_of(queue, operation):
            if statement.startswith(("UPDATE tasks", "SELECT min")):
                assert "tasks.status = '" in statement, statement


@pytest.mark.parametrize("newest_first", [False, True])
def test_a_page_of_pending_tasks_reads_ix_tasks_status_id_without_a_sort(
    queue: Store, newest_first: bool
) -> None:
    """Not ``ix_tasks_ready``, which holds just the pending tasks but in claim order."""
    pages: list[list[int]] = []
    plans = plans_of(
        queue,
        lambda tx: pages.append(
            [
                task.id
                for task in tx.list_tasks(0, 10, TaskStatus.PENDING, newest_first=newest_first)
            ]
        ),
    )
    pending = [n + 1 for n in range(QUEUED - LIVE, QUEUED) if n % 3 == 0]
    assert pages == [pending[::-1][:10] if newest_first else pending[:10]]
    plan = only_plan(plans, "SELECT")
    assert "INDEX ix_tasks_status_id (status=?)" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


def test_taking_and_finishing_many_look_each_task_up_by_its_id(queue: Store) -> None:
    with queue.engine.connect() as connection:
        statements = hot.statements_for(connection.dialect)
    take = explain(queue, statements.take_values(2), ("t", "t", "t", 1, 7, 2, 8))
    finish = explain(
        queue, statements.finish_values(2), ("t", "t", 1, 1, "completed", None, None) + (2,) * 5
    )
    for plan in (take, finish):
        assert "SEARCH tasks USING INTEGER PRIMARY KEY (rowid=?)" in plan, plan
        assert "SCAN tasks" not in plan, plan
