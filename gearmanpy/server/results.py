# -*- test-case-name: tests.test_core -*-
"""WORK_* packets from workers: checked, forwarded to the job's clients, ending the job.

:class:`WorkResults` is the part of :class:`~gearmanpy.server.core.JobServerCore`'s rules
that handles what a worker reports about a job it holds (WORK_STATUS, WORK_DATA,
WORK_WARNING, WORK_COMPLETE, WORK_FAIL, WORK_EXCEPTION), and GET_STATUS, which answers what
WORK_STATUS reported. It is mixed into the core and needs
only the jobs by handle, the counters, and the core's ``_unassign`` and ``_finish``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gearmanpy.protocol import replies
from gearmanpy.protocol.limits import MAX_HANDLE_SIZE, MAX_UNIQUE_SIZE
from gearmanpy.protocol.numbers import atoi
from gearmanpy.server.jobs import PENDING, RUNNING, Function, Job, JobCounters, Peer, status_fields


class WorkResults:
    """The core's rules for results a worker sends (mixed into ``JobServerCore``)."""

    __slots__ = ()

    jobs: dict[bytes, Job]
    functions: dict[bytes, Function]
    counters: JobCounters
    #: Cluster hook (server/cluster.py): asked about a handle (or, with True, a unique) this
    #: node does not hold; True if it answers the peer itself, later.
    on_status: Callable[[Peer, bytes, bool], bool] | None

    if TYPE_CHECKING:

        def _unassign(self, job: Job) -> None:
            """Take ``job`` back from its worker (the core's)."""

        def _finish(self, job: Job) -> None:
            """End ``job`` for good (the core's)."""

        def _stale_result(self, peer: Peer, handle: bytes, final: bool) -> bool:
            """Whether the result is from a timed-out attempt (server/attempts.py)."""

        def _attempt_failed(
            self, job: Job, error: bytes, retry: bool = True, exception: bool = False
        ) -> None:
            """Retry a failed background attempt or bury it (server/failures.py)."""

        def _keep(self, job: Job, outcome: bytes, data: bytes) -> None:
            """Keep a background job's final outcome (server/failures.py)."""

        def _delivered(self, child: Job, outcome: bytes, data: bytes) -> None:
            """A broadcast delivery ended (server/broadcast.py)."""

    def _worker_job(
        self, peer: Peer, handle: bytes, not_found: bytes, final: bool = False
    ) -> Job | None:
        """The running job ``handle`` if ``peer`` holds it; else send ``not_found``, unless
        the result is from an attempt that timed out: that one is dropped quietly."""
        job = self.jobs.get(handle)
        if job is None or job.worker is not peer or job.state != RUNNING:
            if not self._stale_result(peer, handle, final):
                peer.out.send(not_found)
            return None
        return job

    @staticmethod
    def _forward(job: Job, data: bytes) -> None:
        """Send ``data`` to every foreground client of ``job`` unless it was cancelled."""
        if job.clients and not job.cancelled:
            for c in job.clients:
                c.out.send(data)

    def work_status(self, peer: Peer, handle: bytes, numerator: bytes, denominator: bytes) -> None:
        """WORK_STATUS: remember progress and forward it byte for byte."""
        job = self._worker_job(peer, handle, replies.RESULT_JOB_NOT_FOUND)
        if job is None:
            return
        job.numerator = atoi(numerator)
        job.denominator = atoi(denominator)
        self._forward(job, replies.work_status(handle, numerator, denominator))

    def work_data(self, peer: Peer, ptype: int, handle: bytes, data: bytes) -> None:
        """WORK_DATA / WORK_WARNING (``ptype``): forward to the job's foreground clients."""
        job = self._worker_job(peer, handle, replies.DATA_JOB_NOT_FOUND)
        if job is None:
            return
        self._forward(job, replies.work_forward(ptype, handle, data))

    def work_complete(self, peer: Peer, handle: bytes, data: bytes) -> None:
        """WORK_COMPLETE: forward the result and end the job."""
        job = self.jobs.get(handle)  # _worker_job, written out for the busiest result
        if job is None or job.worker is not peer or job.state != RUNNING:
            if not self._stale_result(peer, handle, True):
                peer.out.send(replies.RESULT_JOB_NOT_FOUND)
            return
        self.counters.completed += 1
        job.function.counters.completed += 1
        if job.clients:  # background jobs have none: no packet to build
            self._forward(job, replies.work_complete(handle, data))
        self._unassign(job)
        if job.broadcast is not None:
            self._delivered(job, b"complete", data)
            return
        if job.background and job.function.policy.keep_results:
            self._keep(job, b"complete", data)
        self._finish(job)

    def work_fail(self, peer: Peer, handle: bytes) -> None:
        """WORK_FAIL: tell the clients and end the job."""
        if len(handle) > MAX_HANDLE_SIZE:
            peer.out.send(replies.HANDLE_TOO_LARGE)
            return
        job = self._worker_job(peer, handle, replies.RESULT_JOB_NOT_FOUND, final=True)
        if job is None:
            return
        self.counters.failed += 1
        job.function.counters.failed += 1
        self._forward(job, replies.work_fail(handle))
        self._unassign(job)
        if job.broadcast is not None:
            self._delivered(job, b"failed", b"")
        elif job.background:
            self._attempt_failed(job, b"failed")
        else:
            self._finish(job)

    def work_exception(self, peer: Peer, handle: bytes, data: bytes) -> None:
        """WORK_EXCEPTION: forward it to clients that asked for exceptions, WORK_FAIL to others.

        gearmand 1.1.20 puts a NUL after the handle of that WORK_FAIL, which hangs libgearman
        clients (quirk 1); we send the bare handle.
        """
        job = self._worker_job(peer, handle, replies.EXCEPTION_JOB_NOT_FOUND, final=True)
        if job is None:
            return
        self.counters.exceptions += 1
        job.function.counters.exceptions += 1
        if job.clients and not job.cancelled:
            exc = replies.work_exception(handle, data)
            fail = replies.work_fail(handle)
            for c in job.clients:
                c.out.send(exc if c.exceptions else fail)
        self._unassign(job)
        if job.broadcast is not None:
            self._delivered(job, b"exception", data)
        elif job.background:
            self._attempt_failed(job, data or b"exception", exception=True)
        else:
            self._finish(job)

    # -- status (GET_STATUS answers what WORK_STATUS reported) ------------------------------

    def get_status(self, peer: Peer, handle: bytes) -> None:
        """GET_STATUS: STATUS_RES for ``handle`` (unknown handles get zeros, never silence)."""
        handle = handle.split(b"\0", 1)[0]
        job = self.jobs.get(handle) if len(handle) <= MAX_HANDLE_SIZE else None
        if (job is None or job.state == PENDING) and self.on_status is not None:
            if len(handle) <= MAX_HANDLE_SIZE and self.on_status(peer, handle, False):
                return
        peer.out.send(replies.status_res(handle, status_fields(job)))

    def get_status_unique(self, peer: Peer, unique: bytes) -> None:
        """GET_STATUS_UNIQUE: STATUS_RES_UNIQUE for the first live job with ``unique``."""
        unique = unique.split(b"\0", 1)[0]
        job = None
        if unique and len(unique) <= MAX_UNIQUE_SIZE:
            for f in self.functions.values():
                candidate = f.uniques.get(unique)
                if candidate is not None and candidate.unique == unique:
                    job = candidate
                    break
        if (job is None or job.state == PENDING) and self.on_status is not None:
            if unique and len(unique) <= MAX_UNIQUE_SIZE and self.on_status(peer, unique, True):
                return
        clients = b"%d" % (len(job.clients) if job is not None else 0)
        peer.out.send(replies.status_res_unique(unique, status_fields(job), clients))


__all__ = ["WorkResults"]
