# -*- test-case-name: tests.test_policy -*-
"""What the server keeps of background jobs that ended: the dead set and kept results.

:class:`DeadSet` holds the background jobs that used up their attempts (``show dead``,
``retry dead``, ``drop dead``), bounded in number and age; :class:`KeptResults` holds the
final outcome of background jobs whose function keeps results, for a while. Both are plain
containers in the order things happened; the core decides what goes in, and mirrors every
change to the store so that both survive a restart.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from gearmanpy.store.interface import DeadJob, KeptResult

#: The dead set's bounds when none are configured: enough to find any failure of the last
#: week, and a bound on a server whose jobs all fail.
DEFAULT_DEAD_MAX_JOBS = 10_000
DEFAULT_DEAD_MAX_AGE = 7 * 24 * 3600.0


@attrs.define(eq=False)
class DeadSet:
    """Dead jobs by handle, oldest failure first.

    :ivar max_jobs: jobs kept at most (0: no limit); past it the oldest are dropped.
    :ivar max_age: seconds a dead job is kept (0: no limit).
    """

    max_jobs: int = DEFAULT_DEAD_MAX_JOBS
    max_age: float = DEFAULT_DEAD_MAX_AGE
    jobs: dict[bytes, DeadJob] = attrs.field(factory=dict)

    def add(self, dead: DeadJob) -> list[DeadJob]:
        """Keep ``dead`` (replacing one with its handle); return those dropped to make room."""
        handle = dead.job.handle
        self.jobs.pop(handle, None)
        self.jobs[handle] = dead
        dropped = []
        while self.max_jobs and len(self.jobs) > self.max_jobs:
            dropped.append(self.jobs.pop(next(iter(self.jobs))))
        return dropped

    def expire(self, now: float) -> list[DeadJob]:
        """Drop and return the jobs that failed more than ``max_age`` seconds before ``now``."""
        dropped = []
        if self.max_age:
            while self.jobs:
                first = next(iter(self.jobs.values()))
                if first.failed_at + self.max_age > now:
                    break
                dropped.append(self.jobs.pop(first.job.handle))
        return dropped

    def select(self, what: bytes) -> list[DeadJob]:
        """The dead jobs ``what`` names: a handle, a function name, or ``all``."""
        if what == b"all":
            return list(self.jobs.values())
        one = self.jobs.get(what)
        if one is not None:
            return [one]
        return [d for d in self.jobs.values() if d.job.function == what]

    def of_function(self, function: bytes | None) -> Iterator[DeadJob]:
        """Every dead job, or those of ``function``, oldest failure first."""
        for dead in self.jobs.values():
            if function is None or dead.job.function == function:
                yield dead

    def remove(self, handle: bytes) -> DeadJob | None:
        """Take the dead job ``handle`` out (None if there is none)."""
        return self.jobs.pop(handle, None)

    def __len__(self) -> int:
        return len(self.jobs)


@attrs.define(eq=False)
class KeptResults:
    """Kept results by handle, in the order they were kept (so also by expiry time for one
    retention; :meth:`expire` looks at every result whose time has come)."""

    results: dict[bytes, KeptResult] = attrs.field(factory=dict)

    def add(self, result: KeptResult) -> None:
        """Keep ``result``, replacing an earlier one for its handle."""
        self.results.pop(result.handle, None)
        self.results[result.handle] = result

    def get(self, handle: bytes) -> KeptResult | None:
        """The result kept for ``handle``, if any."""
        return self.results.get(handle)

    def by_unique(self, function: bytes, unique: bytes) -> KeptResult | None:
        """The newest result kept for ``unique`` of ``function``, if any."""
        for result in reversed(self.results.values()):
            if result.unique == unique and result.function == function:
                return result
        return None

    def expire(self, now: float) -> list[bytes]:
        """Forget the results whose time is over; return their handles."""
        gone = [h for h, r in self.results.items() if r.expires_at <= now]
        for handle in gone:
            del self.results[handle]
        return gone

    def next_expiry(self) -> float | None:
        """When the next result expires (None if none is kept)."""
        return min((r.expires_at for r in self.results.values()), default=None)

    def __len__(self) -> int:
        return len(self.results)


__all__ = [
    "DEFAULT_DEAD_MAX_AGE",
    "DEFAULT_DEAD_MAX_JOBS",
    "DeadSet",
    "KeptResults",
]
