"""The checkpointer's thread, not the writer's commits, copies the WAL back; it stays bounded."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import trio

from taskq.config import CHECKPOINT_FRAMES, WAL_AUTOCHECKPOINT_FRAMES
from taskq.models import NewTask
from taskq.store import Store
from taskq.store.checkpoints import Checkpointer
from tests.conftest import eventually

NOW = datetime(2030, 1, 1, 12, 0, 0)
# Ten tasks of 40 KB each: about a hundred pages of WAL per commit.
BULKY = [NewTask("bulky", {"blob": "x" * 40_000}) for _ in range(10)]


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "taskq.db"


@pytest.fixture
def store(database: Path) -> Iterator[Store]:
    opened = Store.open(f"sqlite:///{database}")
    try:
        yield opened
    finally:
        opened.close()


def commit_bulky(store: Store) -> int:
    """One writer commit of ``BULKY``; the WAL frames not yet copied after it."""
    with store.writer_transaction() as tx:
        tx.create_many(BULKY, NOW)
    assert store.checkpointer is not None
    return store.checkpointer.backlog()


def fill_wal(store: Store, frames: int) -> int:
    """Commit ``BULKY`` until the WAL holds ``frames`` not yet copied; how many commits."""
    commits = 1
    while commit_bulky(store) < frames:
        commits += 1
    return commits


def test_commits_checkpoint_only_past_the_bound(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Checkpointer, "committed", lambda _self: None)
    backlogs = [commit_bulky(store)]
    while backlogs[-1] >= max(backlogs) and len(backlogs) < 1000:
        backlogs.append(commit_bulky(store))
    # Nothing was copied back until the commit that took the WAL past the bound:
    # it copied everything (SQLite's own checkpoint, after its COMMIT).
    *before, after = backlogs
    assert before[-1] > WAL_AUTOCHECKPOINT_FRAMES - 2 * backlogs[0] > 2 * CHECKPOINT_FRAMES
    assert after == 0


async def test_the_checkpointer_copies_the_wal_and_the_wal_starts_over(
    store: Store, database: Path
) -> None:
    wal = trio.Path(f"{database}-wal")
    sizes = []
    for round_ in range(1, 4):
        fill_wal(store, CHECKPOINT_FRAMES)
        checkpointer = store.checkpointer
        assert checkpointer is not None

        async def copied(round_: int = round_, checkpointer: Checkpointer = checkpointer) -> bool:
            return checkpointer.checkpoints == round_ and checkpointer.backlog() == 0

        await eventually(copied, what=f"checkpoint {round_}")
        sizes.append((await wal.stat()).st_size)
    # Every round wrote over the same file from its start instead of growing it.
    assert sizes[0] == sizes[1] == sizes[2]
    assert sizes[0] < (WAL_AUTOCHECKPOINT_FRAMES // 2) * 4096


def test_close_leaves_every_commit_in_the_database(store: Store, database: Path) -> None:
    commits = fill_wal(store, CHECKPOINT_FRAMES // 2)
    store.close()
    assert not Path(f"{database}-wal").exists()
    reopened = Store.open(f"sqlite:///{database}")
    try:
        with reopened.transaction() as tx:
            assert sum(tx.count_tasks().values()) == commits * len(BULKY)
    finally:
        reopened.close()


def test_a_checkpointer_needs_a_wal_index_it_can_read(database: Path) -> None:
    database.write_bytes(b"")
    assert Checkpointer.start(database) is None


def test_no_checkpointer_without_a_file() -> None:
    store = Store.open("sqlite://")
    try:
        with store.writer_transaction() as tx:
            tx.create_many(BULKY[:1], NOW)
        assert store.checkpointer is None
    finally:
        store.close()
