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


def limit_statements(t: str) -> dict[str, str]:
    """The statements of the limited path on the queue table ``t``."""
    return {
        "limit_lock": "SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(encode(%b, 'hex')))",
        "limit_queued": f"SELECT count(*) FROM (SELECT 1 FROM {t} WHERE owner IS NULL"
        " AND function = %b LIMIT %s) AS q",
        "limit_live": f"SELECT handle FROM {t} WHERE function = %b AND coalesce_key = %b",
    }


class LimitOps:
    """The limited submissions of the cluster's backend (writer thread)."""

    _table: str
    _cluster_sql: dict[str, str]
    #: The backend's batch insert of unlimited rows, and its Submitted(created, handle, full).
    _submit_rows: Callable[[Any, list[tuple[Any, ...]]], list[Any]]
    _submitted: Callable[..., Any]

    def _cluster_submit(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[Any]:
        """Write the run's submissions: ``(job, coalesce[, limit])``; a limit of 0 is none."""
        limited = [i for i, run in enumerate(runs) if len(run) > 2 and run[2] > 0]
        if not limited:
            return self._submit_rows(cur, runs)
        sql = self._cluster_sql
        for function in sorted({runs[i][0].function for i in limited}):
            cur.execute(sql["limit_lock"], (self._table, function))
        out: list[Any] = [None] * len(runs)
        held = set(limited)
        free = [i for i in range(len(runs)) if i not in held]
        if free:
            written = self._submit_rows(cur, [runs[i] for i in free])
            for i, submitted in zip(free, written, strict=True):
                out[i] = submitted
        # A retried batch whose first commit went through finds its own rows (which count).
        cur.execute(sql["mine"], ([runs[i][0].key for i in limited],))
        mine = {r[0] for r in cur.fetchall()}
        for i in limited:
            job, coalesce, limit = runs[i][:3]
            if job.key in mine:
                out[i] = self._submitted(True, job.handle)
                continue
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


__all__ = ["LimitOps", "limit_statements"]
