# -*- test-case-name: tests.test_pg_cluster_limits -*-
"""``maxqueue`` and ``--max-queued-jobs`` across a cluster: a submission with a limit is
refused when its function (``maxqueue``) or the whole table (``--max-queued-jobs``) already
has that many queued rows, whichever nodes wrote them (mixed into the cluster's backend).

The counts are made under transaction-scoped advisory locks, so that two nodes' submissions
count one after the other and the limits hold across nodes: one on the table for the
server-wide limit, one on (table, function) per limited function. A transaction takes all of
its batch's locks before it writes anything (:meth:`LimitOps._take_limit_locks`), the table's
first and then the functions' in the order of their keys, so that no transaction waits for a
lock while holding a row another one waits for, and no two wait for each other's locks: mixed
batches of limited and unlimited submissions on several nodes cannot deadlock on them. Queued rows
are those no node has claimed (``owner IS NULL``, the partial index the claims use); a
submission that coalesces with a live row joins it even when the queue is full, as on one
node. A run of submissions counts the table once (each limited function's queued rows, and
all of them for the server-wide limit), then writes the rows that fit in one batch; rows
without a limit are written in one batch, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def limit_statements(t: str) -> dict[str, str]:
    """The statements of the limited path on the queue table ``t``."""
    return {
        # The table's lock is in the one-key space, the functions' in the two-key one.
        "limit_lock_all": "SELECT pg_advisory_xact_lock(hashtext(%s || ':queued'))",
        "limit_lock": "SELECT count(pg_advisory_xact_lock(hashtext(%s), k)) FROM (SELECT"
        " DISTINCT hashtext(encode(f, 'hex')) AS k FROM unnest(%b::bytea[]) AS f"
        " ORDER BY k OFFSET 0) AS s",
        "limit_queued": f"SELECT count(*) FROM (SELECT 1 FROM {t} WHERE owner IS NULL"
        " AND function = %b LIMIT %s) AS q",
        "limit_queued_all": f"SELECT count(*) FROM (SELECT 1 FROM {t} WHERE owner IS NULL"
        " LIMIT %s) AS q",
        # The live row a submission past its limit joins (a shared foreground row becomes a
        # background row, as pg_cluster's "existing" makes it).
        "limit_live": f"UPDATE {t} SET foreground = false WHERE function = %b"
        " AND coalesce_key = %b RETURNING handle",
    }


def _limits(run: tuple[Any, ...]) -> tuple[int, int]:
    """A submission's ``(maxqueue limit, --max-queued-jobs)``; 0 is none."""
    return (run[2] if len(run) > 2 else 0), (run[3] if len(run) > 3 else 0)


class LimitOps:
    """The limited submissions of the cluster's backend (writer thread)."""

    _table: str
    _cluster_sql: dict[str, str]
    #: The backend's batch insert of unlimited rows, and its Submitted(created, handle, full).
    _submit_rows: Callable[[Any, list[tuple[Any, ...]]], list[Any]]
    _submitted: Callable[..., Any]

    def _take_limit_locks(self, cur: Any, submissions: list[tuple[Any, ...]]) -> None:
        """Take the locks that the limited ``submissions`` of a transaction count under,
        before it writes anything: the table's, then each function's in the order of its key."""
        limits = [(run[0].function, _limits(run)) for run in submissions]
        if any(total for _, (_, total) in limits):
            cur.execute(self._cluster_sql["limit_lock_all"], (self._table,))
        functions = sorted({function for function, (limit, _) in limits if limit})
        if functions:
            cur.execute(self._cluster_sql["limit_lock"], (self._table, functions))

    def _cluster_submit(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[Any]:
        """Write the run's submissions: ``(job, coalesce[, limit[, total]])``, with the
        function's ``maxqueue`` limit and the server-wide one (0: none), under the locks the
        transaction took first. The table is counted once per run (each limited function's
        queued rows, and all of them for the server-wide limit); the rows that fit are then
        written in one batch, and again while some of them joined a live job instead."""
        limited = [i for i, run in enumerate(runs) if any(_limits(run))]
        if not limited:
            return self._submit_rows(cur, runs)
        out: list[Any] = [None] * len(runs)
        held = set(limited)
        free = [i for i in range(len(runs)) if i not in held]
        if free:
            written = self._submit_rows(cur, [runs[i] for i in free])
            for i, submitted in zip(free, written, strict=True):
                out[i] = submitted
        # A retried batch whose first commit went through finds its own rows (which count).
        cur.execute(self._cluster_sql["mine"], ([runs[i][0].key for i in limited],))
        mine = {r[0] for r in cur.fetchall()}
        for i in limited:
            if runs[i][0].key in mine:
                out[i] = self._submitted(True, runs[i][0].handle)
        pending = [i for i in limited if out[i] is None]
        queued, everything = self._count_queued(cur, [runs[i] for i in pending])
        while pending:
            fit, rest, q, a = [], [], dict(queued), everything  # as if every row were new
            for i in pending:
                function = runs[i][0].function
                limit, total = _limits(runs[i])
                if (limit and q[function] >= limit) or (total and a >= total):
                    rest.append(i)
                    continue
                fit.append(i)
                q[function] = q.get(function, 0) + 1
                a += 1
            if not fit:
                break
            written = self._submit_rows(cur, [runs[i] for i in fit])
            for i, submitted in zip(fit, written, strict=True):
                out[i] = submitted
                if submitted.created:
                    function = runs[i][0].function
                    queued[function] = queued.get(function, 0) + 1
                    everything += 1
            pending = rest
            if all(s.created for s in written):
                break  # the counts are what the pass assumed: the rest do not fit
        for i in range(len(runs)):
            if out[i] is None:
                out[i] = self._refused(cur, runs[i])
        return out

    def _count_queued(self, cur: Any, runs: list[tuple[Any, ...]]) -> tuple[dict[bytes, int], int]:
        """The queued rows of each function with a limit among ``runs``, and of the whole
        table if one has the server-wide limit (each counted up to the largest limit)."""
        sql = self._cluster_sql
        largest: dict[bytes, int] = {}
        total = 0
        for run in runs:
            limit, run_total = _limits(run)
            if limit:
                largest[run[0].function] = max(limit, largest.get(run[0].function, 0))
            total = max(total, run_total)
        queued = {}
        for function, limit in largest.items():
            cur.execute(sql["limit_queued"], (function, limit))
            queued[function] = int(cur.fetchone()[0])
        everything = 0
        if total:
            cur.execute(sql["limit_queued_all"], (total,))
            everything = int(cur.fetchone()[0])
        return queued, everything

    def _refused(self, cur: Any, run: tuple[Any, ...]) -> Any:
        """A submission past a limit: it joins the live job it coalesces with, if any, and
        is refused (``full``) otherwise."""
        job, coalesce = run[:2]
        live = None
        if coalesce:
            cur.execute(self._cluster_sql["limit_live"], (job.function, coalesce))
            live = cur.fetchone()
        if live is not None:
            return self._submitted(False, bytes(live[0]))
        return self._submitted(False, b"", full=True)


__all__ = ["LimitOps", "limit_statements"]
