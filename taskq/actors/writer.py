"""The Writer: the only actor that writes to the database.

Group commit: it takes the first command waiting, drains whatever else is
already queued (up to ``batch_max``), applies all of it in ONE transaction on
its own thread, commits, and only then answers each command and publishes the
resulting events. An answer therefore always describes committed state: an
HTTP 201 means the task is on disk.

How a batch is applied (shared statements, one bad command refused alone,
NOTIFY to other nodes) is ``taskq.actors.batches``; this module is the actor's
loop: batching, the parked claim, answers, events.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeGuard

import outcome
import trio

from taskq import threads
from taskq.actors.batches import apply_batch
from taskq.config import WRITER_BATCH_MAX, WRITER_LINGER_SECONDS
from taskq.errors import Unavailable
from taskq.messages import (
    ClaimTasks,
    Committed,
    DispatcherMessage,
    Event,
    HubMessage,
    SchedulerMessage,
    SetWorkerStatus,
    SuspensionVoided,
    TaskRevoked,
    TaskScheduled,
    TasksReady,
    WithdrawClaim,
    WorkerStatusChanged,
    WriterCommand,
    answer,
    drain,
)
from taskq.models import WorkerStatus, utcnow
from taskq.store import Store

log = logging.getLogger(__name__)


async def run(
    inbox: trio.MemoryReceiveChannel[WriterCommand],
    store: Store,
    dispatcher: trio.MemorySendChannel[DispatcherMessage],
    scheduler: trio.MemorySendChannel[SchedulerMessage],
    *,
    clock: Callable[[], datetime] = utcnow,
    batch_max: int = WRITER_BATCH_MAX,
    hub: trio.MemorySendChannel[HubMessage] | None = None,
    linger_seconds: float = WRITER_LINGER_SECONDS,
) -> None:
    """Apply commands in batches until every sender has closed the inbox.

    ``hub`` (unbounded) gets each committed batch as it is, for the event stream
    and the metrics; the writer does no more work for them than that one send.
    """
    parked: ClaimTasks | None = None
    # Workers this writer set inactive: no claim, even one sent before, reaches them.
    stopped: set[int] = set()
    try:
        async for first in inbox:
            batch = [first, *drain(inbox, batch_max - 1)]
            if all(command.reply is None for command in batch):
                batch += await _linger(inbox, batch_max - len(batch), linger_seconds)
            if parked is not None and _still_awaited(parked):
                batch.append(parked)
            parked = None
            batch = _claims_last(_without_stopped_workers(batch, stopped))
            now = clock()
            started = time.perf_counter()
            try:
                results, events = await threads.run_sync(apply_batch, store, batch, now)
            except BaseException:
                _refuse(batch, "the writer failed while applying this request; try again")
                raise
            seconds = time.perf_counter() - started
            try:
                parked = _answer_all(batch, results)
            except BaseException:
                _abandon(batch)
                raise
            _note_status_changes(batch, results, stopped)
            publish(events, dispatcher, scheduler)
            if hub is not None:
                _send(hub, Committed(tuple(batch), tuple(results), now, seconds))
    finally:
        if parked is not None:
            answer(parked.reply, outcome.Value([]))


def _answer_all(
    batch: Sequence[WriterCommand], results: Sequence[outcome.Outcome[Any]]
) -> ClaimTasks | None:
    """Answer every command but a waiting claim that found nothing: that one is returned,
    to be parked (the latest such claim wins; a withdrawal answers it with nothing)."""
    parked: ClaimTasks | None = None
    withdrawn = any(isinstance(command, WithdrawClaim) for command in batch)
    for command, result in zip(batch, results, strict=True):
        if _found_nothing(command, result) and not withdrawn:
            if parked is not None:
                answer(parked.reply, outcome.Value([]))
            parked = command
        else:
            answer(command.reply, result)
    return parked


def _found_nothing(command: WriterCommand, result: outcome.Outcome[Any]) -> TypeGuard[ClaimTasks]:
    return (
        isinstance(command, ClaimTasks)
        and command.wait
        and isinstance(result, outcome.Value)
        and result.value == []
    )


def _still_awaited(claim: ClaimTasks) -> bool:
    """A claim whose asker has gone (a restarted dispatcher) must not take tasks."""
    return claim.reply is None or claim.reply.statistics().open_receive_channels > 0


def _claims_last(batch: Sequence[WriterCommand]) -> list[WriterCommand]:
    """Claims see everything else in their batch: a task created beside a claim is
    claimed in that commit, never left for a claim that already ran and was parked."""
    return sorted(batch, key=lambda command: isinstance(command, ClaimTasks))


def _without_stopped_workers(
    batch: Sequence[WriterCommand], stopped: set[int]
) -> list[WriterCommand]:
    """Leave out of every claim the workers set inactive before or within this batch;
    a claim left with no worker is answered at once with no task."""
    leaving = stopped | {
        command.worker_id
        for command in batch
        if isinstance(command, SetWorkerStatus) and command.status != WorkerStatus.ACTIVE
    }
    if not leaving:
        return list(batch)
    kept: list[WriterCommand] = []
    for command in batch:
        if isinstance(command, ClaimTasks):
            worker_ids = tuple(worker for worker in command.worker_ids if worker not in leaving)
            if not worker_ids:
                answer(command.reply, outcome.Value([]))
                continue
            command = dataclasses.replace(command, worker_ids=worker_ids)
        kept.append(command)
    return kept


def _note_status_changes(
    batch: Sequence[WriterCommand], results: Sequence[outcome.Outcome[Any]], stopped: set[int]
) -> None:
    for command, result in zip(batch, results, strict=True):
        if isinstance(command, SetWorkerStatus) and isinstance(result, outcome.Value):
            if command.status == WorkerStatus.ACTIVE:
                stopped.discard(command.worker_id)
            else:
                stopped.add(command.worker_id)


async def _linger(
    inbox: trio.MemoryReceiveChannel[WriterCommand], most: int, seconds: float
) -> list[WriterCommand]:
    """A batch nobody waits for (workers' outcomes) waits a moment for company.

    The outcomes of a round of tasks arrive a few at a time (each worker's
    next one a scheduling round later), then the claim for the same workers.
    Waiting until a command someone awaits arrives (that claim, a submit), or
    at most ``seconds``, puts the round in one commit instead of one for its
    first outcomes and another for the rest with the claim; the awaited
    command itself is never held up.
    """
    company: list[WriterCommand] = []
    with trio.move_on_after(seconds):
        while len(company) < most:
            try:
                arrived = [await inbox.receive()]
            except trio.EndOfChannel:
                break
            arrived += drain(inbox, most - len(company) - 1)
            company += arrived
            if any(command.reply is not None for command in arrived):
                break
    return company


def _refuse(batch: Sequence[WriterCommand], detail: str) -> None:
    for command in batch:
        answer(command.reply, outcome.Error(Unavailable(detail)))


def _abandon(batch: Sequence[WriterCommand]) -> None:
    """The writer is failing after its commit, half-way through answering: close every
    reply still open, so each of those askers gets ``Unavailable`` (``request``) instead
    of waiting for ever. Closing never answers: no one gets a success that is untrue."""
    for command in batch:
        if command.reply is not None:
            command.reply.close()


def publish(
    events: Sequence[Event],
    dispatcher: trio.MemorySendChannel[DispatcherMessage],
    scheduler: trio.MemorySendChannel[SchedulerMessage],
) -> None:
    """Events go to unbounded inboxes: publishing never blocks the writer."""
    ready_sent = False
    for event in events:
        match event:
            case TasksReady():
                if not ready_sent:
                    _send(dispatcher, event)
                    ready_sent = True
            case TaskScheduled():
                _send(scheduler, event)
            case TaskRevoked() | SuspensionVoided() | WorkerStatusChanged():
                _send(dispatcher, event)


def _send(inbox: trio.MemorySendChannel[Any], event: Event | Committed) -> None:
    try:
        inbox.send_nowait(event)
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        log.debug("dropped %r: its receiver has stopped", event)
