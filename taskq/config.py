"""Every tunable of taskq in one place, each with its unit in its name.

The command line (``taskq.cli``) and the environment override the ``Settings``
fields; the remaining constants are internal bounds that tests may also pass in.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_DB_URL = "sqlite:///taskq.db"
DEFAULT_WORKERS = 4
DEFAULT_GRACE_SECONDS = 10.0
DEFAULT_LOG_LEVEL = "INFO"

HEARTBEAT_INTERVAL_SECONDS = 5.0

# The scheduler makes a task pending this long before its ``scheduled_at``, and the
# worker that takes it holds it until that instant (its ``started_at`` is that instant):
# the promotion's commit, with its fsync and any stall of the disk, happens ahead of the
# task's time rather than between it and the handler. Meanwhile the task shows as running.
SCHEDULE_LEAD_SECONDS = 0.025

# Cluster (several processes on one PostgreSQL database). A worker whose last
# heartbeat is older than the dead-after timeout belongs to a dead node: the
# reaper of a live node re-queues its tasks. The CLI runs the heartbeat
# HEARTBEATS_PER_DEAD_AFTER times within that timeout, so a live worker is never
# taken for dead; Settings refuses a heartbeat slower than half the timeout.
DEFAULT_DEAD_AFTER_SECONDS = 30.0
HEARTBEATS_PER_DEAD_AFTER = 4
# Wake-ups travel by LISTEN/NOTIFY; this slow poll only catches what a dropped
# connection missed.
CLUSTER_POLL_SECONDS = 5.0
RECONNECT_BACKOFF_FIRST_SECONDS = 0.1
RECONNECT_BACKOFF_MAX_SECONDS = 5.0
# An actor whose database request failed waits this long before trying again,
# doubling up to the maximum; the database may be restarting.
RETRY_FIRST_SECONDS = 0.05
RETRY_MAX_SECONDS = 2.0
NODE_NAME_MAX_LENGTH = 255

# The writer applies at most this many commands in one transaction; larger
# batches amortise the fsync further but delay the first reply of the batch.
WRITER_BATCH_MAX = 512
# A batch of outcomes nobody waits for is held up to this long for the claim that
# usually follows, so a round of work is one commit. A claim hands out about
# CLAIM_AHEAD_SECONDS of work, so its outcomes come within about that long; a
# command someone awaits (the claim, a submit) ends the wait at once.
WRITER_LINGER_SECONDS = 0.005
# On a deep queue a claim hands each idle worker several tasks, so one commit
# feeds several rounds of short tasks: as many as recent tasks (start to
# outcome, as workers saw them) say fit in CLAIM_AHEAD_SECONDS, so a task waits
# in a worker's hand about that long at most (its ``started_at`` is that early
# at most), and never more than the maximum. Longer tasks go one per worker.
CLAIM_AHEAD_SECONDS = 0.005
CLAIM_TASKS_PER_WORKER_MAX = 8
# SQLite: a thread of its own copies the WAL back into the database once it holds
# this many frames (pages) not yet copied (SQLite's own default); the writer's
# COMMIT does it only past WAL_AUTOCHECKPOINT_FRAMES, when writes without a pause
# keep that thread from ever catching up (see taskq/store/checkpoints.py).
CHECKPOINT_FRAMES = 1000
WAL_AUTOCHECKPOINT_FRAMES = 4 * CHECKPOINT_FRAMES
# Commands waiting for the writer; a full inbox makes the actors wait (backpressure).
WRITER_INBOX_SIZE = 4096
# Commands of HTTP requests the writer's inbox may hold; a request finding more
# waiting is refused with a 503 and ``Retry-After`` instead of queueing without
# bound. The rest of the inbox stays free for the actors' own commands (outcomes,
# claims), so a flood of requests does not hold up the tasks already running.
DEFAULT_HTTP_BACKLOG = WRITER_INBOX_SIZE // 2
# What a refused request is told to wait before trying again.
RETRY_AFTER_SECONDS = 1
# The reader answers at most this many reads per trip to its thread, and holds at
# most READER_INBOX_SIZE waiting ones before senders wait.
READER_BATCH_MAX = 256
READER_INBOX_SIZE = 4096
# How long (seconds) the interpreter lets one thread hold the GIL while another
# waits. The writer's and reader's threads let go of it at every SQLite call and
# wait this long to get it back from the busy event loop; Python's 5 ms made
# each batch of creates take several of them.
GIL_SWITCH_INTERVAL_SECONDS = 0.0005
# How long (seconds) a busy event loop lets go of the GIL, once a scheduler round,
# once the writer's or the reader's thread has had a call out for
# GIL_HAND_OFF_AFTER_SECONDS (``threads.GilHandOff``). With the loop kept busy by 32
# workers, a submit's slowest commit fell from 0.5-3.9 s to 9-18 ms in two runs
# (``bench/busy_loop_commits.py``); a lower threshold cuts the median too (about 3 ms
# at 1 ms against 7 ms at 5 ms) but hands off dozens of times in every 10,000-task
# throughput run, where 5 ms does it a few times.
GIL_HAND_OFF_SECONDS = 0.00002
GIL_HAND_OFF_AFTER_SECONDS = 0.005

# A task's own retry budget and time limit are bounded so that a typo cannot
# keep a task retrying for ever; the defaults are the system options below.
MAX_ATTEMPTS_LIMIT = 1000
TIMEOUT_MAX_SECONDS = 7 * 24 * 3600.0
DEFAULT_MAX_ATTEMPTS = 1
# Retry backoff: the n-th retry waits min(cap, base * 2**(n-1)) * uniform(0.5, 1).
DEFAULT_RETRY_BACKOFF_SECONDS = 1.0
DEFAULT_RETRY_BACKOFF_MAX_SECONDS = 300.0
# A pause gives a handler that checkpoints this long to reach its next
# checkpoint and wait there; then it is cancelled (and runs afresh on resume).
CHECKPOINT_GRACE_SECONDS = 5.0
# The events hub keeps this many recent changes for ``Last-Event-ID`` resume.
EVENTS_RING_SIZE = 1024
# Changes one subscriber may fall behind by before it is dropped (it may reconnect).
EVENTS_SUBSCRIBER_BUFFER = 4096
# An idle event stream sends a comment this often, so proxies keep it open
# and a vanished client is noticed.
EVENTS_KEEPALIVE_SECONDS = 15.0
# Distinct task names the metrics label before lumping the rest together.
METRICS_TASK_NAMES_MAX = 200
# /readyz gives the database this long to answer.
READY_TIMEOUT_SECONDS = 2.0

# Tasks in one POST /api/tasks/batch: one transaction, so one writer batch's worth.
BATCH_TASKS_MAX = 1000
LIST_LIMIT_DEFAULT = 100
LIST_LIMIT_MAX = 1000
# Names are stored in 255-character columns: a fixed part of the API, not a setting.
TASK_NAME_MAX_LENGTH = 255
WORKER_NAME_MAX_LENGTH = 255
# A request body larger than this is refused with a 413 before it is parsed.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# Levels of objects and arrays a task's payload may nest (the payload object
# itself is level 1); deeper is a 422. Far below what Python's parser survives.
DEFAULT_PAYLOAD_DEPTH_MAX = 32
# API tokens shorter than this are refused at start-up: a token is the only key.
API_TOKEN_MIN_LENGTH = 16

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
    # Defaults of tasks whose handler's registration does not set its own.
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout_seconds: float | None = None
    retry_backoff_seconds: float = DEFAULT_RETRY_BACKOFF_SECONDS
    retry_backoff_max_seconds: float = DEFAULT_RETRY_BACKOFF_MAX_SECONDS
    checkpoint_grace_seconds: float = CHECKPOINT_GRACE_SECONDS
    # This process's name in the cluster; its workers' rows carry it.
    node: str = field(default_factory=lambda: default_node())
    dead_after_seconds: float = DEFAULT_DEAD_AFTER_SECONDS
    migrate: bool = True
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    payload_depth_max: int = DEFAULT_PAYLOAD_DEPTH_MAX
    http_backlog: int = DEFAULT_HTTP_BACKLOG
    # Any one of these opens the API; none: the API is open to whoever reaches it.
    api_tokens: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.http_backlog <= WRITER_INBOX_SIZE:
            raise ValueError(f"http_backlog must be 1 to {WRITER_INBOX_SIZE}")
        if self.max_body_bytes < 1 or self.payload_depth_max < 1:
            raise ValueError("max_body_bytes and payload_depth_max must be 1 or more")
        for token in self.api_tokens:
            check_token(token)
        if self.heartbeat_interval_seconds * 2 > self.dead_after_seconds:
            raise ValueError(
                f"a heartbeat every {self.heartbeat_interval_seconds:g} s is too slow for "
                f"dead_after_seconds={self.dead_after_seconds:g}: live workers would be reaped"
            )


def check_token(token: str) -> None:
    """Raise ValueError for a token that is too short or could not travel in a header."""
    if len(token) < API_TOKEN_MIN_LENGTH:
        raise ValueError(f"an API token must have at least {API_TOKEN_MIN_LENGTH} characters")
    if not token.isascii() or not token.isprintable() or any(c in token for c in " ,"):
        raise ValueError("an API token must be printable ASCII without spaces or commas")


def default_node() -> str:
    """The host name: stable across restarts, so a restarted process takes up its workers.

    Two processes on one host sharing a database need a ``--node`` each.
    """
    return socket.gethostname()


def heartbeat_for(dead_after_seconds: float) -> float:
    """A heartbeat interval that keeps a live worker well clear of the dead-node timeout."""
    return min(HEARTBEAT_INTERVAL_SECONDS, dead_after_seconds / HEARTBEATS_PER_DEAD_AFTER)
