"""SQLite's WAL checkpoints, on a thread of their own instead of in the writer's COMMIT.

SQLite copies the WAL back into the database (a checkpoint) from inside the COMMIT
that takes the WAL past ``wal_autocheckpoint`` frames: that one commit also copies
up to a thousand pages and syncs the database file, several milliseconds instead of
well under one, and the task whose dispatch it carries waits for all of it. Here a
thread with its own connection runs the checkpoint once the WAL holds
``CHECKPOINT_FRAMES`` frames not yet copied. It is PASSIVE: it never takes the write
lock, so the writer goes on committing beside it, and once it has copied everything
the writer's next transaction starts the WAL over from its beginning, as before.

The writer keeps SQLite's own checkpoint as a bound (``WAL_AUTOCHECKPOINT_FRAMES``,
several times more): the WAL can only start over once a checkpoint has caught up
with it, which under writes without a pause a passive one beside them never quite
does. The writer's checkpoint then finds nearly everything copied already.

Durability is SQLite's: a commit is in the WAL and synced before anyone hears of it;
this connection is ``synchronous=FULL`` too, so the database file is synced before
the WAL may be written over.

How full the WAL is comes from the wal-index header in the ``-shm`` file (``mxFrame``
and ``nBackfill``, https://www.sqlite.org/walformat.html), read without SQLite's
locks: a torn read only moves one checkpoint by a commit. If the header is not the
documented version the checkpointer does not start, and SQLite checkpoints as usual.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import threading
from pathlib import Path

from taskq.config import CHECKPOINT_FRAMES

log = logging.getLogger(__name__)

# The wal-index header (walformat.html, "The WAL-Index Header"), in native byte order:
# its version, the last frame in the WAL, and (in the checkpoint information that
# follows the two copies of the header) the frames already copied back.
_WAL_INDEX_VERSION = 3007000
_VERSION = struct.Struct("=I")
_MAX_FRAME_AT = 16
_BACKFILL_AT = 96
_FRAMES = struct.Struct("=I")
_HEADER_BYTES = _BACKFILL_AT + _FRAMES.size


class Checkpointer:
    """Copies the WAL of one database file into it whenever ``committed`` finds it full."""

    def __init__(self, connection: sqlite3.Connection, index: int, frames: int) -> None:
        self.frames = frames
        self.checkpoints = 0
        self._connection = connection
        self._index = index
        self._nudged = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="taskq-checkpointer", daemon=True)

    @classmethod
    def start(cls, database: Path, frames: int = CHECKPOINT_FRAMES) -> Checkpointer | None:
        """A running checkpointer, or None where the wal-index is not one it can read.

        Call it once the database is in WAL mode and has been read (so the
        ``-shm`` file exists).
        """
        try:
            index = os.open(f"{database}-shm", os.O_RDONLY)
        except OSError:
            return None
        try:
            if not _readable(_header(index)):
                os.close(index)
                return None
            connection = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA synchronous=FULL")
        except BaseException:
            os.close(index)
            raise
        checkpointer = cls(connection, index, frames)
        checkpointer._thread.start()
        return checkpointer

    def committed(self) -> None:
        """The writer committed: wake the thread if the WAL is due a checkpoint.

        The look at the WAL (two small reads of a page in memory) costs the
        writer a few microseconds; waking the thread after every commit cost it
        ten times that, in the GIL's hand-over.
        """
        if not self._nudged.is_set() and self.backlog() >= self.frames:
            self._nudged.set()

    def backlog(self) -> int:
        """Frames in the WAL not yet copied into the database."""
        header = _header(self._index)
        if len(header) < _HEADER_BYTES:
            return 0
        (last,) = _FRAMES.unpack_from(header, _MAX_FRAME_AT)
        (copied,) = _FRAMES.unpack_from(header, _BACKFILL_AT)
        return max(0, int(last) - int(copied))

    def checkpoint(self) -> None:
        """Copy what the WAL holds into the database, beside the writer (PASSIVE)."""
        try:
            self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            # The writer's own checkpoint still bounds the WAL; the next commit tries again.
            log.warning("WAL checkpoint failed", exc_info=True)
        else:
            self.checkpoints += 1

    def close(self) -> None:
        """Stop the thread (after the checkpoint it may be running) and let go of the file."""
        self._stopping = True
        self._nudged.set()
        if self._thread.is_alive():
            self._thread.join()
        os.close(self._index)
        self._connection.close()

    def _run(self) -> None:
        while True:
            self._nudged.wait()
            if self._stopping:
                return
            self.checkpoint()
            # Cleared only now: the writer's commits meanwhile need not wake it again.
            self._nudged.clear()


def _header(index: int) -> bytes:
    try:
        return os.pread(index, _HEADER_BYTES, 0)
    except OSError:
        return b""


def _readable(header: bytes) -> bool:
    return len(header) >= _HEADER_BYTES and _VERSION.unpack_from(header)[0] == _WAL_INDEX_VERSION
