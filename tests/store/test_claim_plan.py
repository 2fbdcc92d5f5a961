"""On PostgreSQL the claim reads the claim-order index and stops: no scan, no sort."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest
from sqlalchemy import Connection, insert, text

from taskq.models import Task
from taskq.store import Store, hot
from taskq.store.schema import tasks

pytestmark = pytest.mark.postgresql_only

NOW = datetime(2030, 1, 1, 12, 0, 0)
QUEUED = 20_000
WORKERS, PER_WORKER = list(range(1, 33)), 8


def queue(store: Store) -> None:
    """QUEUED tasks, half of them pending, all priorities."""
    rows = [
        {
            "name": "job",
            "payload": {},
            "priority": 1 + n % 4,
            "status": "pending" if n % 2 else "completed",
            "created_at": NOW,
            "updated_at": NOW,
            "attempt": 0,
        }
        for n in range(QUEUED)
    ]
    with store.engine.begin() as connection:
        connection.execute(insert(tasks), rows)


def explain(connection: Connection, sql: str, params: tuple[object, ...]) -> str:
    explained = connection.exec_driver_sql(f"EXPLAIN {sql}", params)
    return "\n".join(row[0] for row in explained)


def explain_claim(connection: Connection, limit: int) -> str:
    return explain(connection, hot.statements_for(connection.dialect).ready, (limit,))


def test_the_claim_walks_ix_tasks_ready_under_skip_locked(store: Store) -> None:
    queue(store)
    with store.engine.begin() as connection:
        connection.execute(text("ANALYZE tasks"))
    with store.transaction() as tx:
        claimed = tx.claim([1, 2, 3, 4], NOW)
    assert [task.priority for task in claimed] == [4, 4, 4, 4]

    # The statement the claim runs on the driver's cursor, as it runs it.
    assert "SKIP LOCKED" in hot.statements_for(store.engine.dialect).ready
    with store.engine.begin() as connection:
        plan = explain_claim(connection, 4)
    assert "Index Scan using ix_tasks_ready" in plan, plan
    assert "Sort" not in plan, plan
    assert "Seq Scan" not in plan, plan


def claimed_and_planned(
    store: Store, planned: Callable[[Connection, list[Task]], str]
) -> tuple[list[Task], str]:
    """Queue, claim for 32 workers 8 tasks each, and plan a statement in the claim's own
    transaction, as the claim leaves it."""
    queue(store)
    with store.transaction() as tx:
        claimed = tx.claim(WORKERS, NOW, PER_WORKER)
        return claimed, planned(tx.connection, claimed)


def test_the_claim_walks_ix_tasks_ready_before_the_table_has_statistics(store: Store) -> None:
    """A queue filled since the last ANALYZE: the planner, expecting a few pending rows,
    would rather read them all and sort them (100 ms at a depth of 100,000)."""
    with store.engine.begin() as connection:
        # No statistics of the table at all (another test may have left some).
        connection.execute(text("DELETE FROM pg_statistic WHERE starelid = 'tasks'::regclass"))

    claimed, plan = claimed_and_planned(
        store, lambda connection, _: explain_claim(connection, len(WORKERS) * PER_WORKER)
    )

    assert [task.priority for task in claimed] == [4] * len(WORKERS) * PER_WORKER
    assert "Index Scan using ix_tasks_ready" in plan, plan
    assert "Sort" not in plan, plan


def explain_take(connection: Connection, claimed: list[Task]) -> str:
    ids = [task.id for task in claimed]
    workers = [task.worker_id for task in claimed]
    take_sql = hot.statements_for(connection.dialect).take_arrays
    return explain(connection, take_sql, (NOW, NOW, NOW, ids, workers))


def test_the_take_looks_each_task_up_by_its_key_when_statistics_predate_the_queue(
    store: Store,
) -> None:
    """Statistics taken while the table was small: the planner, expecting few rows,
    would rather hash the whole table than look two hundred ids up (66 ms at a depth
    of 100,000, against 6 for the whole take)."""
    with store.engine.begin() as connection:
        connection.execute(text("ANALYZE tasks"))

    claimed, plan = claimed_and_planned(store, explain_take)

    assert len(claimed) == len(WORKERS) * PER_WORKER
    assert "Index Scan using tasks_pkey" in plan, plan
    assert "Seq Scan" not in plan, plan
