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
is stored as a BLOB (empty is fine), priority, epoch time (64-bit), retries and reducer are all
kept, and replay returns rows in insertion order.
"""

from __future__ import annotations

import sqlite3
from typing import Any

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
    reducer BLOB NOT NULL
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
            ADD: f"INSERT INTO {t} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (job_key) DO UPDATE"
            " SET function=excluded.function, unique_id=excluded.unique_id,"
            " priority=excluded.priority, data=excluded.data,"
            " when_to_run=excluded.when_to_run, retries=excluded.retries,"
            " reducer=excluded.reducer",
            DONE: f"DELETE FROM {t} WHERE job_key = ?",
            RETRIES: f"UPDATE {t} SET retries = ? WHERE job_key = ?",
        }

    def open(self) -> None:
        """Open (or create) the file, switch to WAL + synchronous=FULL, create the table."""
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"SQLite refused WAL mode for {self._path!r} (got {mode!r})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(_SCHEMA.format(table=self._table))
        except sqlite3.Error as e:
            raise StoreError(f"cannot open SQLite queue {self._path!r}: {e}") from e
        self._conn = conn

    def write(self, ops: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Apply ``ops`` in one transaction, each run of one op with one ``executemany``."""
        conn = self._conn
        if conn is None:
            raise StoreError("SQLite queue is not open")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for op, rows in sql_runs(ops):
                    conn.executemany(self._sql[op], rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise StoreError(f"SQLite write failed: {e}") from e

    def replay(self) -> list[StoredJob]:
        """Every row, by insertion order."""
        conn = self._conn
        if conn is None:
            raise StoreError("SQLite queue is not open")
        rows = conn.execute(f"SELECT {COLUMNS} FROM {self._table} ORDER BY seq").fetchall()
        return [job_from_row(row) for row in rows]

    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


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
