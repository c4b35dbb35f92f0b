# -*- test-case-name: tests.test_pg_cluster_ticks -*-
"""Recurring jobs' ticks on a cluster (mixed into the cluster's backend and store).

A node claims a recurring job's tick as a single server does (the ``<table>_ticks`` row,
once across every node), but the run goes into the queue unclaimed, as a submission does:
whichever node has a free worker of the function claims it (within its throttle), rather
than the node whose timer fired, which may have no worker of it at all. A run whose unique
is live on any node joins that row instead (the tick is recorded, nothing is added), as a
single server skips such a tick.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

from gearmanpy.store._writer import ThreadedBatchWriter
from gearmanpy.store.interface import StoredJob

#: The op: claim a tick and submit its run unclaimed.
TICK = "cluster_tick"
TICK_OPS = frozenset({TICK})


class TickOps:
    """The tick op of the cluster's backend (writer thread)."""

    _sql: dict[str, str]
    _submit_rows: Callable[[Any, list[tuple[Any, ...]]], list[Any]]

    def _cluster_tick(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[bool]:
        """For each ``(name, tick, job, coalesce)``: claim the tick, and if it was this
        node's to claim, submit the run unclaimed; True for a run added to the queue."""
        out = []
        for name, tick, job, coalesce in runs:
            cur.execute(self._sql["claim"], (name, tick, job.key))
            if cur.fetchone() is None:
                out.append(False)  # claimed before (by another node, or this one's retry)
                continue
            (submitted,) = self._submit_rows(cur, [(job, coalesce)])
            out.append(bool(submitted.created))
        return out


class TickStore:
    """The cluster's store's side (reactor thread)."""

    _writer: ThreadedBatchWriter

    def share_tick(self, name: str, tick: int, job: StoredJob, coalesce: bytes) -> Deferred[bool]:
        """Claim recurring job ``name``'s ``tick`` and queue ``job`` for the cluster (it
        coalesces on ``coalesce``, b"": none); True if the run was added."""
        d: Deferred[bool] = self._writer.submit(TICK, name, tick, job, coalesce)
        return d


__all__ = ["TICK", "TICK_OPS", "TickOps", "TickStore"]
