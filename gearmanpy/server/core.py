# -*- test-case-name: tests.test_core -*-
"""The job server's rules: queues, coalescing, durability, workers, wake-ups and timers.

:class:`JobServerCore` is everything gearmand's processing thread does, without any I/O. A
protocol registers each connection with :meth:`JobServerCore.connect`, giving it a
:class:`~gearmanpy.server.jobs.ReplySink` (the connection's
:class:`~gearmanpy.server.outbound.Outbound`), and calls the core's methods as packets
arrive; the core answers with replies made by :mod:`gearmanpy.protocol.replies`. The records
it keeps are in :mod:`gearmanpy.server.jobs`. Time comes from an injected ``IReactorTime``
(epoch jobs, CAN_DO_TIMEOUT), and persistence from an optional
:class:`~gearmanpy.store.interface.IJobStore`. Behaviour follows gearmand 1.1.20
(protocol.md §3) except where gearmand loses jobs, hangs clients or crashes; each such
difference is named where it is implemented.
"""

from __future__ import annotations

import random
import sys
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gearmanpy.protocol import replies
from gearmanpy.protocol.limits import MAX_UNIQUE_SIZE
from gearmanpy.protocol.numbers import parse_c_int
from gearmanpy.server.attempts import Attempts
from gearmanpy.server.broadcast import Broadcasts
from gearmanpy.server.durability import Durability
from gearmanpy.server.failures import Failures, Sweeper
from gearmanpy.server.handles import default_handle_prefix, handles
from gearmanpy.server.jobs import (
    FINISHED,
    GRAB_ALL,
    GRAB_PLAIN,
    LATENCY_BUCKETS,
    QUEUED,
    RUNNING,
    SCHEDULED,
    Function,
    Holdings,
    Job,
    JobCounters,
    Peer,
    ReplySink,
)
from gearmanpy.server.jobs import coalesce_key as _coalesce_key
from gearmanpy.server.kept import DeadSet, KeptResults
from gearmanpy.server.operations import OperatorActions
from gearmanpy.server.policy import Policies
from gearmanpy.server.replay import Replay
from gearmanpy.server.results import WorkResults
from gearmanpy.store.interface import IJobStore, Priority

HIGH, NORMAL, LOW = int(Priority.HIGH), int(Priority.NORMAL), int(Priority.LOW)

#: A bound that is never reached: what 0 (no limit) means in the submission loop.
_NO_LIMIT = sys.maxsize


@attrs.define(eq=False)
class JobServerCore(WorkResults, OperatorActions, Attempts, Failures, Broadcasts, Replay):
    """All the job server's state and rules, driven by method calls from protocols.

    :ivar clock: source of time for epoch jobs and CAN_DO_TIMEOUT.
    :ivar store: where background jobs are made durable, or None to keep them in memory.
    :ivar handle_prefix: handles are ``<prefix>:<n>``, or ``<prefix>:<boot>-<n>`` once
        :meth:`set_boot` has been called (:mod:`~gearmanpy.server.handles`).
    :ivar job_retries: the most times a job is run when its worker is lost or times out
        (``--job-retries``, gearmand 1.1.20's meaning); 0 or None means no limit.
    :ivar worker_wakeup: NOOPs sent per queued job; 0 wakes every sleeping worker.
    :ivar round_robin: alternate between a worker's functions instead of newest first.
    :ivar exceptions: every connection starts with the ``exceptions`` option on.
    :ivar max_queued_jobs: live jobs the server holds at most (0: no limit); past it,
        submissions get ``ERROR QUEUE_ERROR`` as a full ``maxqueue`` gives.
    :ivar max_queued_bytes: payload bytes of live jobs the server holds at most (0: no limit).
    :ivar max_queues: ``maxqueue`` limits per function name (per priority, high first),
        applied when the function appears, and kept when it is dropped and comes back.
    :ivar on_shutdown: called with ``graceful`` when a trusted peer sends ``shutdown``.
    :ivar policies: the failure policy per function (retries, timeouts, throttles, kept
        results; :mod:`~gearmanpy.server.policy`).
    :ivar dead: background jobs that failed for good; ``kept``: kept results.
    :ivar random: numbers in [0, 1) for the retries' jitter.
    """

    log = Logger()

    clock: IReactorTime
    #: Fixed once the core exists: the durability rules are built on it.
    store: IJobStore | None = attrs.field(default=None, on_setattr=attrs.setters.frozen)
    handle_prefix: bytes = attrs.field(factory=default_handle_prefix)
    job_retries: int | None = None
    worker_wakeup: int = 0
    round_robin: bool = False
    exceptions: bool = False
    max_queued_jobs: int = 0
    max_queued_bytes: int = 0
    max_queues: dict[bytes, list[int]] = attrs.field(factory=dict)
    on_shutdown: Callable[[bool], None] | None = None
    policies: Policies = attrs.field(factory=Policies)
    dead: DeadSet = attrs.field(factory=DeadSet)
    kept: KeptResults = attrs.field(factory=KeptResults)
    random: Callable[[], float] = random.random
    functions: dict[bytes, Function] = attrs.field(factory=dict)
    jobs: dict[bytes, Job] = attrs.field(factory=dict)
    peers: list[Peer] = attrs.field(factory=list)
    counters: JobCounters = attrs.field(factory=JobCounters, on_setattr=attrs.setters.frozen)
    #: What the live jobs hold (``max_queued_bytes`` bounds its payload bytes).
    held: Holdings = attrs.field(factory=Holdings, on_setattr=attrs.setters.frozen)
    #: When a refusal past the server-wide bounds was last logged.
    _full_logged: float = attrs.field(init=False, default=float("-inf"))
    #: ``(handle, JOB_CREATED reply)`` for ``<prefix>:1``, ``<prefix>:2``... (see
    #: :func:`~gearmanpy.server.handles.handles`).
    _handles: Iterator[tuple[bytes, bytes]] = attrs.field(init=False)
    #: This start's boot component (:meth:`set_boot`), None for a core on its own.
    boot: int | None = attrs.field(init=False, default=None)
    #: Keeps background jobs in ``store`` (None without a store).
    _durable: Durability | None = attrs.field(init=False, default=None)
    #: Set by a graceful shutdown: fires when no job is left.
    _drained: Deferred[None] | None = None
    #: The timer that forgets expired dead jobs and results (server/failures.py).
    _sweeper: Sweeper = attrs.field(init=False, factory=Sweeper)
    #: Cluster hooks (server/cluster.py): a function a worker found nothing of (NO_JOB,
    #: PRE_SLEEP); a foreground job the cluster shares (True: the hook answers its
    #: submitter); GET_STATUS of jobs held elsewhere (server/results.py).
    on_idle: Callable[[Function], None] | None = None
    on_foreground: Callable[[Job, Peer], bool] | None = None
    on_status: Callable[[Peer, bytes, bool], bool] | None = None

    def __attrs_post_init__(self) -> None:
        self._handles = handles(self.handle_prefix, None, self.clock.seconds)
        if self.store is not None:
            self._durable = Durability(self.store, self._admit, self._remove, self.counters)

    # -- connections ----------------------------------------------------------------

    def connect(
        self,
        out: ReplySink,
        close: Callable[[], None],
        ip: bytes = b"-",
        fd: int = -1,
        trusted: bool = False,
    ) -> Peer:
        """Register a new connection and return its :class:`Peer`.

        :param out: where the peer's replies go, in order.
        :param close: drops the connection (after a protocol error, or ``shutdown``).
        """
        peer = Peer(out, close, ip=ip, fd=fd, trusted=trusted, exceptions=self.exceptions)
        self.peers.append(peer)
        return peer

    def disconnect(self, peer: Peer) -> None:
        """Forget a connection: requeue its running jobs and detach it from jobs it awaits."""
        if not peer.connected:
            return
        peer.connected = False
        peer.out.stop()
        self.peers.remove(peer)
        # Unregister first: the requeue wakes workers, and must not pick this one.
        self._unregister_all(peer)
        self._drop_deliveries(peer)
        for job in list(peer.worker_jobs):
            self._lose_worker(job)
        for job in peer.client_jobs:
            job.clients = [c for c in job.clients if c is not peer] or ()
            if not job.clients and not job.background and job.state == QUEUED:
                # Nobody waits for it any more: discarded when a worker reaches it (§3.9).
                job.ignored = True
                self._forget_unique(job)
        peer.client_jobs.clear()

    # -- functions --------------------------------------------------------------------

    def function(self, name: bytes) -> Function:
        """Return the function record for ``name``, creating it on first mention (with the
        ``maxqueue`` limits set for that name before it existed)."""
        f = self.functions.get(name)
        if f is None:
            f = self.functions[name] = Function(name)
            limits = self.max_queues.get(name)
            if limits is not None:
                f.max_queue = list(limits)
            self._apply_policy(f)
        return f

    def can_do(self, peer: Peer, name: bytes, timeout: bytes | None = None) -> None:
        """CAN_DO / CAN_DO_TIMEOUT: register ``peer`` for ``name``.

        A timeout (milliseconds, ASCII) of 0, negative, junk or past 64 bits means no limit;
        1-999 ms are raised to one second, as in gearmand.
        """
        f = self.function(name)
        peer.abilities.append(f)
        f.workers.append(peer)
        if peer.sleeping and not peer.noop_sent:
            f.sleepers[peer] = None
        if f.orphans or f.unstarted:
            self._offer(f, peer)
        if timeout is not None:
            ms = parse_c_int(timeout)  # None if it overflows: no limit either
            if ms is not None and ms > 0:
                peer.timeouts[name] = max(ms, 1000) / 1000.0
            else:
                peer.timeouts.pop(name, None)
        else:
            peer.timeouts.pop(name, None)

    def cant_do(self, peer: Peer, name: bytes) -> None:
        """CANT_DO: drop every registration of ``name``; requeue its jobs on this peer."""
        f = self.functions.get(name)
        if f is None or f not in peer.abilities:
            return
        peer.abilities = [a for a in peer.abilities if a is not f]
        f.workers = [w for w in f.workers if w is not peer]
        f.sleepers.pop(peer, None)
        peer.timeouts.pop(name, None)
        self._drop_deliveries(peer, f)
        for job in [j for j in peer.worker_jobs if j.function is f]:
            self._lose_worker(job)

    def reset_abilities(self, peer: Peer) -> None:
        """RESET_ABILITIES: drop every registration; requeue every job the peer runs."""
        self._unregister_all(peer)
        self._drop_deliveries(peer)
        for job in list(peer.worker_jobs):
            self._lose_worker(job)

    def _unregister_all(self, peer: Peer) -> None:
        for f in set(peer.abilities):
            f.workers = [w for w in f.workers if w is not peer]
            f.sleepers.pop(peer, None)
        peer.abilities = []
        peer.timeouts.clear()

    # -- submission -------------------------------------------------------------------

    def submit(
        self,
        peer: Peer,
        name: bytes,
        unique: bytes,
        data: bytes,
        priority: int = NORMAL,
        background: bool = False,
        when: int = 0,
        reducer: bytes = b"",
    ) -> None:
        """Any SUBMIT_*: create or join a job and answer JOB_CREATED or ERROR, in order."""
        self.submit_batch(peer, priority, background, ((name, unique, data),), when, reducer)

    # Long: the submission hot path, each job's steps written out in one loop with the
    # lookups hoisted (``python benchmarks/inprocess_bench.py S1`` shows what that saves).
    def submit_batch(
        self,
        peer: Peer,
        priority: int,
        background: bool,
        batch: Iterable[Sequence[bytes]],
        when: int = 0,
        reducer: bytes = b"",
    ) -> None:
        """Several submissions of one type from one peer, in order, each as :meth:`submit`.

        ``batch`` holds (function, unique, payload) per job. A client that pipelines
        submissions sends runs of them, and the decoder hands a run over in one call: the
        per-job work is this loop's body, with the lookups that do not change hoisted out of
        it.
        """
        functions = self.functions
        jobs = self.jobs
        handles = self._handles
        counters = self.counters
        durable = self._durable
        send = peer.out.send
        max_jobs = self.max_queued_jobs or _NO_LIMIT
        max_bytes = self.max_queued_bytes or _NO_LIMIT
        held = self.held
        kind = priority * 2 + background  # Function.submitted_by's index
        now = self.clock.seconds()
        last_name = None
        f: Function | None = None
        broadcast = False
        share = self.on_foreground
        for name, unique, data in batch:
            if (unique or reducer) and (
                len(unique) > MAX_UNIQUE_SIZE or len(reducer) > MAX_UNIQUE_SIZE
            ):  # (both empty is the common case: two truth tests instead of two len calls)
                send(replies.UNIQUE_TOO_LARGE)
                continue
            if f is None or name != last_name:
                f = functions.get(name)
                if f is None:
                    f = self.function(name)
                last_name = name
                broadcast = f.broadcast
            key = _coalesce_key(unique, data) if unique else None  # no call, commonly
            if key is not None:
                existing = f.uniques.get(key)
                if existing is not None:
                    self._join(peer, existing, background)
                    continue
            limit = f.max_queue[priority]
            if limit and f.total() >= limit:
                counters.refused += 1
                send(replies.QUEUE_FULL)
                continue
            size = len(data)
            if len(jobs) >= max_jobs or held.payload_bytes + size > max_bytes:
                self._server_full()
                send(replies.QUEUE_FULL)
                continue
            held.payload_bytes += size
            # From here on the common steps are written out rather than called (_enqueue).
            handle, created = next(handles)
            job = Job(handle, f, unique, data, priority, background, when, reducer, key)
            job.submitted_at = now
            jobs[handle] = job
            if key is not None:
                f.uniques[key] = job
            counters.submitted += 1
            f.counters.submitted += 1
            f.submitted_by[kind] += 1
            if background:
                if durable is not None:
                    durable.persist(job, peer)
                    continue
            else:
                job.clients = [peer]
                peer.client_jobs.add(job)
                if share is not None and share(job, peer):  # False: it runs here
                    continue
            send(created)
            if when or broadcast:
                self._admit(job)
            else:
                job.state = QUEUED
                job.since = now
                f.queues[priority].append(job)
                if f.sleepers:
                    self._wake(f)

    def set_durability(self, durable: Durability) -> None:
        """Keep background jobs through ``durable`` (the cluster's rules) from now on."""
        self._durable = durable

    def drop_queued(self, job: Job) -> None:
        """Take a queued job out of its queue and forget it (the cluster gives it back)."""
        job.function.queues[job.priority].remove(job)
        self._remove(job)

    def new_handle(self) -> bytes:
        """The next job handle."""
        return next(self._handles)[0]

    def _server_full(self) -> None:
        """Count a submission refused past ``max_queued_jobs``/``max_queued_bytes``, and say
        so in the log at most once a minute (a full server refuses thousands a second)."""
        self.counters.refused += 1
        now = self.clock.seconds()
        if now >= self._full_logged + 60:
            self._full_logged = now
            self.log.warn(
                "refusing submissions: the server holds {jobs} jobs of {size} payload bytes "
                "(limits: {max_jobs} jobs, {max_bytes} bytes; 0 = none)",
                jobs=len(self.jobs),
                size=self.held.payload_bytes,
                max_jobs=self.max_queued_jobs,
                max_bytes=self.max_queued_bytes,
            )

    def _join(self, peer: Peer, job: Job, background: bool) -> None:
        """Attach a submission to a live job with the same coalescing key (§3.3)."""
        self.counters.coalesced += 1
        job.function.counters.coalesced += 1
        if not background:
            if job.clients:
                job.clients.append(peer)  # type: ignore[union-attr]
            else:
                job.clients = [peer]
            peer.client_jobs.add(job)
            job.ignored = False
        elif not job.background:
            # gearmand leaves such a job in memory, to die with its foreground clients
            # (quirk 11); a background submitter was promised it would run, so promote it.
            job.background = True
            if self._durable is not None and job.state != FINISHED:
                self._durable.persist(job, peer, promote=True)
                return
        if job.held_replies is not None:
            # A store write for this job is in flight: answer when it is durable.
            job.held_replies.append((peer, peer.out.hold()))
            return
        peer.out.send(replies.job_created(job.handle))

    def _admit(self, job: Job) -> None:
        """Put an acknowledged job where it belongs: queued now, or scheduled (epoch)."""
        if job.when:
            delay = job.when - self.clock.seconds()
            if delay > 0:
                job.state = SCHEDULED
                job.function.scheduled += 1
                # gearmand 1.1.20 never wakes workers at the epoch and lets future jobs
                # block lower priorities (quirk 5); a timer queues the job when it is due.
                job.timer = self.clock.callLater(delay, self._due, job)
                return
        self._enqueue(job)

    def _due(self, job: Job) -> None:
        job.timer = None
        job.function.scheduled -= 1
        self._enqueue(job)

    def _enqueue(self, job: Job) -> None:
        """Append a job to the tail of its priority queue and wake sleeping workers (or, for a
        broadcast function, deliver it to each of them)."""
        f = job.function
        if f.broadcast and job.broadcast is None:
            self._start_broadcast(job)
            return
        job.state = QUEUED
        job.since = self.clock.seconds()
        f.queues[job.priority].append(job)
        if f.sleepers:
            self._wake(f)

    def _wake(self, f: Function) -> None:
        """Send NOOP to sleeping workers of ``f``, at most one per GRAB cycle (§3.5).

        Every sleeper with ``worker_wakeup`` 0, else that many, longest asleep first (so
        successive jobs wake successive workers).
        """
        sleepers = f.sleepers
        if not sleepers or (f.throttle is not None and self._throttled(f)):
            return
        limit = self.worker_wakeup
        sent = 0
        for w in list(sleepers):
            del sleepers[w]
            if w.sleeping and not w.noop_sent and w.connected and f in w.abilities:
                w.noop_sent = True
                w.out.send(replies.NOOP)
                sent += 1
                if limit and sent >= limit:
                    return

    # -- workers ----------------------------------------------------------------------

    def grab(self, peer: Peer, grab_type: int = GRAB_PLAIN) -> None:
        """GRAB_JOB / GRAB_JOB_UNIQ / GRAB_JOB_ALL: assign the next job or say NO_JOB."""
        peer.sleeping = False
        peer.noop_sent = False
        if peer.deliveries is not None and self._take_delivery(peer, grab_type):
            return
        abilities = peer.abilities
        idx = len(abilities)
        while idx:  # the newest registration first
            idx -= 1
            f = abilities[idx]
            if f.throttle is not None and self._throttled(f):
                continue  # as if its queue were empty (NOOP when it may run one again)
            job = self._take(f) if not peer.superseded else self._take_for(f, peer)
            if job is not None:
                if self.round_robin and len(abilities) > 1:
                    abilities.pop(idx)
                    abilities.insert(0, f)
                self._assign(peer, job, grab_type)
                if self.on_idle is not None and not f.queued():  # the cluster claims more
                    self.on_idle(f)
                return
        if self.on_idle is not None:
            for f in abilities:
                self.on_idle(f)
        peer.out.send(replies.NO_JOB)

    def _take(self, f: Function) -> Job | None:
        """Pop the first live job of the highest non-empty priority of ``f``."""
        for q in f.queues:
            while q:
                job = q.popleft()
                if job.ignored:
                    self._discard(job)
                    continue
                return job
        return None

    def _discard(self, job: Job) -> None:
        """Free an orphaned or cancelled job that a worker reached (§3.4 step 4)."""
        self.counters.discarded += 1
        self._remove(job)
        self._check_drained()

    def _assign(self, peer: Peer, job: Job, grab_type: int) -> None:
        """Hand ``job`` to ``peer`` in the JOB_ASSIGN variant its GRAB asked for."""
        job.state = RUNNING
        job.worker = peer
        f = job.function
        f.running += 1
        now = self.clock.seconds()
        waited, seconds = f.waited, now - job.since  # Latencies.observe, written out
        waited.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        waited.total += seconds
        job.since = now
        peer.worker_jobs[job] = None
        if f.throttle is not None:
            f.throttle.take(now)
        if grab_type == GRAB_PLAIN:
            out = replies.job_assign(job.handle, job.function.name, job.data)
        elif grab_type == GRAB_ALL and job.reducer:
            out = replies.job_assign_all(
                job.handle, job.function.name, job.unique, job.reducer, job.data
            )
        else:
            out = replies.job_assign_uniq(job.handle, job.function.name, job.unique, job.data)
        if job.timer is not None:  # a requeued job's wake-up (server/attempts.py)
            job.timer.cancel()
            job.timer = None
        timeout = (peer.timeouts.get(f.name) if peer.timeouts else None) or f.default_timeout
        if timeout:
            # One timer per job, cancelled when the job ends (gearmand keeps one stale timer
            # per connection that later requeues freed jobs).
            job.timer = self.clock.callLater(timeout, self._timed_out, job, timeout)
        if peer.attempts:
            peer.out.send(replies.option_res((b"attempt=%d" % (job.retries + 1),)))
        peer.out.send(out)

    def pre_sleep(self, peer: Peer) -> None:
        """PRE_SLEEP: NOOP at once if work is waiting, else mark the peer asleep."""
        if peer.deliveries is not None and self._has_deliveries(peer):
            peer.noop_sent = True
            peer.sleeping = False
            peer.out.send(replies.NOOP)
            return
        for f in peer.abilities:
            if f.throttle is not None and self._throttled(f):
                continue
            if f.queued() if not peer.superseded else self._grabbable(f, peer):
                peer.noop_sent = True
                peer.sleeping = False
                peer.out.send(replies.NOOP)
                return
        peer.sleeping = True
        if not peer.noop_sent:
            for f in peer.abilities:
                f.sleepers[peer] = None
        if self.on_idle is not None:
            for f in peer.abilities:
                self.on_idle(f)

    def _unassign(self, job: Job) -> None:
        if job.timer is not None and job.state == RUNNING:
            job.timer.cancel()
            job.timer = None
        if job.worker is not None:
            job.worker.worker_jobs.pop(job, None)
            job.worker = None
        if job.state == RUNNING:
            f = job.function
            f.running -= 1
            if f.throttle is not None:
                self._capacity_back(f)

    # -- ending jobs ----------------------------------------------------------------------

    def _finish(self, job: Job) -> None:
        """Remove a job that ended for good, and its persistent row."""
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        if job.state == RUNNING:  # a final result (or the last failed attempt)
            ran, seconds = job.function.ran, self.clock.seconds() - job.since  # (observe)
            ran.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
            ran.total += seconds
        self._remove(job)
        if job.persisted:
            self._store_done(job)
        if self._drained is not None:
            self._check_drained()

    def _store_done(self, job: Job) -> None:
        """Remove the stored row of ``job`` (the caller knows it is persisted)."""
        if self._durable is not None:
            self._durable.done(job)

    def _forget_unique(self, job: Job) -> None:
        if job.key is not None and job.function.uniques.get(job.key) is job:
            del job.function.uniques[job.key]

    def _remove(self, job: Job) -> None:
        """Mark ``job`` finished and forget it: by handle, by unique, and by its clients."""
        job.state = FINISHED
        if self.jobs.pop(job.handle, None) is not None:
            self.held.payload_bytes -= len(job.data)
        if job.key is not None:
            self._forget_unique(job)
        if job.clients:
            for c in job.clients:
                c.client_jobs.discard(job)
            job.clients = ()

    # -- start-up and shut-down -------------------------------------------------------------

    def set_boot(self, boot: int) -> None:
        """Hand out ``<prefix>:<boot>-1``, ``-2``... from now on (the service calls it at start,
        before :meth:`replay`, with a ``boot`` no earlier start of this store had).

        :raises ValueError: if ``boot`` is negative or too long (see
            :mod:`~gearmanpy.server.handles`).
        """
        self._handles = handles(self.handle_prefix, boot, self.clock.seconds)
        self.boot = boot

    def tables(self) -> list[dict[Any, Any]]:
        """The tables that grow with the queue and never shrink by themselves: the jobs by
        handle and each function's uniques (:class:`~gearmanpy.server.memory.MemoryReleaser`
        rebuilds them once a queue has drained)."""
        return [self.jobs, *(f.uniques for f in self.functions.values())]

    def when_drained(self) -> Deferred[None]:
        """Fire once no job is pending, scheduled, queued or running."""
        if self._drained is None:
            self._drained = Deferred()
        d = self._drained
        self._check_drained()
        return d

    def _check_drained(self) -> None:
        if self._drained is not None and not self.jobs:
            d, self._drained = self._drained, None
            d.callback(None)

    def shutdown(self, graceful: bool) -> None:
        """Ask the service to stop (the ``shutdown`` admin command)."""
        if self.on_shutdown is not None:
            self.on_shutdown(graceful)

    def stop_timers(self) -> None:
        """Cancel every pending timer (epoch jobs, CAN_DO_TIMEOUT, the failure policy's)
        when the server stops."""
        self.stop_policy_timers()
        for job in self.jobs.values():
            if job.timer is not None and job.timer.active():
                job.timer.cancel()
            job.timer = None
