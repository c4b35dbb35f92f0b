# -*- test-case-name: tests.test_pg_cluster_dead -*-
"""The dead set, scheduled jobs and kept results of the whole cluster (mixed into the
cluster's backend and store), for the failure policy's admin commands on any node.

On a cluster the ``<table>_dead`` and ``<table>_results`` tables are the dead set and the
kept results: a node keeps no dead set in memory (its backend's :meth:`DeadOps.dead` replays
none), so no node can show, retry or bring back a dead row that another node retried or
dropped. ``retry dead`` moves dead rows into the queue table unclaimed (attempts reset, due
at once, coalescing on their unique unless a live job has it) and announces them with the
table's NOTIFY, so any node's workers run them; ``drop dead`` deletes them; ``cancel
unique`` deletes the queued row with that function and unique, and tells the clients waiting
for a shared foreground one; a sweep enforces the dead set's bounds and the results' expiry on
the tables, since no node's memory holds every row. Reads are bounded as ``show jobs`` is
(:data:`~gearmanpy.store.pg_cluster_jobs.SHOW_JOBS_LIMIT`, one more row to tell that a list
was cut).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred

from gearmanpy.protocol import replies
from gearmanpy.store._rows import (
    COLUMNS,
    DEAD_COLUMNS,
    RESULT_COLUMNS,
    dead_from_row,
    job_row,
    result_from_row,
)
from gearmanpy.store.interface import DeadJob, KeptResult, StoredJob
from gearmanpy.store.pg_cluster_jobs import SHOW_JOBS_LIMIT
from gearmanpy.store.postgres import _JOB_ARRAYS, _JOB_NAMES

SHOW_DEAD = "cluster_show_dead"
SHOW_SCHEDULED = "cluster_show_scheduled"
SHOW_RESULT = "cluster_show_result"
RETRY_DEAD = "cluster_retry_dead"
DROP_DEAD_ROWS = "cluster_drop_dead"
CANCEL_UNIQUE = "cluster_cancel_unique"
SELECT_DEAD = "cluster_select_dead"
SWEEP = "cluster_sweep"
DEAD_PAGE = "cluster_dead_page"
DEAD_OPS = frozenset(
    {
        SHOW_DEAD,
        DEAD_PAGE,
        SHOW_SCHEDULED,
        SHOW_RESULT,
        SELECT_DEAD,
        RETRY_DEAD,
        DROP_DEAD_ROWS,
        CANCEL_UNIQUE,
        SWEEP,
    }
)

#: What a row coalesces on, as the cluster's submissions write it (server/cluster_results.py's
#: ``coalesce_column``): the SHA-256 of its unique, of its payload for ``-``, else empty.
_COALESCE = (
    "CASE WHEN u = ''::bytea THEN ''::bytea WHEN u = '-'::bytea THEN"
    " (CASE WHEN d = ''::bytea THEN ''::bytea ELSE sha256(d) END) ELSE sha256(u) END"
)


#: The index ``show scheduled`` reads: the rows with a time, which few are (an epoch job, a
#: retry waiting), so that submissions due at once do not write to it.
DEAD_SCHEMA = (
    "CREATE INDEX IF NOT EXISTS {table}_waiting ON {table} (when_to_run) WHERE when_to_run > 0"
)


@attrs.frozen
class ScheduledRow:
    """A queue row waiting for its time, as ``show scheduled`` prints it (``key`` to skip
    the node's own jobs)."""

    key: str
    handle: bytes
    function: bytes
    unique: bytes
    when: int
    priority: int
    retries: int
    error: bytes


@attrs.frozen
class Cancelled:
    """What ``cancel unique`` found in the table: the handle of the queued row it deleted
    (and the nodes whose clients waited for it, told with WORK_FAIL), or the name of the node
    that holds the job (None if no row has that function and unique)."""

    handle: bytes | None = None
    held_by: str | None = None


def dead_statements(t: str, me: str) -> dict[str, str]:
    """The statements of the cluster's dead set, scheduled rows and kept results on ``t``
    (``me``: the SQL naming this node's owner token)."""
    revive = (
        f"INSERT INTO {t} ({COLUMNS}, coalesce_key) SELECT {_JOB_NAMES}, {{coalesce}}"
        f" FROM unnest({_JOB_ARRAYS}) WITH ORDINALITY AS x({_JOB_NAMES}, n) ORDER BY n"
        " ON CONFLICT DO NOTHING RETURNING job_key"
    )
    return {
        SHOW_DEAD: f"SELECT {DEAD_COLUMNS} FROM {t}_dead WHERE %s OR function = %b"
        " ORDER BY failed_at, seq LIMIT %s",
        "count_dead": f"SELECT count(*) FROM {t}_dead",
        # The rows a node holds are listed from that node's core (its retries waiting).
        SHOW_SCHEDULED: "SELECT job_key, handle, function, unique_id, when_to_run, priority,"
        f" retries, error FROM {t} WHERE when_to_run > 0"  # the {t}_waiting index
        " AND when_to_run > extract(epoch FROM now())"
        f" AND owner IS DISTINCT FROM {me} AND (%s OR function = %b)"
        " ORDER BY when_to_run, seq LIMIT %s",
        "result_by_handle": f"SELECT {RESULT_COLUMNS} FROM {t}_results WHERE handle = %b"
        " AND expires_at > %s",
        "result_by_unique": f"SELECT {RESULT_COLUMNS} FROM {t}_results WHERE function = %b"
        " AND unique_id = %b AND expires_at > %s ORDER BY seq DESC LIMIT 1",
        SELECT_DEAD: f"SELECT job_key, function FROM {t}_dead"
        " WHERE %s OR handle = %b OR function = %b ORDER BY failed_at, seq LIMIT %s",
        "take_dead": f"DELETE FROM {t}_dead WHERE job_key = ANY(%b::text[])"
        f" RETURNING {DEAD_COLUMNS}",
        "revive": revive.format(coalesce=_COALESCE),
        "revive_alone": revive.format(coalesce="''::bytea"),
        DROP_DEAD_ROWS: f"DELETE FROM {t}_dead WHERE job_key = ANY(%b::text[])",
        # "<> ''" lets the planner use the partial unique index on (function, coalesce_key).
        CANCEL_UNIQUE: f"DELETE FROM {t} WHERE function = %b AND coalesce_key = %b"
        " AND coalesce_key <> ''::bytea AND owner IS NULL RETURNING handle",
        "holder": f"SELECT n.name FROM {t} JOIN {t}_nodes AS n ON n.owner = {t}.owner"
        f" WHERE {t}.function = %b AND {t}.coalesce_key = %b AND {t}.coalesce_key <> ''::bytea",
        "sweep_age": f"DELETE FROM {t}_dead WHERE failed_at + %s <= %s",
        "sweep_count": f"DELETE FROM {t}_dead WHERE job_key IN (SELECT job_key FROM {t}_dead"
        " ORDER BY failed_at DESC, seq DESC OFFSET %s)",
        "sweep_results": f"DELETE FROM {t}_results WHERE expires_at <= %s",
    }


class DeadOps:
    """The dead set's and kept results' ops of the cluster's backend (writer thread)."""

    _cluster_sql: dict[str, str]

    if TYPE_CHECKING:

        def _notify(self, cur: Any, functions: list[bytes]) -> None:
            """Announce work for ``functions`` (the cluster backend's)."""

        def _tell(self, cur: Any, waiters: list[str]) -> None:
            """Tell ``waiters`` that events wait for them (pg_cluster_results')."""

    def _setup_dead(self, cur: Any, table: str) -> None:
        """Create the index ``show scheduled`` reads (in the connect's transaction)."""
        cur.execute(DEAD_SCHEMA.format(table=table))

    def dead(self) -> list[DeadJob]:
        """Nothing: on a cluster the dead table is the dead set, read by each command."""
        return []

    def _cluster_show_dead(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[Any]:
        """Per run: the dead rows (of one function, or all), oldest failure first."""
        out = []
        for (function,) in runs:
            args = (function is None, function or b"", SHOW_JOBS_LIMIT + 1)
            cur.execute(self._cluster_sql[SHOW_DEAD], args)
            out.append([dead_from_row(r) for r in cur.fetchall()])
        return out

    def _cluster_dead_page(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[Any]:
        """Per run: how many dead rows there are (every function's), and the oldest
        ``limit`` (of one function, or all)."""
        out = []
        for function, limit in runs:
            cur.execute(self._cluster_sql["count_dead"])
            (total,) = cur.fetchone()
            cur.execute(self._cluster_sql[SHOW_DEAD], (function is None, function or b"", limit))
            out.append((int(total), [dead_from_row(r) for r in cur.fetchall()]))
        return out

    def _cluster_show_scheduled(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[Any]:
        """Per run: the rows not held here that wait for their time, soonest first."""
        out = []
        for (function,) in runs:
            args = (function is None, function or b"", SHOW_JOBS_LIMIT + 1)
            cur.execute(self._cluster_sql[SHOW_SCHEDULED], args)
            out.append(
                [
                    ScheduledRow(
                        str(k), bytes(h), bytes(f), bytes(u), int(w), int(p), int(r), bytes(e)
                    )
                    for k, h, f, u, w, p, r, e in cur.fetchall()
                ]
            )
        return out

    def _cluster_show_result(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[Any]:
        """Per run: the unexpired result kept for a handle (or a function and a unique)."""
        out: list[KeptResult | None] = []
        for what, now in runs:
            if len(what) == 1:
                cur.execute(self._cluster_sql["result_by_handle"], (what[0], now))
            else:
                cur.execute(self._cluster_sql["result_by_unique"], (what[0], what[1], now))
            row = cur.fetchone()
            out.append(None if row is None else result_from_row(row))
        return out

    def _cluster_retry_dead(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[int]:
        """Per run: move the dead rows with the given keys into the queue, unclaimed, with
        their attempts reset (one whose unique a live job has runs on its own, as a node's
        ``retry dead`` does); announce them; how many moved."""
        out = []
        for (keys,) in runs:
            cur.execute(self._cluster_sql["take_dead"], (keys,))
            taken = [dead_from_row(r).job for r in cur.fetchall()]
            rows = [job_row(_revived(job)) for job in taken]
            if rows:
                columns = [list(c) for c in zip(*rows, strict=True)]
                cur.execute(self._cluster_sql["revive"], columns)
                done = {r[0] for r in cur.fetchall()}
                rest = [row for row in rows if row[0] not in done]
                if rest:
                    cur.execute(
                        self._cluster_sql["revive_alone"],
                        [list(c) for c in zip(*rest, strict=True)],
                    )
                self._notify(cur, [job.function for job in taken])
            out.append(len(taken))
        return out

    def _cluster_drop_dead(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[int]:
        """Per run: delete the dead rows with the given keys; how many there were."""
        out = []
        for (keys,) in runs:
            cur.execute(self._cluster_sql[DROP_DEAD_ROWS], (keys,))
            out.append(cur.rowcount)
        return out

    def _cluster_select_dead(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[Any]:
        """Per run: (key, function) of the dead rows a handle, a function or ``all`` names."""
        out = []
        for (what,) in runs:
            args = (what == b"all", what, what, SHOW_JOBS_LIMIT + 1)
            cur.execute(self._cluster_sql[SELECT_DEAD], args)
            out.append([(str(k), bytes(f)) for k, f in cur.fetchall()])
        return out

    def _cluster_cancel_unique(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[Cancelled]:
        """Per run: delete the queued row of a function and coalescing key; the clients
        waiting for it on any node get WORK_FAIL."""
        out = []
        for function, coalesce in runs:
            cur.execute(self._cluster_sql[CANCEL_UNIQUE], (function, coalesce))
            row = cur.fetchone()
            if row is None:
                cur.execute(self._cluster_sql["holder"], (function, coalesce))
                held = cur.fetchone()
                out.append(Cancelled(held_by=None if held is None else str(held[0])))
                continue
            # Its waiters (a shared foreground job's, or foreground clients that joined a
            # background one) hear it failed.
            handle = bytes(row[0])
            cur.execute(self._cluster_sql["cluster_event"], (replies.work_fail(handle), handle))
            self._tell(cur, [str(r[0]) for r in cur.fetchall()])
            cur.execute(self._cluster_sql["unwait"], (handle,))
            out.append(Cancelled(handle=handle))
        return out

    def _cluster_sweep(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[None]:
        """Forget dead rows past the dead set's age or count, and expired results."""
        for now, max_age, max_jobs in runs[-1:]:
            if max_age:
                cur.execute(self._cluster_sql["sweep_age"], (max_age, now))
            if max_jobs:
                cur.execute(self._cluster_sql["sweep_count"], (max_jobs,))
            cur.execute(self._cluster_sql["sweep_results"], (now,))
        return [None] * len(runs)


def _revived(job: StoredJob) -> StoredJob:
    """A dead row's job queued again: a new row key, attempts reset, due at once, its
    handle kept (its row key for a row written before handles were kept)."""
    return attrs.evolve(
        job,
        key=f"{job.key}.r{os.urandom(4).hex()}",
        when=0,
        retries=0,
        error=b"",
        handle=job.handle or job.key.encode(),
    )


class DeadStore:
    """The dead set's and kept results' methods of the cluster's store."""

    _writer: Any

    def show_dead(self, function: bytes | None) -> Deferred[list[DeadJob]]:
        """The dead rows (of ``function``, or all), oldest failure first (at most
        :data:`SHOW_JOBS_LIMIT` + 1)."""
        d: Deferred[list[DeadJob]] = self._writer.submit(SHOW_DEAD, function)
        return d

    def dead_page(self, function: bytes | None, limit: int) -> Deferred[tuple[int, list[DeadJob]]]:
        """How many dead rows there are, and the oldest ``limit`` (of ``function``, or all):
        one page of the dead set, for the web dashboard, which asks every few seconds."""
        d: Deferred[tuple[int, list[DeadJob]]] = self._writer.submit(DEAD_PAGE, function, limit)
        return d

    def show_scheduled(self, function: bytes | None) -> Deferred[list[ScheduledRow]]:
        """The rows not held here that wait for their time, soonest first (bounded as
        :meth:`show_dead`)."""
        d: Deferred[list[ScheduledRow]] = self._writer.submit(SHOW_SCHEDULED, function)
        return d

    def show_result(self, what: tuple[bytes, ...], now: float) -> Deferred[KeptResult | None]:
        """The result kept for ``(handle,)`` or ``(function, unique)``, unless it expired
        by ``now``."""
        d: Deferred[KeptResult | None] = self._writer.submit(SHOW_RESULT, tuple(what), now)
        return d

    def select_dead(self, what: bytes) -> Deferred[list[tuple[str, bytes]]]:
        """(key, function) of the dead rows ``what`` names, oldest failure first (bounded)."""
        d: Deferred[list[tuple[str, bytes]]] = self._writer.submit(SELECT_DEAD, what)
        return d

    def retry_dead(self, keys: list[str]) -> Deferred[int]:
        """Move the dead rows ``keys`` into the queue, unclaimed; fires with how many."""
        d: Deferred[int] = self._writer.submit(RETRY_DEAD, list(keys))
        return d

    def drop_dead_rows(self, keys: list[str]) -> Deferred[int]:
        """Delete the dead rows ``keys``; fires with how many there were."""
        d: Deferred[int] = self._writer.submit(DROP_DEAD_ROWS, list(keys))
        return d

    def cancel_unique(self, function: bytes, coalesce: bytes) -> Deferred[Cancelled]:
        """Delete the queued row of ``function`` with the coalescing key ``coalesce`` (a
        shared foreground one's waiting clients get WORK_FAIL)."""
        d: Deferred[Cancelled] = self._writer.submit(CANCEL_UNIQUE, function, coalesce)
        return d

    def sweep(self, now: float, max_age: float, max_jobs: int) -> Deferred[None]:
        """Forget dead rows that failed ``max_age`` seconds before ``now`` or more, those
        past the newest ``max_jobs`` (0: no bound), and results expired by ``now``."""
        d: Deferred[None] = self._writer.submit(SWEEP, now, max_age, max_jobs)
        return d


__all__ = [
    "CANCEL_UNIQUE",
    "DEAD_OPS",
    "DEAD_PAGE",
    "DEAD_SCHEMA",
    "DROP_DEAD_ROWS",
    "RETRY_DEAD",
    "SHOW_DEAD",
    "SHOW_RESULT",
    "SELECT_DEAD",
    "SHOW_SCHEDULED",
    "SWEEP",
    "Cancelled",
    "DeadOps",
    "DeadStore",
    "ScheduledRow",
    "dead_statements",
]
