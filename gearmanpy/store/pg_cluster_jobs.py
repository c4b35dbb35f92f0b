# -*- test-case-name: tests.test_pg_cluster_jobs -*-
"""The shared jobs that other nodes hold, or none does, for the admin ``show jobs`` and
``show unique jobs`` of the whole cluster, and the nodes for ``show nodes`` (mixed into the
cluster's backend and store).

One bounded read of the queue table: the rows not held by this node (claimed by another
node, or queued), oldest first, at most :data:`SHOW_JOBS_LIMIT`; the node's own jobs come
from its core (:mod:`gearmanpy.server.cluster_admin`).
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred

SHOW_JOBS = "cluster_show_jobs"
PRIORITY_COUNTS = "cluster_priority_counts"
SHOW_NODES = "cluster_show_nodes"
JOB_OPS = frozenset({SHOW_JOBS, PRIORITY_COUNTS, SHOW_NODES})

#: The most table rows one ``show jobs`` reads (the node's own jobs are not counted).
SHOW_JOBS_LIMIT = 10_000


@attrs.frozen
class NodeRow:
    """A node of the cluster as ``show nodes`` prints it: its name and owner token (one per
    incarnation), when it started (Unix seconds), the seconds left on its lease by the
    database's clock (negative: expired, not yet swept), how many rows it holds, and
    whether it is the node asked."""

    name: str
    owner: str
    started: float
    lease_left: float
    held: int
    me: bool


@attrs.frozen
class TableJob:
    """A row of the queue table as ``show jobs`` and ``show unique jobs`` print it (``key``
    to skip this node's)."""

    key: str
    handle: bytes
    retries: int
    foreground: bool
    unique: bytes


def job_statements(t: str, me: str) -> dict[str, str]:
    """The ``show jobs`` statement of ``t`` (``me``: the SQL naming this node's owner token)."""
    return {
        SHOW_JOBS: f"SELECT job_key, handle, retries, foreground, unique_id FROM {t}"
        f" WHERE owner IS DISTINCT FROM {me} ORDER BY seq LIMIT %s",
        # Queued rows per function and priority, a future one as NORMAL (as prioritystatus
        # counts a scheduled job), less those with the given keys (the node's own jobs).
        SHOW_NODES: "SELECT n.name, n.owner, extract(epoch FROM n.started_at)::float8,"
        " extract(epoch FROM n.lease_until - clock_timestamp())::float8,"
        f" (SELECT count(*) FROM {t} WHERE {t}.owner = n.owner), n.owner = {me}"
        f" FROM {t}_nodes AS n ORDER BY n.name, n.started_at",
        PRIORITY_COUNTS: "SELECT function, CASE WHEN when_to_run > extract(epoch FROM now())"
        f" THEN 1 ELSE priority END, count(*) FROM {t} WHERE owner IS NULL"
        " AND job_key <> ALL(%b::text[]) GROUP BY 1, 2",
    }


class JobOps:
    """The ``show jobs`` op of the cluster's backend (writer thread)."""

    _cluster_sql: dict[str, str]

    def _cluster_show_jobs(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[Any]:
        """The rows other nodes hold or none does, oldest first (one read for the run), at most
        one more than the limit (so that the admin can tell that the list was cut)."""
        cur.execute(self._cluster_sql[SHOW_JOBS], (SHOW_JOBS_LIMIT + 1,))
        rows = [
            TableJob(str(k), bytes(h), int(r), bool(f), bytes(u))
            for k, h, r, f, u in cur.fetchall()
        ]
        return [rows] * len(runs)

    def _cluster_show_nodes(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[Any]:
        """The nodes holding a lease, by name (one read for the run)."""
        cur.execute(self._cluster_sql[SHOW_NODES])
        rows = [
            NodeRow(str(n), str(o), float(s), float(left), int(h), bool(me))
            for n, o, s, left, h, me in cur.fetchall()
        ]
        return [rows] * len(runs)

    def _cluster_priority_counts(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[Any]:
        """Per run: (function, priority, queued rows) of the table, less the run's keys."""
        answers = []
        for (keys,) in runs:
            cur.execute(self._cluster_sql[PRIORITY_COUNTS], (keys,))
            answers.append([(bytes(f), int(p), int(n)) for f, p, n in cur.fetchall()])
        return answers


class JobStore:
    """The ``show jobs`` method of the cluster's store."""

    _writer: Any

    def table_jobs(self) -> Deferred[list[TableJob]]:
        """The table's rows that this node does not hold, oldest first (at most
        :data:`SHOW_JOBS_LIMIT` + 1)."""
        d: Deferred[list[TableJob]] = self._writer.submit(SHOW_JOBS)
        return d

    def nodes(self) -> Deferred[list[NodeRow]]:
        """The cluster's nodes that hold a lease, by name."""
        d: Deferred[list[NodeRow]] = self._writer.submit(SHOW_NODES)
        return d

    def priority_counts(self, keys: list[str]) -> Deferred[list[tuple[bytes, int, int]]]:
        """The table's queued rows per (function, priority), but those with ``keys``."""
        d: Deferred[list[tuple[bytes, int, int]]] = self._writer.submit(PRIORITY_COUNTS, keys)
        return d


__all__ = [
    "JOB_OPS",
    "PRIORITY_COUNTS",
    "SHOW_JOBS",
    "SHOW_JOBS_LIMIT",
    "SHOW_NODES",
    "JobOps",
    "JobStore",
    "NodeRow",
    "TableJob",
    "job_statements",
]
