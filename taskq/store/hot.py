"""Driver-level SQL for the statements that run once per task: create, claim, finish.

Through SQLAlchemy Core, each execution builds parameters and converts every
value in Python, row by row; for these statements that cost several times the
database's own work and made the writer's thread the bottleneck. Here the SQL is
text written once per dialect and run on the DBAPI cursor, many rows to a
statement, while values still go through the columns' own SQLAlchemy type
processors, so what is stored is exactly what the rest of the store reads and
writes. The SQL is standard but for the placeholder style, PostgreSQL's ``FOR
UPDATE SKIP LOCKED`` and how rows join a statement (``HotStatements.one_step``).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection, Dialect

from taskq.models import Action, NewTask, Priority, Task, TaskStatus, waiting_status
from taskq.store import conversions
from taskq.store.schema import source_status_sql, tasks

# What a claim reads: the rest of a claimed task is what the claim writes.
CLAIMED_COLUMNS: tuple[str, ...] = ("id", "name", "payload", "priority", "scheduled_at")
CLAIMED_COLUMNS += ("created_at", "result", "error", "attempt", "attempts", "max_attempts")
CLAIMED_COLUMNS += ("timeout", "progress")
_INSERTED: tuple[str, ...] = ("name", "payload", "priority", "scheduled_at", "status")
_INSERTED += ("created_at", "updated_at")
_INSERTED += ("max_attempts", "timeout")
# A stored priority as its enum member, by a dict lookup rather than an enum call.
PRIORITIES = {int(priority): priority for priority in Priority}
# A status as the plain text stored, without a call to ``str`` per row.
_STATUS_TEXT = {status: str(status) for status in TaskStatus}
# A claimed task starts now, or at its scheduled_at if the scheduler promoted it ahead
# of that (``SCHEDULE_LEAD_SECONDS``): its worker holds it until then. The stamp twice.
_STARTED = "CASE WHEN scheduled_at > {mark} THEN scheduled_at ELSE {mark} END"
# SQLite allows 32,766 parameters in a statement; nine a row stays far below that.
STATEMENT_ROWS_MAX = 512


class HotStatements:
    """The per-task statements of one dialect, with its value conversions."""

    def __init__(self, dialect: Dialect) -> None:
        self._mark = "%s" if dialect.paramstyle in ("format", "pyformat") else "?"
        lock = " FOR UPDATE SKIP LOCKED" if dialect.name == "postgresql" else ""
        self._to_db: dict[str, conversions.Processor] = {
            column.name: column.type.dialect_impl(dialect).bind_processor(dialect)
            for column in tasks.c
        }
        # What the driver returns for the claimed JSON and time columns, as the
        # columns' own conversions read it (one of each kind: a claim reads several).
        self._json_value = (
            conversions.result_processor(tasks.c.payload.type, dialect) or conversions.unchanged
        )
        self._time_value = (
            conversions.result_processor(tasks.c.created_at.type, dialect) or conversions.unchanged
        )
        mark = self._mark
        # Multi-row statements by (kind, rows): their text is built once per size.
        self._sized: dict[tuple[str, int], str] = {}
        # On SQLite every row an executemany writes and every row a statement returns
        # is a step of its own, and CPython's sqlite3 lets go of the GIL around each
        # (and around each column it reads), so while the event loop's thread is busy
        # each can wait for it. There the claim's take and the outcomes are one
        # ``UPDATE ... FROM (VALUES ...)`` and an insert's ids are counted back from
        # the last one instead of returned (``create_many``). On PostgreSQL the server
        # runs an executemany's statement once per row, pipelined or not: the take is
        # one ``UPDATE ... FROM unnest`` of arrays (256 rows: 6 ms instead of 12).
        self.one_step = dialect.name == "sqlite"
        # A payload as the column's own conversion writes it: on SQLite (without an
        # engine-wide serializer) that is ``json.dumps``, which builds a new C encoder
        # for every value; one built once writes the very same text in a third of the time.
        self.payload_to_db: Callable[[Any], Any] = (
            conversions.sqlite_json_text
            if dialect.name == "sqlite" and getattr(dialect, "_json_serializer", None) is None
            else self.converter("payload")
        )
        # PostgreSQL plans the claim by its statistics of the table, and before it has
        # any (a queue filled since the last ANALYZE: autovacuum's comes within a
        # minute or so) it expects a few pending rows, reads them all through a bitmap
        # scan and sorts them: 100 ms at a depth of 100,000 instead of 0.2 ms. With
        # sorting off for the claim's transaction the only plan left is the walk down
        # ``ix_tasks_ready``, which is also the plan it picks with statistics. Claims
        # run last in a batch, and nothing else in it sorts. Hash and merge joins go
        # off too: on such statistics the take's join of two hundred ids was a hash of
        # the whole table (66 ms at a depth of 100,000), not a primary-key lookup each.
        self.steer_claim = (
            "SELECT set_config('enable_sort', 'off', true),"
            " set_config('enable_hashjoin', 'off', true),"
            " set_config('enable_mergejoin', 'off', true)"
            if dialect.name == "postgresql"
            else None
        )
        # Most urgent first, read through ``ix_tasks_ready`` without a sort; the second
        # only above a priority (a claim waiting for an urgent task).
        columns = ", ".join(CLAIMED_COLUMNS)
        ready = f"SELECT {columns} FROM tasks WHERE {source_status_sql(Action.CLAIM)}"
        in_claim_order = f" ORDER BY priority DESC, id LIMIT {mark}{lock}"
        self.ready = ready + in_claim_order
        self.ready_above = f"{ready} AND priority > {mark}{in_claim_order}"
        # PostgreSQL's take: the stamp for started_at (twice, ``_STARTED``) and
        # updated_at, then the array of ids and the array of their worker ids.
        ids = f"CAST({mark} AS {tasks.c.id.type.compile(dialect=dialect)}[])"
        self.take_arrays = (
            f"UPDATE tasks SET status = '{TaskStatus.RUNNING}', attempt = attempt + 1,"
            " attempts = attempts + 1, worker_id = v.worker_id,"
            f" started_at = {_STARTED.format(mark=mark)}, completed_at = NULL,"
            f" updated_at = {mark} FROM unnest({ids}, {ids}) AS v(id, worker_id)"
            " WHERE tasks.id = v.id"
        )
        self.finish = (
            f"UPDATE tasks SET status = {mark}, result = {mark}, error = {mark},"
            f" completed_at = {mark}, updated_at = {mark}"
            f" WHERE id = {mark} AND {source_status_sql(Action.FINISH)} AND attempt = {mark}"
        )

    def value(self, column: str, value: Any) -> Any:
        return self.converter(column)(value)

    def converter(self, column: str) -> Callable[[Any], Any]:
        """The column's conversion of a value for the driver (None stays None): taken
        once per statement rather than looked up for every value of every row."""
        return self._to_db[column] or conversions.unchanged

    def claimed(self, pairs: Sequence[tuple[Sequence[Any], int]], now: datetime) -> list[Task]:
        """Ready rows (``CLAIMED_COLUMNS``), each with its worker, as the tasks ``take``
        makes of them.

        Only the columns with a conversion go through one (on SQLite the JSON and
        time columns, on PostgreSQL none): this runs once per task claimed. The
        tasks of one claim were mostly created together and share their times,
        so each distinct stored time is converted once per claim.
        """
        json_value = self._json_value
        time_value = conversions.once_each(self._time_value)
        # By position: calling a class with keywords builds a dict of them on every call.
        # tests/store checks that a claimed task equals the stored row, field by field.
        claimed: list[Task] = []
        for (
            task_id,
            name,
            payload,
            priority,
            scheduled_at,
            created_at,
            result,
            error,
            attempt,
            attempts,
            max_attempts,
            timeout,
            progress,
        ), worker_id in pairs:
            scheduled = None if scheduled_at is None else time_value(scheduled_at)
            claimed.append(
                Task(
                    task_id,
                    name,
                    json_value(payload),
                    PRIORITIES[priority],
                    scheduled,
                    TaskStatus.RUNNING,
                    time_value(created_at),
                    now,
                    # As ``_STARTED`` writes it.
                    scheduled if scheduled is not None and scheduled > now else now,
                    None,
                    worker_id,
                    None if result is None else json_value(result),
                    error,
                    attempt + 1,
                    attempts + 1,
                    max_attempts,
                    timeout,
                    None if progress is None else json_value(progress),
                )
            )
        return claimed

    def insert(self, rows: int) -> str:
        """``INSERT`` of ``rows`` tasks in one statement; it answers their ids unless
        ``one_step``."""
        if ("insert", rows) not in self._sized:
            one = "(" + ", ".join([self._mark] * len(_INSERTED)) + ", 0, 0)"
            self._sized["insert", rows] = (
                f"INSERT INTO tasks ({', '.join(_INSERTED)}, attempt, attempts)"
                f" VALUES {', '.join([one] * rows)}" + ("" if self.one_step else " RETURNING id")
            )
        return self._sized["insert", rows]

    def take_values(self, rows: int) -> str:
        """``take`` of ``rows`` tasks in one statement: the stamp for started_at (twice,
        ``_STARTED``) and updated_at, then (id, worker id) for each task (SQLite's SQL)."""
        if ("take", rows) not in self._sized:
            self._sized["take", rows] = (
                f"UPDATE tasks SET status = '{TaskStatus.RUNNING}', attempt = attempt + 1,"
                " attempts = attempts + 1, worker_id = v.column2,"
                f" started_at = {_STARTED.format(mark='?')}, completed_at = NULL, updated_at = ?"
                f" FROM (VALUES {', '.join(['(?, ?)'] * rows)}) AS v"
                " WHERE tasks.id = v.column1"
            )
        return self._sized["take", rows]

    def finish_values(self, rows: int) -> str:
        """``finish`` of ``rows`` outcomes in one statement: the (completed_at,
        updated_at) stamp, then (id, attempt, status, result, error) for each outcome
        (SQLite's SQL). A task in two of its rows is written once."""
        if ("finish", rows) not in self._sized:
            self._sized["finish", rows] = (
                "UPDATE tasks SET status = v.column3, result = v.column4, error = v.column5,"
                " completed_at = ?, updated_at = ?"
                f" FROM (VALUES {', '.join(['(?, ?, ?, ?, ?)'] * rows)}) AS v"
                f" WHERE tasks.id = v.column1 AND tasks.{source_status_sql(Action.FINISH)}"
                " AND tasks.attempt = v.column2"
            )
        return self._sized["finish", rows]


@functools.cache
def statements_for(dialect: Dialect) -> HotStatements:
    return HotStatements(dialect)


def cursor(connection: Connection) -> Any:
    """The DBAPI cursor of the transaction SQLAlchemy has open on ``connection``."""
    return connection.connection.cursor()


def create_many(connection: Connection, news: Sequence[NewTask], now: datetime) -> list[Task]:
    """Insert ``news`` in multi-row statements; the tasks come back in the same order.

    Within one multi-row ``INSERT`` the ids follow the order of its rows (SQLite's
    AUTOINCREMENT under the write lock, PostgreSQL's sequence drawn as the rows
    are produced), so sorting the returned ids pairs each with its row.
    """
    hot = statements_for(connection.dialect)
    stamp = hot.value("created_at", now)
    payload_to_db = hot.payload_to_db
    time_to_db = hot.converter("scheduled_at")
    created: list[Task] = []
    db = cursor(connection)
    for rows in _chunks(len(news)):
        chunk = news[rows]
        params: list[Any] = []
        statuses = []
        for new in chunk:
            payload = new.payload
            at = new.scheduled_at
            status = TaskStatus.PENDING if at is None else waiting_status(at, now)
            statuses.append(status)
            params += (
                new.name,
                payload_to_db(payload if type(payload) is dict else dict(payload)),
                int(new.priority),
                None if at is None else time_to_db(at),
                _STATUS_TEXT[status],
                stamp,
                stamp,
                new.max_attempts,
                new.timeout,
            )
        db.execute(hot.insert(len(chunk)), params)
        ids = _numbered(db, len(chunk)) if hot.one_step else sorted(row[0] for row in db.fetchall())
        created += [
            Task(  # by position, as in ``HotStatements.claimed``
                task_id,
                new.name,
                new.payload,
                PRIORITIES[new.priority],
                new.scheduled_at,
                status,
                now,
                now,
                None,
                None,
                None,
                None,
                None,
                0,
                0,
                new.max_attempts,
                new.timeout,
            )
            for task_id, new, status in zip(ids, chunk, statuses, strict=True)
        ]
    return created


def claim(
    connection: Connection,
    worker_ids: Sequence[int],
    now: datetime,
    per_worker: int = 1,
    above: int | None = None,
) -> list[Task]:
    """Read the ready rows, then take them in one go (a few statements on SQLite).

    Up to ``per_worker`` tasks each, dealt round by round (most urgent first): a
    worker gets a second task only when every worker of the claim has one. With
    ``above``, only tasks of a higher priority: the same walk down ``ix_tasks_ready``,
    which ends at once when the most urgent ready task is not above it.
    """
    hot = statements_for(connection.dialect)
    db = cursor(connection)
    if hot.steer_claim is not None:
        db.execute(hot.steer_claim)
    if above is None:
        db.execute(hot.ready, (len(worker_ids) * per_worker,))
    else:
        db.execute(hot.ready_above, (int(above), len(worker_ids) * per_worker))
    pairs = list(zip(db.fetchall(), itertools.cycle(worker_ids)))
    if not pairs:
        return []
    stamp = hot.value("started_at", now)
    if hot.one_step:
        for rows in _chunks(len(pairs)):
            params = [stamp, stamp, stamp]
            for row, worker in pairs[rows]:
                params += (row[0], worker)
            db.execute(hot.take_values(rows.stop - rows.start), params)
    else:
        ids = [row[0] for row, _ in pairs]
        workers = [worker for _, worker in pairs]
        db.execute(hot.take_arrays, (stamp, stamp, stamp, ids, workers))
    return hot.claimed(pairs, now)


def finish_many(
    connection: Connection,
    outcomes: Sequence[tuple[int, int, TaskStatus, str | None, str | None]],
    now: datetime,
) -> int:
    """Write (task id, attempt, status, result as JSON text, error) outcomes, each fenced
    by its attempt.

    The JSON text was built and checked where the handler ran; it is stored as it
    is, the very text the column's own conversion would have made of the value
    (``json.dumps``), without encoding it again here. Answers how many rows
    changed in all.
    """
    hot = statements_for(connection.dialect)
    stamp = hot.value("completed_at", now)
    db = cursor(connection)
    if not hot.one_step:
        db.executemany(
            hot.finish,
            [
                (
                    _STATUS_TEXT[status],
                    conversions.json_text_for_psycopg(result_json),
                    error,
                    stamp,
                    stamp,
                    task_id,
                    attempt,
                )
                for task_id, attempt, status, result_json, error in outcomes
            ],
        )
        return int(db.rowcount)
    written = 0
    for rows in _chunks(len(outcomes)):
        params: list[Any] = [stamp, stamp]
        for task_id, attempt, status, result_json, error in outcomes[rows]:
            params += (task_id, attempt, _STATUS_TEXT[status], result_json, error)
        db.execute(hot.finish_values(rows.stop - rows.start), params)
        written += db.rowcount
    return written


def _chunks(count: int) -> Iterator[slice]:
    """``count`` rows as slices of a power of two each, up to ``STATEMENT_ROWS_MAX``.

    Preparing a statement of many rows costs more than running it, and the
    driver keeps the statements it prepared by their text: with sizes of a power
    of two there are ten texts per kind, each prepared once.
    """
    start = 0
    while start < count:
        size = min(STATEMENT_ROWS_MAX, 1 << ((count - start).bit_length() - 1))
        yield slice(start, start + size)
        start += size


def _numbered(db: Any, rows: int) -> range:
    """The ids SQLite gave the ``rows`` rows of the multi-row INSERT just run, in order.

    The write lock is held from the transaction's start (``BEGIN IMMEDIATE``),
    and with AUTOINCREMENT each new row's id is one more than the largest the
    table has had: one statement's rows take consecutive ids in the order of
    its VALUES, ending at the last inserted.
    """
    last = int(db.lastrowid)
    return range(last - rows + 1, last + 1)
