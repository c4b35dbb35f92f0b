# -*- test-case-name: tests.test_cluster_clock -*-
"""The database's clock, as a cluster node keeps it (``--cluster``).

Leases and epoch jobs are timed by PostgreSQL's ``now()`` in SQL; recurring jobs are timed on
the node, by timers. So that every node times a recurring job's tick by the same clock,
:class:`DatabaseClock` reads the node's reactor clock plus the offset the node last learned
between the database's clock and its own (the cluster store measures it when it opens and at
every lease tick). Its timers are the reactor's; whoever times by it subscribes to hear when
the offset moved enough to re-time them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

#: Seconds the offset must move before the subscribers re-time their timers (each reading
#: is off by up to half a statement's round trip; cron ticks are a minute apart at best).
RETIME = 0.1


@implementer(IReactorTime)
@attrs.define(eq=False)
class DatabaseClock:
    """``seconds()`` is the database's clock (the reactor's plus :attr:`offset`);
    ``callLater`` is the reactor's.

    :ivar offset: the database's clock minus the reactor's, in seconds (0 until learned).
    :ivar learned: whether an offset has been learned yet.
    """

    log = Logger()

    reactor: IReactorTime
    offset: float = 0.0
    learned: bool = False
    _subscribers: list[Callable[[], None]] = attrs.field(init=False, factory=list)

    def seconds(self) -> float:
        """Now by the database's clock."""
        return self.reactor.seconds() + self.offset

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """A reactor timer (``delay`` is the same on either clock)."""
        return self.reactor.callLater(delay, callable, *args, **kw)

    def getDelayedCalls(self) -> Sequence[IDelayedCall]:
        """The reactor's timers."""
        return self.reactor.getDelayedCalls()

    def subscribe(self, retime: Callable[[], None]) -> None:
        """Call ``retime`` whenever the offset moves by :data:`RETIME` or more."""
        self._subscribers.append(retime)

    def learn(self, offset: float | None) -> None:
        """Take a new reading of the offset (None: the store did not measure it)."""
        if offset is None:
            return
        moved = abs(offset - self.offset)
        first = not self.learned
        self.offset, self.learned = offset, True
        if first or moved >= RETIME:
            self.log.info(
                "cluster: the database's clock is {offset:+.3f} s from this node's",
                offset=offset,
            )
        if moved >= RETIME:
            for retime in self._subscribers:
                retime()


def every(clock: IReactorTime, interval: float, tick: Callable[[], Any]) -> LoopingCall:
    """Call ``tick`` now and then every ``interval`` seconds of ``clock`` (a cluster
    helper's timer; :func:`halt` stops it)."""
    loop = LoopingCall(tick)
    loop.clock = clock
    loop.start(interval, now=True)
    return loop


def halt(loop: LoopingCall | None) -> None:
    """Stop a timer :func:`every` started, if it runs."""
    if loop is not None and loop.running:
        loop.stop()


__all__ = ["RETIME", "DatabaseClock", "every", "halt"]
