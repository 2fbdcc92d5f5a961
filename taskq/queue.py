"""The Python API of a running system: the same commands the HTTP layer sends.

Every method sends one command and awaits its committed answer; domain errors
(``NotFound``, ``Conflict``, ``Unavailable``) are raised here, in the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import trio

from taskq.messages import (
    CreateTask,
    CreateTasks,
    CreateWorker,
    DeleteTask,
    GetTask,
    GetWorker,
    Heartbeat,
    ListTasks,
    ListWorkers,
    PauseTask,
    ResumeTask,
    SetWorkerStatus,
    SpawnWorker,
    SupervisorMessage,
    UpdateTask,
    WriterCommand,
    request,
)
from taskq.models import NewTask, Priority, Task, TaskChanges, TaskStatus, Worker, WorkerStatus


class Queue:
    def __init__(
        self,
        writer: trio.MemorySendChannel[WriterCommand],
        supervisor: trio.MemorySendChannel[SupervisorMessage],
    ) -> None:
        self._writer = writer
        self._supervisor = supervisor

    async def submit(
        self,
        name: str,
        payload: Mapping[str, Any],
        *,
        priority: Priority = Priority.MEDIUM,
        scheduled_at: datetime | None = None,
    ) -> Task:
        new = NewTask(name, payload, priority, scheduled_at)
        task: Task = await request(self._writer, lambda reply: CreateTask(new, reply))
        return task

    async def submit_many(self, news: Sequence[NewTask]) -> list[Task]:
        """Create all of ``news`` in one transaction (one commit, one fsync); same order back.

        The way to enqueue in bulk: thousands of tasks cost about what a few
        single submits do.
        """
        tasks: list[Task] = await request(
            self._writer, lambda reply: CreateTasks(tuple(news), reply)
        )
        return tasks

    async def get_task(self, task_id: int) -> Task:
        task: Task = await request(self._writer, lambda reply: GetTask(task_id, reply))
        return task

    async def list_tasks(
        self, *, skip: int = 0, limit: int = 100, status: TaskStatus | None = None
    ) -> list[Task]:
        found: list[Task] = await request(
            self._writer, lambda reply: ListTasks(skip, limit, status, reply)
        )
        return found

    async def update_task(self, task_id: int, changes: TaskChanges) -> Task:
        task: Task = await request(self._writer, lambda reply: UpdateTask(task_id, changes, reply))
        return task

    async def delete_task(self, task_id: int) -> None:
        await request(self._writer, lambda reply: DeleteTask(task_id, reply))

    async def pause_task(self, task_id: int) -> Task:
        task: Task = await request(self._writer, lambda reply: PauseTask(task_id, reply))
        return task

    async def resume_task(self, task_id: int) -> Task:
        task: Task = await request(self._writer, lambda reply: ResumeTask(task_id, reply))
        return task

    async def create_worker(self, name: str) -> Worker:
        """Register a worker and start its actor; it takes tasks at once."""
        worker: Worker = await request(self._writer, lambda reply: CreateWorker(name, reply))
        await request(self._supervisor, lambda reply: SpawnWorker(worker.id, reply))
        return worker

    async def get_worker(self, worker_id: int) -> Worker:
        worker: Worker = await request(self._writer, lambda reply: GetWorker(worker_id, reply))
        return worker

    async def list_workers(self) -> list[Worker]:
        found: list[Worker] = await request(self._writer, ListWorkers)
        return found

    async def heartbeat(self, worker_id: int) -> Worker:
        worker: Worker = await request(self._writer, lambda reply: Heartbeat(worker_id, reply))
        return worker

    async def set_worker_status(self, worker_id: int, status: WorkerStatus) -> Worker:
        worker: Worker = await request(
            self._writer, lambda reply: SetWorkerStatus(worker_id, status, reply)
        )
        return worker
