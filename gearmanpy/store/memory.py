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
from gearmanpy.store.interface import IJobStore, StoredJob


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
