"""The reader on a real store: reads answered beside the writer, never behind it."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from taskq.actors import reader
from taskq.errors import NotFound
from taskq.messages import ReaderCommand, WriterCommand
from taskq.models import NewTask, Priority, TaskStatus
from taskq.queue import Queue
from taskq.store import Store
from tests.actors.conftest import DEADLINE_SECONDS, NOW


def _queue(reads: trio.MemorySendChannel[ReaderCommand]) -> Queue:
    """A queue whose writer never answers: every read below is the reader's alone."""
    writes, _ = trio.open_memory_channel[WriterCommand](0)
    supervisor, _ = trio.open_memory_channel[object](0)
    return Queue(writes, supervisor, reader=reads)  # type: ignore[arg-type]


async def test_reads_are_answered_while_the_writer_holds_its_transaction(
    store: Store, nursery: trio.Nursery
) -> None:
    with store.transaction() as tx:
        first, second = tx.create_many(
            [NewTask("a", {"n": 1}), NewTask("b", {}, Priority.CRITICAL)], NOW
        )
    reads, inbox = trio.open_memory_channel[ReaderCommand](16)
    nursery.start_soon(reader.run, inbox, store)
    queue = _queue(reads)
    # The writer's connection is in the middle of a batch (it holds the write lock).
    with store.writer_transaction() as held:
        held.create_many([NewTask("uncommitted", {})], NOW)
        with trio.fail_after(DEADLINE_SECONDS):
            assert await queue.get_task(first.id) == first
            listed = await queue.list_tasks(status=TaskStatus.PENDING)
            counts = await queue.count_tasks()
            with pytest.raises(NotFound):
                await queue.get_task(second.id + 100)
            assert await queue.list_workers() == []
        # Committed state only: the batch in progress is not seen.
        assert [task.name for task in listed] == ["a", "b"]
        assert counts == {
            (TaskStatus.PENDING, Priority.MEDIUM): 1,
            (TaskStatus.PENDING, Priority.CRITICAL): 1,
        }
    with trio.fail_after(DEADLINE_SECONDS):
        assert len(await queue.list_tasks()) == 3


async def test_concurrent_reads_share_trips_to_the_thread(
    store: Store, nursery: trio.Nursery
) -> None:
    with store.transaction() as tx:
        created = tx.create_many([NewTask("t", {"n": n}) for n in range(20)], NOW)
    trips = []
    original = reader.read_batch

    def counted(store: Store, batch: list[ReaderCommand]) -> object:
        trips.append(len(batch))
        return original(store, batch)

    reads, inbox = trio.open_memory_channel[ReaderCommand](64)
    queue = _queue(reads)
    found = {}

    async def get(task_id: int) -> None:
        found[task_id] = await queue.get_task(task_id)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reader, "read_batch", counted)
        with trio.fail_after(DEADLINE_SECONDS):
            async with trio.open_nursery() as readers:
                for task in created:
                    readers.start_soon(get, task.id)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(reader.run, inbox, store)
    assert found == {task.id: task for task in created}
    assert sum(trips) == 20
    assert len(trips) < 20


@pytest.mark.sqlite_only
def test_the_sqlite_read_connection_cannot_write(store: Store) -> None:
    with pytest.raises(OperationalError, match="readonly"), store.read_transaction() as tx:
        tx.connection.execute(text("DELETE FROM tasks"))
    # A failure drops the connection; the next read opens a fresh one.
    with store.read_transaction() as tx:
        assert tx.list_tasks(0, 10, None) == []
