"""On PostgreSQL the claim reads the claim-order index and stops: no scan, no sort."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import insert, text

from taskq.store import Store, hot
from taskq.store.schema import tasks

pytestmark = pytest.mark.postgresql_only

NOW = datetime(2030, 1, 1, 12, 0, 0)
QUEUED = 20_000


def test_the_claim_walks_ix_tasks_ready_under_skip_locked(store: Store) -> None:
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
        connection.execute(text("ANALYZE tasks"))
    with store.transaction() as tx:
        claimed = tx.claim([1, 2, 3, 4], NOW)
    assert [task.priority for task in claimed] == [4, 4, 4, 4]

    # The statement the claim runs on the driver's cursor, as it runs it.
    claim_sql = hot.statements_for(store.engine.dialect).ready
    assert "SKIP LOCKED" in claim_sql
    with store.engine.begin() as connection:
        explained = connection.exec_driver_sql(f"EXPLAIN {claim_sql}", (4,))
        plan = "\n".join(row[0] for row in explained)
    assert "Index Scan using ix_tasks_ready" in plan, plan
    assert "Sort" not in plan, plan
    assert "Seq Scan" not in plan, plan
