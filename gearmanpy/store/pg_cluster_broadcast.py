# -*- test-case-name: tests.test_pg_cluster_broadcast -*-
"""A broadcast's parts for the other nodes of a cluster, in PostgreSQL (mixed into the
cluster's backend and store).

The node that starts a broadcast fans it out in one transaction (:data:`FAN_OUT`): it reads
the workers table (:mod:`~gearmanpy.store.pg_cluster_workers`) for the other live nodes with a
connection registered for the function, and for each writes a shared foreground row that only
that node may claim (its ``target`` column; the claims skip rows targeted at another node),
with a waiter row for itself, as a shared job's submitter does
(:mod:`~gearmanpy.store.pg_cluster_results`). A row whose target loses its lease is deleted by
the lease tick that forgets the target, and its waiters get WORK_FAIL
(:meth:`BroadcastOps._targets_gone`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred

from gearmanpy.store._rows import job_row
from gearmanpy.store.interface import StoredJob

FAN_OUT = "cluster_fan_out"
BROADCAST_OPS = frozenset({FAN_OUT})

#: The column the cluster's broadcasts add: the one node that may claim the row (NULL: any).
BROADCAST_COLUMNS = {"target": "TEXT"}

#: A WORK_FAIL response packet for the handle in column ``handle`` (as SQL).
_WORK_FAIL = "'\\x00524553'::bytea || int4send(14) || int4send(length(w.handle)) || w.handle"


@attrs.frozen
class Target:
    """A node a broadcast was fanned out to: its owner token and name, the handle of its
    row, and how many of its connections had registered the function."""

    owner: str
    name: str
    handle: bytes
    workers: int


def serving(lines: bytes, function: bytes) -> int:
    """How many of a node's ``workers`` lines (``fd ip client-id : f1 f2``) list ``function``."""
    count = 0
    for line in lines.split(b"\n"):
        _, sep, names = line.partition(b" :")
        if sep and function in names.split(b" "):
            count += 1
    return count


def broadcast_statements(t: str, me: str) -> dict[str, str]:
    """The statements of a broadcast's parts on table ``t`` (``me``: this node's token)."""
    return {
        "fan_out_nodes": f"SELECT w.owner, w.name, w.lines FROM {t}_workers AS w JOIN {t}_nodes"
        f" AS n ON n.owner = w.owner WHERE n.lease_until >= now() AND w.owner <> {me}"
        " ORDER BY w.name, w.owner",
        "fan_out_row": f"INSERT INTO {t} (job_key, function, unique_id, priority, data,"
        " when_to_run, retries, reducer, handle, submitted_at, error, foreground, target)"
        " VALUES (%s, %b, %b, %s, %b, %s, %s, %b, %b, %s, %b, true, %s)",
        # Rows targeted at a node without a lease go, with WORK_FAIL to their waiters.
        "targets_gone": f"WITH d AS (DELETE FROM {t} WHERE target IS NOT NULL AND NOT EXISTS"
        f" (SELECT 1 FROM {t}_nodes AS n WHERE n.owner = {t}.target) RETURNING handle),"
        f" e AS (INSERT INTO {t}_events (waiter, handle, data) SELECT w.waiter, w.handle,"
        f" {_WORK_FAIL} FROM {t}_waiters AS w JOIN d ON w.handle = d.handle RETURNING waiter),"
        f" u AS (DELETE FROM {t}_waiters AS w USING d WHERE w.handle = d.handle)"
        " SELECT DISTINCT waiter FROM e",
    }


class BroadcastOps:
    """The broadcast ops of the cluster's backend (writer thread)."""

    _cluster_sql: dict[str, str]

    if TYPE_CHECKING:

        def _notify(self, cur: Any, functions: list[bytes]) -> None:
            """Announce work for ``functions`` (the cluster backend's)."""

        def _tell(self, cur: Any, waiters: list[str]) -> None:
            """Tell ``waiters`` that events wait for them (ResultOps')."""

    def _cluster_fan_out(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[list[Target]]:
        """For each ``(job, key, handle)``: a row of ``job`` (its parent's mark in the reducer)
        for every other live node serving its function, keyed ``key.N`` and handled
        ``handle.N``, waited for here; the nodes it went to."""
        sql = self._cluster_sql
        cur.execute(sql["fan_out_nodes"])
        nodes = [(owner, name, bytes(lines)) for owner, name, lines in cur.fetchall()]
        out = []
        for job, key, handle in runs:
            targets: list[Target] = []
            for owner, name, lines in nodes:
                workers = serving(lines, job.function)
                if not workers:
                    continue
                n = len(targets) + 1
                row = attrs.evolve(job, key=f"{key}.{n}", handle=handle + b".%d" % n)
                cur.execute(sql["fan_out_row"], (*job_row(row), owner))
                cur.execute(sql["wait"], (row.handle,))
                targets.append(Target(owner, name, row.handle, workers))
            if targets:
                self._notify(cur, [job.function])
            out.append(targets)
        return out

    def _targets_gone(self, cur: Any) -> None:
        """Delete the rows targeted at nodes without a lease; their waiters hear WORK_FAIL
        (at the lease tick, after the expired leases went)."""
        cur.execute(self._cluster_sql["targets_gone"])
        self._tell(cur, [r[0] for r in cur.fetchall()])


class BroadcastStore:
    """The broadcast op of the cluster's store (reactor thread)."""

    _writer: Any

    def fan_out(self, job: StoredJob, key: str, handle: bytes) -> Deferred[list[Target]]:
        """Write ``job`` once for every other live node serving its function (see
        :meth:`BroadcastOps._cluster_fan_out`); fires with the nodes it went to."""
        d: Deferred[list[Target]] = self._writer.submit(FAN_OUT, job, key, handle)
        return d


__all__ = [
    "BROADCAST_COLUMNS",
    "BROADCAST_OPS",
    "FAN_OUT",
    "BroadcastOps",
    "BroadcastStore",
    "Target",
    "broadcast_statements",
    "serving",
]
