# -*- test-case-name: tests.test_pg_cluster -*-
"""One node of a cluster of gearmanpy servers sharing one PostgreSQL queue (``--cluster``).

The core runs unchanged; :class:`ClusterNode` changes where background jobs live:

* a background submission becomes an unclaimed row (:class:`ClusterDurability`); its
  submitter gets JOB_CREATED once the row is committed, with the handle of the live job it
  joined if another node's submission with the same function and unique got there first, and
  the job leaves this node's memory;
* when a worker here finds nothing (the core's ``on_idle`` hook: NO_JOB, PRE_SLEEP), on a
  NOTIFY for one of its functions, and on a poll timer (notifications can be lost, and do not
  pass PgBouncer in transaction mode), the node claims a small batch of due rows and puts them
  into the core's queues as replay does, where they wake sleeping workers as any job does;
* claimed rows that no worker here starts within ``hold`` seconds go back to the cluster, and
  so do all unstarted ones at a clean stop (the started ones are requeued at once);
* a lease tick every third of ``lease`` renews this node's lease, and requeues the rows of
  nodes whose lease expired (once per row, whichever node gets there first).

A foreground job runs on the node it was submitted to when a worker of its function is
connected there, as without ``--cluster``; otherwise it is shared, and its client waits here
for the packets of whichever node runs it (:mod:`~gearmanpy.server.cluster_results`).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from gearmanpy.protocol import replies
from gearmanpy.server.cluster_broadcast import ClusterBroadcasts
from gearmanpy.server.cluster_results import ClusterSink, SharedResults, coalesce_column
from gearmanpy.server.cluster_throttle import ClaimTimers, throttled_claim
from gearmanpy.server.core import JobServerCore
from gearmanpy.server.durability import Durability, stored_job
from gearmanpy.server.jobs import QUEUED, Broadcast, Function, Job, Peer, coalesce_key
from gearmanpy.store.interface import DeadJob, KeptResult, StoredJob
from gearmanpy.store.pg_cluster_throttle import Limits


class ClusterQueue(Protocol):
    """What a node needs of the shared queue (:class:`~gearmanpy.store.pg_cluster.ClusterStore`)."""

    def submit(
        self, job: StoredJob, coalesce: bytes, limit: int = 0, total: int = 0
    ) -> Deferred[Any]:
        """Insert an unclaimed row, or join the live one with ``coalesce``; refuse it
        (``full``) once its function has ``limit`` queued rows, or the table ``total``
        (``--max-queued-jobs``; 0: no limit)."""

    def finish(self, key: str, attempt: int, final: bytes = b"") -> Deferred[None]:
        """Delete a row this node holds for ``attempt``."""

    def claim(self, function: bytes, n: int, limits: Limits | None = None) -> Deferred[list[Any]]:
        """Claim up to ``n`` due rows of ``function`` (within its throttle's ``limits``)."""

    def release(self, pairs: list[tuple[str, int]]) -> Deferred[int]:
        """Give back claimed, unstarted rows."""

    def tick(self, lease: float, held: list[str] | None = None) -> Deferred[Any]:
        """Renew the lease; requeue the rows of expired nodes (and, with ``held``, give
        back the rows held here that are not in it)."""

    def leave(self, pairs: list[tuple[str, int]]) -> Deferred[int]:
        """Release ``pairs``, requeue the rest, drop the lease."""

    def share_tick(self, name: str, tick: int, job: StoredJob, coalesce: bytes) -> Deferred[bool]:
        """Claim a recurring job's tick and queue its run unclaimed (True if added)."""

    def fan_out(self, job: StoredJob, key: str, handle: bytes) -> Deferred[list[Any]]:
        """Write a broadcast's row for each other node serving its function, waited for here."""

    # Foreground jobs and status (server/cluster_results.py, store/pg_cluster_results.py).

    owner: str

    def share(self, job: StoredJob, coalesce: bytes) -> Deferred[Any]:
        """Insert a foreground row waited for here, or wait for the live one."""

    def event(self, handle: bytes, data: bytes) -> Deferred[None]:
        """Publish a shared job's packet to its waiters."""

    def finish_shared(self, key: str, attempt: int, handle: bytes, data: bytes) -> Deferred[Any]:
        """Delete a shared job's row, then publish its final packet."""

    def settle(self, handle: bytes, data: bytes) -> Deferred[None]:
        """Publish a background row's final packet to the clients that joined it."""

    def take_events(self) -> Deferred[list[tuple[bytes, bytes]]]:
        """The events waiting for this node."""

    def progress(self, key: str, numerator: int, denominator: int) -> Deferred[None]:
        """Keep a row's WORK_STATUS."""

    def status(self, handle: bytes) -> Deferred[Any]:
        """GET_STATUS fields of a row."""

    def status_unique(self, unique: bytes) -> Deferred[Any]:
        """GET_STATUS_UNIQUE fields of a row."""

    def rewait(self, job: StoredJob, coalesce: bytes) -> Deferred[Any]:
        """Wait again for a shared job after this node's lease lapsed (the handle waited)."""


@attrs.define(eq=False)
class ClusterDurability(Durability):
    """The store contract with the cluster's rules: a new background job is a shared row,
    acknowledged when committed and then held by whichever node claims it."""

    node: ClusterNode = attrs.field(kw_only=True)

    def persist(self, job: Job, peer: Peer, promote: bool = False) -> None:
        """Write a new background job as an unclaimed row, refused with QUEUE_ERROR if its
        function's ``maxqueue`` limit, or ``--max-queued-jobs``, counts that many queued rows
        in the table (a promoted foreground job, which this node runs already, is written as
        held by this node)."""
        if promote:
            super().persist(job, peer, promote)
            return
        start = self.begin(job, peer)

        def durable(result: Any) -> None:
            self.in_flight -= 1
            job.function.acked.observe(self.outage.now() - start)
            self.outage.succeeded()
            if result.full:  # the function's queued rows, every node's, reached maxqueue
                self.counters.refused += 1
                self.remove(job)
                self.release_held(job, replies.QUEUE_FULL)  # and any that joined it here
                return
            if not result.created:
                self.counters.coalesced += 1
                job.function.counters.coalesced += 1
            clients = list(job.clients)
            self.release_held(job, replies.job_created(result.handle))
            self.remove(job)  # held by whichever node claims it
            if clients:  # foreground submissions joined it while the row was written
                self.node.wait_on(job, clients, result.handle)
            self.node.submitted(job.function)

        def refused(failure: Failure) -> None:
            self.in_flight -= 1
            self.outage.failed(failure, job_refused=True)
            self.counters.refused += 1
            self.remove(job)
            self.release_held(job, replies.QUEUE_ERROR)

        limit = job.function.max_queue[job.priority]
        total = self.node.core.max_queued_jobs  # counts every node's queued rows too
        d = self.node.store.submit(stored_job(job), coalesce_column(job.key), limit, total)
        d.addCallbacks(durable, refused)

    def fan_out(self, record: Broadcast) -> None:
        """A broadcast started here goes to the other nodes' workers too (cluster_broadcast)."""
        self.node.fan_out(record)

    def keep(self, job: Job, reducer: bytes) -> None:
        """No row for a broadcast's delivery: if this node dies, the node that claims the
        broadcast's requeued row starts it again (cluster_broadcast.py)."""

    def done(self, job: Job) -> None:
        """Delete the row of a job that ended, if this node still holds it for the attempt
        it ran (a superseded attempt's result changes nothing); claim the next batch of its
        function if its queue here is at the low-water mark."""
        self.node.finish_row(job)
        self.node.finished(job.function)

    def reschedule(self, job: Job) -> None:
        """Record the retry: a throttled function's job waits for it unclaimed in the table
        (:meth:`ClusterNode.give_back_retry`), any other here, where its next attempt's
        packets reach the clients that joined it."""
        super().reschedule(job)
        if not self.node.give_back_retry(job):
            self.node.reattach(job)

    def bury(self, dead: DeadJob) -> None:
        """Move a job's row to the dead set (this node no longer holds it). The dead table
        is the cluster's dead set: the core's in-memory one keeps nothing (cluster_dead.py)."""
        self.node.settle_row(dead.job.key)
        self.node.forget_key(dead.job.key)
        super().bury(dead)
        self.node.core.dead.remove(dead.job.handle)

    def keep_result(self, job: Job, result: KeptResult) -> None:
        """Forget the job's row and keep its result."""
        self.node.settle_row(job.store_key)
        self.node.forget(job)
        super().keep_result(job, result)


@attrs.define(eq=False)
class ClusterNode(ClusterBroadcasts, SharedResults):
    """Claims, holds and gives back the cluster's jobs for one core.

    :ivar poll: seconds between polls for due work (the fallback for lost notifications).
    :ivar lease: seconds a node's lease lasts; it is renewed every third of that.
    :ivar batch: most unstarted rows held here for one function (so most claimed at once).
    :ivar hold: seconds a claimed job may wait here for a worker before it goes back.

    Claims are pipelined: while the last claim of a function came back full (there may be
    more rows), the next one goes out when its queue here falls to half its window, so that
    busy workers find the next batch queued instead of waiting a round trip for it. The
    window, the unstarted jobs held here for a function, is what its workers start in
    ``soon`` seconds (at the rate they ended jobs between its last two claims), doubled
    when a claim sent at the low-water mark came back full after the queue had run dry,
    and never more than ``batch`` or ``per_worker`` jobs per worker (at least one per
    worker): a node with slow or few workers does not hold jobs that another node's idle
    workers could run.
    """

    log = Logger()

    core: JobServerCore
    store: ClusterQueue
    clock: IReactorTime
    poll: float = 1.0
    lease: float = 10.0
    batch: int = 64
    hold: float = 5.0
    #: Most unstarted jobs held per worker of a function (the window's bound besides batch).
    per_worker: int = 16
    #: The window holds what the workers start in this many seconds (see above).
    soon: float = 0.1
    #: The attempt each claimed row is held for, and when it was claimed, by row key.
    _attempts: dict[str, int] = attrs.field(init=False, factory=dict)
    _claimed: dict[str, tuple[float, Job]] = attrs.field(init=False, factory=dict)
    #: Claimed jobs' sinks by row key; shared foreground jobs waited for here, by handle.
    _sinks: dict[str, ClusterSink] = attrs.field(init=False, factory=dict)
    _waiting: dict[bytes, Job] = attrs.field(init=False, factory=dict)
    #: Functions with a claim in flight, and those to claim for again when it answers.
    _claiming: set[bytes] = attrs.field(init=False, factory=set)
    _again: set[bytes] = attrs.field(init=False, factory=set)
    #: Per function: its window (unset until its first claim answers), the jobs of it that
    #: ended here (a running count), when its last claim answered and that count then, and
    #: whether its last claim came back full.
    _window: dict[bytes, int] = attrs.field(init=False, factory=dict)
    _ended: dict[bytes, int] = attrs.field(init=False, factory=dict)
    _mark: dict[bytes, tuple[float, int]] = attrs.field(init=False, factory=dict)
    _more: set[bytes] = attrs.field(init=False, factory=set)
    #: Functions whose claim in flight went out before their queue here ran dry.
    _early: set[bytes] = attrs.field(init=False, factory=set)
    #: A lease tick waits for the claims in flight to answer before it reconciles the rows
    #: held here (and new claims wait for that tick to be queued); see _lease_tick.
    _reconcile: bool = attrs.field(init=False, default=False)
    _loops: list[LoopingCall] = attrs.field(init=False, factory=list)
    #: Claims again for throttled functions when the cluster's throttle allows (cluster_throttle).
    _retimed: ClaimTimers = attrs.field(
        init=False, default=attrs.Factory(lambda s: ClaimTimers(s.clock, s._claim), True)
    )
    _stopped: bool = attrs.field(init=False, default=False)

    def install(self) -> None:
        """Put the cluster's rules into the core (before it takes any submission)."""
        core = self.core
        durable = ClusterDurability(
            core.store,  # type: ignore[arg-type]
            core._admit,
            core._remove,
            core.counters,
            node=self,
        )
        core.set_durability(durable)
        core.on_idle = self.idle
        core.on_foreground = self.share
        core.on_status = self.status
        core._reapply_policies()  # the claims take the rates' tokens (cluster_throttle.py)

    def start(self) -> None:
        """Start the lease and poll timers."""
        for interval, tick in ((self.lease / 3, self._lease_tick), (self.poll, self._poll)):
            loop = LoopingCall(tick)
            loop.clock = self.clock
            loop.start(interval, now=True)
            self._loops.append(loop)

    def stop(self) -> Deferred[Any]:
        """Stop the timers, take the unstarted claimed jobs out of the core, and give them
        and the started ones back to the cluster; fires when that is committed."""
        self._stopped = True
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        self._retimed.stop()
        pairs = self._take_back(lambda since: True)
        d = self.store.leave(pairs)

        def failed(failure: Failure) -> None:
            self.log.warn(
                "could not give this node's jobs back to the cluster ({error}); the other"
                " nodes requeue them when its lease expires",
                error=" ".join(str(failure.value).split()),
            )

        d.addErrback(failed)
        return d

    # -- what the core and the listener call --------------------------------------------

    def idle(self, f: Function) -> None:
        """The queue of ``f`` here ran dry (a worker found nothing, or took the last job):
        claim what its window has room for (:meth:`_window_of`)."""
        if not f.queued():
            self._claim(f)

    def submitted(self, f: Function) -> None:
        """A background job of ``f`` was committed: claim it at once if a worker sleeps
        here (the NOTIFY tells the other nodes)."""
        if f.sleepers and not f.queued():
            self._claim(f)

    def heard(self, name: bytes | None) -> None:
        """A NOTIFY for function ``name`` (None: some may have been missed)."""
        if name is None:
            self._poll()
            return
        f = self.core.functions.get(name)
        if f is not None and f.sleepers and not f.queued():
            self._claim(f)

    def finished(self, f: Function) -> None:
        """A job of ``f`` ended here: count it (the window follows what the workers run),
        and claim the next batch if the last came back full and the queue here is at the
        low-water mark (half the window)."""
        name = f.name
        self._ended[name] = self._ended.get(name, 0) + 1
        if name in self._more and name not in self._claiming:
            if f.queued() <= self._window_of(f) // 2:
                self._claim(f)

    def forget(self, job: Job) -> int:
        """Stop tracking ``job``'s row; return the attempt this node held it for."""
        return self.forget_key(job.store_key)

    def forget_key(self, key: str | None) -> int:
        """Stop tracking the row ``key``; return its attempt (0 for a row this node added)."""
        if key is None:
            return 0
        self._claimed.pop(key, None)
        self._sinks.pop(key, None)
        return self._attempts.pop(key, 0)

    # -- claims -------------------------------------------------------------------------

    def _claim(self, f: Function) -> None:
        """Claim for ``f`` what its window has room for (one claim in flight per function)."""
        if self._stopped or not f.workers:
            return
        if f.name in self._claiming or self._reconcile:
            self._again.add(f.name)
            return
        queued = f.queued()
        n = self._window_of(f) - queued
        if n <= 0:
            return
        n, limits = throttled_claim(f, n)  # the cluster's throttle (cluster_throttle.py)
        if not n:
            return
        self._claiming.add(f.name)
        if queued:
            self._early.add(f.name)
        d = self.store.claim(f.name, n, limits)
        d.addCallbacks(self._claimed_rows, self._claim_failed, (f, n), errbackArgs=(f,))

    def _bound(self, f: Function) -> int:
        """The most unstarted jobs of ``f`` this node may hold."""
        return min(self.batch, self.per_worker * len(f.workers))

    def _window_of(self, f: Function) -> int:
        """How many unstarted jobs of ``f`` to hold here now: at least one per worker,
        eight per worker before its first claim has answered."""
        window = self._window.get(f.name, 8 * len(f.workers))
        return min(self._bound(f), max(len(f.workers), window))

    def _adapt(self, f: Function, late: bool) -> int:
        """Set the window of ``f`` as its claim answers: what its workers here start in
        ``soon`` seconds at the rate they ended jobs since its last claim answered, or
        twice the window if this claim was ``late`` (sent with jobs queued, it came back
        full after the queue had run dry); return it."""
        now, ended = self.clock.seconds(), self._ended.get(f.name, 0)
        window = self._window_of(f)
        mark = self._mark.get(f.name)
        self._mark[f.name] = (now, ended)
        if mark is not None and now > mark[0]:
            rate = (ended - mark[1]) / (now - mark[0])
            self._window[f.name] = max(2 * window if late else 0, math.ceil(rate * self.soon))
        return self._window_of(f)

    def _claimed_rows(self, rows: list[Any], f: Function, n: int) -> None:
        """Queue the claimed rows here, and claim again if they may not have been all
        (at once for sleeping workers, at the low-water mark for busy ones)."""
        self._claiming.discard(f.name)
        if self._stopped:  # leave requeues them (the store sends it after every claim)
            return
        again = f.name in self._again
        self._again.discard(f.name)
        now = self.clock.seconds()
        full = len(rows) == n
        early = f.name in self._early
        self._early.discard(f.name)
        window = self._adapt(f, full and again and early)
        stored = []
        for claimed in rows:
            job = claimed.job
            self._attempts[job.key] = claimed.attempt
            # Due by the database's clock; a broadcast starts afresh (cluster_broadcast.py).
            stored.append(attrs.evolve(job, when=0, retries=0 if f.broadcast else job.retries))
        if stored:
            self.core.replay(stored)
            jobs = self.core.jobs
            for s, claimed in zip(stored, rows, strict=True):
                local = jobs.get(s.handle)
                if local is None or local.store_key != s.key or not local.background:
                    # Replay gave it a new handle: the handle is taken (by the job this node's
                    # client waits with for its own shared row, whose key it has too).
                    local = next(j for j in jobs.values() if j.store_key == s.key and j.background)
                self._claimed[s.key] = (now, local)
                self.attach_sink(local, claimed.foreground, s.handle, claimed.waited)
            self.start_claimed(f)
        if self._stopped:
            return
        self._retimed.after(f, rows)
        if full:
            self._more.add(f.name)
        else:
            self._more.discard(f.name)
        self._reconciled()
        if (full or again) and f.sleepers:
            self._claim(f)
        elif full and f.queued() <= window // 2:
            self._claim(f)

    def _claim_failed(self, failure: Failure, f: Function) -> None:
        """A claim failed (the database is away): the poll tries again."""
        self._claiming.discard(f.name)
        self._again.discard(f.name)
        self._early.discard(f.name)
        self._more.discard(f.name)
        self.log.debug("claim for {f} failed: {e}", f=f.name.decode(errors="replace"), e=failure)
        self._reconciled()

    def _poll(self) -> None:
        """Claim for every function a worker sleeps on; give back claims left unstarted."""
        for f in list(self.core.functions.values()):
            if f.sleepers and not f.queued():
                self._claim(f)
        if self._waiting:
            self._take_events()  # notifications may have been lost
        now = self.clock.seconds()
        stale = self._take_back(lambda since: now - since >= self.hold)
        if stale:
            self.store.release(stale).addErrback(self._release_failed)

    def _take_back(self, due: Any) -> list[tuple[str, int]]:
        """Take the claimed jobs still queued here since a time ``due`` accepts out of the
        core; return their ``(key, attempt)``."""
        pairs = []
        for key, (since, job) in list(self._claimed.items()):
            if job.state == QUEUED and due(since) and _only_sinks(job):
                self.core.drop_queued(job)
                pairs.append((key, self.forget_key(key)))
        return pairs

    def give_back_retry(self, job: Job) -> bool:
        """Give back the row of ``job``, a throttled function's job waiting for its retry
        (its new time written first, on the same writer), so that its next attempt is
        claimed when due under the cluster's throttle instead of started here past it; the
        row keeps its attempt count. False (it stays here) for a function without a
        throttle, or a job that a client of this node or another waits for."""
        key = job.store_key
        sink = self._sinks.get(key) if key is not None else None
        if key is None or not job.function.policy.throttled() or job.clients:
            return False
        if sink is not None and sink.publish:  # another node's clients wait for it
            return False
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        job.function.scheduled -= 1
        self.core._remove(job)
        self.store.release([(key, self.forget_key(key))]).addErrback(self._release_failed)
        return True

    def claim_tick(self, name: str, tick: int, job: StoredJob) -> Deferred[bool]:
        """Claim recurring job ``name``'s ``tick`` for the cluster and queue its run there,
        unclaimed, for whichever node's workers are free (the recurring jobs' ``shared``)."""
        coalesce = coalesce_column(coalesce_key(job.unique, job.data))
        return self.store.share_tick(name, tick, job, coalesce)

    def _release_failed(self, failure: Failure) -> None:
        """Released rows that stayed claimed are requeued when this node's lease lapses."""
        self.log.debug("release failed: {e}", e=failure)

    # -- leases -------------------------------------------------------------------------

    def _lease_tick(self) -> None:
        """Renew the lease and requeue the rows of nodes whose lease expired, and give back
        the rows held here that no job here knows of (a claim whose answer was lost). That
        needs every committed claim answered (claims run on a connection of their own): no
        claim may be in flight from when the tick is sent until it answers, so new claims
        wait for it, and with claims in flight (pipelined claims keep one out most of the
        time) the lease is renewed at once and the rows given back once they answered."""
        if self._reconcile:  # a reconciling tick is due or in flight already
            self._tick(None)
            return
        self._reconcile = True
        if self._claiming:
            self._tick(None)
        else:
            self._tick(self._held())

    def _held(self) -> list[str]:
        """The keys of every row this node knows it holds."""
        return [j.store_key for j in self.core.jobs.values() if j.store_key is not None]

    def _tick(self, held: list[str] | None) -> None:
        """Send a lease tick (with ``held``: the one that reconciles, after which the claims
        held back for it go out)."""
        d = self.store.tick(self.lease, held).addCallbacks(self._ticked, self._tick_failed)
        if held is not None:
            d.addBoth(self._resume)

    def _reconciled(self) -> None:
        """A claim answered: if it was the last in flight and a reconciling tick is due,
        send that tick."""
        if self._reconcile and not self._claiming and not self._stopped:
            self._tick(self._held())

    def _resume(self, _: object) -> None:
        """The reconciling tick answered: send the claims held back for it."""
        self._reconcile = False
        for name in list(self._again):
            self._again.discard(name)
            f = self.core.functions.get(name)
            if f is not None:
                self._claim(f)

    def _ticked(self, tick: Any) -> None:
        """Say what the lease tick found; after a lost lease, forget unstarted claims (the
        cluster has requeued them) and wait again for the shared jobs clients wait for."""
        if tick.expired:
            self.log.warn(
                "cluster nodes {nodes} lost their lease; {n} of their jobs requeued",
                nodes=", ".join(tick.expired),
                n=tick.requeued,
            )
        if tick.reconciled:
            self.log.warn(
                "gave back {n} cluster jobs this node held without knowing (a claim's answer"
                " was lost)",
                n=tick.reconciled,
            )
        if not tick.alive:
            self.log.error("this node's cluster lease had expired; its jobs were requeued")
            self._take_back(lambda since: True)
            self.parts_lapsed()  # the other nodes' parts of its broadcasts
            self.rewait()  # the cluster forgot what its clients wait for

    def _tick_failed(self, failure: Failure) -> None:
        """The database did not answer the lease tick (the store's outage log says so)."""
        self.log.debug("lease tick failed: {e}", e=failure)


def _only_sinks(job: Job) -> bool:
    """Whether no client of this node waits for ``job`` (only its cluster sink)."""
    return all(isinstance(c.out, ClusterSink) for c in job.clients)


class ClusterService(Service):
    """Starts a :class:`ClusterNode` once the server accepts connections, and stops it (its
    jobs given back) before the server closes the store; its helpers (the listener, the
    worker board: anything with ``start`` and ``stop``) start after it and stop before it."""

    def __init__(self, node: ClusterNode, ready: Any, *helpers: Any) -> None:
        self.node = node
        self._ready = ready
        self._helpers = [h for h in helpers if h is not None]

    def startService(self) -> None:
        """Wait for the server, then start the node and its helpers."""
        super().startService()
        self._ready().addCallback(lambda _: self._begin()).addErrback(lambda _: None)

    def _begin(self) -> None:
        if not self.running:
            return
        self.node.start()
        for helper in self._helpers:
            helper.start()

    def stopService(self) -> Deferred[Any]:
        """Stop the helpers and give the node's jobs back."""
        super().stopService()
        for helper in self._helpers:
            helper.stop()
        if not self.node._loops:
            return succeed(None)
        return self.node.stop()


__all__ = ["ClusterDurability", "ClusterNode", "ClusterQueue", "ClusterService", "coalesce_column"]
