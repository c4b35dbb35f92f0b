# -*- test-case-name: tests.test_store -*-
"""A store that keeps jobs in memory only: ``--queue memory``, and the core's tests."""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from gearmanpy.store.interface import IJobStore, StoredJob


@implementer(IJobStore)
@attrs.define(eq=False)
class MemoryJobStore:
    """Keeps jobs in a dict in insertion order; nothing survives the process.

    It still behaves like a real store (replay returns what was added and not done), so a
    server can be tested end to end without a database.
    """

    _jobs: dict[str, StoredJob] = attrs.field(factory=dict)
    closed: bool = False

    def open(self) -> Deferred[None]:
        """Nothing to open."""
        return succeed(None)

    def add(self, job: StoredJob) -> Deferred[None]:
        """Keep ``job``."""
        self._jobs[job.key] = job
        return succeed(None)

    def done(self, key: str) -> Deferred[None]:
        """Forget the job under ``key``."""
        self._jobs.pop(key, None)
        return succeed(None)

    def set_retries(self, key: str, retries: int) -> Deferred[None]:
        """Record the requeue count of the job under ``key``."""
        job = self._jobs.get(key)
        if job is not None:
            self._jobs[key] = attrs.evolve(job, retries=retries)
        return succeed(None)

    def replay(self) -> Deferred[list[StoredJob]]:
        """Every job kept, in insertion order."""
        return succeed(list(self._jobs.values()))

    def close(self) -> Deferred[None]:
        """Nothing to release."""
        self.closed = True
        return succeed(None)
