"""What every execution of the process shares, opened once around the actors.

The nursery that executions which may suspend run in (see ``taskq.execution``),
the one asyncio loop (trio-asyncio) that ``asyncio`` handlers share, the pool of
worker processes (trio-parallel) for ``process`` handlers, the retry policy, and
the executions suspended at a checkpoint, by task id. Every operation on the
suspended executions is synchronous, so no two actors interleave inside one.
"""

from __future__ import annotations

import functools
import logging
import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
import trio_asyncio
import trio_parallel

from taskq.config import (
    CHECKPOINT_GRACE_SECONDS,
    DEFAULT_RETRY_BACKOFF_MAX_SECONDS,
    DEFAULT_RETRY_BACKOFF_SECONDS,
)
from taskq.messages import FinishTask
from taskq.models import Task

if TYPE_CHECKING:
    from taskq.execution import Execution, Outcome

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter and a cap.

    After the n-th failed attempt the task waits
    ``min(backoff_max_seconds, backoff_seconds * 2**(n-1)) * uniform(0.5, 1)``:
    the doubling spaces retries out, the cap bounds the wait, and the jitter
    keeps tasks that failed together from all retrying in the same instant.
    """

    backoff_seconds: float = DEFAULT_RETRY_BACKOFF_SECONDS
    backoff_max_seconds: float = DEFAULT_RETRY_BACKOFF_MAX_SECONDS

    def delay(self, failures: int, rng: random.Random) -> float:
        doubled = self.backoff_seconds * 2.0 ** min(failures - 1, 64)
        return min(self.backoff_max_seconds, doubled) * rng.uniform(0.5, 1.0)


class Runtimes:
    """What every execution of the process shares: the nursery they run in, the
    asyncio loop, the process pool, the retry policy, and the suspended executions."""

    def __init__(
        self,
        nursery: trio.Nursery,
        loop: trio_asyncio.TrioEventLoop,
        processes: trio_parallel.WorkerContext,
        *,
        retry: RetryPolicy,
        checkpoint_grace: float,
        rng: random.Random,
    ) -> None:
        self.nursery = nursery
        self.loop = loop
        self.processes = processes
        self.retry = retry
        self.checkpoint_grace = checkpoint_grace
        self.rng = rng
        self.suspended: dict[int, Execution] = {}

    def take(self, task_id: int) -> Execution | None:
        """The suspended execution of ``task_id``, which the caller now continues."""
        return self.suspended.pop(task_id, None)

    def void(self, task_id: int) -> None:
        """End the suspended execution of a task that was deleted or rewritten."""
        execution = self.suspended.pop(task_id, None)
        if execution is not None:
            execution.cancel()

    def finish_command(self, task: Task, outcome: Outcome) -> FinishTask:
        """The outcome as the writer takes it: a failure with attempts left is retried."""
        retry_after = None
        if not outcome.succeeded and outcome.retryable and task.attempts < task.max_attempts:
            retry_after = self.retry.delay(task.attempts, self.rng)
        # By position: calling a class with keywords builds a dict of them on every call.
        return FinishTask(
            task.id,
            task.attempt,
            outcome.succeeded,
            outcome.result_json,
            outcome.error,
            None,
            retry_after,
        )


@asynccontextmanager
async def open_runtimes(
    *,
    retry: RetryPolicy | None = None,
    checkpoint_grace: float = CHECKPOINT_GRACE_SECONDS,
    rng: random.Random | None = None,
    warm_processes: bool = False,
) -> AsyncIterator[Runtimes]:
    """Open the asyncio loop and the process pool once; on exit, stop what still runs.

    ``warm_processes`` starts one worker process per core in the background, so
    the first ``process`` tasks do not wait for a Python interpreter to start.
    """
    async with (
        trio_asyncio.open_loop() as loop,
        trio_parallel.open_worker_context() as processes,
        trio.open_nursery() as nursery,
    ):
        if warm_processes:
            nursery.start_soon(_warm_up, processes)
        try:
            yield Runtimes(
                nursery,
                loop,
                processes,
                retry=retry or RetryPolicy(),
                checkpoint_grace=checkpoint_grace,
                rng=rng or random.Random(),
            )
        finally:
            nursery.cancel_scope.cancel()


async def _warm_up(processes: trio_parallel.WorkerContext) -> None:
    try:
        async with trio.open_nursery() as starting:
            for _ in range(os.cpu_count() or 1):
                starting.start_soon(
                    functools.partial(processes.run_sync, _nothing, kill_on_cancel=True)
                )
    except Exception:
        log.exception("could not start the worker processes ahead of time")


def _nothing() -> None:
    """Run once in each worker process as it starts."""
