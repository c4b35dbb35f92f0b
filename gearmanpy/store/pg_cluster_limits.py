# -*- test-case-name: tests.test_pg_cluster_limits -*-
"""``maxqueue`` across a cluster: a submission with a limit is refused when its function
already has that many queued rows in the shared table, whichever nodes wrote them (mixed into
the cluster's backend).

A limited row is checked and written on its own, under a transaction-scoped advisory lock on
(table, function) taken before the batch's first insert, in the functions' order, so that two
nodes' submissions of one function count one after the other and the limit holds across
nodes. Queued rows are those no node has claimed (``owner IS NULL``, the partial index the
claims use); a submission that coalesces with a live row joins it even when the queue is
full, as on one node. Rows without a limit are written in one batch, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: The statements of the limited path (``{t}``: the queue table).
LIMIT_STATEMENTS = {
    "limit_lock": "SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(encode(%b, 'hex')))",
    "limit_queued": "SELECT count(*) FROM (SELECT 1 FROM {t} WHERE owner IS NULL"
    " AND function = %b LIMIT %s) AS q",
    "limit_live": "SELECT handle FROM {t} WHERE function = %b AND coalesce_key = %b",
}


class LimitOps:
    """The limited submissions of the cluster's backend (writer thread)."""

    _table: str
    #: The backend's batch insert of unlimited rows, and its Submitted(created, handle, full).
    _submit_rows: Callable[[Any, list[tuple[Any, ...]]], list[Any]]
    _submitted: Callable[..., Any]

    def _cluster_submit(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[Any]:
        """Write the run's submissions: ``(job, coalesce[, limit])``; a limit of 0 is none."""
        limited = [i for i, run in enumerate(runs) if len(run) > 2 and run[2] > 0]
        if not limited:
            return self._submit_rows(cur, runs)
        sql = {name: s.format(t=self._table) for name, s in LIMIT_STATEMENTS.items()}
        for function in sorted({runs[i][0].function for i in limited}):
            cur.execute(sql["limit_lock"], (self._table, function))
        out: list[Any] = [None] * len(runs)
        free = [i for i in range(len(runs)) if i not in set(limited)]
        if free:
            written = self._submit_rows(cur, [runs[i] for i in free])
            for i, submitted in zip(free, written, strict=True):
                out[i] = submitted
        for i in limited:
            job, coalesce, limit = runs[i][:3]
            cur.execute(sql["limit_queued"], (job.function, limit))
            if cur.fetchone()[0] < limit:
                out[i] = self._submit_rows(cur, [runs[i]])[0]
                continue
            live = None
            if coalesce:
                cur.execute(sql["limit_live"], (job.function, coalesce))
                live = cur.fetchone()
            out[i] = (
                self._submitted(False, bytes(live[0]))
                if live is not None
                else self._submitted(False, b"", full=True)
            )
        return out


__all__ = ["LIMIT_STATEMENTS", "LimitOps"]
