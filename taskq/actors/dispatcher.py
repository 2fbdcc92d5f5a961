"""The Dispatcher: matches idle workers with ready tasks.

It keeps the directory of worker inboxes and the set of idle workers. While
there are idle workers it keeps ONE claim for all of them at the writer (a
single transaction hands out, most urgent first, one task each and, on a deep
queue of short tasks, several each: as many as recent durations say fit in
``CLAIM_AHEAD_SECONDS``) and delivers what comes back, one ``RunTasks`` per
worker. The claim waits: when
nothing is ready the writer parks it and runs it again inside every later
batch, so a task created for an idle system is claimed in the same commit
that stored it, with no wake-up event and no second round trip. A claim's own
child task does the waiting; the actor meanwhile keeps routing. When a worker
of the waiting claim may no longer take tasks (inactive, gone, shutdown), the
claim is withdrawn and made again for those who still may; the writer itself
leaves out of any claim the workers it has set inactive, so no claim already
on its way can reach them.

On a deep queue of short tasks a claim first waits (``_gathered``, a few ms at
most) for the workers about to finish their shares too, so that one claim serves
them all.

On a deep queue a second claim waits at the writer beside the first: for one
task more urgent than any the last claim handed out, for a busy worker, so
that such a task is claimed in the commit that stores it rather than with the
next round's claim (``_claim_urgent``).

It also routes to workers what concerns them: revocations (pause, delete) and
status changes. A suspended execution (paused at a checkpoint) has no worker;
when its task is deleted or rewritten, ``void_suspension`` ends it. A worker's
idle announcement counts only while the dispatcher believes it active, so a
late announcement never hands a task to a worker that was just set inactive.
After a dispatcher restart the supervisor re-registers every worker and asks
each to announce itself again.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator

import outcome
import trio

from taskq.config import (
    CLAIM_AHEAD_SECONDS,
    CLAIM_TASKS_PER_WORKER_MAX,
    RETRY_FIRST_SECONDS,
    RETRY_MAX_SECONDS,
)
from taskq.errors import Unavailable
from taskq.messages import (
    ClaimTasks,
    DispatcherMessage,
    RunTasks,
    SetActive,
    StopDispatching,
    StopTask,
    SuspensionVoided,
    TaskRevoked,
    TasksReady,
    WithdrawClaim,
    WorkerIdle,
    WorkerJoined,
    WorkerMessage,
    WorkerStatusChanged,
    WriterCommand,
    answer,
    request,
)
from taskq.models import Priority, Task, WorkerStatus

log = logging.getLogger(__name__)

# How much each worker's report moves the running average of task durations.
TASK_SECONDS_WEIGHT = 0.2


class _State:
    def __init__(self, per_worker_max: int) -> None:
        self.per_worker_max = per_worker_max
        # Recent tasks' seconds each, as workers report them; None: not known yet.
        self.task_seconds: float | None = None
        self.workers: dict[int, trio.MemorySendChannel[WorkerMessage]] = {}
        # Insertion-ordered set: the worker idle longest is served first.
        self.idle: dict[int, None] = {}
        self.inactive: set[int] = set()
        self.stopped = False
        self.claimer = False
        # The workers of the claim at the writer, while one is out.
        self.claiming: frozenset[int] = frozenset()
        self.withdraw = False
        # Workers holding what they were handed, the one handed to last at the end.
        self.handed: dict[int, None] = {}
        # The most urgent priority handed out by the last claim for idle workers, when
        # it filled every share (a deep queue); and whether the claim for anything
        # more urgent is out.
        self.floor: Priority | None = None
        self.urgent_out = False
        # Set when a worker goes idle; what a claim gathering idle workers waits for.
        self.went_idle = trio.Event()


def _no_suspensions(task_id: int) -> None:
    """Without an execution runtime there is nothing suspended to end."""


async def run(
    inbox: trio.MemoryReceiveChannel[DispatcherMessage],
    writer: trio.MemorySendChannel[WriterCommand],
    *,
    void_suspension: Callable[[int], None] = _no_suspensions,
    per_worker_max: int = CLAIM_TASKS_PER_WORKER_MAX,
) -> None:
    state = _State(per_worker_max)
    async with trio.open_nursery() as nursery:
        async for message in inbox:
            _handle(state, message, void_suspension)
            # Everything already waiting first: one claim then serves every worker
            # that went idle meanwhile, in the same commit as their outcomes.
            for waiting in _already_waiting(inbox):
                _handle(state, waiting, void_suspension)
            if state.withdraw:
                state.withdraw = False
                await writer.send(WithdrawClaim())
            if state.idle and not state.claimer and not state.stopped:
                state.claimer = True
                nursery.start_soon(_claim_while_idle, state, writer, nursery)
        nursery.cancel_scope.cancel()


def _already_waiting(
    inbox: trio.MemoryReceiveChannel[DispatcherMessage],
) -> Iterator[DispatcherMessage]:
    while True:
        try:
            yield inbox.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return


def _handle(
    state: _State, message: DispatcherMessage, void_suspension: Callable[[int], None]
) -> None:
    match message:
        case WorkerJoined(worker_id=worker_id, inbox=worker_inbox):
            state.workers[worker_id] = worker_inbox
        case WorkerIdle(worker_id=worker_id, task_seconds=task_seconds):
            if task_seconds is not None:
                state.task_seconds = _smoothed(state.task_seconds, task_seconds)
            state.handed.pop(worker_id, None)
            if worker_id in state.workers and worker_id not in state.inactive:
                state.idle[worker_id] = None
                state.went_idle.set()
        case TaskRevoked(task_id=task_id, worker_id=worker_id, suspend=suspend):
            _tell(state, worker_id, StopTask(task_id, suspend))
        case SuspensionVoided(task_id=task_id):
            void_suspension(task_id)
        case TasksReady(from_other_node=True):
            # The parked claim cannot see another node's commit: withdrawn, it is made again.
            state.withdraw = bool(state.claiming)
        case WorkerStatusChanged(worker_id=worker_id, status=status):
            if status == WorkerStatus.ACTIVE:
                state.inactive.discard(worker_id)
            else:
                state.inactive.add(worker_id)
                _not_idle(state, worker_id)
            _tell(state, worker_id, SetActive(status == WorkerStatus.ACTIVE))
        case StopDispatching(reply=reply):
            state.stopped = True
            state.withdraw = bool(state.claiming) or state.urgent_out
            answer(reply, outcome.Value(None))


def _smoothed(average: float | None, sample: float) -> float:
    return sample if average is None else average + (sample - average) * TASK_SECONDS_WEIGHT


def _per_worker(state: _State) -> int:
    """As many tasks as fit in ``CLAIM_AHEAD_SECONDS`` of work; one while that is unknown."""
    if state.task_seconds is None:
        return 1
    fit = int(CLAIM_AHEAD_SECONDS / max(state.task_seconds, 1e-9))
    return max(1, min(state.per_worker_max, fit))


def _not_idle(state: _State, worker_id: int) -> None:
    state.idle.pop(worker_id, None)
    state.handed.pop(worker_id, None)
    if worker_id in state.claiming:
        state.withdraw = True


async def _claim_while_idle(
    state: _State, writer: trio.MemorySendChannel[WriterCommand], nursery: trio.Nursery
) -> None:
    """Claim for the idle workers, deliver, and again for those left, while there are
    any; on a deep queue each claim has a claim for an urgent task beside it."""
    backoff = RETRY_FIRST_SECONDS
    try:
        while state.idle and not state.stopped:
            await _gathered(state)
            if not state.idle or state.stopped:
                break
            worker_ids = tuple(state.idle)
            state.claiming = frozenset(worker_ids)
            per_worker = _per_worker(state)
            _claim_urgent(state, writer, nursery, worker_ids[-1])
            try:
                claim = functools.partial(ClaimTasks, worker_ids, wait=True, per_worker=per_worker)
                claimed: list[Task] = await request(writer, claim)
            except Unavailable as exc:
                # The database is away: keep trying, while the actor goes on routing.
                log.warning("claim failed (%s); trying again in %.2f s", exc, backoff)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX_SECONDS)
                continue
            finally:
                state.claiming = frozenset()
            backoff = RETRY_FIRST_SECONDS
            full = len(claimed) == len(worker_ids) * per_worker
            state.floor = claimed[0].priority if full else None
            if not claimed and state.urgent_out:
                # The urgent claim, parked later, took this one's place at the writer
                # (the writer keeps one): withdrawn, it leaves the place to the next.
                await writer.send(WithdrawClaim())
            _deliver(state, claimed)
    finally:
        state.claimer = False


async def _gathered(state: _State) -> None:
    """On a deep queue of short tasks, wait until the idle workers are at least as many
    as those still on their shares, or ``CLAIM_AHEAD_SECONDS`` (about how long a
    share lasts) has passed.

    A worker that ends its share a moment before the rest would otherwise get a
    claim of its own; the rest, idle while that claim is out, one after it; and
    the two groups, each running its share while the other's claim is applied,
    stay apart round after round: two commits per round instead of one. A worker
    on a long task counts for one only, so it holds up no claim for long.
    """
    if state.floor is None or _per_worker(state) == 1:
        return
    with trio.move_on_after(CLAIM_AHEAD_SECONDS):
        while len(state.idle) < len(state.handed) and not state.stopped:
            state.went_idle = trio.Event()
            await state.went_idle.wait()


def _claim_urgent(
    state: _State,
    writer: trio.MemorySendChannel[WriterCommand],
    nursery: trio.Nursery,
    fallback: int,
) -> None:
    """Beside a claim for idle workers on a deep queue of short tasks, a waiting claim
    of one task more urgent than any that claim handed out, for a busy worker.

    The claims for idle workers come once workers have run their shares: a task
    created meanwhile went into a batch with no claim and waited for the next
    one (on PostgreSQL a batch of a round's outcomes and a claim, tens of ms).
    This claim finds nothing and waits at the writer, which runs it in every
    batch (one read down ``ix_tasks_ready``), so a more urgent task is claimed in
    the commit that stores it; the worker runs it next (a worker runs what it
    holds most urgent first). It goes with the claim for idle workers, not
    alone, so it never makes a batch of its own; and only on a deep queue, since
    a claim for idle workers that finds nothing would take its place at the
    writer. It goes to the worker handed to last (the likeliest to be on one of
    those short tasks), or to one of that claim's.
    """
    floor = state.floor
    if floor is None or floor == max(Priority) or state.stopped or state.urgent_out:
        return
    if _per_worker(state) == 1:
        return
    busy = (worker_id for worker_id in reversed(state.handed) if worker_id not in state.inactive)
    state.urgent_out = True
    nursery.start_soon(_wait_for_urgent, state, writer, next(busy, fallback), floor)


async def _wait_for_urgent(
    state: _State, writer: trio.MemorySendChannel[WriterCommand], worker_id: int, floor: Priority
) -> None:
    """Deliver what the claim for a task above ``floor`` gets; it is made again with
    the next claim for idle workers. A failure is left to those claims."""
    claim = functools.partial(ClaimTasks, (worker_id,), wait=True, above=floor)
    try:
        claimed: list[Task] = await request(writer, claim)
    except Unavailable:
        return
    finally:
        state.urgent_out = False
    _deliver(state, claimed)


def _deliver(state: _State, claimed: list[Task]) -> None:
    for worker_id, tasks in _by_worker(claimed).items():
        state.idle.pop(worker_id, None)
        state.handed.pop(worker_id, None)
        state.handed[worker_id] = None
        _tell(state, worker_id, RunTasks(tuple(tasks)))


def _by_worker(claimed: list[Task]) -> dict[int, list[Task]]:
    """Each worker's share of a claim, in the order the claim dealt it (most urgent first)."""
    shares: dict[int, list[Task]] = {}
    for task in claimed:
        assert task.worker_id is not None
        shares.setdefault(task.worker_id, []).append(task)
    return shares


def _tell(state: _State, worker_id: int, message: WorkerMessage) -> None:
    """Worker inboxes are unbounded, so the dispatcher never waits on a worker."""
    inbox = state.workers.get(worker_id)
    if inbox is None:
        return
    try:
        inbox.send_nowait(message)
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        log.warning("worker %d is gone; forgetting it", worker_id)
        state.workers.pop(worker_id, None)
        _not_idle(state, worker_id)
