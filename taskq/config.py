"""Every tunable of taskq in one place, each with its unit in its name.

The command line (``taskq.cli``) and the environment override the ``Settings``
fields; the remaining constants are internal bounds that tests may also pass in.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_DB_URL = "sqlite:///taskq.db"
DEFAULT_WORKERS = 4
DEFAULT_GRACE_SECONDS = 10.0
DEFAULT_LOG_LEVEL = "INFO"

HEARTBEAT_INTERVAL_SECONDS = 5.0

# The writer applies at most this many commands in one transaction; larger
# batches amortise the fsync further but delay the first reply of the batch.
WRITER_BATCH_MAX = 512
# A batch of outcomes nobody waits for is held this long for the claim that
# usually follows, so both share one commit.
WRITER_LINGER_SECONDS = 0.002
# Commands waiting for the writer; a full inbox makes senders wait (backpressure).
WRITER_INBOX_SIZE = 4096

# Tasks in one POST /api/tasks/batch: one transaction, so one writer batch's worth.
BATCH_TASKS_MAX = 1000
LIST_LIMIT_DEFAULT = 100
LIST_LIMIT_MAX = 1000
TASK_NAME_MAX_LENGTH = 255
WORKER_NAME_MAX_LENGTH = 255

# Supervision: an actor that crashes more than RESTART_MAX times within
# RESTART_WINDOW_SECONDS stops the whole system, loudly.
RESTART_MAX = 5
RESTART_WINDOW_SECONDS = 60.0
RESTART_BACKOFF_FIRST_SECONDS = 0.05
RESTART_BACKOFF_MAX_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Settings:
    """How one taskq process runs; built by the CLI or by a library user."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    db_url: str = DEFAULT_DB_URL
    workers: int = DEFAULT_WORKERS
    task_modules: tuple[str, ...] = ()
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    heartbeat_interval_seconds: float = HEARTBEAT_INTERVAL_SECONDS
    log_level: str = DEFAULT_LOG_LEVEL
