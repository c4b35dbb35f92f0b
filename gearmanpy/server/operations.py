# -*- test-case-name: tests.test_core -*-
"""What an operator may do to jobs and functions: ``cancel job``, ``drop function``, ``maxqueue``.

:class:`OperatorActions` is the part of :class:`~gearmanpy.server.core.JobServerCore`'s rules
that the admin commands (:mod:`gearmanpy.server.admin`) call. It is mixed into the core and
needs the jobs by handle, the functions, the counters, and the core's ``_forget_unique``,
``_store_done`` and ``_finish``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gearmanpy.protocol import replies
from gearmanpy.server.jobs import (
    FINISHED,
    PENDING,
    QUEUED,
    SCHEDULED,
    Function,
    Job,
    JobCounters,
)


class OperatorActions:
    """The core's rules for operator actions (mixed into ``JobServerCore``)."""

    __slots__ = ()

    jobs: dict[bytes, Job]
    functions: dict[bytes, Function]
    counters: JobCounters
    max_queues: dict[bytes, list[int]]

    if TYPE_CHECKING:

        def _forget_unique(self, job: Job) -> None:
            """Stop coalescing on ``job`` (the core's)."""

        def _store_done(self, job: Job) -> None:
            """Remove the stored row of ``job`` (the core's)."""

        def _finish(self, job: Job) -> None:
            """End ``job`` for good (the core's)."""

        def cancel_broadcast(self, job: Job) -> None:
            """Cancel a broadcast or one of its deliveries (server/broadcast.py)."""

    def cancel(self, handle: bytes) -> bool:
        """``cancel job``: fail the job to its clients and forget it; False if unknown.

        gearmand lets a running job's later WORK_COMPLETE through after the WORK_FAIL
        (quirk 9); here the clients are detached, so they hear nothing more. gearmand leaves
        a cancelled queued job in ``status`` and ``show jobs`` (and in the way of ``drop
        function``) until a worker reaches it; here it is freed at once. A running job ends
        when its worker is done with it.
        """
        job = self.jobs.get(handle)
        if job is None or job.state in (PENDING, FINISHED) or job.cancelled:
            return False
        self.counters.cancelled += 1
        fail = replies.work_fail(handle)
        for c in job.clients:
            c.out.send(fail)
            c.client_jobs.discard(job)
        job.clients = ()
        job.cancelled = True
        job.ignored = True
        self._forget_unique(job)
        if job.persisted:
            self._store_done(job)
            job.persisted = False
        if job.broadcast is not None:
            self.cancel_broadcast(job)
        elif job.state == SCHEDULED:
            job.function.scheduled -= 1
            self._finish(job)
        elif job.state == QUEUED:
            job.function.queues[job.priority].remove(job)
            self._finish(job)
        return True

    def drop_function(self, name: bytes) -> bytes | None:
        """``drop function``: remove an idle function; return an error text or None.

        gearmand drops a function with queued jobs and orphans them (quirk 10); we refuse.
        """
        lowered = name.lower()
        for key, f in self.functions.items():
            if key.lower() == lowered:
                if f.workers or f.running:
                    return b"there are still connected workers or executing clients"
                if (
                    f.queued()
                    or f.scheduled
                    or any(j.function is f and j.state == PENDING for j in self.jobs.values())
                ):
                    return b"there are still queued jobs"
                del self.functions[key]
                return None
        return b"function not found"

    def set_max_queue(self, name: bytes, limits: list[int]) -> None:
        """``maxqueue``: set per-priority limits (0 = unlimited) of a function.

        gearmand answers OK and forgets the limits of a function that does not exist yet;
        here they are kept by name, and apply when the function appears (or comes back
        after ``drop function``).
        """
        limits = [max(0, n) for n in limits]
        if any(limits):
            self.max_queues[name] = limits
        else:
            self.max_queues.pop(name, None)
        f = self.functions.get(name)
        if f is not None:
            f.max_queue = list(limits)


__all__ = ["OperatorActions"]
