"""The store's operations on executions: claiming tasks and recording what came of them.

``Tx`` inherits these; they are apart to keep the task operations readable on
their own. Every outcome is fenced by the attempt its execution was claimed
with, so the outcome of an execution that was taken away (paused, deleted,
re-queued) can never land. The statements that run once per task are in
``taskq.store.hot``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Update, select, update
from sqlalchemy.engine import Connection

from taskq.models import Action, Task, TaskStatus, filled_by_slot
from taskq.store import hot
from taskq.store.schema import is_source, tasks


@filled_by_slot  # one per outcome written
@dataclass(frozen=True, slots=True)
class Completion:
    """A handler's successful outcome, as ``Tx.complete_many`` records it."""

    task_id: int
    attempt: int
    # JSON text, written as it is (``hot.finish_many``); None: no result.
    result_json: str | None


class ExecutionOps:
    connection: Connection

    def claim(
        self,
        worker_ids: Sequence[int],
        now: datetime,
        per_worker: int = 1,
        above: int | None = None,
    ) -> list[Task]:
        """Hand the most urgent pending tasks to ``worker_ids``, up to ``per_worker`` each.

        A read and a take however many workers (``hot.claim``). The attempt counter
        goes up with every claim; it is the fencing token that ``finish`` checks,
        so the result of an execution that was taken away (paused, deleted,
        re-queued) can never land. ``above``: only tasks of a higher priority.
        """
        if not worker_ids:
            return []
        return hot.claim(self.connection, worker_ids, now, per_worker, above)

    def finish(
        self,
        task_id: int,
        attempt: int,
        *,
        succeeded: bool,
        result_json: str | None,
        error: str | None,
        now: datetime,
    ) -> bool:
        """Record a handler's outcome (its result as JSON text); False when the
        execution was fenced off."""
        status = TaskStatus.COMPLETED if succeeded else TaskStatus.FAILED
        outcome = (task_id, attempt, status, result_json, error)
        return hot.finish_many(self.connection, [outcome], now) == 1

    def complete_many(self, completions: Sequence[Completion], now: datetime) -> list[bool]:
        """Record many successful outcomes at once (``hot.finish_many``), each fenced like
        ``finish``.

        Answers which were written. The database only counts rows in all, so in
        the rare batch where some were fenced off, the rows this batch completed
        (fenced by attempt and stamped ``now``) are read back to tell which.
        """
        written = hot.finish_many(
            self.connection,
            [
                (done.task_id, done.attempt, TaskStatus.COMPLETED, done.result_json, None)
                for done in completions
            ],
            now,
        )
        if written == len(completions):
            return [True] * written
        rows = self.connection.execute(
            select(tasks.c.id, tasks.c.attempt).where(
                tasks.c.id.in_([done.task_id for done in completions]),
                tasks.c.status == TaskStatus.COMPLETED,
                tasks.c.completed_at == now,
            )
        )
        completed = {(task_id, attempt) for task_id, attempt in rows}
        return [(done.task_id, done.attempt) in completed for done in completions]

    def schedule_retry(
        self, task_id: int, attempt: int, *, error: str, at: datetime, now: datetime
    ) -> bool:
        """A failed execution with attempts left: wait until ``at``, keeping the error.

        Fenced like ``finish``; False when the execution was taken away meanwhile.
        """
        written = self.connection.execute(
            self._running_attempt(task_id, attempt).values(
                status=TaskStatus.SCHEDULED,
                scheduled_at=at,
                worker_id=None,
                error=error,
                progress=None,
                updated_at=now,
            )
        )
        return written.rowcount == 1

    def record_progress(self, task_id: int, attempt: int, progress: Any, now: datetime) -> bool:
        """Fenced like ``finish``: a stale execution's progress is dropped."""
        written = self.connection.execute(
            self._running_attempt(task_id, attempt).values(progress=progress, updated_at=now)
        )
        return written.rowcount == 1

    def _running_attempt(self, task_id: int, attempt: int) -> Update:
        return update(tasks).where(
            tasks.c.id == task_id,
            is_source(Action.FINISH),
            tasks.c.attempt == attempt,
        )
