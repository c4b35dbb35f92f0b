# -*- test-case-name: tests.test_pg_cluster_jobs -*-
"""The shared jobs that other nodes hold, or none does, for the admin ``show jobs`` and
``show unique jobs`` of the whole cluster (mixed into the cluster's backend and store).

One bounded read of the queue table: the rows not held by this node (claimed by another
node, or queued), oldest first, at most :data:`SHOW_JOBS_LIMIT`; the node's own jobs come
from its core (:mod:`gearmanpy.server.cluster_admin`).
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred

SHOW_JOBS = "cluster_show_jobs"
JOB_OPS = frozenset({SHOW_JOBS})

#: The most table rows one ``show jobs`` reads (the node's own jobs are not counted).
SHOW_JOBS_LIMIT = 10_000


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


class JobStore:
    """The ``show jobs`` method of the cluster's store."""

    _writer: Any

    def table_jobs(self) -> Deferred[list[TableJob]]:
        """The table's rows that this node does not hold, oldest first (at most
        :data:`SHOW_JOBS_LIMIT` + 1)."""
        d: Deferred[list[TableJob]] = self._writer.submit(SHOW_JOBS)
        return d


__all__ = [
    "JOB_OPS",
    "SHOW_JOBS",
    "SHOW_JOBS_LIMIT",
    "JobOps",
    "JobStore",
    "TableJob",
    "job_statements",
]
