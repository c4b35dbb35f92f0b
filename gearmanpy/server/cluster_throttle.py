# -*- test-case-name: tests.test_pg_cluster_throttle -*-
"""The node's side of the failure policy's throttles across a cluster (used by
``ClusterNode``).

A claim for a function whose policy throttles it (``max_running``, ``rate``) carries the
policy's limits as they are at that claim (a ``policy set`` counts from the next one), and
the store applies them for the whole cluster (:mod:`gearmanpy.store.pg_cluster_throttle`).
Such a function is never claimed for beyond the workers asleep on it here, since a claimed
row counts as running for every node. When the throttle cut a claim short, a timer claims
again when the store says another may get something (the next token), not at the next poll.

The core's own throttle keeps its running cap on a cluster, which cannot bind before the
cluster's, and takes no tokens (the claims take them): see ``Failures._apply_policy``.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from gearmanpy.server.jobs import Function
from gearmanpy.store.pg_cluster_throttle import Limits, Rationed


def throttled_claim(f: Function, n: int) -> tuple[int, Limits | None]:
    """How many rows of ``f`` to claim (of ``n``) and the limits of its policy now (None:
    it has no throttle); a throttled function is claimed only for its sleeping workers."""
    policy = f.policy
    if not policy.throttled():
        return n, None
    limits = Limits(policy.max_running, policy.rate, policy.capacity())
    return min(n, len(f.sleepers)), limits


@attrs.define(eq=False)
class ClaimTimers:
    """One timer per throttled function, to claim again when the cluster's throttle may let
    a claim through (``claim``: the node's claim for a function)."""

    clock: IReactorTime
    claim: Callable[[Function], None]
    _timers: dict[bytes, IDelayedCall] = attrs.field(init=False, factory=dict)

    def after(self, f: Function, rows: object) -> None:
        """A claim for ``f`` answered ``rows``: if its throttle cut it short, claim again
        when the store says (one timer at a time per function)."""
        if not isinstance(rows, Rationed) or rows.wait is None or f.name in self._timers:
            return
        self._timers[f.name] = self.clock.callLater(rows.wait, self._due, f)

    def _due(self, f: Function) -> None:
        """Claim for ``f`` again if a worker still sleeps on it here and nothing is queued."""
        del self._timers[f.name]
        if f.sleepers and not f.queued():
            self.claim(f)

    def stop(self) -> None:
        """Cancel the timers (the node stops)."""
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()


__all__ = ["ClaimTimers", "throttled_claim"]
