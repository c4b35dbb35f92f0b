# -*- test-case-name: tests.test_core -*-
"""Attempts that end without a result: worker loss, CAN_DO_TIMEOUT and ``--job-retries``.

:class:`Attempts` is the part of :class:`~gearmanpy.server.core.JobServerCore`'s rules for a
job whose worker went away, unregistered the function, or ran past its CAN_DO_TIMEOUT
(protocol.md §3.8, §3.11). It is mixed into the core.

A timed-out job is requeued while its worker may well still be running it: gearmand hands
it straight back to the same worker if that worker has a free slot (two copies of one job
at once), and answers the stale attempt's late WORK_COMPLETE with ``ERROR JOB_NOT_FOUND``
(which makes a Perl ``Gearman::Worker`` exit). Here the worker's connection is marked as
*superseded* for that job: the job is not handed back to it while the stale attempt may
still run, and the stale attempt's results are dropped without an ERROR.

The mark keeps the job from that connection until the stale attempt's final result arrives
or one more timeout period has passed since the requeue. A worker that runs one job at a
time (libgearman, PHP, Perl, python-gearman) cannot ask for the job again before it has
sent that result; gearmanpy's ``Worker`` gives a timed-out attempt up at the same timeout;
so the second bound only keeps a lone worker from waiting for ever for a job it abandoned.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gearmanpy.protocol import replies
from gearmanpy.protocol.text import show
from gearmanpy.server.jobs import QUEUED, Function, Job, JobCounters, Peer

if TYPE_CHECKING:
    from gearmanpy.server.durability import Durability

#: Superseded handles a connection remembers (the oldest is forgotten first): enough for
#: any real worker's late results, and a bound on a worker that never sends any.
MAX_SUPERSEDED = 1024


class Attempts:
    """The core's rules for attempts that end without a result (mixed into the core)."""

    __slots__ = ()

    log: Logger  # the core's
    clock: IReactorTime
    counters: JobCounters
    job_retries: int | None
    _durable: Durability | None

    if TYPE_CHECKING:

        def _unassign(self, job: Job) -> None:
            """Take ``job`` back from its worker (the core's)."""

        def _finish(self, job: Job) -> None:
            """End ``job`` for good (the core's)."""

        def _forget_unique(self, job: Job) -> None:
            """Stop coalescing on ``job`` (the core's)."""

        def _enqueue(self, job: Job) -> None:
            """Queue ``job`` at the tail of its priority and wake workers (the core's)."""

        def _wake(self, f: Function) -> None:
            """NOOP the sleeping workers of ``f`` (the core's)."""

        def _discard(self, job: Job) -> None:
            """Free an orphaned or cancelled job a worker reached (the core's)."""

        def _attempt_failed(
            self, job: Job, error: bytes, retry: bool = True, exception: bool = False
        ) -> None:
            """Retry a failed background attempt or bury it (server/failures.py)."""

        def _give_up(self, job: Job, error: bytes, exception: bool = False) -> None:
            """Move a background job to the dead set (server/failures.py)."""

        def _delivery_lost(self, child: Job) -> None:
            """A broadcast delivery's worker went away (server/broadcast.py)."""

    def _timed_out(self, job: Job, timeout: float) -> None:
        """CAN_DO_TIMEOUT fired: requeue the job (or fail it if retries ran out), and keep it
        from the worker that may still be running it."""
        job.timer = None
        self.counters.timed_out += 1
        worker = job.worker
        self.log.info(
            "job {handle} ran past its CAN_DO_TIMEOUT of {timeout:g} s",
            handle=show(job.handle),
            timeout=timeout,
        )
        self._lose_worker(job, b"timeout", timed_out=True)
        if worker is None or not worker.connected:
            return
        superseded = worker.superseded
        superseded[job.handle] = self.clock.seconds() + timeout
        if len(superseded) > MAX_SUPERSEDED:
            del superseded[next(iter(superseded))]
        if job.state == QUEUED and job.timer is None:
            # When the mark lapses the worker may take the job again: wake it then.
            job.timer = self.clock.callLater(timeout, self._exclusion_over, job)

    def _exclusion_over(self, job: Job) -> None:
        """A requeued job may go back to the worker it timed out on: wake sleeping workers."""
        job.timer = None
        if job.state == QUEUED:
            self._wake(job.function)

    def _excluded(self, peer: Peer, job: Job) -> bool:
        """Whether ``job`` must not go to ``peer``: it may still run a timed-out attempt."""
        until = peer.superseded.get(job.handle)
        return until is not None and until > self.clock.seconds()

    def _take_for(self, f: Function, peer: Peer) -> Job | None:
        """:meth:`~gearmanpy.server.core.JobServerCore._take` for a peer with superseded
        attempts: the first live job of ``f`` it may have, the skipped ones left in place."""
        for q in f.queues:
            skipped: deque[Job] = deque()
            found = None
            while q:
                job = q.popleft()
                if job.ignored:
                    self._discard(job)
                elif self._excluded(peer, job):
                    skipped.append(job)
                else:
                    found = job
                    break
            q.extendleft(reversed(skipped))
            if found is not None:
                return found
        return None

    def _grabbable(self, f: Function, peer: Peer) -> bool:
        """Whether ``peer`` would get a job of ``f`` now (PRE_SLEEP answers NOOP if so)."""
        if not peer.superseded:
            return bool(f.queued())
        return any(not self._excluded(peer, j) for q in f.queues for j in q if not j.ignored)

    def _stale_result(self, peer: Peer, handle: bytes, final: bool) -> bool:
        """Whether a result for ``handle`` comes from an attempt that timed out (dropped
        quietly); a final one (COMPLETE, FAIL, EXCEPTION) ends that attempt's mark."""
        superseded = peer.superseded
        if handle not in superseded:
            return False
        if final:
            del superseded[handle]
        return True

    def _lose_worker(
        self, job: Job, error: bytes = b"worker lost", timed_out: bool = False
    ) -> None:
        """Requeue a running job whose worker went away or ran out of time (§3.8).

        ``--job-retries N`` means what it means to gearmand 1.1.20: the job runs at most N
        times, so the Nth loss fails it to its clients; 0 or None means no limit. A
        background job whose function has a retry policy (or ``on_timeout = "fail"``)
        follows it instead (server/failures.py); one that runs out of ``--job-retries``
        goes to the dead set rather than vanishing as in gearmand.
        """
        if job.broadcast is not None:  # a broadcast's delivery: lost, not requeued
            self._delivery_lost(job)
            return
        self._unassign(job)
        if job.cancelled:
            self._finish(job)
            return
        policy = job.function.policy
        final = timed_out and policy.on_timeout == "fail"
        if job.background and (final or policy.attempts is not None):
            fail = replies.work_fail(job.handle)
            for c in job.clients:  # the foreground submissions that joined it
                c.out.send(fail)
            self._attempt_failed(job, error, retry=not final)
            return
        job.retries += 1
        self.counters.requeued += 1
        job.function.counters.requeued += 1
        if final or (self.job_retries and job.retries >= self.job_retries):
            self.log.info(
                "job {handle} failed: it ran {n} times without a result",
                handle=show(job.handle),
                n=job.retries,
            )
            self.counters.failed += 1
            job.function.counters.failed += 1
            fail = replies.work_fail(job.handle)
            for c in job.clients:
                c.out.send(fail)
            if job.background:
                self._give_up(job, error)
            else:
                self._finish(job)
            return
        job.numerator = job.denominator = 0
        if job.persisted and self._durable is not None:
            self._durable.set_retries(job)
        if not job.clients and not job.background:
            job.ignored = True
            self._forget_unique(job)
        self._enqueue(job)


__all__ = ["MAX_SUPERSEDED", "Attempts"]
