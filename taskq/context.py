"""``TaskContext``: what a handler knows of its execution, and how it talks back.

A handler that takes a second parameter gets one. ``checkpoint`` and
``progress`` are Trio coroutines, so only ``trio`` handlers can await them.
"""

from __future__ import annotations

from typing import Any, Protocol

import trio


class _Execution(Protocol):
    async def checkpoint(self) -> None: ...

    async def report_progress(self, progress: Any) -> None: ...


class TaskContext:
    """The task being run, by whom, and the handler's line back to taskq.

    ``attempt`` (the claim's fencing token) and ``worker_id`` change when a
    suspended execution is resumed: it continues under its new claim.
    """

    __slots__ = ("_execution", "attempt", "name", "task_id", "worker_id")

    def __init__(
        self,
        task_id: int,
        name: str,
        attempt: int,
        worker_id: int,
        execution: _Execution | None = None,
    ) -> None:
        self.task_id = task_id
        self.name = name
        self.attempt = attempt
        self.worker_id = worker_id
        self._execution = execution

    def __repr__(self) -> str:
        return (
            f"TaskContext(task_id={self.task_id}, name={self.name!r}, "
            f"attempt={self.attempt}, worker_id={self.worker_id})"
        )

    async def checkpoint(self) -> None:
        """A safe place to stop: if the task was paused, wait here until it is resumed.

        Call it often in long handlers. A pause then suspends the handler here,
        local state and all, and a resume continues right after this call; a
        handler that never calls it is cancelled by a pause and starts over on
        resume. It is also a Trio checkpoint (cancellation may arrive here).
        """
        if self._execution is None:
            await trio.lowlevel.checkpoint()
        else:
            await self._execution.checkpoint()

    async def progress(self, progress: Any) -> None:
        """Report how far the handler has come: a fraction, a dict, any JSON value.

        It shows in the task's ``progress`` field. Cheap to call often: reports
        are coalesced, at most one write is in flight per execution and the
        latest value wins. Raises ``ValueError`` for a value JSON cannot write.
        """
        if self._execution is None:
            await trio.lowlevel.checkpoint()
        else:
            await self._execution.report_progress(progress)
