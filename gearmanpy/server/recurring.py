# -*- test-case-name: tests.test_policy -*-
"""Recurring jobs: a cron expression that submits a background job at every tick.

Each :class:`RecurringJob` comes from the configuration file. :class:`RecurringJobs` keeps
one timer per job, set for its next tick (computed by cronsim, a maintained cron parser).
At a tick it submits the job at most once, even after a restart or with several servers on
one store: the store's :meth:`~gearmanpy.store.interface.IJobStore.claim_tick` records the
tick and adds the job in one transaction, and only the server whose claim succeeds queues it.
Without a store the last tick is remembered in memory. A tick whose unique is still live (the
previous run has not finished) is skipped, as a submission would coalesce with it.

The ticks follow the clock it is given: the reactor's, or in a cluster the database's
(:class:`~gearmanpy.server.cluster_clock.DatabaseClock`), which calls :meth:`RecurringJobs.retime`
when its reading moves, so that every node times a tick alike. In a cluster the run goes
into the shared queue unclaimed (:attr:`RecurringJobs.shared`), coalescing with a live row of
its unique on any node, and is claimed as any submission is.
"""

from __future__ import annotations

import datetime
import zoneinfo
from collections.abc import Callable
from typing import Any

import attrs
from cronsim import CronSim, CronSimError
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from gearmanpy.protocol.text import show
from gearmanpy.server.core import HIGH, LOW, NORMAL, JobServerCore
from gearmanpy.server.jobs import coalesce_key
from gearmanpy.store.interface import Priority, StoredJob

_PRIORITIES = {"high": HIGH, "normal": NORMAL, "low": LOW}


@attrs.frozen
class RecurringJob:
    """A background job submitted at every tick of a cron expression."""

    name: str
    cron: str
    function: bytes
    payload: bytes = b""
    unique: bytes = b""
    priority: int = NORMAL
    timezone: str = "UTC"

    @classmethod
    def make(
        cls,
        name: str,
        cron: str,
        function: str,
        payload: str = "",
        unique: str = "",
        priority: str = "normal",
        timezone: str = "UTC",
    ) -> RecurringJob:
        """A recurring job from text settings, checked.

        :raises ValueError: for a bad cron expression, priority or time zone.
        """
        if priority.lower() not in _PRIORITIES:
            raise ValueError(f"priority must be high, normal or low, not {priority!r}")
        job = cls(
            name,
            cron,
            function.encode(),
            payload.encode(),
            unique.encode(),
            _PRIORITIES[priority.lower()],
            timezone,
        )
        job.next_after(0.0)  # checks the expression and the zone
        return job

    def next_after(self, t: float) -> float:
        """The first tick strictly after Unix time ``t``.

        :raises ValueError: for a bad cron expression or time zone.
        """
        try:
            zone = zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None
        start = datetime.datetime.fromtimestamp(int(t), zone)
        try:
            tick = next(CronSim(self.cron, start))
        except CronSimError as e:
            raise ValueError(f"bad cron expression {self.cron!r}: {e}") from None
        except StopIteration:
            raise ValueError(f"cron expression {self.cron!r} never fires") from None
        return tick.timestamp()


@attrs.define(eq=False)
class RecurringJobs:
    """The timers that submit recurring jobs into ``core`` (and its store, if any)."""

    log = Logger()

    core: JobServerCore
    clock: IReactorTime
    jobs: tuple[RecurringJob, ...] = ()
    #: Each job's next tick and timer, and the last tick it submitted (without a store).
    next_tick: dict[str, float] = attrs.field(factory=dict)
    last_tick: dict[str, float] = attrs.field(factory=dict)
    #: On a cluster, the node's ``claim_tick``: it records the tick and submits the run to
    #: the shared queue, for whichever node's workers of the function are free (and within
    #: its throttle), so that nothing is queued on the node that fired (None: the store's).
    shared: Callable[[str, int, StoredJob], Deferred[bool]] | None = None
    _timers: dict[str, IDelayedCall] = attrs.field(factory=dict)

    def start(self) -> None:
        """Set each job's timer for its next tick."""
        for job in self.jobs:
            self._schedule(job)

    def stop(self) -> None:
        """Cancel the timers."""
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()

    def rows(self) -> list[tuple[RecurringJob, float]]:
        """Every recurring job with its next tick (``show recurring``)."""
        return [(job, self.next_tick.get(job.name, 0.0)) for job in self.jobs]

    def retime(self) -> None:
        """The clock's reading moved: set each timer again for its job's next tick by the
        clock as it reads now (a tick it has passed fires at once; the store's claim keeps it
        once across nodes)."""
        now = self.clock.seconds()
        for job in self.jobs:
            timer = self._timers.get(job.name)
            if timer is not None and timer.active():
                timer.reset(max(0.0, self.next_tick[job.name] - now))

    def _schedule(self, job: RecurringJob, after: float | None = None) -> None:
        """Set ``job``'s timer for the first tick after now (and after ``after``)."""
        now = self.clock.seconds()
        tick = job.next_after(now if after is None else max(now, after))
        self.next_tick[job.name] = tick
        self._timers[job.name] = self.clock.callLater(max(0.0, tick - now), self._fire, job, tick)

    def _fire(self, job: RecurringJob, tick: float) -> None:
        """``job``'s tick has come: submit it (once), then wait for the next tick."""
        self._timers.pop(job.name, None)
        self._schedule(job, after=tick)  # the clock may read just short of ``tick``
        key = coalesce_key(job.unique, job.payload)
        f = self.core.functions.get(job.function)
        if key is not None and f is not None and key in f.uniques:
            self.log.info(
                "recurring job {name}: skipped the tick, its unique {unique} is still live",
                name=job.name,
                unique=show(job.unique),
            )
            return
        stored = StoredJob(
            key=f"recurring-{job.name}-{int(tick)}",
            function=job.function,
            unique=job.unique,
            priority=Priority(job.priority),
            data=job.payload,
            handle=self.core.new_handle(),
            submitted_at=self.clock.seconds(),
        )
        store = self.core.store
        if store is None:
            if self.last_tick.get(job.name, float("-inf")) >= tick:
                return
            self.last_tick[job.name] = tick
            self._queue(job, stored)
            return
        claim = store.claim_tick if self.shared is None else self.shared
        d = claim(job.name, int(tick), stored)
        d.addCallbacks(
            lambda claimed: self._queue(job, stored) if claimed else None,
            lambda failure: self._claim_failed(job, failure),
        )

    def _queue(self, job: RecurringJob, stored: StoredJob) -> None:
        """Queue the submitted run (already in the store, if there is one; on a cluster,
        queued in the shared table for every node)."""
        if self.shared is None:
            self.core.replay([stored])
        self.log.info(
            "recurring job {name} submitted {handle}", name=job.name, handle=show(stored.handle)
        )

    def _claim_failed(self, job: RecurringJob, failure: Failure) -> Any:
        """The store could not record the tick: this tick's run is skipped."""
        self.log.error(
            "recurring job {name}: the store refused the tick, skipped: {error}",
            name=job.name,
            error=str(failure.value),
        )


__all__ = ["RecurringJob", "RecurringJobs"]
