# -*- test-case-name: tests.test_pg_cluster_throttle -*-
"""The failure policy's throttles across a cluster: ``max_running`` and ``rate``/``burst``
counted for every node at once, applied when a node claims rows (mixed into the cluster's
backend).

A claim for a throttled function first takes a transaction-scoped advisory lock on (table,
function) with ``pg_try_advisory_xact_lock``, which never waits: a node that finds it taken
claims nothing this time and tries again a moment later, so that no claim stalls a node's
group commit behind another node's, and two nodes' batches never deadlock. Holding it, the
claim reads the function's token bucket in ``<table>_throttles`` (created full), refills it
by ``rate`` times the seconds since its stamp (the database's clock) up to its capacity,
counts the function's due rows that a node holds (``owner IS NOT NULL``: running, or claimed
and not yet started, which is conservative), and claims at most ``min(n, tokens, max_running -
held)`` rows, taking a token for each. The lock is held until the claim commits, so the next
node's claim counts these rows. When the throttle cut the claim short it says how long until
another may get something (:attr:`Rationed.wait`): the next token, or a short recheck while
``max_running`` rows are held.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs

#: Seconds until the next claim when another node's claim held the function's lock.
BUSY_RETRY = 0.05
#: Seconds until the next claim while the function's running cap is reached (a row ends
#: on some node at a time no node knows beforehand).
RUNNING_RECHECK = 0.25

THROTTLE_SCHEMA = """
CREATE TABLE IF NOT EXISTS {table}_throttles (
    function BYTEA PRIMARY KEY,
    tokens FLOAT8 NOT NULL,
    stamp FLOAT8 NOT NULL
)
"""

_CLOCK = "extract(epoch FROM clock_timestamp())::float8"


@attrs.frozen
class Limits:
    """A function's throttle as a claim applies it: the running cap (0: none), the rate per
    second (0: none) and the bucket's capacity (its burst)."""

    max_running: int
    rate: float
    capacity: float


class Rationed(list[Any]):
    """A throttled claim's rows (a list, as any claim's), and :attr:`wait`: None if the
    throttle did not cut the claim short, else seconds until the next claim may get more."""

    wait: float | None = None


@attrs.define
class _Ration:
    """What a throttled claim found under the function's lock (writer thread)."""

    function: bytes
    asked: int
    allowed: int
    tokens: float
    stamp: float
    limits: Limits
    #: The rows of the function that nodes held (0 without a running cap).
    held: int = 0


def throttle_statements(t: str) -> dict[str, str]:
    """The statements of the throttled claims on the queue table ``t``."""
    return {
        # The bucket's row, created full, read (with the clock) only under the lock.
        "throttle_read": f"INSERT INTO {t}_throttles (function, tokens, stamp)"
        f" SELECT %b, %s, {_CLOCK}"
        " WHERE pg_try_advisory_xact_lock(hashtext(%s), hashtext(encode(%b, 'hex')))"
        " ON CONFLICT (function) DO UPDATE SET function = EXCLUDED.function"
        f" RETURNING tokens, stamp, {_CLOCK}",
        # Held and due: running, claimed and not yet started, or a retry whose wait is over
        # (a retry still waiting out its backoff is held by its node but not counted).
        "throttle_held": f"SELECT count(*) FROM {t} WHERE function = %b AND owner IS NOT NULL"
        " AND when_to_run <= extract(epoch FROM now())",
        "throttle_take": f"UPDATE {t}_throttles SET tokens = %s, stamp = %s WHERE function = %b",
    }


class ThrottleOps:
    """The throttled claims of the cluster's backend (writer thread)."""

    _table: str
    _cluster_sql: dict[str, str]
    #: The backend's unthrottled claim of up to ``n`` rows of a function.
    _claim_rows: Callable[[Any, bytes, int], list[Any]]

    def _setup_throttles(self, cur: Any) -> None:
        """Create the buckets' table (at setup, under the cluster's advisory lock)."""
        cur.execute(THROTTLE_SCHEMA.format(table=self._table))

    def _rationed(self, cur: Any, function: bytes, n: int, limits: Limits) -> Rationed:
        """Claim up to ``n`` rows of ``function`` within its cluster-wide ``limits``."""
        ration = self._ration(cur, function, n, limits)
        if ration is None:  # another node's claim holds the lock
            busy = Rationed()
            busy.wait = BUSY_RETRY
            return busy
        claimed = self._claim_rows(cur, function, ration.allowed) if ration.allowed else []
        return self._charge(cur, ration, claimed)

    def _ration(self, cur: Any, function: bytes, n: int, limits: Limits) -> _Ration | None:
        """Lock ``function``'s throttle, refill its bucket and count its held rows: how many
        of ``n`` rows the claim may take (None: the lock is another claim's)."""
        sql = self._cluster_sql
        lock = f"{self._table}_throttles"
        cur.execute(sql["throttle_read"], (function, limits.capacity, lock, function))
        row = cur.fetchone()
        if row is None:
            return None
        tokens, stamp, now = float(row[0]), float(row[1]), float(row[2])
        allowed = n
        if limits.rate:
            tokens = min(limits.capacity, tokens + limits.rate * max(0.0, now - stamp))
            allowed = min(allowed, math.floor(tokens + 1e-9))
        ration = _Ration(function, n, 0, tokens, max(stamp, now), limits)
        if limits.max_running:
            cur.execute(sql["throttle_held"], (function,))
            ration.held = int(cur.fetchone()[0])
            allowed = min(allowed, limits.max_running - ration.held)
        ration.allowed = max(0, allowed)
        return ration

    def _charge(self, cur: Any, ration: _Ration, claimed: list[Any]) -> Rationed:
        """Take a token per claimed row, and say how long until the next claim if the
        throttle cut this one short."""
        limits = ration.limits
        left = ration.tokens - len(claimed)
        if limits.rate:
            cur.execute(self._cluster_sql["throttle_take"], (left, ration.stamp, ration.function))
        out = Rationed(claimed)
        if ration.allowed < ration.asked and len(claimed) == ration.allowed:
            if limits.rate and left < 1.0:
                out.wait = (1.0 - left) / limits.rate
            else:  # the running cap (rows end on other nodes too)
                out.wait = RUNNING_RECHECK
        return out


__all__ = ["BUSY_RETRY", "RUNNING_RECHECK", "Limits", "Rationed", "ThrottleOps"]
