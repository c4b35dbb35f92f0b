# -*- test-case-name: tests.test_pg_cluster_results -*-
"""The cluster's foreground jobs and status in PostgreSQL (mixed into the cluster's backend).

A foreground job that its node cannot run (no worker of its function is connected there) is
shared: a row with ``foreground`` set, and a row in ``<table>_waiters`` naming the node whose
client waits for it (a second node's client with the same function and unique adds a waiter
to the same row). The node that runs it publishes each WORK_* packet as a row of
``<table>_events`` per waiter, and ``pg_notify`` ``e:<waiter>``; the waiting node takes its
events in order and forwards them. The final packet is published in the same transaction
that deletes the job's row, and after the delete, which waits for any node that is joining
the row (it holds the row ``FOR SHARE``): no waiter misses the end.

WORK_STATUS of every shared job is kept in the row's ``numerator`` and ``denominator``, so
GET_STATUS and GET_STATUS_UNIQUE answer the same on every node.

A node whose lease lapsed while it lived (PostgreSQL was away, the node stalled) is forgotten
as a dead one is: its waiters and events are deleted, and so are the unclaimed shared rows
nobody else waits for. When it finds its lease gone it waits again (``rewait``) for the jobs
its clients still wait for: a waiter on the row that is still there, or the row put back
(it runs again if it had run meanwhile: at least once, as after a node's death).
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred

from gearmanpy.errors import StoreError
from gearmanpy.store._rows import job_row
from gearmanpy.store._writer import ThreadedBatchWriter
from gearmanpy.store.interface import StoredJob

SHARE = "cluster_share"
EVENT = "cluster_event"
FINISH_SHARED = "cluster_finish_shared"
TAKE_EVENTS = "cluster_take_events"
PROGRESS = "cluster_progress"
STATUS = "cluster_status"
STATUS_UNIQUE = "cluster_status_unique"
COUNTS = "cluster_counts"
SETTLE = "cluster_settle"
REWAIT = "cluster_rewait"
RESULT_OPS = frozenset(
    {SHARE, EVENT, FINISH_SHARED, TAKE_EVENTS, PROGRESS, STATUS, STATUS_UNIQUE, COUNTS, SETTLE}
    | {REWAIT}
)

#: The columns and tables foreground jobs and status add (see pg_cluster's schema).
RESULT_COLUMNS = {
    "foreground": "BOOLEAN NOT NULL DEFAULT false",
    "numerator": "BIGINT NOT NULL DEFAULT 0",
    "denominator": "BIGINT NOT NULL DEFAULT 0",
}
RESULT_SCHEMA = """
CREATE INDEX IF NOT EXISTS {table}_handle ON {table} (handle);
CREATE INDEX IF NOT EXISTS {table}_unique ON {table} (unique_id) WHERE unique_id <> ''::bytea;
CREATE TABLE IF NOT EXISTS {table}_waiters (
    handle BYTEA NOT NULL,
    waiter TEXT NOT NULL,
    PRIMARY KEY (handle, waiter)
);
CREATE TABLE IF NOT EXISTS {table}_events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    waiter TEXT NOT NULL,
    handle BYTEA NOT NULL,
    data BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS {table}_events_waiter ON {table}_events (waiter, seq)
"""


@attrs.frozen
class Shared:
    """What sharing a foreground job came to: the handle its client waits on (its own, or
    the live shared job's it joined)."""

    joined: bool
    handle: bytes


@attrs.frozen
class JobStatus:
    """GET_STATUS's fields of a row: known, claimed (as running), numerator, denominator,
    and how many nodes' clients wait for it."""

    known: bool
    running: bool
    numerator: int
    denominator: int
    waiters: int


def result_statements(t: str, me: str) -> dict[str, str]:
    """The statements of foreground jobs and status on table ``t`` (``me``: the SQL that
    names this node's owner token)."""
    status = (
        f"SELECT owner IS NOT NULL, numerator, denominator,"
        f" (SELECT count(*) FROM {t}_waiters AS w WHERE w.handle = {t}.handle) FROM {t}"
    )
    to_waiters = (
        f"INSERT INTO {t}_events (waiter, handle, data) SELECT waiter, handle, %b"
        f" FROM {t}_waiters WHERE handle = %b RETURNING waiter"
    )
    return {
        "share": f"INSERT INTO {t} (job_key, function, unique_id, priority, data, when_to_run,"
        " retries, reducer, handle, submitted_at, error, coalesce_key, foreground)"
        " VALUES (%s, %b, %b, %s, %b, %s, %s, %b, %b, %s, %b, %b, true)"
        " ON CONFLICT DO NOTHING RETURNING 1",
        "live": f"SELECT handle, owner FROM {t} WHERE function = %b AND coalesce_key = %b"
        " FOR SHARE",
        "wait": f"INSERT INTO {t}_waiters (handle, waiter) VALUES (%b, {me})"
        " ON CONFLICT DO NOTHING",
        EVENT: to_waiters,
        "finish": f"DELETE FROM {t} WHERE job_key = %s AND attempt = %s AND owner = {me}"
        " RETURNING 1",
        "unwait": f"DELETE FROM {t}_waiters WHERE handle = %b",
        "held_by": f"SELECT owner FROM {t} WHERE handle = %b LIMIT 1 FOR SHARE",
        TAKE_EVENTS: f"DELETE FROM {t}_events WHERE waiter = {me} RETURNING seq, handle, data",
        PROGRESS: f"UPDATE {t} SET numerator = %s, denominator = %s WHERE job_key = %s"
        f" AND owner = {me}",
        STATUS: f"{status} WHERE handle = %b LIMIT 1",
        STATUS_UNIQUE: f"{status} WHERE unique_id = %b ORDER BY seq LIMIT 1",
        COUNTS: f"SELECT function, count(*), count(owner) FROM {t} GROUP BY function",
        # Waiters and events of nodes without a lease, and shared jobs nobody waits for.
        "gone": f"DELETE FROM {t}_waiters AS w WHERE NOT EXISTS (SELECT 1 FROM {t}_nodes AS n"
        f" WHERE n.owner = w.waiter); DELETE FROM {t}_events AS e WHERE NOT EXISTS"
        f" (SELECT 1 FROM {t}_nodes AS n WHERE n.owner = e.waiter); DELETE FROM {t} WHERE"
        f" foreground AND owner IS NULL AND NOT EXISTS (SELECT 1 FROM {t}_waiters AS w"
        f" WHERE w.handle = {t}.handle)",
    }


#: Tells a node that a foreground client joined a row it holds: ``j:HANDLE-HEX:OWNER``.
JOINED = "SELECT pg_notify(%s, 'j:' || %s || ':' || %s)"


class ResultOps:
    """The foreground and status ops of the cluster's backend (writer thread)."""

    _cluster_sql: dict[str, str]
    channel: str

    def _notify(self, cur: Any, functions: list[bytes]) -> None:
        """Announce work for ``functions`` (the cluster backend's)."""
        raise NotImplementedError

    def _tell(self, cur: Any, waiters: list[str]) -> None:
        """Tell ``waiters`` that events wait for them (sent at commit)."""
        for waiter in sorted(set(waiters)):
            cur.execute("SELECT pg_notify(%s, %s)", (self.channel, "e:" + waiter))

    def _cluster_share(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[Shared]:
        """Insert foreground rows waited for here, or wait for the live row of the same
        function and coalescing key, foreground or background; a node that has claimed the
        row it joined is told (``j:``), so that it publishes the job's packets from then on."""
        sql = self._cluster_sql
        out = []
        for job, coalesce in runs:
            shared = owner = None
            for _ in range(5):
                cur.execute(sql["share"], (*job_row(job), coalesce))
                if cur.fetchone() is not None:
                    shared = Shared(False, job.handle)
                    break
                cur.execute(sql["live"], (job.function, coalesce))
                live = cur.fetchone()
                if live is not None:
                    shared, owner = Shared(True, bytes(live[0])), live[1]
                    break
            if shared is None:
                raise StoreError("a foreground job kept conflicting with rows that ended")
            cur.execute(sql["wait"], (shared.handle,))
            if not shared.joined:
                self._notify(cur, [job.function])
            elif owner is not None:
                cur.execute(JOINED, (self.channel, shared.handle.hex(), owner))
            out.append(shared)
        return out

    def _cluster_rewait(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[bytes | None]:
        """Wait again for each shared job ``(job, coalesce)`` after the cluster forgot this
        node: on its row if it is there (its holder told), else on the row put back, or on
        the live row of its unique that took its place; the handle waited on (None: none)."""
        sql = self._cluster_sql
        out: list[bytes | None] = []
        for job, coalesce in runs:
            handle = job.handle
            cur.execute(sql["held_by"], (handle,))
            row = cur.fetchone()
            if row is None:
                cur.execute(sql["share"], (*job_row(job), coalesce))
                if cur.fetchone() is not None:
                    self._notify(cur, [job.function])
                    row = (None,)
                elif coalesce:
                    cur.execute(sql["live"], (job.function, coalesce))
                    live = cur.fetchone()
                    if live is not None:
                        handle, row = bytes(live[0]), (live[1],)
            if row is None:
                out.append(None)
                continue
            cur.execute(sql["wait"], (handle,))
            if row[0] is not None:
                cur.execute(JOINED, (self.channel, handle.hex(), row[0]))
            out.append(handle)
        return out

    def _cluster_event(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[None]:
        """Publish a packet of a shared job to its waiters."""
        for handle, data in runs:
            cur.execute(self._cluster_sql[EVENT], (data, handle))
            self._tell(cur, [r[0] for r in cur.fetchall()])
        return [None] * len(runs)

    def _cluster_finish_shared(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[bool]:
        """Delete a shared job's row (for its attempt), then publish its last packet and
        forget its waiters; a superseded attempt publishes nothing."""
        out = []
        sql = self._cluster_sql
        for key, attempt, handle, data in runs:
            cur.execute(sql["finish"], (key, attempt))
            deleted = cur.fetchone() is not None
            if deleted and data:
                cur.execute(sql[EVENT], (data, handle))
                self._tell(cur, [r[0] for r in cur.fetchall()])
            if deleted:
                cur.execute(sql["unwait"], (handle,))
            out.append(deleted)
        return out

    def _cluster_settle(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[None]:
        """Publish the final packet of an attempt of a background row to the clients that
        joined it, and forget them (the row stays: a retry or the dead set may keep it)."""
        sql = self._cluster_sql
        for handle, data in runs:
            cur.execute(sql[EVENT], (data, handle))
            self._tell(cur, [r[0] for r in cur.fetchall()])
            cur.execute(sql["unwait"], (handle,))
        return [None] * len(runs)

    def _cluster_take_events(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[Any]:
        """Take the events waiting for this node, in the order they were published."""
        cur.execute(self._cluster_sql[TAKE_EVENTS])
        events = [(bytes(h), bytes(d)) for _, h, d in sorted(cur.fetchall())]
        return [events] + [[] for _ in runs[1:]]

    def _cluster_progress(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[None]:
        """Keep the WORK_STATUS of rows held here."""
        latest = {key: (n, d) for key, n, d in runs}
        for key, (n, d) in latest.items():
            cur.execute(self._cluster_sql[PROGRESS], (n, d, key))
        return [None] * len(runs)

    def _cluster_status(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[JobStatus | None]:
        """GET_STATUS fields of the row with each handle (None: no such row)."""
        return [self._status(cur, STATUS, handle) for (handle,) in runs]

    def _cluster_status_unique(
        self, cur: Any, runs: list[tuple[Any, ...]]
    ) -> list[JobStatus | None]:
        """GET_STATUS_UNIQUE fields of the oldest row with each unique."""
        return [self._status(cur, STATUS_UNIQUE, unique) for (unique,) in runs]

    def _cluster_counts(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[Any]:
        """Per function: the rows, and how many of them a node has claimed (admin status)."""
        cur.execute(self._cluster_sql[COUNTS])
        counts = [(bytes(f), int(n), int(c)) for f, n, c in cur.fetchall()]
        return [counts for _ in runs]

    def _status(self, cur: Any, op: str, value: bytes) -> JobStatus | None:
        cur.execute(self._cluster_sql[op], (value,))
        row = cur.fetchone()
        if row is None:
            return None
        return JobStatus(True, bool(row[0]), int(row[1]), int(row[2]), int(row[3]))


class ResultStore:
    """The foreground and status ops of the cluster's store (reactor thread)."""

    _writer: ThreadedBatchWriter

    def share(self, job: StoredJob, coalesce: bytes) -> Deferred[Shared]:
        """Insert a foreground row this node waits for, or wait for the live one."""
        return self._writer.submit(SHARE, job, coalesce)

    def event(self, handle: bytes, data: bytes) -> Deferred[None]:
        """Publish the packet ``data`` of the shared job ``handle`` to its waiters."""
        return self._writer.submit(EVENT, handle, data)

    def finish_shared(self, key: str, attempt: int, handle: bytes, data: bytes) -> Deferred[bool]:
        """Delete a shared job's row for ``attempt``, then publish its last packet."""
        return self._writer.submit(FINISH_SHARED, key, attempt, handle, data)

    def settle(self, handle: bytes, data: bytes) -> Deferred[None]:
        """Publish the final packet ``data`` of an attempt of the background row ``handle``
        to the clients that joined it, and forget them."""
        return self._writer.submit(SETTLE, handle, data)

    def take_events(self) -> Deferred[list[tuple[bytes, bytes]]]:
        """The (handle, packet) events waiting for this node, in order."""
        return self._writer.submit(TAKE_EVENTS)

    def progress(self, key: str, numerator: int, denominator: int) -> Deferred[None]:
        """Keep the WORK_STATUS of the row ``key``."""
        return self._writer.submit(PROGRESS, key, numerator, denominator)

    def status(self, handle: bytes) -> Deferred[JobStatus | None]:
        """The GET_STATUS fields of the row with ``handle``."""
        return self._writer.submit(STATUS, handle)

    def counts(self) -> Deferred[list[tuple[bytes, int, int]]]:
        """Per function in the table: (name, rows, rows a node has claimed)."""
        return self._writer.submit(COUNTS)

    def status_unique(self, unique: bytes) -> Deferred[JobStatus | None]:
        """The GET_STATUS_UNIQUE fields of the oldest row with ``unique``."""
        return self._writer.submit(STATUS_UNIQUE, unique)

    def rewait(self, job: Any, coalesce: bytes) -> Deferred[bytes | None]:
        """Wait again for a shared job (a StoredJob) this node's clients wait for, after its
        lease lapsed; fires with the handle it now waits on (None: none)."""
        d: Deferred[bytes | None] = self._writer.submit(REWAIT, job, coalesce)
        return d


__all__ = [
    "JOINED",
    "REWAIT",
    "ResultStore",
    "RESULT_OPS",
    "SETTLE",
    "JobStatus",
    "ResultOps",
    "Shared",
    "result_statements",
]
