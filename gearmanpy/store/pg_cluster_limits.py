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
batches of limited and unlimited submissions on several nodes cannot deadlock. Queued rows
are those no node has claimed (``owner IS NULL``, the partial index the claims use); a
submission that coalesces with a live row joins it even when the queue is full, as on one
node. A row with a function's limit is checked and written on its own; rows with only the
server-wide limit are written in batches of the room left; rows without a limit in one batch,
as before.
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
        "limit_live": f"SELECT handle FROM {t} WHERE function = %b AND coalesce_key = %b",
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

    # Long: one pass over a run's limited submissions, counted against both limits.
    def _cluster_submit(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[Any]:
        """Write the run's submissions: ``(job, coalesce[, limit[, total]])``, with the
        function's ``maxqueue`` limit and the server-wide one (0: none), under the locks the
        transaction took first."""
        limited = [i for i, run in enumerate(runs) if any(_limits(run))]
        if not limited:
            return self._submit_rows(cur, runs)
        sql = self._cluster_sql
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
        room: int | None = None  # under --max-queued-jobs, rows the table still takes
        totals: list[int] = []  # rows with the server-wide limit only, written in batches
        for i in limited:
            job = runs[i][0]
            limit, total = _limits(runs[i])
            if job.key in mine:
                out[i] = self._submitted(True, job.handle)
                continue
            if total and room is None:
                cur.execute(sql["limit_queued_all"], (total,))
                room = total - cur.fetchone()[0]
            if not limit:
                totals.append(i)
                continue
            fits = not total or (room is not None and room > 0)
            if fits:
                cur.execute(sql["limit_queued"], (job.function, limit))
                fits = cur.fetchone()[0] < limit
            if fits:
                out[i] = self._submit_rows(cur, [runs[i]])[0]
                if total and room is not None:
                    room -= out[i].created
        while totals and room is not None and room > 0:
            chunk, totals = totals[:room], totals[room:]
            written = self._submit_rows(cur, [runs[i] for i in chunk])
            for i, submitted in zip(chunk, written, strict=True):
                out[i] = submitted
                room -= submitted.created
        for i in range(len(runs)):
            if out[i] is None:
                out[i] = self._refused(cur, runs[i])
        return out

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
