"""The Reader: answers the read-only commands (get, list, count) on a connection of its own.

Reads used to queue with the writes in the Writer's inbox: a ``GET`` waited
for the batch ahead of it to commit, and a count over a million rows held up
every write behind it. The Reader takes whatever reads wait, runs them on its
own thread and connection (``Store.read_transaction``) and answers each; a
read sees every write acknowledged before it was sent, since a write is
answered only after its commit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import outcome
import trio

from taskq import threads
from taskq.config import READER_BATCH_MAX
from taskq.errors import TaskqError, Unavailable
from taskq.messages import (
    CountTasks,
    GetTask,
    GetWorker,
    ListTasks,
    ListWorkers,
    ReaderCommand,
    answer,
    drain,
)
from taskq.store import Store, Tx

log = logging.getLogger(__name__)

Results = list[outcome.Outcome[Any]]


async def run(
    inbox: trio.MemoryReceiveChannel[ReaderCommand],
    store: Store,
    *,
    batch_max: int = READER_BATCH_MAX,
) -> None:
    """Answer reads in batches, one thread hop each, until every sender has closed the inbox."""
    async for first in inbox:
        batch = [first, *drain(inbox, batch_max - 1)]
        try:
            results = await threads.run_sync(read_batch, store, batch)
        except BaseException:
            for command in batch:
                answer(command.reply, outcome.Error(Unavailable("the read failed; try again")))
            raise
        for command, result in zip(batch, results, strict=True):
            answer(command.reply, result)


def read_batch(store: Store, batch: Sequence[ReaderCommand]) -> Results:
    """Runs on the reader's thread; a database error fails the reads left, never the actor."""
    results: Results = []
    try:
        with store.read_transaction() as tx:
            for command in batch:
                try:
                    results.append(outcome.Value(_read(tx, command)))
                except TaskqError as refusal:
                    results.append(outcome.Error(refusal))
    except Exception as exc:
        log.exception("a batch of %d reads failed", len(batch))
        failure = Unavailable(f"taskq could not read ({type(exc).__name__}: {exc})")
        results += [outcome.Error(failure)] * (len(batch) - len(results))
    return results


def _read(tx: Tx, command: ReaderCommand) -> Any:
    match command:
        case GetTask(task_id=task_id):
            return tx.get_task(task_id)
        case ListTasks(skip=skip, limit=limit, status=status):
            return tx.list_tasks(
                skip,
                limit,
                status,
                name=command.name,
                priority=command.priority,
                newest_first=command.newest_first,
            )
        case CountTasks():
            return tx.count_tasks()
        case GetWorker(worker_id=worker_id):
            return tx.get_worker(worker_id)
        case ListWorkers():
            return tx.list_workers()
    raise AssertionError(f"unknown reader command {command!r}")
