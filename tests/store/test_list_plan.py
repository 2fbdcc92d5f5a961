"""A page of tasks by status reads ``ix_tasks_status_id`` in id order: no scan, no sort.

``GET /api/tasks/?status=pending&limit=100`` must stay fast with a million tasks queued.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, text

from taskq.models import TaskStatus
from taskq.store import Store
from taskq.store.schema import tasks
from taskq.store.store import _LIST_TASKS_BY_STATUS

NOW = datetime(2030, 1, 1, 12, 0, 0)
QUEUED = 20_000
PENDING = 1_000


def test_a_page_by_status_walks_ix_tasks_status_id(store: Store) -> None:
    rows = [
        {
            "name": "job",
            "payload": {},
            "priority": 1 + n % 4,
            # As a queue grows old: the finished tasks first, the waiting ones last.
            "status": "completed" if n < QUEUED - PENDING else "pending",
            "created_at": NOW,
            "updated_at": NOW,
            "attempt": 0,
        }
        for n in range(QUEUED)
    ]
    with store.engine.begin() as connection:
        connection.execute(insert(tasks), rows)
        connection.execute(text("ANALYZE tasks"))
    with store.read_transaction() as tx:
        page = tx.list_tasks(0, 100, TaskStatus.PENDING)
    first = QUEUED - PENDING + 1
    assert [task.id for task in page] == list(range(first, first + 100))

    # The statement the store runs, with this page's values.
    compiled = _LIST_TASKS_BY_STATUS.compile(store.engine)
    values = {"b_status": "pending", "b_skip": 0, "b_limit": 100}
    params = tuple(values[name] for name in compiled.positiontup or ()) or values
    postgresql = store.engine.dialect.name == "postgresql"
    with store.engine.connect() as connection:
        explain = "EXPLAIN" if postgresql else "EXPLAIN QUERY PLAN"
        explained = connection.exec_driver_sql(f"{explain} {compiled}", params)
        plan = "\n".join(str(row[-1]) for row in explained)
    if postgresql:
        assert "Index Scan using ix_tasks_status_id" in plan, plan
        assert "Seq Scan" not in plan, plan
    else:
        assert "USING INDEX ix_tasks_status_id" in plan, plan
    assert "Sort" not in plan, plan
    assert "TEMP B-TREE" not in plan, plan
