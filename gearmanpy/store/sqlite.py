# -*- test-case-name: tests.test_store -*-
"""A store in one SQLite file: ``--queue sqlite:PATH``.

Durability: the database runs in WAL mode with ``synchronous=FULL``, so a commit returns only
after the WAL has been synced to disk; :meth:`SQLiteJobStore.add` fires only after the commit
that holds its job. An acknowledged job therefore survives a crash of the process, of the OS
and a power loss (as far as the disk honours fsync).

Throughput: all SQLite calls run on one dedicated writer thread (never the reactor thread).
Every write queued while a commit is in flight (adds, dones, retries, burials, kept results)
goes into the next transaction (group commit), so one sync acknowledges thousands of jobs.

Unlike gearmand's libsqlite3 queue, rows are keyed by the server's job key, never by
(unique, function): empty-unique jobs and repeated uniques each keep their own row, the payload
is stored as a BLOB (empty is fine), priority, epoch time (64-bit), retries, reducer and the
job handle are all kept, and replay returns rows in insertion order.

Boots are counted in a one-row table ``<table>_boot``. The failure policy's state lives beside
the queue: ``<table>_dead`` (the dead set, keyed by job key), ``<table>_results`` (kept
results, keyed by handle) and ``<table>_ticks`` (the last tick claimed per recurring job). Each
operation that moves a job between them (bury, unbury, keep_result, claim_tick) is part of one
transaction, and a claim's ``BEGIN IMMEDIATE`` takes the database's write lock first, so servers
sharing the file claim a tick once. A database made by an older gearmanpy gets the columns
(``handle``, ``submitted_at``, ``error``: empty or 0 in its rows) and tables it lacks at open,
in one transaction; nothing else changes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
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

T = TypeVar("T")

#: A job's columns, in the queue and in the dead set.
_JOB_COLUMNS = """
    seq INTEGER PRIMARY KEY,
    job_key TEXT NOT NULL UNIQUE,
    function BLOB NOT NULL,
    unique_id BLOB NOT NULL,
    priority INTEGER NOT NULL,
    data BLOB NOT NULL,
    when_to_run INTEGER NOT NULL,
    retries INTEGER NOT NULL,
    reducer BLOB NOT NULL,
    handle BLOB NOT NULL DEFAULT x'',
    submitted_at REAL NOT NULL DEFAULT 0,
    error BLOB NOT NULL DEFAULT x''"""

_SCHEMA = f"CREATE TABLE IF NOT EXISTS {{table}} ({_JOB_COLUMNS})"

#: Columns added since the first release, with their definitions (added at open if missing).
_ADDED_COLUMNS = {
    "handle": "BLOB NOT NULL DEFAULT x''",
    "submitted_at": "REAL NOT NULL DEFAULT 0",
    "error": "BLOB NOT NULL DEFAULT x''",
}

#: The failure policy's tables: the dead set, kept results, and claimed recurring ticks.
_POLICY_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS {table}_dead ("""
    + _JOB_COLUMNS
    + """,
    last_error BLOB NOT NULL,
    failed_at REAL NOT NULL
)
""",
    """
CREATE TABLE IF NOT EXISTS {table}_results (
    seq INTEGER PRIMARY KEY,
    handle BLOB NOT NULL UNIQUE,
    function BLOB NOT NULL,
    unique_id BLOB NOT NULL,
    outcome TEXT NOT NULL,
    data BLOB NOT NULL,
    numerator INTEGER NOT NULL,
    denominator INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    submitted_at REAL NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    expires_at REAL NOT NULL
)
""",
    """
CREATE TABLE IF NOT EXISTS {table}_ticks (
    name TEXT PRIMARY KEY,
    tick INTEGER NOT NULL,
    job_key TEXT NOT NULL
)
""",
)

#: The boot counter: one row, created on the first :meth:`_SQLiteBackend.next_boot`.
_BOOT_SCHEMA = """
CREATE TABLE IF NOT EXISTS {table}_boot (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    boot INTEGER NOT NULL
)
"""


class _SQLiteBackend:
    """The blocking half of the store; every method runs on the writer thread."""

    def __init__(self, path: str, table: str) -> None:
        self._path = path
        self._table = table
        self._conn: sqlite3.Connection | None = None
        t = table
        # One statement per step of :func:`gearmanpy.store._rows.sql_runs`; a replaced dead row
        # or result is deleted and inserted again (``OR REPLACE``), so it goes to the end.
        self._sql = {
            "add": f"INSERT INTO {t} ({COLUMNS}) VALUES ({_marks(11)})"
            " ON CONFLICT (job_key) DO UPDATE"
            " SET function=excluded.function, unique_id=excluded.unique_id,"
            " priority=excluded.priority, data=excluded.data,"
            " when_to_run=excluded.when_to_run, retries=excluded.retries,"
            " reducer=excluded.reducer, handle=excluded.handle,"
            " submitted_at=excluded.submitted_at, error=excluded.error",
            "done": f"DELETE FROM {t} WHERE job_key = ?",
            "retries": f"UPDATE {t} SET retries = ? WHERE job_key = ?",
            "reschedule": f"UPDATE {t} SET when_to_run = ?, retries = ?, error = ?"
            " WHERE job_key = ?",
            "undead": f"DELETE FROM {t}_dead WHERE job_key = ?",
            "bury": f"INSERT OR REPLACE INTO {t}_dead ({DEAD_COLUMNS}) VALUES ({_marks(13)})",
            "unresult": f"DELETE FROM {t}_results WHERE handle = ?",
            "result": f"INSERT OR REPLACE INTO {t}_results ({RESULT_COLUMNS})"
            f" VALUES ({_marks(12)})",
            # Claimed (a row returned) if the name is new or its last tick is older; the job
            # key of the claim is kept for whoever looks at the table.
            "claim": f"INSERT INTO {t}_ticks (name, tick, job_key) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET tick = excluded.tick, job_key = excluded.job_key"
            f" WHERE excluded.tick > {t}_ticks.tick RETURNING 1",
        }

    def open(self) -> None:
        """Open (or create) the file, switch to WAL + synchronous=FULL, create or bring up to
        date the tables."""
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"SQLite refused WAL mode for {self._path!r} (got {mode!r})")
            conn.execute("PRAGMA synchronous=FULL")
            _transaction(conn, self._create_schema)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open SQLite queue {self._path!r}: {e}") from e
        self._conn = conn

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        """Create the tables, or add what a database of an older gearmanpy lacks."""
        t = self._table
        conn.execute(_SCHEMA.format(table=t))
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({t})")}
        for column, definition in _ADDED_COLUMNS.items():
            if column not in columns:
                conn.execute(f"ALTER TABLE {t} ADD COLUMN {column} {definition}")
        conn.execute(_BOOT_SCHEMA.format(table=t))
        for schema in _POLICY_SCHEMA:
            conn.execute(schema.format(table=t))

    def write(self, ops: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        """Apply ``ops`` in one transaction, each step of a run of one op with one
        ``executemany`` (claims one by one, since each answers)."""
        results: list[Any] = [None] * len(ops)

        def apply(conn: sqlite3.Connection) -> None:
            for step, rows in sql_runs(ops):
                if step != "claim":
                    conn.executemany(self._sql[step], rows)
                    continue
                for index, name, tick, *job in rows:
                    claimed = conn.execute(self._sql["claim"], (name, tick, job[0])).fetchall()
                    if claimed:
                        conn.execute(self._sql["add"], job)
                    results[index] = bool(claimed)

        try:
            _transaction(self._open_conn(), apply)
        except sqlite3.Error as e:
            raise StoreError(f"SQLite write failed: {e}") from e
        return results

    def next_boot(self) -> int:
        """Count one more boot in ``<table>_boot`` and commit (synced, as every commit)."""

        def count(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                f"INSERT INTO {self._table}_boot (id, boot) VALUES (1, 1)"
                " ON CONFLICT (id) DO UPDATE SET boot = boot + 1 RETURNING boot"
            ).fetchone()
            return int(row[0])

        try:
            boot: int = _transaction(self._open_conn(), count)
        except sqlite3.Error as e:
            raise StoreError(f"SQLite boot count failed: {e}") from e
        return boot

    def _open_conn(self) -> sqlite3.Connection:
        """The connection, or StoreError before open or after close."""
        if self._conn is None:
            raise StoreError("SQLite queue is not open")
        return self._conn

    def replay(self) -> list[StoredJob]:
        """Every row, by insertion order."""
        return self._read(f"SELECT {COLUMNS} FROM {self._table} ORDER BY seq", job_from_row)

    def dead(self) -> list[DeadJob]:
        """Every dead row, oldest failure first (ties in the order they were buried)."""
        sql = f"SELECT {DEAD_COLUMNS} FROM {self._table}_dead ORDER BY failed_at, seq"
        return self._read(sql, dead_from_row)

    def results(self) -> list[KeptResult]:
        """Every kept result, in the order they were kept."""
        sql = f"SELECT {RESULT_COLUMNS} FROM {self._table}_results ORDER BY seq"
        return self._read(sql, result_from_row)

    def _read(self, sql: str, convert: Callable[[Any], T]) -> list[T]:
        """Run the query ``sql`` and ``convert`` each row it returns."""
        try:
            rows = self._open_conn().execute(sql).fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"SQLite read failed: {e}") from e
        return [convert(row) for row in rows]

    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _marks(n: int) -> str:
    """``n`` SQL parameter marks."""
    return ", ".join("?" * n)


def _transaction(conn: sqlite3.Connection, action: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``action(conn)`` in one immediate transaction: committed, or rolled back if it
    raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = action(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return result


@implementer(IJobStore)
@attrs.define(eq=False)
class SQLiteJobStore(ThreadedStore):
    """Background jobs in an SQLite file, written with group commit on a writer thread.

    :ivar path: the database file (created if missing).
    """

    path: str
    reactor: Any  # ThreadedStore's, again here to come second

    _name = "sqlite"

    def _backend(self) -> _SQLiteBackend:
        """The backend on :attr:`path`."""
        return _SQLiteBackend(self.path, self.table)
