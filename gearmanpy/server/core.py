# -*- test-case-name: tests.test_core -*-
"""The job server's state as plain objects: functions, queues, jobs, workers and wake-ups.

:class:`JobServerCore` is everything gearmand's processing thread does, without any I/O. A
protocol creates a :class:`Peer` per connection with a ``write`` callable and calls the
core's methods as packets arrive; the core answers by writing already-encoded bytes to
peers. Time comes from an injected ``IReactorTime`` (epoch jobs, CAN_DO_TIMEOUT), and
persistence from an optional :class:`~gearmanpy.store.interface.IJobStore`. Behaviour follows
gearmand 1.1.20 (protocol.md §3) except where gearmand loses jobs, hangs clients or crashes;
each such difference is named where it is implemented.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from gearmanpy.protocol.packets import Magic, PacketType, head
from gearmanpy.protocol.packets import frame as _frame
from gearmanpy.protocol.packets import pack_size as _pack_size
from gearmanpy.store.interface import IJobStore, Priority, StoredJob

_RES = Magic.RES.value
P = PacketType

HIGH, NORMAL, LOW = int(Priority.HIGH), int(Priority.NORMAL), int(Priority.LOW)

#: Longest unique (or reducer) accepted. gearmand accepts 64 but stores 63 (quirk 4); we
#: accept 64 and keep all of it, so a 64-byte unique coalesces.
MAX_UNIQUE_SIZE = 64

#: Longest job handle looked up; longer ones are unknown (gearmand does not answer at all).
MAX_HANDLE_SIZE = 63

# Job states.
PENDING = 0  # waiting for the store to make it durable; not yet acknowledged
SCHEDULED = 1  # an epoch job waiting for its time
QUEUED = 2
RUNNING = 3
FINISHED = 4

# What a worker asked for.
GRAB_PLAIN, GRAB_UNIQ, GRAB_ALL = 0, 1, 2

#: ``\0RES`` + type for every packet type, by name. A plain namespace: looking a member up on
#: the PacketType enum costs about 100 ns a time, which the hot paths cannot afford.
_H = SimpleNamespace(**{t.name: head(_RES, t) for t in PacketType})
#: The same heads indexed by type number, for callers that hold a type rather than a name.
_HEADS: list[bytes] = [head(_RES, t) for t in range(max(PacketType) + 1)]

_NOOP = _frame(_H.NOOP, ())
_JOB_ASSIGN = _H.JOB_ASSIGN
_NO_JOB = _frame(_H.NO_JOB, ())


def error_packet(code: bytes, text: bytes) -> bytes:
    """Encode an ERROR packet as gearmand sends it (``CODE\\0text``)."""
    return _frame(_H.ERROR, (code, text))


def parse_c_int(value: bytes) -> int | None:
    """Parse leading decimal digits as C's ``strtoll`` does: ``7x`` is 7, ``abc`` is 0.

    Returns None when the number does not fit in a signed 64-bit integer (never parses an
    unbounded digit string).
    """
    value = value.lstrip(b" \t")
    sign = 1
    if value[:1] in (b"-", b"+"):
        sign = -1 if value[:1] == b"-" else 1
        value = value[1:]
    digits = 0
    for ch in value:
        if 48 <= ch <= 57:
            digits += 1
        else:
            break
    if not digits:
        return 0
    if len(value[:digits].lstrip(b"0")) > 19:
        return None
    n = sign * int(value[:digits])
    return n if -(2**63) <= n < 2**63 else None


def _coalesce_key(unique: bytes, data: bytes) -> bytes | None:
    """What a job coalesces on (§3.3): its unique, its payload for ``-``, nothing if empty."""
    if not unique:
        return None
    if unique == b"-":
        return data or None
    return unique


def atoi(value: bytes) -> int:
    """Parse leading digits as C's ``atoi``, saturating instead of overflowing."""
    n = parse_c_int(value)
    if n is None:
        return -(2**63) if value.lstrip(b" \t").startswith(b"-") else 2**63 - 1
    return n


@attrs.define(eq=False, slots=True)
class JobCounters:
    """What has happened to jobs, counted so metrics can be built on it later."""

    submitted: int = 0
    coalesced: int = 0
    completed: int = 0
    failed: int = 0
    exceptions: int = 0
    requeued: int = 0
    timed_out: int = 0
    cancelled: int = 0
    refused: int = 0
    discarded: int = 0


@attrs.define(eq=False, slots=True)
class Function:
    """One function name: its three priority queues, its workers and its limits."""

    name: bytes
    queues: tuple[deque[Job], deque[Job], deque[Job]] = attrs.field(
        factory=lambda: (deque(), deque(), deque())
    )
    #: Registrations, one entry per CAN_DO (duplicates count, as in gearmand).
    workers: list[Peer] = attrs.field(factory=list)
    #: Workers of this function that slept (PRE_SLEEP) and have no NOOP yet, longest asleep
    #: first. Entries may be stale (the worker woke or left); :meth:`JobServerCore._wake`
    #: checks each one, so a submission costs nothing when nobody sleeps.
    sleepers: dict[Peer, None] = attrs.field(factory=dict)
    running: int = 0
    scheduled: int = 0
    #: Live jobs by coalescing key (the unique, or the payload for unique ``-``).
    uniques: dict[bytes, Job] = attrs.field(factory=dict)
    #: ``maxqueue`` limits per priority; 0 means unlimited.
    max_queue: list[int] = attrs.field(factory=lambda: [0, 0, 0])
    counters: JobCounters = attrs.field(factory=JobCounters)

    def queued(self) -> int:
        """Jobs waiting in the three queues."""
        q = self.queues
        return len(q[0]) + len(q[1]) + len(q[2])

    def total(self) -> int:
        """Queued, scheduled and running jobs: the TOTAL column of ``status``."""
        return self.queued() + self.scheduled + self.running


@attrs.define(eq=False, slots=True)
class Job:
    """One job, from acknowledgement to its end."""

    handle: bytes
    function: Function
    unique: bytes
    data: bytes
    priority: int
    background: bool
    when: int = 0
    reducer: bytes = b""
    #: The coalescing key it is filed under in ``function.uniques``, if any.
    key: bytes | None = None
    #: One entry per foreground submission waiting for results (joiners included); an
    #: empty tuple until the first one, so background jobs carry no list at all.
    clients: list[Peer] | tuple[()] = ()
    worker: Peer | None = None
    state: int = PENDING
    retries: int = 0
    numerator: int = 0
    denominator: int = 0
    #: Orphaned (no clients left) or cancelled: discarded when a worker reaches it.
    ignored: bool = False
    cancelled: bool = False
    store_key: str | None = None
    persisted: bool = False
    timer: IDelayedCall | None = None
    #: Replies (peer, slot) waiting for this job to become durable.
    waiting: list[tuple[Peer, list[Any]]] | None = None


@attrs.define(eq=False, slots=True)
class Peer:
    """The core's view of one connection: client, worker, admin user, or all three.

    :ivar write: sends already-encoded bytes to the peer.
    :ivar close: drops the connection.
    """

    write: Callable[[bytes], None]
    close: Callable[[], None]
    ip: bytes = b"-"
    fd: int = -1
    #: May use admin commands that stop the server (loopback and unix peers by default).
    trusted: bool = False
    exceptions: bool = False
    client_id: bytes = b"-"
    #: Registered functions, oldest first, duplicates kept; with their CAN_DO_TIMEOUT (s).
    abilities: list[Function] = attrs.field(factory=list)
    timeouts: dict[bytes, float] = attrs.field(factory=dict)
    sleeping: bool = False
    noop_sent: bool = False
    #: Jobs assigned to this peer, in assignment order (a dict used as an ordered set, so a
    #: lost worker's jobs are requeued in the order it took them).
    running: dict[Job, None] = attrs.field(factory=dict)
    waiting: set[Job] = attrs.field(factory=set)
    connected: bool = True
    #: Ordered reply slots while a store write is in flight (see :meth:`send`).
    _held: deque[list[Any]] | None = None

    def send(self, data: bytes) -> None:
        """Send ``data`` now, or after earlier replies that wait for the store."""
        if not self.connected:
            return
        if self._held is None:
            self.write(data)
        else:
            self._held.append([data])

    def hold(self) -> list[Any]:
        """Reserve the next place in the reply order; fill it with :meth:`release`."""
        slot: list[Any] = [None]
        if self._held is None:
            self._held = deque()
        self._held.append(slot)
        return slot

    def release(self, slot: list[Any], data: bytes) -> None:
        """Fill a reserved place and send every reply that is no longer waiting."""
        slot[0] = data
        held = self._held
        if held is None:
            return
        while held and held[0][0] is not None:
            out = held.popleft()[0]
            if self.connected:
                self.write(out)
        if not held:
            self._held = None


def default_handle_prefix() -> bytes:
    """``H:<hostname>``, as gearmand builds its handles."""
    return b"H:" + socket.gethostname().encode("ascii", "replace")


@attrs.define(eq=False)
class JobServerCore:
    """All the job server's state and rules, driven by method calls from protocols.

    :ivar clock: source of time for epoch jobs and CAN_DO_TIMEOUT.
    :ivar store: where background jobs are made durable, or None to keep them in memory.
    :ivar handle_prefix: handles are ``<prefix>:<n>``.
    :ivar job_retries: requeues allowed after worker loss or timeout before the job fails
        (gearmand 2.0's meaning: 0 means none); None means unlimited.
    :ivar worker_wakeup: NOOPs sent per queued job; 0 wakes every sleeping worker.
    :ivar round_robin: alternate between a worker's functions instead of newest first.
    :ivar exceptions: every connection starts with the ``exceptions`` option on.
    :ivar on_shutdown: called with ``graceful`` when a trusted peer sends ``shutdown``.
    """

    log = Logger()

    clock: IReactorTime
    store: IJobStore | None = None
    handle_prefix: bytes = attrs.field(factory=default_handle_prefix)
    job_retries: int | None = None
    worker_wakeup: int = 0
    round_robin: bool = False
    exceptions: bool = False
    on_shutdown: Callable[[bool], None] | None = None
    functions: dict[bytes, Function] = attrs.field(factory=dict)
    jobs: dict[bytes, Job] = attrs.field(factory=dict)
    peers: list[Peer] = attrs.field(factory=list)
    counters: JobCounters = attrs.field(factory=JobCounters)
    #: Handles ``<prefix>:1``, ``<prefix>:2``... (see :meth:`_handle_batches`).
    _handles: Iterator[bytes] = attrs.field(init=False)
    #: JOB_CREATED's first twelve bytes, indexed by the handle's length.
    _created_heads: list[bytes] = attrs.field(init=False, factory=list)
    _boot: str = attrs.field(factory=lambda: os.urandom(6).hex())
    #: Set by a graceful shutdown: fires when no job is left.
    _drained: Deferred[None] | None = None

    def __attrs_post_init__(self) -> None:
        if b"\0" in self.handle_prefix:
            raise ValueError("a job handle prefix cannot contain NUL")
        self._handles = itertools.chain.from_iterable(self._handle_batches())

    def _handle_batches(self) -> Iterator[list[bytes]]:
        """Yield the job handles ``<prefix>:1``, ``<prefix>:2``... a few thousand at a time.

        Built one by one (``prefix + b":" + str(n).encode()``) a handle costs about 150 ns,
        a twentieth of a background submission; made in C-level loops over a batch, and
        handed out by ``itertools.chain``, about 20. Each batch also makes sure there is a
        JOB_CREATED head for its longest handle.
        """
        prefix = self.handle_prefix.decode("latin-1") + ":"
        heads = self._created_heads
        start = 1
        while True:
            stop = start + 4096
            text = prefix + ("\0" + prefix).join(map(str, range(start, stop)))
            batch = text.encode("latin-1").split(b"\0")
            while len(heads) <= len(batch[-1]):
                heads.append(_H.JOB_CREATED + _pack_size(len(heads)))
            yield batch
            start = stop

    # -- connections ----------------------------------------------------------------

    def connect(
        self,
        write: Callable[[bytes], None],
        close: Callable[[], None],
        ip: bytes = b"-",
        fd: int = -1,
        trusted: bool = False,
    ) -> Peer:
        """Register a new connection and return its :class:`Peer`."""
        peer = Peer(write, close, ip=ip, fd=fd, trusted=trusted, exceptions=self.exceptions)
        self.peers.append(peer)
        return peer

    def disconnect(self, peer: Peer) -> None:
        """Forget a connection: requeue its running jobs and detach it from jobs it awaits."""
        if not peer.connected:
            return
        peer.connected = False
        self.peers.remove(peer)
        # Unregister first: the requeue wakes workers, and must not pick this one.
        self._unregister_all(peer)
        for job in list(peer.running):
            self._lose_worker(job)
        for job in peer.waiting:
            job.clients = [c for c in job.clients if c is not peer] or ()
            if not job.clients and not job.background and job.state == QUEUED:
                # Nobody waits for it any more: discarded when a worker reaches it (§3.9).
                job.ignored = True
                self._forget_unique(job)
        peer.waiting.clear()

    # -- functions --------------------------------------------------------------------

    def function(self, name: bytes) -> Function:
        """Return the function record for ``name``, creating it on first mention."""
        f = self.functions.get(name)
        if f is None:
            f = self.functions[name] = Function(name)
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
        for job in [j for j in peer.running if j.function is f]:
            self._lose_worker(job)

    def reset_abilities(self, peer: Peer) -> None:
        """RESET_ABILITIES: drop every registration; requeue every job the peer runs."""
        self._unregister_all(peer)
        for job in list(peer.running):
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

    def submit_batch(
        self,
        peer: Peer,
        priority: int,
        background: bool,
        batch: Iterable[Sequence[bytes]],
        when: int = 0,
        reducer: bytes = b"",
    ) -> None:
        """Several submissions of one kind from one peer, in order, each as :meth:`submit`.

        ``batch`` holds (function, unique, payload) per job. A client that pipelines
        submissions sends runs of them, and the decoder hands a run over in one call: the
        per-job work is this loop's body, with the lookups that do not change hoisted out of
        it (about a seventh of S1's time, measured).
        """
        functions = self.functions
        jobs = self.jobs
        handles = self._handles
        heads = self._created_heads
        counters = self.counters
        store = self.store
        write = peer.write
        last_name = None
        f: Function | None = None
        for name, unique, data in batch:
            if (unique or reducer) and (
                len(unique) > MAX_UNIQUE_SIZE or len(reducer) > MAX_UNIQUE_SIZE
            ):  # (both empty is the common case: two truth tests instead of two len calls)
                peer.send(error_packet(b"ARGUMENT_TOO_LARGE", b"Unique value too large"))
                continue
            if f is None or name != last_name:
                f = functions.get(name)
                if f is None:
                    f = functions[name] = Function(name)
                last_name = name
            key = _coalesce_key(unique, data) if unique else None  # no call, commonly
            if key is not None:
                existing = f.uniques.get(key)
                if existing is not None:
                    self._join(peer, existing, background)
                    continue
            limit = f.max_queue[priority]
            if limit and f.total() >= limit:
                counters.refused += 1
                peer.send(error_packet(b"QUEUE_ERROR", b"Job queue is full"))
                continue
            # From here on the common steps are written out rather than called
            # (Peer.send, _enqueue): the calls cost 8% of S1 (measured).
            handle = next(handles)
            job = Job(handle, f, unique, data, priority, background, when, reducer, key)
            jobs[handle] = job
            if key is not None:
                f.uniques[key] = job
            counters.submitted += 1
            f.counters.submitted += 1
            if background:
                if store is not None:
                    self._persist(job, peer)
                    continue
            else:
                job.clients = [peer]
                peer.waiting.add(job)
            created = heads[len(handle)] + handle
            if peer._held is None and peer.connected:
                write(created)
            else:
                peer.send(created)
            if when:
                self._admit(job)
            else:
                job.state = QUEUED
                f.queues[priority].append(job)
                if f.sleepers:
                    self._wake(f)

    def _join(self, peer: Peer, job: Job, background: bool) -> None:
        """Attach a submission to a live job with the same coalescing key (§3.3)."""
        self.counters.coalesced += 1
        if not background:
            if job.clients:
                job.clients.append(peer)  # type: ignore[union-attr]
            else:
                job.clients = [peer]
            peer.waiting.add(job)
            job.ignored = False
        elif not job.background:
            # gearmand leaves such a job in memory, to die with its foreground clients
            # (quirk 11); a background submitter was promised it would run, so promote it.
            job.background = True
            if self.store is not None and job.state != FINISHED:
                self._persist(job, peer, promote=True)
                return
        if job.waiting is not None:
            # A store write for this job is in flight: answer when it is durable.
            slot = peer.hold()
            job.waiting.append((peer, slot))
            return
        peer.send(_frame(_H.JOB_CREATED, (job.handle,)))

    def _persist(self, job: Job, peer: Peer, promote: bool = False) -> None:
        """Write a background job to the store; acknowledge it only once that succeeds."""
        assert self.store is not None
        job.store_key = f"{self._boot}-{job.handle.rsplit(b':', 1)[-1].decode()}"
        slot = peer.hold()
        if job.waiting is None:
            job.waiting = []
        job.waiting.append((peer, slot))
        was_pending = job.state == PENDING
        stored = StoredJob(
            key=job.store_key,
            function=job.function.name,
            unique=job.unique,
            priority=Priority(job.priority),
            data=job.data,
            when=job.when,
            retries=job.retries,
            reducer=job.reducer,
        )
        d = self.store.add(stored)

        def durable(_: object) -> None:
            job.persisted = True
            self._answer_waiting(job, _frame(_H.JOB_CREATED, (job.handle,)))
            if job.state == FINISHED or job.cancelled:
                # Ended (say, a promoted foreground job finished or was cancelled) while the
                # write was in flight: the row must not outlive it.
                self._store_done(job)
                job.persisted = False
            elif was_pending:
                self._admit(job)

        def refused(failure: Failure) -> None:
            self.log.failure("could not persist job {handle}", failure, handle=job.handle)
            self.counters.refused += 1
            error = error_packet(b"QUEUE_ERROR", b"QUEUE_ERROR")
            if was_pending:
                self._remove(job)  # never acknowledged
            elif promote:
                # The promotion failed: the job stays a foreground job, as it was.
                job.background = False
            self._answer_waiting(job, error)

        d.addCallbacks(durable, refused)

    def _answer_waiting(self, job: Job, data: bytes) -> None:
        waiting, job.waiting = job.waiting or [], None
        for peer, slot in waiting:
            peer.release(slot, data)

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
        """Append a job to the tail of its priority queue and wake sleeping workers."""
        job.state = QUEUED
        f = job.function
        f.queues[job.priority].append(job)
        if f.sleepers:
            self._wake(f)

    def _wake(self, f: Function) -> None:
        """Send NOOP to sleeping workers of ``f``, at most one per GRAB cycle (§3.5).

        Every sleeper with ``worker_wakeup`` 0, else that many, longest asleep first (so
        successive jobs wake successive workers).
        """
        sleepers = f.sleepers
        if not sleepers:
            return
        limit = self.worker_wakeup
        sent = 0
        for w in list(sleepers):
            del sleepers[w]
            if w.sleeping and not w.noop_sent and w.connected and f in w.abilities:
                w.noop_sent = True
                w.send(_NOOP)
                sent += 1
                if limit and sent >= limit:
                    return

    # -- workers ----------------------------------------------------------------------

    def grab(self, peer: Peer, kind: int = GRAB_PLAIN) -> None:
        """GRAB_JOB / GRAB_JOB_UNIQ / GRAB_JOB_ALL: assign the next job or say NO_JOB."""
        peer.sleeping = False
        peer.noop_sent = False
        abilities = peer.abilities
        idx = len(abilities)
        while idx:  # the newest registration first
            idx -= 1
            f = abilities[idx]
            job = self._take(f)
            if job is not None:
                if self.round_robin and len(abilities) > 1:
                    abilities.pop(idx)
                    abilities.insert(0, f)
                self._assign(peer, job, kind)
                return
        peer.send(_NO_JOB)

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

    def _assign(self, peer: Peer, job: Job, kind: int) -> None:
        job.state = RUNNING
        job.worker = peer
        job.function.running += 1
        peer.running[job] = None
        if kind == GRAB_PLAIN:
            body = b"\0".join((job.handle, job.function.name, job.data))
            out = _JOB_ASSIGN + _pack_size(len(body)) + body  # frame(), written out
        elif kind == GRAB_ALL and job.reducer:
            out = _frame(
                _H.JOB_ASSIGN_ALL,
                (job.handle, job.function.name, job.unique, job.reducer, job.data),
            )
        else:
            out = _frame(_H.JOB_ASSIGN_UNIQ, (job.handle, job.function.name, job.unique, job.data))
        timeout = peer.timeouts.get(job.function.name) if peer.timeouts else None
        if timeout:
            # One timer per job, cancelled when the job ends (gearmand keeps one stale timer
            # per connection that later requeues freed jobs).
            job.timer = self.clock.callLater(timeout, self._timed_out, job)
        if peer._held is None and peer.connected:  # Peer.send's common case, written out
            peer.write(out)
        else:
            peer.send(out)

    def _timed_out(self, job: Job) -> None:
        job.timer = None
        self.counters.timed_out += 1
        self.log.info("job {handle} ran past its CAN_DO_TIMEOUT; requeueing", handle=job.handle)
        self._lose_worker(job)

    def pre_sleep(self, peer: Peer) -> None:
        """PRE_SLEEP: NOOP at once if work is waiting, else mark the peer asleep."""
        for f in peer.abilities:
            if f.queued():
                peer.noop_sent = True
                peer.sleeping = False
                peer.send(_NOOP)
                return
        peer.sleeping = True
        if not peer.noop_sent:
            for f in peer.abilities:
                f.sleepers[peer] = None

    def _lose_worker(self, job: Job) -> None:
        """Requeue a running job whose worker went away or ran out of time (§3.8)."""
        self._unassign(job)
        if job.cancelled:
            self._finish(job)
            return
        job.retries += 1
        self.counters.requeued += 1
        job.function.counters.requeued += 1
        if self.job_retries is not None and job.retries > self.job_retries:
            self.log.info(
                "job {handle} failed after {n} retries", handle=job.handle, n=job.retries - 1
            )
            self.counters.failed += 1
            job.function.counters.failed += 1
            fail = _frame(_H.WORK_FAIL, (job.handle,))
            for c in job.clients:
                c.send(fail)
            self._finish(job)
            return
        job.numerator = job.denominator = 0
        if job.persisted and self.store is not None:
            d = self.store.set_retries(job.store_key, job.retries)  # type: ignore[arg-type]
            d.addErrback(self._store_failed, "set_retries", job.handle)
        if not job.clients and not job.background:
            job.ignored = True
            self._forget_unique(job)
        self._enqueue(job)

    def _unassign(self, job: Job) -> None:
        if job.timer is not None and job.state == RUNNING:
            job.timer.cancel()
            job.timer = None
        if job.worker is not None:
            job.worker.running.pop(job, None)
            job.worker = None
        if job.state == RUNNING:
            job.function.running -= 1

    # -- work results -------------------------------------------------------------------

    def _worker_job(self, peer: Peer, handle: bytes, text: bytes) -> Job | None:
        job = self.jobs.get(handle)
        if job is None or job.worker is not peer or job.state != RUNNING:
            peer.send(error_packet(b"JOB_NOT_FOUND", text))
            return None
        return job

    @staticmethod
    def _forward(job: Job, data: bytes) -> None:
        """Send ``data`` to every foreground client of ``job`` unless it was cancelled."""
        if job.clients and not job.cancelled:
            for c in job.clients:
                c.send(data)

    def work_status(self, peer: Peer, handle: bytes, numerator: bytes, denominator: bytes) -> None:
        """WORK_STATUS: remember progress and forward it byte for byte."""
        job = self._worker_job(peer, handle, b"Job given in work result not found")
        if job is None:
            return
        job.numerator = atoi(numerator)
        job.denominator = atoi(denominator)
        self._forward(job, _frame(_H.WORK_STATUS, (handle, numerator, denominator)))

    def work_data(self, peer: Peer, ptype: int, handle: bytes, data: bytes) -> None:
        """WORK_DATA / WORK_WARNING (``ptype``): forward to the job's foreground clients."""
        job = self._worker_job(peer, handle, b"Job does not exist on server")
        if job is None:
            return
        self._forward(job, _frame(_HEADS[ptype], (handle, data)))

    def work_complete(self, peer: Peer, handle: bytes, data: bytes) -> None:
        """WORK_COMPLETE: forward the result and end the job."""
        job = self.jobs.get(handle)  # _worker_job, written out for the busiest result
        if job is None or job.worker is not peer or job.state != RUNNING:
            peer.send(error_packet(b"JOB_NOT_FOUND", b"Job given in work result not found"))
            return
        self.counters.completed += 1
        job.function.counters.completed += 1
        if job.clients:  # background jobs have none: no packet to build
            self._forward(job, _frame(_H.WORK_COMPLETE, (handle, data)))
        self._unassign(job)
        self._finish(job)

    def work_fail(self, peer: Peer, handle: bytes) -> None:
        """WORK_FAIL: tell the clients and end the job."""
        if len(handle) > MAX_HANDLE_SIZE:
            peer.send(
                error_packet(
                    b"ARGUMENT_TOO_LARGE",
                    b"Error occurred due to GEARMAND_JOB_HANDLE_SIZE being too small from snprintf",
                )
            )
            return
        job = self._worker_job(peer, handle, b"Job given in work result not found")
        if job is None:
            return
        self.counters.failed += 1
        job.function.counters.failed += 1
        self._forward(job, _frame(_H.WORK_FAIL, (handle,)))
        self._unassign(job)
        self._finish(job)

    def work_exception(self, peer: Peer, handle: bytes, data: bytes) -> None:
        """WORK_EXCEPTION: forward it to clients that asked for exceptions, WORK_FAIL to others.

        gearmand 1.1.20 puts a NUL after the handle of that WORK_FAIL, which hangs libgearman
        clients (quirk 1); we send the bare handle.
        """
        job = self._worker_job(
            peer, handle, b"An exception was received for a job that does not exist"
        )
        if job is None:
            return
        self.counters.exceptions += 1
        job.function.counters.exceptions += 1
        if job.clients and not job.cancelled:
            exc = _frame(_H.WORK_EXCEPTION, (handle, data))
            fail = _frame(_H.WORK_FAIL, (handle,))
            for c in job.clients:
                c.send(exc if c.exceptions else fail)
        self._unassign(job)
        self._finish(job)

    def _finish(self, job: Job) -> None:
        """Remove a job that ended for good, and its persistent row."""
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        self._remove(job)
        if job.persisted:
            self._store_done(job)
        if self._drained is not None:
            self._check_drained()

    def _store_done(self, job: Job) -> None:
        if self.store is not None and job.store_key is not None:
            d = self.store.done(job.store_key)
            d.addErrback(self._store_failed, "done", job.handle)

    def _store_failed(self, failure: Failure, what: str, handle: bytes) -> None:
        self.log.failure("store {what} failed for job {handle}", failure, what=what, handle=handle)

    def _forget_unique(self, job: Job) -> None:
        if job.key is not None and job.function.uniques.get(job.key) is job:
            del job.function.uniques[job.key]

    def _remove(self, job: Job) -> None:
        """Mark ``job`` finished and forget it: by handle, by unique, and by its clients."""
        job.state = FINISHED
        self.jobs.pop(job.handle, None)
        if job.key is not None:
            self._forget_unique(job)
        if job.clients:
            for c in job.clients:
                c.waiting.discard(job)
            job.clients = ()

    # -- status -----------------------------------------------------------------------------

    def _status_fields(self, job: Job | None) -> tuple[bytes, bytes, bytes, bytes]:
        if job is None or job.state in (PENDING, FINISHED):
            return (b"0", b"0", b"0", b"0")
        return (
            b"1",
            b"1" if job.state == RUNNING else b"0",
            b"%d" % job.numerator,
            b"%d" % job.denominator,
        )

    def get_status(self, peer: Peer, handle: bytes) -> None:
        """GET_STATUS: STATUS_RES for ``handle`` (unknown handles get zeros, never silence)."""
        handle = handle.split(b"\0", 1)[0]
        job = self.jobs.get(handle) if len(handle) <= MAX_HANDLE_SIZE else None
        peer.send(_frame(_H.STATUS_RES, (handle, *self._status_fields(job))))

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
        clients = b"%d" % (len(job.clients) if job is not None else 0)
        fields = self._status_fields(job)
        peer.send(_frame(_H.STATUS_RES_UNIQUE, (unique, *fields, clients)))

    # -- admin operations --------------------------------------------------------------------

    def status_rows(self) -> list[tuple[bytes, int, int, int]]:
        """Rows of the ``status`` admin command."""
        return [(f.name, f.total(), f.running, len(f.workers)) for f in self.functions.values()]

    def priority_rows(self) -> list[tuple[bytes, int, int, int, int]]:
        """Rows of ``prioritystatus``: queued jobs per priority (scheduled count as NORMAL)."""
        return [
            (
                f.name,
                len(f.queues[HIGH]),
                len(f.queues[NORMAL]) + f.scheduled,
                len(f.queues[LOW]),
                len(f.workers),
            )
            for f in self.functions.values()
        ]

    def worker_rows(self) -> list[tuple[int, bytes, bytes, list[bytes]]]:
        """Rows of ``workers``: every connection with its functions, newest first."""
        return [
            (p.fd, p.ip, p.client_id, [f.name for f in reversed(p.abilities)]) for p in self.peers
        ]

    def live_jobs(self) -> list[Job]:
        """Every acknowledged job that has not finished, in handle order."""
        return [j for j in self.jobs.values() if j.state not in (PENDING, FINISHED)]

    def cancel(self, handle: bytes) -> bool:
        """``cancel job``: fail the job to its clients and forget it; False if unknown.

        gearmand lets a running job's later WORK_COMPLETE through after the WORK_FAIL
        (quirk 9); here the clients are detached, so they hear nothing more.
        """
        job = self.jobs.get(handle)
        if job is None or job.state in (PENDING, FINISHED) or job.cancelled:
            return False
        self.counters.cancelled += 1
        fail = _frame(_H.WORK_FAIL, (handle,))
        for c in job.clients:
            c.send(fail)
            c.waiting.discard(job)
        job.clients = ()
        job.cancelled = True
        job.ignored = True
        self._forget_unique(job)
        if job.persisted:
            self._store_done(job)
            job.persisted = False
        if job.state == SCHEDULED:
            job.function.scheduled -= 1
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
        """``maxqueue``: set per-priority limits of an existing function (0 = unlimited)."""
        f = self.functions.get(name)
        if f is not None:
            f.max_queue = [max(0, n) for n in limits]

    # -- start-up and shut-down -------------------------------------------------------------

    def replay(self, stored: list[StoredJob]) -> None:
        """Restore jobs from the store at start-up, in their stored order, with new handles."""
        for s in stored:
            f = self.function(s.function)
            handle = next(self._handles)
            key = _coalesce_key(s.unique, s.data)
            job = Job(
                handle,
                f,
                s.unique,
                s.data,
                int(s.priority),
                True,
                s.when,
                s.reducer,
                key if key is not None and key not in f.uniques else None,
                retries=s.retries,
                store_key=s.key,
                persisted=True,
            )
            self.jobs[handle] = job
            if job.key is not None:
                f.uniques[job.key] = job
            self._admit(job)

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
        """Cancel every pending timer (epoch jobs, CAN_DO_TIMEOUT) when the server stops."""
        for job in self.jobs.values():
            if job.timer is not None and job.timer.active():
                job.timer.cancel()
            job.timer = None
