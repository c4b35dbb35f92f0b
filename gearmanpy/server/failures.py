# -*- test-case-name: tests.test_policy -*-
"""The failure policy's rules: retries with backoff, the dead set, kept results, throttles.

:class:`Failures` is the part of :class:`~gearmanpy.server.core.JobServerCore`'s rules that
decide what happens to a *background* job whose attempt failed (WORK_FAIL, WORK_EXCEPTION,
a lost worker, a timeout): wait and retry, as its function's
:class:`~gearmanpy.server.policy.FunctionPolicy` allows, or go to the dead set, which
gearmand does not have (it drops such a job and logs its handle). Foreground jobs keep
gearmand's behaviour: a client waits on them. It also keeps the final results of functions
that ask for it, applies the per-function throttles, and does what the admin commands on
these ask (``retry dead``, ``drop dead``, ``cancel unique``, ``policy set``).

Every change is mirrored to the store (if there is one), so that a restart finds every job
queued, scheduled, dead or done.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from gearmanpy.protocol.text import show
from gearmanpy.server.durability import stored_job
from gearmanpy.server.jobs import (
    RUNNING,
    SCHEDULED,
    Function,
    Holdings,
    Job,
    JobCounters,
    coalesce_key,
)
from gearmanpy.server.kept import DeadSet, KeptResults
from gearmanpy.server.policy import FunctionPolicy, Policies, Throttle
from gearmanpy.store.interface import DeadJob, KeptResult

if TYPE_CHECKING:
    from gearmanpy.server.durability import Durability

#: How often, at most, expired dead jobs and results are looked for.
SWEEP_INTERVAL = 60.0


@attrs.define(eq=False, slots=True)
class Sweeper:
    """The one timer that forgets expired dead jobs and results (None while idle)."""

    timer: IDelayedCall | None = None


class Failures:
    """The core's rules for failed background attempts and what is kept of them (a mixin)."""

    __slots__ = ()

    log: Logger  # the core's
    clock: IReactorTime
    counters: JobCounters
    jobs: dict[bytes, Job]
    functions: dict[bytes, Function]
    policies: Policies
    held: Holdings
    dead: DeadSet
    kept: KeptResults
    random: Callable[[], float]
    _durable: Durability | None
    _sweeper: Sweeper
    on_idle: Callable[[Function], None] | None  # the core's cluster hook

    if TYPE_CHECKING:

        def _remove(self, job: Job) -> None:
            """Mark ``job`` finished and forget it (the core's)."""

        def _finish(self, job: Job) -> None:
            """End ``job`` for good, with its stored row (the core's)."""

        def _check_drained(self) -> None:
            """Fire the drain Deferred if no job is left (the core's)."""

        def _wake(self, f: Function) -> None:
            """NOOP the sleeping workers of ``f`` (the core's)."""

        def _enqueue(self, job: Job) -> None:
            """Queue ``job`` and wake workers (the core's)."""

        def _due(self, job: Job) -> None:
            """A scheduled job's time has come (the core's)."""

        def function(self, name: bytes) -> Function:
            """The function record for ``name`` (the core's)."""

        def new_handle(self) -> bytes:
            """The next job handle (the core's)."""

        def cancel(self, handle: bytes) -> bool:
            """``cancel job`` (server/operations.py)."""

    # -- policies -------------------------------------------------------------------------

    def _apply_policy(self, f: Function) -> None:
        """Give ``f`` its policy, and what the hot paths read of it."""
        policy = self.policies.for_function(f.name)
        f.policy = policy
        f.default_timeout = policy.timeout
        f.broadcast = policy.broadcast
        # On a cluster (its claims: the on_idle hook) the claim takes the rate's tokens.
        f.throttle = Throttle.of(policy, self.clock.seconds(), rate=self.on_idle is None)
        if f.throttle is None and f.throttle_timer is not None:
            f.throttle_timer.cancel()
            f.throttle_timer = None

    def set_policy(self, pattern: str, settings: dict[str, Any]) -> None:
        """``policy set``: override settings for a function name or glob, at once.

        :raises ValueError: for an unknown setting or a bad value (nothing changes).
        """
        self.policies.set(pattern, settings)
        self._reapply_policies()

    def reset_policy(self, pattern: str) -> bool:
        """``policy reset``: take back the run-time changes; False if there were none."""
        had = self.policies.reset(pattern)
        self._reapply_policies()
        return had

    def _reapply_policies(self) -> None:
        """Every function takes its (possibly changed) policy; throttled workers may wake."""
        for f in self.functions.values():
            self._apply_policy(f)
            if f.sleepers and f.queued():
                self._wake(f)

    # -- throttles ------------------------------------------------------------------------

    def _throttled(self, f: Function) -> bool:
        """Whether ``f`` may not start a job now (its throttle says no); if so, a timer wakes
        its sleeping workers when the rate allows one again."""
        throttle = f.throttle
        if throttle is None:
            return False
        now = self.clock.seconds()
        if throttle.allows(f.running, now):
            return False
        wait = throttle.wait(now)
        if wait and f.throttle_timer is None:
            f.throttle_timer = self.clock.callLater(wait, self._throttle_open, f)
        return True

    def _throttle_open(self, f: Function) -> None:
        """A throttled function's rate allows a job again: wake its sleeping workers."""
        f.throttle_timer = None
        if f.queued():
            self._wake(f)

    def _capacity_back(self, f: Function) -> None:
        """A job of throttled ``f`` stopped running: wake a sleeper if jobs wait."""
        if f.sleepers and f.queued():
            self._wake(f)

    # -- failed attempts --------------------------------------------------------------------

    def _attempt_failed(
        self, job: Job, error: bytes, retry: bool = True, exception: bool = False
    ) -> None:
        """A background job's attempt failed (its worker is already unassigned): retry it
        after the policy's backoff, or move it to the dead set.

        :param error: what failed: WORK_EXCEPTION's text, ``failed``, ``worker lost``,
            ``timeout``.
        :param retry: False when the failure is final whatever attempts remain (a timeout
            with ``on_timeout = "fail"``).
        :param exception: the attempt ended with WORK_EXCEPTION (for the kept result).
        """
        job.retries += 1
        policy = job.function.policy
        if job.cancelled:
            self._finish(job)
        elif retry and policy.attempts is not None and job.retries < policy.attempts:
            job.error = error
            self._detach_clients(job)
            self._retry_later(job, policy)
        else:
            self._give_up(job, error, exception)

    def _give_up(self, job: Job, error: bytes, exception: bool = False) -> None:
        """A background job failed for good (its attempts counted): to the dead set."""
        job.error = error
        self._detach_clients(job)
        self._bury(job, exception)

    @staticmethod
    def _detach_clients(job: Job) -> None:
        """Forget the foreground submissions that joined ``job`` (they heard its failure)."""
        if job.clients:
            for c in job.clients:
                c.client_jobs.discard(job)
            job.clients = ()

    def _retry_later(self, job: Job, policy: FunctionPolicy) -> None:
        """Schedule ``job``'s next attempt after the backoff (a scheduled job until then)."""
        delay = policy.delay(job.retries, self.random)
        now = self.clock.seconds()
        job.when = math.ceil(now + delay)
        job.numerator = job.denominator = 0
        job.state = SCHEDULED
        job.function.scheduled += 1
        job.timer = self.clock.callLater(delay, self._due, job)
        self.counters.retried += 1
        job.function.counters.retried += 1
        self.log.info(
            "job {handle} failed ({error}), attempt {n}; retrying in {delay:.1f} s",
            handle=show(job.handle),
            error=show(job.error),
            n=job.retries,
            delay=delay,
        )
        if job.persisted and self._durable is not None:
            self._durable.reschedule(job)

    def _bury(self, job: Job, exception: bool = False) -> None:
        """Move a background job that failed for good to the dead set."""
        now = self.clock.seconds()
        dead = DeadJob(job=stored_job(job), error=job.error, failed_at=now)
        self.counters.dead += 1
        job.function.counters.dead += 1
        self.log.info(
            "job {handle} moved to the dead set after {n} attempts: {error}",
            handle=show(job.handle),
            n=job.retries,
            error=show(job.error),
        )
        dropped = self.dead.add(dead)
        durable = self._durable
        if durable is not None:
            # A job that never reached the store (a promoted one whose write failed) is kept
            # in the store's dead set all the same, so a restart still finds it.
            durable.bury(dead)
            durable.drop_dead([d.job.key for d in dropped])
        if job.function.policy.keep_results:
            self._keep(job, b"exception" if exception else b"fail", job.error)
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        job.persisted = False  # the row is the dead set's now
        if job.state == RUNNING:  # its last attempt ran until now (the run-time histogram)
            job.function.ran.observe(now - job.since)
        self._remove(job)
        self._check_drained()
        self._sweep_later()

    # -- kept results ---------------------------------------------------------------------

    def _keep(self, job: Job, outcome: bytes, data: bytes) -> None:
        """Keep the final outcome of background ``job`` for its function's retention."""
        now = self.clock.seconds()
        result = KeptResult(
            handle=job.handle,
            function=job.function.name,
            unique=job.unique,
            outcome=outcome.decode("ascii"),
            data=data,
            numerator=job.numerator,
            denominator=job.denominator,
            attempts=job.retries + (1 if outcome == b"complete" else 0),
            submitted_at=job.submitted_at,
            started_at=job.since,  # when its worker took it
            finished_at=now,
            expires_at=now + job.function.policy.keep_results,
        )
        self.kept.add(result)
        if self._durable is not None:
            self._durable.keep_result(job, result)
            job.persisted = False  # keep_result forgot the queued row in its transaction
        self._sweep_later()

    def _sweep_later(self) -> None:
        """Look for expired dead jobs and results in a while (one timer at a time)."""
        if self._sweeper.timer is None:
            self._sweeper.timer = self.clock.callLater(SWEEP_INTERVAL, self._sweep)

    def _sweep(self) -> None:
        """Forget dead jobs past the dead set's age and results past their time."""
        self._sweeper.timer = None
        now = self.clock.seconds()
        dropped = self.dead.expire(now)
        gone = self.kept.expire(now)
        if self._durable is not None:
            self._durable.drop_dead([d.job.key for d in dropped])
            self._durable.drop_results(gone)
        if self.dead.jobs or self.kept.results:
            self._sweep_later()

    # -- operator actions -------------------------------------------------------------------

    def retry_dead(self, what: bytes) -> int:
        """``retry dead HANDLE|FUNCTION|all``: queue the dead jobs again, with their attempt
        counts reset; return how many."""
        chosen = self.dead.select(what)
        for dead in chosen:
            self.dead.remove(dead.job.handle)
            self._revive(dead)
        return len(chosen)

    def _revive(self, dead: DeadJob) -> None:
        """Queue a dead job again under its handle (a new one if its handle is taken)."""
        s = dead.job
        f = self.function(s.function)
        handle = s.handle if s.handle and s.handle not in self.jobs else self.new_handle()
        job = Job(handle, f, s.unique, s.data, int(s.priority), True, 0, s.reducer)
        job.submitted_at = s.submitted_at
        key = coalesce_key(s.unique, s.data)
        if key is not None and key not in f.uniques:
            job.key = key
            f.uniques[key] = job
        self.jobs[handle] = job
        self.held.payload_bytes += len(s.data)
        if self._durable is not None:
            self._durable.unbury(s.key, job)
        self.log.info("dead job {handle} queued again by an admin", handle=show(handle))
        self._enqueue(job)

    def drop_dead(self, what: bytes) -> int:
        """``drop dead HANDLE|FUNCTION|all``: forget dead jobs; return how many."""
        chosen = self.dead.select(what)
        for dead in chosen:
            self.dead.remove(dead.job.handle)
        if self._durable is not None:
            self._durable.drop_dead([d.job.key for d in chosen])
        return len(chosen)

    def cancel_unique(self, function: bytes, unique: bytes) -> bool:
        """``cancel unique FUNCTION UNIQUE``: cancel the live job with that unique."""
        f = self.functions.get(function)
        job = f.uniques.get(unique) if f is not None else None
        return job is not None and self.cancel(job.handle)

    def scheduled_jobs(self, function: bytes | None = None) -> Iterator[Job]:
        """Jobs waiting for their time (SUBMIT_JOB_EPOCH, or a retry), soonest first."""
        waiting = [
            j
            for j in self.jobs.values()
            if j.state == SCHEDULED and (function is None or j.function.name == function)
        ]
        return iter(sorted(waiting, key=lambda j: j.when))

    # -- start-up ---------------------------------------------------------------------------

    def replay_dead(self, dead: list[DeadJob]) -> None:
        """Restore the dead set from the store at start-up (oldest failure first)."""
        dropped: list[DeadJob] = []
        for d in sorted(dead, key=lambda d: d.failed_at):  # expire() needs the oldest first
            if not d.job.handle:
                d = attrs.evolve(d, job=attrs.evolve(d.job, handle=d.job.key.encode()))
            dropped.extend(self.dead.add(d))
        dropped.extend(self.dead.expire(self.clock.seconds()))
        if self._durable is not None:
            self._durable.drop_dead([d.job.key for d in dropped])
        if self.dead.jobs:
            self._sweep_later()

    def replay_results(self, results: list[KeptResult]) -> None:
        """Restore the kept results from the store at start-up."""
        for r in results:
            self.kept.add(r)
        gone = self.kept.expire(self.clock.seconds())
        if self._durable is not None:
            self._durable.drop_results(gone)
        if self.kept.results:
            self._sweep_later()

    def stop_policy_timers(self) -> None:
        """Cancel the sweeper and the throttles' timers (the server stops)."""
        timer = self._sweeper.timer
        if timer is not None and timer.active():
            timer.cancel()
        self._sweeper.timer = None
        for f in self.functions.values():
            if f.throttle_timer is not None and f.throttle_timer.active():
                f.throttle_timer.cancel()
            f.throttle_timer = None


__all__ = ["SWEEP_INTERVAL", "Failures", "Sweeper"]
