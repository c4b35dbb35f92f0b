# -*- test-case-name: tests.test_web_api -*-
"""A ring of per-function samples, one a second, for the dashboard's charts and rates.

A :class:`~twisted.internet.task.LoopingCall` reads each function's finished-job count and
queue length once per ``interval``; nothing is recorded per job. Throughput is the change in
the finished count between two samples.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from gearmanpy.server.core import JobServerCore
from gearmanpy.server.jobs import Function
from gearmanpy.web.metrics import label


def finished(f: Function) -> int:
    """Jobs of ``f`` that ended with a result (complete, fail or exception)."""
    c = f.counters
    return c.completed + c.failed + c.exceptions


@attrs.define(eq=False)
class Sample:
    """One reading: when, and per function name its finished count and queue length."""

    at: float
    functions: dict[str, tuple[int, int]]


@attrs.define(eq=False)
class History(Service):
    """Samples the core every ``interval`` seconds and keeps the last ``keep`` samples.

    A Twisted service: sampling starts and stops with the server (``twistd gearman`` makes it
    a child of its top service when ``--http`` is given).
    """

    core: JobServerCore
    clock: IReactorTime
    interval: float = 1.0
    keep: int = 300
    samples: deque[Sample] = attrs.field(init=False)
    _loop: LoopingCall | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self.samples = deque(maxlen=self.keep)

    def startService(self) -> None:
        """Take a sample now and every ``interval`` seconds."""
        Service.startService(self)
        self._loop = LoopingCall(self.sample)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True)

    def stopService(self) -> None:
        """Stop sampling."""
        Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def sample(self) -> None:
        """Read every function's finished count and queue length."""
        self.samples.append(
            Sample(
                self.clock.seconds(),
                {label(f.name): (finished(f), f.queued()) for f in self.core.functions.values()},
            )
        )

    def rate(self, name: str, window: float = 10.0) -> float:
        """Jobs of function ``name`` finished per second over about the last ``window`` s."""
        if len(self.samples) < 2:
            return 0.0
        last = self.samples[-1]
        first = last
        for s in reversed(self.samples):
            if last.at - s.at > window:
                break
            first = s
        span = last.at - first.at
        if span <= 0 or name not in last.functions:
            return 0.0
        before = first.functions.get(name, (0, 0))[0]
        return max(0, last.functions[name][0] - before) / span

    def series(self) -> dict[str, Any]:
        """The charts' data: sample times, and per function its throughput (jobs/s between
        samples) and queue length at each sample after the first."""
        samples = list(self.samples)
        names = sorted({n for s in samples for n in s.functions})
        out: dict[str, Any] = {
            "interval": self.interval,
            "times": [s.at for s in samples[1:]],
            "functions": {},
        }
        for name in names:
            throughput, queued = [], []
            for prev, cur in zip(samples, samples[1:], strict=False):
                span = cur.at - prev.at
                now_done, now_queued = cur.functions.get(name, (0, 0))
                was_done = prev.functions.get(name, (0, 0))[0]  # a new function starts at 0
                throughput.append(round(max(0, now_done - was_done) / span, 3) if span > 0 else 0)
                queued.append(now_queued)
            out["functions"][name] = {"throughput": throughput, "queued": queued}
        return out


__all__ = ["History", "Sample", "finished"]
