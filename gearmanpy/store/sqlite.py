# -*- test-case-name: tests.test_store -*-
"""A store in one SQLite file: ``--queue sqlite:PATH``.

Durability: the database runs in WAL mode with ``synchronous=FULL``, so a commit returns only
after the WAL has been synced to disk; :meth:`SQLiteJobStore.add` fires only after the commit
that holds its job. An acknowledged job therefore survives a crash of the process, of the OS
and a power loss (as far as the disk honours fsync).

Throughput: all SQLite calls run on one dedicated writer thread (never the reactor thread).
Everything queued while a commit is in flight (adds, dones, retry counts) goes into the next
transaction (group commit), so one sync acknowledges thousands of jobs.

Unlike gearmand's libsqlite3 queue, rows are keyed by the server's job key, never by
(unique, function): empty-unique jobs and repeated uniques each keep their own row, the payload
is stored as a BLOB (empty is fine), priority, epoch time (64-bit), retries, reducer and the
job handle are all kept, and replay returns rows in insertion order.

Boots are counted in a one-row table ``<table>_boot``. A database made before handles were
kept gets the ``handle`` column (empty in its rows) and the boot table at open, in one
transaction; nothing else changes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
from zope.interface import implementer

from gearmanpy.errors import StoreError
from gearmanpy.store._writer import (
    ADD,
    COLUMNS,
    DONE,
    RETRIES,
    ThreadedStore,
    job_from_row,
    sql_runs,
)
from gearmanpy.store.interface import IJobStore, StoredJob

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {table} (
    seq INTEGER PRIMARY KEY,
    job_key TEXT NOT NULL UNIQUE,
    function BLOB NOT NULL,
    unique_id BLOB NOT NULL,
    priority INTEGER NOT NULL,
    data BLOB NOT NULL,
    when_to_run INTEGER NOT NULL,
    retries INTEGER NOT NULL,
    reducer BLOB NOT NULL,
    handle BLOB NOT NULL DEFAULT x''
)
"""

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
        self._sql = {
            ADD: f"INSERT INTO {t} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (job_key) DO UPDATE"
            " SET function=excluded.function, unique_id=excluded.unique_id,"
            " priority=excluded.priority, data=excluded.data,"
            " when_to_run=excluded.when_to_run, retries=excluded.retries,"
            " reducer=excluded.reducer, handle=excluded.handle",
            DONE: f"DELETE FROM {t} WHERE job_key = ?",
            RETRIES: f"UPDATE {t} SET retries = ? WHERE job_key = ?",
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
        if "handle" not in columns:
            conn.execute(f"ALTER TABLE {t} ADD COLUMN handle BLOB NOT NULL DEFAULT x''")
        conn.execute(_BOOT_SCHEMA.format(table=t))

    def write(self, ops: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Apply ``ops`` in one transaction, each run of one op with one ``executemany``."""

        def apply(conn: sqlite3.Connection) -> None:
            for op, rows in sql_runs(ops):
                conn.executemany(self._sql[op], rows)

        try:
            _transaction(self._open_conn(), apply)
        except sqlite3.Error as e:
            raise StoreError(f"SQLite write failed: {e}") from e

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
        rows = (
            self._open_conn()
            .execute(f"SELECT {COLUMNS} FROM {self._table} ORDER BY seq")
            .fetchall()
        )
        return [job_from_row(row) for row in rows]

    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


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
