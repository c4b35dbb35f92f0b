# -*- test-case-name: tests.test_store -*-
"""A store in a PostgreSQL table: ``--queue postgresql://user@host:port/dbname``.

Uses psycopg 3 with its own connection on one dedicated writer thread, so it works with any
Twisted reactor and never blocks the reactor thread. Everything queued while a commit is in
flight (adds, dones, retry counts) goes into the next transaction (group commit), written as
one statement per run of consecutive operations with the same op, its values passed as
arrays (``unnest``): a batch costs one round trip per run and a single commit (one WAL flush).

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
the database each get their own number. A table made before handles were kept gets the
``handle`` column (empty in its rows) at connect; nothing else changes.

When the connection breaks (the server restarted), the writer reconnects and retries the batch
once on the new connection (every statement is idempotent). While PostgreSQL is unreachable,
operations fail with :class:`gearmanpy.errors.StoreError` after at most the connect timeout (or
the store's timeout, whichever is first).
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.logger import Logger
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
    job_key TEXT PRIMARY KEY,
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    function BYTEA NOT NULL,
    unique_id BYTEA NOT NULL,
    priority SMALLINT NOT NULL,
    data BYTEA NOT NULL,
    when_to_run BIGINT NOT NULL,
    retries INTEGER NOT NULL,
    reducer BYTEA NOT NULL,
    handle BYTEA NOT NULL DEFAULT ''::bytea
);
CREATE TABLE IF NOT EXISTS {table}_boot (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    boot BIGINT NOT NULL
)
"""


class _PostgresBackend:
    """The blocking half of the store; every method runs on the writer thread."""

    log = Logger()

    def __init__(self, conninfo: str, table: str, connect_timeout: float) -> None:
        self._conninfo = conninfo
        self._table = table
        self._connect_timeout = max(1, int(connect_timeout))
        self._conn: Any = None
        t = table
        # One statement per run of operations with the same op, with the values as arrays:
        # a run of thousands of adds is one statement, and a whole batch one commit.
        self._sql = {
            ADD: f"INSERT INTO {t} ({COLUMNS}) SELECT k, f, u, p, d, w, r, rd, h"
            " FROM unnest(%b::text[], %b::bytea[], %b::bytea[], %b::int2[], %b::bytea[],"
            " %b::int8[], %b::int4[], %b::bytea[], %b::bytea[])"
            " WITH ORDINALITY AS x(k, f, u, p, d, w, r, rd, h, n) ORDER BY n"
            " ON CONFLICT (job_key) DO UPDATE SET function = EXCLUDED.function,"
            " unique_id = EXCLUDED.unique_id, priority = EXCLUDED.priority,"
            " data = EXCLUDED.data, when_to_run = EXCLUDED.when_to_run,"
            " retries = EXCLUDED.retries, reducer = EXCLUDED.reducer,"
            " handle = EXCLUDED.handle",
            DONE: f"DELETE FROM {t} WHERE job_key = ANY(%b::text[])",
            RETRIES: f"UPDATE {t} SET retries = x.r FROM unnest(%b::int4[], %b::text[])"
            f" AS x(r, k) WHERE {t}.job_key = x.k",
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
                cur.execute(_SCHEMA.format(table=self._table))
                self._add_handle_column(cur)
            conn.commit()
        except psycopg.Error as e:
            conn.close()
            raise StoreError(f"cannot set up the PostgreSQL queue table: {e}") from e
        return conn

    def _add_handle_column(self, cur: Any) -> None:
        """Give a table of an older gearmanpy its ``handle`` column (looked up first, since
        ALTER TABLE locks the table even when the column is there)."""
        cur.execute(
            "SELECT 1 FROM pg_attribute WHERE attrelid = %s::regclass"
            " AND attname = 'handle' AND NOT attisdropped",
            (self._table,),
        )
        if cur.fetchone() is None:
            cur.execute(
                f"ALTER TABLE {self._table}"
                " ADD COLUMN IF NOT EXISTS handle BYTEA NOT NULL DEFAULT ''::bytea"
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

    def write(self, ops: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Apply ``ops`` in one transaction: one array statement per run of one op."""
        statements = [(self._sql[op], _columns(op, rows)) for op, rows in sql_runs(ops)]

        def action(conn: Any) -> None:
            with conn.cursor() as cur:
                for sql, params in statements:
                    cur.execute(sql, params)

        self._with_connection(action)

    def replay(self) -> list[StoredJob]:
        """Every row by insertion order."""

        def action(conn: Any) -> list[StoredJob]:
            with conn.cursor(binary=True) as cur:
                cur.execute(f"SELECT {COLUMNS} FROM {self._table} ORDER BY seq")
                return [job_from_row(row) for row in cur.fetchall()]

        result: list[StoredJob] = self._with_connection(action)
        return result

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

    The rows are :func:`~gearmanpy.store._writer.row_for`'s, whose order the statements in
    ``_PostgresBackend._sql`` take their arrays in. A key repeated within a run keeps only its
    last row: one statement may not insert or update the same row twice.
    """
    key = 1 if op == RETRIES else 0  # a retry count's row is (retries, key)
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
