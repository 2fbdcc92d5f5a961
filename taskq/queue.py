"""The Python API of a running system: the same commands the HTTP layer sends.

Every method sends one command and awaits its committed answer; domain errors
(``NotFound``, ``Conflict``, ``Unavailable``) are raised here, in the caller.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Literal

import trio

from taskq.config import DEFAULT_MAX_ATTEMPTS
from taskq.messages import (
    CountTasks,
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
    ReaderCommand,
    Reply,
    ResumeTask,
    RetryTask,
    SetWorkerStatus,
    SpawnWorker,
    SupervisorMessage,
    UpdateTask,
    WriterCommand,
    request,
)
from taskq.models import (
    NewTask,
    Priority,
    Task,
    TaskChanges,
    TaskCounts,
    TaskStatus,
    Worker,
    WorkerStatus,
)
from taskq.registry import ExecutionDefaults


class _Default(enum.Enum):
    TOKEN = "default"


# "Not given": the handler's registration decides, else the system's options.
DEFAULT: Final = _Default.TOKEN

SYSTEM_DEFAULTS = ExecutionDefaults(DEFAULT_MAX_ATTEMPTS, None)


def _system_defaults(name: str) -> ExecutionDefaults:
    return SYSTEM_DEFAULTS


class Queue:
    def __init__(
        self,
        writer: trio.MemorySendChannel[WriterCommand],
        supervisor: trio.MemorySendChannel[SupervisorMessage],
        *,
        defaults: Callable[[str], ExecutionDefaults] = _system_defaults,
        reader: trio.MemorySendChannel[ReaderCommand] | None = None,
        backlog_max: int | None = None,
    ) -> None:
        """Reads go to ``reader`` when there is one, else to the writer (which answers
        them too). ``backlog_max``: refuse a command (``Overloaded``) when that many
        already wait for the actor, rather than wait for room; None waits."""
        self._writer = writer
        self._supervisor = supervisor
        self._defaults = defaults
        self._reader: trio.MemorySendChannel[Any] = writer if reader is None else reader
        self._backlog_max = backlog_max

    def bounded(self, backlog_max: int) -> Queue:
        """This queue, refusing commands beyond ``backlog_max`` waiting: for the HTTP layer."""
        return Queue(
            self._writer,
            self._supervisor,
            defaults=self._defaults,
            reader=self._reader,
            backlog_max=backlog_max,
        )

    async def _write(self, build: Callable[[Reply], WriterCommand]) -> Any:
        return await request(self._writer, build, backlog_max=self._backlog_max)

    async def _read(self, build: Callable[[Reply], Any]) -> Any:
        return await request(self._reader, build, backlog_max=self._backlog_max)

    async def submit(
        self,
        name: str,
        payload: Mapping[str, Any],
        *,
        priority: Priority = Priority.MEDIUM,
        scheduled_at: datetime | None = None,
        max_attempts: int | Literal[_Default.TOKEN] = DEFAULT,
        # The task's own time limit, not this call's.
        timeout: float | Literal[_Default.TOKEN] | None = DEFAULT,  # noqa: ASYNC109
    ) -> Task:
        """Queue a task; ``max_attempts`` and ``timeout`` (seconds, None for no limit)
        left out take the defaults of the handler's registration, then the system's."""
        new = self.new_task(
            name,
            payload,
            priority=priority,
            scheduled_at=scheduled_at,
            max_attempts=max_attempts,
            timeout=timeout,
        )
        task: Task = await self._write(lambda reply: CreateTask(new, reply))
        return task

    def new_task(
        self,
        name: str,
        payload: Mapping[str, Any],
        *,
        priority: Priority = Priority.MEDIUM,
        scheduled_at: datetime | None = None,
        max_attempts: int | Literal[_Default.TOKEN] = DEFAULT,
        timeout: float | Literal[_Default.TOKEN] | None = DEFAULT,
    ) -> NewTask:
        """A task for ``submit_many``, with the same defaults as ``submit``."""
        defaults = self._defaults(name)
        return NewTask(
            name,
            payload,
            priority,
            scheduled_at,
            max_attempts=defaults.max_attempts if max_attempts is DEFAULT else max_attempts,
            timeout=defaults.timeout if timeout is DEFAULT else timeout,
        )

    async def submit_many(self, news: Sequence[NewTask]) -> list[Task]:
        """Create all of ``news`` in one transaction (one commit, one fsync); same order back.

        The way to enqueue in bulk: thousands of tasks cost about what a few
        single submits do.
        """
        tasks: list[Task] = await self._write(lambda reply: CreateTasks(tuple(news), reply))
        return tasks

    async def get_task(self, task_id: int) -> Task:
        task: Task = await self._read(lambda reply: GetTask(task_id, reply))
        return task

    async def list_tasks(
        self,
        *,
        skip: int = 0,
        limit: int = 100,
        status: TaskStatus | None = None,
        name: str | None = None,
        priority: Priority | None = None,
        newest_first: bool = False,
    ) -> list[Task]:
        found: list[Task] = await self._read(
            lambda reply: ListTasks(skip, limit, status, reply, name, priority, newest_first),
        )
        return found

    async def count_tasks(self) -> TaskCounts:
        """How many tasks each (status, priority) pair holds, read in one transaction."""
        counts: TaskCounts = await self._read(CountTasks)
        return counts

    async def update_task(self, task_id: int, changes: TaskChanges) -> Task:
        task: Task = await self._write(lambda reply: UpdateTask(task_id, changes, reply))
        return task

    async def delete_task(self, task_id: int) -> None:
        await self._write(lambda reply: DeleteTask(task_id, reply))

    async def pause_task(self, task_id: int) -> Task:
        task: Task = await self._write(lambda reply: PauseTask(task_id, reply))
        return task

    async def resume_task(self, task_id: int) -> Task:
        task: Task = await self._write(lambda reply: ResumeTask(task_id, reply))
        return task

    async def retry_task(self, task_id: int) -> Task:
        """Put a failed task back in the queue with a fresh attempt budget."""
        task: Task = await self._write(lambda reply: RetryTask(task_id, reply))
        return task

    async def create_worker(self, name: str) -> Worker:
        """Register a worker and start its actor; it takes tasks at once."""
        worker: Worker = await self._write(lambda reply: CreateWorker(name, reply))
        await request(self._supervisor, lambda reply: SpawnWorker(worker.id, reply))
        return worker

    async def get_worker(self, worker_id: int) -> Worker:
        worker: Worker = await self._read(lambda reply: GetWorker(worker_id, reply))
        return worker

    async def list_workers(self) -> list[Worker]:
        found: list[Worker] = await self._read(ListWorkers)
        return found

    async def heartbeat(self, worker_id: int) -> Worker:
        worker: Worker = await self._write(lambda reply: Heartbeat(worker_id, reply))
        return worker

    async def set_worker_status(self, worker_id: int, status: WorkerStatus) -> Worker:
        worker: Worker = await self._write(lambda reply: SetWorkerStatus(worker_id, status, reply))
        return worker
