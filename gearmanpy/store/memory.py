# -*- test-case-name: tests.test_store -*-
"""A store that keeps jobs in memory only, for tests and for programs that embed a server.

It is not what ``twistd gearman --queue memory`` runs: with ``memory``,
:func:`gearmanpy.tap.make_store` gives the server no store at all, so background jobs cost no
store call. :class:`MemoryJobStore` serves the core's, the service's and the store conformance
tests, :class:`gearmanpy.testing.MemoryGearman` when given one (``store=``), and a
program that builds a server itself and wants replay without a database
(:func:`gearmanpy.store.url.store_from_url` gives one for ``memory``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from gearmanpy.errors import StoreError
from gearmanpy.store._rows import by_failure
from gearmanpy.store.interface import DeadJob, IJobStore, KeptResult, StoredJob


@implementer(IJobStore)
@attrs.define(eq=False)
class MemoryJobStore:
    """Keeps jobs in a dict in insertion order; nothing survives the process.

    It still behaves like a real store (replay returns what was added and not done, and once
    closed it refuses every operation as the others do), so a server can be tested end to end
    without a database.

    Its boot numbers come from the wall clock (tenths of a second, and always more than the
    last), as those of a server without a store do: nothing else of it outlives the process.

    :ivar closed: whether :meth:`close` has been called.
    """

    _jobs: dict[str, StoredJob] = attrs.field(factory=dict)
    _dead: dict[str, DeadJob] = attrs.field(factory=dict)
    _results: dict[bytes, KeptResult] = attrs.field(factory=dict)
    #: The last tick claimed per recurring job, and the key of the job that claimed it.
    _ticks: dict[str, tuple[int, str]] = attrs.field(factory=dict)
    closed: bool = False
    #: The wall clock :meth:`next_boot` reads.
    _now: Callable[[], float] = time.time
    _boot: int = attrs.field(default=0, init=False)

    def open(self) -> Deferred[None]:
        """Nothing to open."""
        return succeed(None)

    def add(self, job: StoredJob) -> Deferred[None]:
        """Keep ``job``; fails with StoreError once closed."""
        if self.closed:
            return self._refuse()
        self._jobs[job.key] = job
        return succeed(None)

    def done(self, key: str) -> Deferred[None]:
        """Forget the job under ``key``; fails with StoreError once closed."""
        if self.closed:
            return self._refuse()
        self._jobs.pop(key, None)
        return succeed(None)

    def set_retries(self, key: str, retries: int) -> Deferred[None]:
        """Record the requeue count of the job under ``key``; fails with StoreError once closed."""
        if self.closed:
            return self._refuse()
        job = self._jobs.get(key)
        if job is not None:
            self._jobs[key] = attrs.evolve(job, retries=retries)
        return succeed(None)

    def replay(self) -> Deferred[list[StoredJob]]:
        """Every job kept, in insertion order; fails with StoreError once closed."""
        if self.closed:
            return self._refuse()
        return succeed(list(self._jobs.values()))

    def reschedule(self, key: str, when: int, retries: int, error: bytes) -> Deferred[None]:
        """Record the retry time, attempts and error of the job under ``key``, if queued."""
        if self.closed:
            return self._refuse()
        job = self._jobs.get(key)
        if job is not None:
            self._jobs[key] = attrs.evolve(job, when=when, retries=retries, error=error)
        return succeed(None)

    def bury(self, dead: DeadJob) -> Deferred[None]:
        """Move ``dead.job.key`` from the queue to the end of the dead set."""
        if self.closed:
            return self._refuse()
        self._jobs.pop(dead.job.key, None)
        self._dead.pop(dead.job.key, None)
        self._dead[dead.job.key] = dead
        return succeed(None)

    def unbury(self, key: str, job: StoredJob) -> Deferred[None]:
        """Forget the dead job ``key`` and queue ``job``."""
        if self.closed:
            return self._refuse()
        self._dead.pop(key, None)
        self._jobs[job.key] = job
        return succeed(None)

    def drop_dead(self, keys: list[str]) -> Deferred[None]:
        """Forget the dead jobs under ``keys``."""
        if self.closed:
            return self._refuse()
        for key in keys:
            self._dead.pop(key, None)
        return succeed(None)

    def dead(self) -> Deferred[list[DeadJob]]:
        """Every dead job, oldest failure first."""
        if self.closed:
            return self._refuse()
        return succeed(by_failure(list(self._dead.values())))

    def keep_result(self, key: str | None, result: KeptResult) -> Deferred[None]:
        """Forget the queued job ``key`` (if any) and keep ``result`` last."""
        if self.closed:
            return self._refuse()
        if key is not None:
            self._jobs.pop(key, None)
        self._results.pop(result.handle, None)
        self._results[result.handle] = result
        return succeed(None)

    def drop_results(self, handles: list[bytes]) -> Deferred[None]:
        """Forget the results kept for ``handles``."""
        if self.closed:
            return self._refuse()
        for handle in handles:
            self._results.pop(handle, None)
        return succeed(None)

    def results(self) -> Deferred[list[KeptResult]]:
        """Every kept result, in the order they were kept."""
        if self.closed:
            return self._refuse()
        return succeed(list(self._results.values()))

    def claim_tick(self, name: str, tick: int, job: StoredJob) -> Deferred[bool]:
        """Queue ``job`` and record ``tick`` unless a tick at or after it was claimed."""
        if self.closed:
            return self._refuse()
        last = self._ticks.get(name)
        if last is not None and last[0] >= tick:
            return succeed(False)
        self._ticks[name] = (tick, job.key)
        self._jobs[job.key] = job
        return succeed(True)

    def next_boot(self) -> Deferred[int]:
        """The wall clock in tenths of a second, or one more than last time if that is more."""
        if self.closed:
            return self._refuse()
        self._boot = max(self._boot + 1, int(self._now() * 10))
        return succeed(self._boot)

    def close(self) -> Deferred[None]:
        """Refuse every later operation (closing again is harmless)."""
        self.closed = True
        return succeed(None)

    def _refuse(self) -> Deferred[Any]:
        """The failure every operation but close gives on a closed store."""
        return fail(StoreError("the memory store is closed"))
