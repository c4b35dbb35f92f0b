# -*- test-case-name: tests.test_core -*-
"""The core's side of the store contract: a background job is acknowledged once it is durable.

:class:`Durability` writes each background job to the
:class:`~gearmanpy.store.interface.IJobStore`, holds the submitter's JOB_CREATED (and every
reply after it, through the connection's held slot) until the write succeeds, answers
``ERROR QUEUE_ERROR`` if it fails, and removes or updates the row as the job ends or is
requeued. The rules that decide *when* happen in :class:`~gearmanpy.server.core.JobServerCore`.

While the store refuses writes (:class:`Outage`), the log says so once when it starts and once
when it ends, whatever the number of jobs refused in between.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import attrs
from twisted.logger import Logger
from twisted.python.failure import Failure

from gearmanpy.protocol import replies
from gearmanpy.server.jobs import FINISHED, PENDING, Broadcast, Job, JobCounters, Peer
from gearmanpy.store.interface import DeadJob, IJobStore, KeptResult, Priority, StoredJob


def stored_job(job: Job, key: str | None = None) -> StoredJob:
    """``job`` as the store keeps it, under ``key`` (its own store key by default)."""
    return StoredJob(
        key=key if key is not None else job.store_key or job.handle.decode("ascii", "replace"),
        function=job.function.name,
        unique=job.unique,
        priority=Priority(job.priority),
        data=job.data,
        when=job.when,
        retries=job.retries,
        reducer=job.reducer,
        handle=job.handle,
        submitted_at=job.submitted_at,
        error=job.error,
    )


@attrs.define(eq=False)
class Outage:
    """Tracks a store that refuses writes: one log line when it starts refusing, one when a
    write succeeds again, and the count of what was refused in between.

    Both lines are logged at the same level (error), so a log filter never shows one without
    the other.

    :ivar now: a monotonic clock, for the outage's length.
    :ivar since: when the current outage began (None while the store takes writes).
    :ivar refused: background jobs refused (answered QUEUE_ERROR) in the current outage.
    :ivar lost: other writes (a finished job's delete, a retry count) that failed in it.
    """

    log = Logger()

    now: Callable[[], float] = time.monotonic
    since: float | None = None
    refused: int = 0
    lost: int = 0

    def failed(self, failure: Failure, job_refused: bool) -> None:
        """A write failed: a background job was refused, or (not ``job_refused``) a later
        write of an acknowledged job was lost."""
        if self.since is None:
            self.since, self.refused, self.lost = self.now(), 0, 0
            self.log.error(
                "store unavailable, refusing background jobs until it recovers: {error}",
                error=" ".join(str(failure.value).split()) or type(failure.value).__name__,
            )
        if job_refused:
            self.refused += 1
        else:
            self.lost += 1

    def succeeded(self) -> None:
        """A write succeeded: end the outage, if there is one."""
        if self.since is None:
            return
        seconds = self.now() - self.since
        self.since = None
        lost = f"; {self.lost} deletes or retry counts not recorded" if self.lost else ""
        self.log.error(
            "store available again after {seconds:.1f} s; {refused} jobs refused{lost}",
            seconds=seconds,
            refused=self.refused,
            lost=lost,
        )


@attrs.define(eq=False)
class Durability:
    """Keeps background jobs in a store and answers their submitters when they are durable.

    :ivar store: where the jobs are kept.
    :ivar admit: queues (or schedules) a job once it is acknowledged.
    :ivar remove: forgets a job that was never acknowledged.
    :ivar counters: the core's counters (``refused`` counts failed writes).
    :ivar boot: this process's part of every store key, so keys never repeat across restarts.
    :ivar outage: says in the log when the store stops and starts taking writes.
    """

    store: IJobStore
    admit: Callable[[Job], None]
    remove: Callable[[Job], None]
    counters: JobCounters
    boot: str = attrs.field(factory=lambda: os.urandom(6).hex())
    outage: Outage = attrs.field(factory=Outage)
    #: Writes of new background jobs sent to the store and not yet answered (the backlog).
    in_flight: int = 0

    def begin(self, job: Job, peer: Peer) -> float:
        """Give ``job`` its store key, hold ``peer``'s reply until the write is answered and
        count the write in flight; returns when it started (for the acknowledgement latency)."""
        job.store_key = f"{self.boot}-{job.handle.rsplit(b':', 1)[-1].decode()}"
        if job.held_replies is None:
            job.held_replies = []
        job.held_replies.append((peer, peer.out.hold()))
        self.in_flight += 1
        return self.outage.now()

    def persist(self, job: Job, peer: Peer, promote: bool = False) -> None:
        """Write ``job`` to the store; acknowledge ``peer``'s submission once that succeeds.

        :param promote: the job was a foreground job that a background submission joined;
            if the write fails it stays a foreground job.
        """
        was_pending = job.state == PENDING
        start = self.begin(job, peer)
        stored = stored_job(job)

        def durable(_: object) -> None:
            self.in_flight -= 1
            job.function.acked.observe(self.outage.now() - start)
            self.outage.succeeded()
            job.persisted = True
            self.release_held(job, replies.job_created(job.handle))
            if job.state == FINISHED or job.cancelled:
                # Ended (say, a promoted foreground job finished or was cancelled) while the
                # write was in flight: the row must not outlive it.
                self.done(job)
                job.persisted = False
            elif was_pending:
                self.admit(job)

        def refused(failure: Failure) -> None:
            self.in_flight -= 1
            self.outage.failed(failure, job_refused=True)
            self.counters.refused += 1
            if was_pending:
                self.remove(job)  # never acknowledged
            elif promote:
                # The promotion failed: the job stays a foreground job, as it was.
                job.background = False
            self.release_held(job, replies.QUEUE_ERROR)

        self.store.add(stored).addCallbacks(durable, refused)

    @staticmethod
    def release_held(job: Job, data: bytes) -> None:
        """Answer every submission that waited for the store's verdict on ``job``."""
        held, job.held_replies = job.held_replies or [], None
        for peer, slot in held:
            peer.out.release(slot, data)

    def done(self, job: Job) -> None:
        """Remove the row of a job that ended for good (or was cancelled)."""
        if job.store_key is not None:
            d = self.store.done(job.store_key)
            d.addCallbacks(self._succeeded, self._failed)

    def set_retries(self, job: Job) -> None:
        """Record a requeued job's retry count, so a restart keeps counting."""
        if job.store_key is not None:
            d = self.store.set_retries(job.store_key, job.retries)
            d.addCallbacks(self._succeeded, self._failed)

    def fan_out(self, record: Broadcast) -> None:
        """A broadcast started: a single server delivers it to its own connections only,
        so nothing more (a cluster node's durability sends it to the other nodes too)."""

    def keep(self, job: Job, reducer: bytes) -> None:
        """Write ``job`` (a broadcast delivery, which no submitter waits for) to the store,
        with ``reducer`` in its row's reducer column (the mark naming its broadcast)."""
        job.store_key = f"{self.boot}-{job.handle.rsplit(b':', 1)[-1].decode()}"

        def durable(_: object) -> None:
            self.outage.succeeded()
            job.persisted = True
            if job.state == FINISHED:  # ended while the write was in flight
                self.done(job)
                job.persisted = False

        row = attrs.evolve(stored_job(job), reducer=reducer)
        self.store.add(row).addCallbacks(durable, self._failed)

    def reschedule(self, job: Job) -> None:
        """Record that ``job`` waits to be retried (its ``when``, attempts and error)."""
        if job.store_key is not None:
            d = self.store.reschedule(job.store_key, job.when, job.retries, job.error)
            d.addCallbacks(self._succeeded, self._failed)

    def bury(self, dead: DeadJob) -> None:
        """Move a job's row to the dead set."""
        self.store.bury(dead).addCallbacks(self._succeeded, self._failed)

    def unbury(self, key: str, job: Job) -> None:
        """Bring the dead row ``key`` back as the queued job ``job`` (under a new key)."""
        job.store_key = f"{key}.{self.boot}.{job.retries}.{id(job) & 0xFFFFFF:x}"
        job.persisted = True
        d = self.store.unbury(key, stored_job(job))
        d.addCallbacks(self._succeeded, self._failed)

    def drop_dead(self, keys: list[str]) -> None:
        """Forget dead rows (dropped by an operator, or past the dead set's bounds)."""
        if keys:
            self.store.drop_dead(keys).addCallbacks(self._succeeded, self._failed)

    def keep_result(self, job: Job, result: KeptResult) -> None:
        """``job`` ended: forget its queued row (if it has one) and keep ``result``."""
        key = job.store_key if job.persisted else None
        self.store.keep_result(key, result).addCallbacks(self._succeeded, self._failed)

    def drop_results(self, handles: list[bytes]) -> None:
        """Forget expired results."""
        if handles:
            self.store.drop_results(handles).addCallbacks(self._succeeded, self._failed)

    def _succeeded(self, _: object) -> None:
        """A later write of an acknowledged job succeeded."""
        self.outage.succeeded()

    def _failed(self, failure: Failure) -> None:
        """A later write of an acknowledged job failed (counted in the outage)."""
        self.outage.failed(failure, job_refused=False)


__all__ = ["Durability", "Outage", "stored_job"]
