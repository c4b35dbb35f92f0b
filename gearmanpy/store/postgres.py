# -*- test-case-name: tests.test_store -*-
"""A store in a PostgreSQL table: ``--queue postgresql://user@host:port/dbname``.

Uses psycopg 3 with its own connection on one dedicated writer thread, so it works with any
Twisted reactor and never blocks the reactor thread. Every write queued while a commit is in
flight (adds, dones, retries, burials, kept results, claims) goes into the next transaction
(group commit), written as one statement per step of a run of consecutive operations with the
same op, its values passed as arrays (``unnest``): a batch costs one round trip per run and
a single commit (one WAL flush).

Durability: the session sets ``synchronous_commit = on``, so a commit returns only after the
server has flushed its WAL to disk (if the server runs with ``fsync = on``, the default; with
synchronous standbys configured it also waits for them). :meth:`PostgresJobStore.add` fires
only after that commit: an acknowledged job survives a crash of PostgreSQL, of the OS or a
power loss of the database host.

Unlike gearmand's libpq queue, all SQL is parameterised (no quoting bugs), binary values are
BYTEA, the epoch time is BIGINT, rows are keyed by the server's job key (never by
(unique, function)), priority, time and the job handle come back as stored, and a BIGINT
identity column gives insertion order.

Boots are counted in a one-row table ``<table>_boot`` with ``INSERT ... ON CONFLICT DO UPDATE
... RETURNING``, committed before the number is used: the row lock makes servers that share
the database each get their own number.

The failure policy's state lives in ``<table>_dead`` (the dead set), ``<table>_results`` (kept
results, one per handle) and ``<table>_ticks`` (the last tick claimed per recurring job); an
operation that moves a job between tables runs in the batch's one transaction. A claim is an
``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` on the tick's row: a second server claiming the
same tick waits for the first one's commit on that row, then finds the tick taken. A table
made by an older gearmanpy gets the columns it lacks (``handle``, ``submitted_at``, ``error``:
empty or 0 in its rows) and the new tables at connect, in one transaction; nothing else
changes.

When the connection breaks (the server restarted), the writer reconnects and retries the batch
once on the new connection (every statement is idempotent; a claim is not: if the lost commit
had gone through, the retried claim finds its own tick and answers False, and the run it
queued in the database is replayed at the next start instead of at once; never twice). While
PostgreSQL is unreachable, operations fail with :class:`gearmanpy.errors.StoreError` after at
most the connect timeout (or the store's timeout, whichever is first).
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.logger import Logger
from zope.interface import implementer

from gearmanpy.errors import StoreError
from gearmanpy.store._rows import (
    COLUMNS,
    DEAD_COLUMNS,
    RESULT_COLUMNS,
    dead_from_row,
    job_from_row,
    result_from_row,
    sql_runs,
)
from gearmanpy.store._writer import ThreadedStore
from gearmanpy.store.interface import DeadJob, IJobStore, KeptResult, StoredJob

#: A job's columns, in the queue and in the dead set.
_JOB_COLUMNS = """
    job_key TEXT PRIMARY KEY,
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    function BYTEA NOT NULL,
    unique_id BYTEA NOT NULL,
    priority SMALLINT NOT NULL,
    data BYTEA NOT NULL,
    when_to_run BIGINT NOT NULL,
    retries INTEGER NOT NULL,
    reducer BYTEA NOT NULL,
    handle BYTEA NOT NULL DEFAULT ''::bytea,
    submitted_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    error BYTEA NOT NULL DEFAULT ''::bytea"""

_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {{table}} ({_JOB_COLUMNS});"
    f"CREATE TABLE IF NOT EXISTS {{table}}_dead ({_JOB_COLUMNS},"
    """
    last_error BYTEA NOT NULL,
    failed_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS {table}_boot (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    boot BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS {table}_results (
    handle BYTEA PRIMARY KEY,
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    function BYTEA NOT NULL,
    unique_id BYTEA NOT NULL,
    outcome TEXT NOT NULL,
    data BYTEA NOT NULL,
    numerator BIGINT NOT NULL,
    denominator BIGINT NOT NULL,
    attempts INTEGER NOT NULL,
    submitted_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS {table}_ticks (
    name TEXT PRIMARY KEY,
    tick BIGINT NOT NULL,
    job_key TEXT NOT NULL
)
"""
)

#: Columns added to the queue table since the first release (added at connect if missing).
_ADDED_COLUMNS = {
    "handle": "BYTEA NOT NULL DEFAULT ''::bytea",
    "submitted_at": "DOUBLE PRECISION NOT NULL DEFAULT 0",
    "error": "BYTEA NOT NULL DEFAULT ''::bytea",
}

#: The arrays a job row travels in, in :data:`~gearmanpy.store._rows.COLUMNS` order.
_JOB_ARRAYS = (
    "%b::text[], %b::bytea[], %b::bytea[], %b::int2[], %b::bytea[], %b::int8[], %b::int4[],"
    " %b::bytea[], %b::bytea[], %b::float8[], %b::bytea[]"
)
_JOB_NAMES = "k, f, u, p, d, w, r, rd, h, s, e"

#: Which column of a step's rows is the row's identity (a repeated one keeps its last row).
_ROW_KEY = {"retries": 1, "reschedule": 3}


class _PostgresBackend:
    """The blocking half of the store; every method runs on the writer thread."""

    log = Logger()

    def __init__(self, conninfo: str, table: str, connect_timeout: float) -> None:
        self._conninfo = conninfo
        self._table = table
        self._connect_timeout = max(1, int(connect_timeout))
        self._conn: Any = None
        t = table
        # One statement per step and run of operations with the same op, with the values as
        # arrays: a run of thousands of adds is one statement, and a whole batch one commit.
        # A replaced dead row or result is deleted first, so it is inserted again at the end.
        self._sql = {
            "add": f"INSERT INTO {t} ({COLUMNS}) SELECT {_JOB_NAMES}"
            f" FROM unnest({_JOB_ARRAYS}) WITH ORDINALITY AS x({_JOB_NAMES}, n) ORDER BY n"
            " ON CONFLICT (job_key) DO UPDATE SET function = EXCLUDED.function,"
            " unique_id = EXCLUDED.unique_id, priority = EXCLUDED.priority,"
            " data = EXCLUDED.data, when_to_run = EXCLUDED.when_to_run,"
            " retries = EXCLUDED.retries, reducer = EXCLUDED.reducer,"
            " handle = EXCLUDED.handle, submitted_at = EXCLUDED.submitted_at,"
            " error = EXCLUDED.error",
            "done": f"DELETE FROM {t} WHERE job_key = ANY(%b::text[])",
            "retries": f"UPDATE {t} SET retries = x.r FROM unnest(%b::int4[], %b::text[])"
            f" AS x(r, k) WHERE {t}.job_key = x.k",
            "reschedule": f"UPDATE {t} SET when_to_run = x.w, retries = x.r, error = x.e"
            " FROM unnest(%b::int8[], %b::int4[], %b::bytea[], %b::text[]) AS x(w, r, e, k)"
            f" WHERE {t}.job_key = x.k",
            "undead": f"DELETE FROM {t}_dead WHERE job_key = ANY(%b::text[])",
            "bury": f"INSERT INTO {t}_dead ({DEAD_COLUMNS}) SELECT {_JOB_NAMES}, le, fa"
            f" FROM unnest({_JOB_ARRAYS}, %b::bytea[], %b::float8[])"
            f" WITH ORDINALITY AS x({_JOB_NAMES}, le, fa, n) ORDER BY n",
            "unresult": f"DELETE FROM {t}_results WHERE handle = ANY(%b::bytea[])",
            "result": f"INSERT INTO {t}_results ({RESULT_COLUMNS})"
            " SELECT h, f, u, o, d, nu, de, a, s, st, fi, ex FROM unnest(%b::bytea[],"
            " %b::bytea[], %b::bytea[], %b::text[], %b::bytea[], %b::int8[], %b::int8[],"
            " %b::int4[], %b::float8[], %b::float8[], %b::float8[], %b::float8[])"
            " WITH ORDINALITY AS x(h, f, u, o, d, nu, de, a, s, st, fi, ex, n) ORDER BY n",
            # Claimed (a row returned) if the name is new or its last tick is older; the job
            # key of the claim is kept for whoever looks at the table.
            "claim": f"INSERT INTO {t}_ticks AS k (name, tick, job_key) VALUES (%s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET tick = EXCLUDED.tick, job_key = EXCLUDED.job_key"
            " WHERE EXCLUDED.tick > k.tick RETURNING 1",
        }

    def _connect(self) -> Any:
        """A fresh connection with synchronous commits and the table in place."""
        import psycopg

        try:
            conn = psycopg.connect(
                self._conninfo,
                connect_timeout=self._connect_timeout,
                autocommit=False,
                application_name="gearmanpy",
            )
        except psycopg.Error as e:
            raise StoreError(f"cannot connect to PostgreSQL: {e}") from e
        try:
            with conn.cursor() as cur:
                cur.execute("SET synchronous_commit = on")
                self._setup(cur)
            conn.commit()
        except psycopg.Error as e:
            conn.close()
            raise StoreError(f"cannot set up the PostgreSQL queue table: {e}") from e
        return conn

    def _setup(self, cur: Any) -> None:
        """Create the tables, or bring an older gearmanpy's up to date (in the connect's
        transaction; the cluster's backend adds its own)."""
        cur.execute(_SCHEMA.format(table=self._table))
        self._add_columns(cur)

    def _add_columns(self, cur: Any, columns: dict[str, str] = _ADDED_COLUMNS) -> None:
        """Give a table of an older gearmanpy the ``columns`` it lacks (looked up first,
        since ALTER TABLE locks the table even when the columns are there)."""
        cur.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass"
            " AND attnum > 0 AND NOT attisdropped",
            (self._table,),
        )
        present = {row[0] for row in cur.fetchall()}
        for column, definition in columns.items():
            if column not in present:
                cur.execute(
                    f"ALTER TABLE {self._table} ADD COLUMN IF NOT EXISTS {column} {definition}"
                )

    def _drop(self) -> None:
        """Forget a broken connection."""
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    def _with_connection(self, action: Any) -> Any:
        """Run ``action(conn)`` in a transaction and commit.

        On a broken connection, reconnect and retry once (every statement is idempotent).
        """
        import psycopg

        for attempt in (1, 2):
            fresh = self._conn is None
            if fresh:
                self._conn = self._connect()
            conn = self._conn
            try:
                result = action(conn)
                conn.commit()
                return result
            except psycopg.OperationalError as e:
                self._drop()
                if fresh or attempt == 2:
                    raise StoreError(f"PostgreSQL operation failed: {e}") from e
                self.log.warn("PostgreSQL connection lost ({error}), reconnecting", error=e)
            except psycopg.Error as e:
                if conn.closed or conn.broken:
                    self._drop()
                else:
                    try:
                        conn.rollback()
                    except psycopg.Error:
                        self._drop()
                raise StoreError(f"PostgreSQL operation failed: {e}") from e
        raise AssertionError("unreachable")

    def open(self) -> None:
        """Connect and create (or bring up to date) the tables."""
        self._drop()
        self._conn = self._connect()

    def write(self, ops: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        """Apply ``ops`` in one transaction: one array statement per step and run of one op
        (claims one by one, since each answers); return each op's result."""

        def action(conn: Any) -> list[Any]:
            with conn.cursor() as cur:
                return self._apply(cur, ops)

        results: list[Any] = self._with_connection(action)
        return results

    def _apply(self, cur: Any, ops: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        """Run ``ops`` on ``cur`` inside the caller's transaction; return each op's result."""
        results: list[Any] = [None] * len(ops)
        for step, rows in sql_runs(ops):
            if step != "claim":
                cur.execute(self._sql[step], _columns(step, rows))
                continue
            for index, name, tick, *job in rows:
                cur.execute(self._sql["claim"], (name, tick, job[0]))
                results[index] = cur.fetchone() is not None
                if results[index]:
                    cur.execute(self._sql["add"], _columns("add", [tuple(job)]))
        return results

    def replay(self) -> list[StoredJob]:
        """Every row by insertion order."""
        return self._read(f"SELECT {COLUMNS} FROM {self._table} ORDER BY seq", job_from_row)

    def dead(self) -> list[DeadJob]:
        """Every dead row, oldest failure first (ties in the order they were buried)."""
        return self._read(
            f"SELECT {DEAD_COLUMNS} FROM {self._table}_dead ORDER BY failed_at, seq", dead_from_row
        )

    def results(self) -> list[KeptResult]:
        """Every kept result, in the order they were kept."""
        return self._read(
            f"SELECT {RESULT_COLUMNS} FROM {self._table}_results ORDER BY seq", result_from_row
        )

    def _read(self, sql: str, convert: Any) -> Any:
        """Run the query ``sql`` and ``convert`` each row it returns."""

        def action(conn: Any) -> list[Any]:
            with conn.cursor(binary=True) as cur:
                cur.execute(sql)
                return [convert(row) for row in cur.fetchall()]

        return self._with_connection(action)

    def next_boot(self) -> int:
        """Count one more boot in ``<table>_boot`` and commit (synchronously)."""

        def action(conn: Any) -> int:
            with conn.cursor() as cur:
                cur.execute(
                    f"INSERT INTO {self._table}_boot AS b (id, boot) VALUES (1, 1)"
                    " ON CONFLICT (id) DO UPDATE SET boot = b.boot + 1 RETURNING boot"
                )
                return int(cur.fetchone()[0])

        boot: int = self._with_connection(action)
        return boot

    def close(self) -> None:
        """Close the connection."""
        self._drop()


def _columns(op: str, rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    """The SQL parameter rows of one run turned into one list per column.

    The rows are :func:`~gearmanpy.store._rows.steps_for`'s, whose order the statements in
    ``_PostgresBackend._sql`` take their arrays in. A key repeated within a run keeps only its
    last row: one statement may not insert or update the same row twice.
    """
    key = _ROW_KEY.get(op, 0)
    unique = {row[key]: row for row in rows}
    if len(unique) != len(rows):
        rows = list(unique.values())
    return [list(column) for column in zip(*rows, strict=True)]


@implementer(IJobStore)
@attrs.define(eq=False)
class PostgresJobStore(ThreadedStore):
    """Background jobs in a PostgreSQL table, written with group commit on a writer thread.

    :ivar conninfo: a libpq connection string or URL (``postgresql://user@host:5432/db``).
    """

    conninfo: str
    reactor: Any  # ThreadedStore's, again here to come second

    _name = "postgresql"

    def _backend(self) -> _PostgresBackend:
        """The backend on :attr:`conninfo`; connecting may take half the timeout (at most 5 s)."""
        return _PostgresBackend(self.conninfo, self.table, min(5.0, self.timeout / 2))
