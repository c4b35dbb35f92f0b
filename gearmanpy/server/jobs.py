# -*- test-case-name: tests.test_core -*-
"""The job server's records: functions, jobs and peers, as plain attrs classes.

They hold state and answer simple questions about it; the rules that change them live in
:class:`~gearmanpy.server.core.JobServerCore`. Each name means one thing: a *count* of jobs is
a number (``Function.running``), the jobs themselves are a collection named for the peer's
role (``Peer.worker_jobs``, ``Peer.client_jobs``), and a job's ``clients`` and ``worker`` are
the other side of those.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import attrs
from twisted.internet.interfaces import IDelayedCall

from gearmanpy.server.policy import DEFAULT, FunctionPolicy, Throttle

# A job's states.
PENDING = 0  # waiting for the store to make it durable; not yet acknowledged
SCHEDULED = 1  # an epoch job waiting for its time
QUEUED = 2
RUNNING = 3
FINISHED = 4

# Which JOB_ASSIGN variant a worker asked for (GRAB_JOB, GRAB_JOB_UNIQ, GRAB_JOB_ALL).
GRAB_PLAIN, GRAB_UNIQ, GRAB_ALL = 0, 1, 2


class ReplySink(Protocol):
    """How the core sends to a peer: :class:`gearmanpy.server.outbound.Outbound` provides it.

    The core never sees a transport; it hands encoded replies over in the order it makes
    them, and the sink keeps that order on the wire.
    """

    def send(self, data: bytes) -> None:
        """Send a reply after every earlier one."""

    def hold(self) -> list[Any]:
        """Reserve the next place in the reply order (a reply that waits for the store)."""

    def release(self, slot: list[Any], data: bytes) -> None:
        """Fill a reserved place; the replies behind it follow."""

    def stop(self) -> None:
        """The peer is gone: send nothing more."""


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
    #: Background attempts that failed and wait to be retried (the failure policy).
    retried: int = 0
    #: Background jobs moved to the dead set.
    dead: int = 0
    #: Submissions to broadcast functions, and the deliveries made of them.
    broadcasts: int = 0
    deliveries: int = 0


#: JobCounters fields the core counts server-wide only (a Function's counters keep them at 0).
SERVER_WIDE_COUNTERS = frozenset({"timed_out", "cancelled", "refused", "discarded"})


#: Upper bounds (seconds) of the latency histograms' buckets; a last bucket holds the rest.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip


@attrs.define(eq=False, slots=True)
class Latencies:
    """Durations counted in fixed buckets, with their sum: a histogram kept as plain numbers,
    so recording one costs a bisect (``gearmanpy.web.metrics`` reads it)."""

    counts: list[int] = attrs.field(factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        """Count one duration in the first bucket whose bound it does not pass."""
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds


@attrs.define(eq=False, slots=True)
class Holdings:
    """What the server holds now, that the server-wide bounds limit.

    A separate plain record because it changes on every submission: the core's own
    attributes go through a ``__setattr__`` (two of them are frozen), which costs a Python
    call per write.
    """

    #: Payload bytes of the live jobs.
    payload_bytes: int = 0


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
    #: first. Entries may be stale (the worker woke or left); the core checks each one when
    #: it wakes workers, so a submission costs nothing when nobody sleeps.
    sleepers: dict[Peer, None] = attrs.field(factory=dict)
    #: How many of its jobs a worker holds.
    running: int = 0
    #: How many of its jobs wait for their SUBMIT_JOB_EPOCH time.
    scheduled: int = 0
    #: Live jobs by coalescing key (the unique, or the payload for unique ``-``).
    uniques: dict[bytes, Job] = attrs.field(factory=dict)
    #: ``maxqueue`` limits per priority; 0 means unlimited.
    max_queue: list[int] = attrs.field(factory=lambda: [0, 0, 0])
    counters: JobCounters = attrs.field(factory=JobCounters)
    #: Its failure policy (:mod:`~gearmanpy.server.policy`), and what the hot paths read of
    #: it: the run-time limit for workers without CAN_DO_TIMEOUT, the assignment limits.
    policy: FunctionPolicy = DEFAULT
    default_timeout: float = 0.0
    throttle: Throttle | None = None
    #: The wake-up timer of a throttled function whose workers wait for the rate.
    throttle_timer: IDelayedCall | None = None
    #: A broadcast function (server/broadcast.py): its deliveries queued for a connection,
    #: those waiting for one to register, broadcasts a restart left unstarted, and the timer
    #: that starts them.
    broadcast: bool = False
    delivering: int = 0
    orphans: list[Job] = attrs.field(factory=list)
    unstarted: list[Job] = attrs.field(factory=list)
    broadcast_timer: IDelayedCall | None = None
    #: Submissions by kind, ``priority * 2 + background`` (high foreground first).
    submitted_by: list[int] = attrs.field(factory=lambda: [0] * 6)
    #: Time in the queue before assignment, assignment to final result, and (durable stores)
    #: submission to acknowledgement.
    waited: Latencies = attrs.field(factory=Latencies)
    ran: Latencies = attrs.field(factory=Latencies)
    acked: Latencies = attrs.field(factory=Latencies)

    def queued(self) -> int:
        """Jobs waiting in the three queues."""
        q = self.queues
        return len(q[0]) + len(q[1]) + len(q[2])

    def total(self) -> int:
        """Queued, scheduled and running jobs (broadcast deliveries too): the TOTAL column
        of ``status``."""
        return self.queued() + self.scheduled + self.running + self.delivering + len(self.orphans)


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
    #: Replies (peer, slot) held until the store has made this job durable: JOB_CREATED
    #: once it is, ERROR QUEUE_ERROR if it cannot be.
    held_replies: list[tuple[Peer, list[Any]]] | None = None
    #: When the job was accepted (the clock's time; kept with dead jobs and kept results).
    submitted_at: float = 0.0
    #: The last failed attempt's error, while a background job waits to be retried.
    error: bytes = b""
    #: When it entered the queue (QUEUED) or its worker took it (RUNNING), by the core's clock.
    since: float = 0.0
    #: The broadcast this job is (the parent) or belongs to (a delivery); else None.
    broadcast: Broadcast | None = None


@attrs.define(eq=False, slots=True)
class Broadcast:
    """One submission to a broadcast function (server/broadcast.py): its deliveries not yet
    ended, the connection each was for, and how they ended."""

    parent: Job
    total: int = 0
    completed: int = 0
    failed: int = 0
    lost: int = 0
    pending: dict[Job, None] = attrs.field(factory=dict)
    targets: dict[Job, Peer] = attrs.field(factory=dict)
    #: On a cluster: the other nodes' parts of it not yet ended (server/cluster_broadcast.py).
    remote: int = 0


@attrs.define(eq=False, slots=True)
class Peer:
    """The core's view of one connection: client, worker, admin user, or all three.

    :ivar out: where its replies go, in order.
    :ivar close: drops the connection.
    """

    out: ReplySink
    close: Callable[[], None]
    ip: bytes = b"-"
    fd: int = -1
    #: May use admin commands that stop the server (loopback and unix peers by default).
    trusted: bool = False
    #: What the peer may do: its ``acl.Permissions`` (None: no ACL; see ``admin.py``).
    access: Any = None
    exceptions: bool = False
    #: Asked for attempt numbers (OPTION_REQ ``attempts``, gearmanpy's own): an OPTION_RES
    #: ``attempt=N`` goes before each JOB_ASSIGN.
    attempts: bool = False
    client_id: bytes = b"-"
    #: Registered functions, oldest first, duplicates kept; with their CAN_DO_TIMEOUT (s).
    abilities: list[Function] = attrs.field(factory=list)
    timeouts: dict[bytes, float] = attrs.field(factory=dict)
    sleeping: bool = False
    noop_sent: bool = False
    #: Jobs assigned to this peer as a worker, in assignment order (a dict used as an
    #: ordered set, so a lost worker's jobs are requeued in the order it took them).
    worker_jobs: dict[Job, None] = attrs.field(factory=dict)
    #: Foreground jobs this peer submitted or joined as a client, whose results it awaits.
    client_jobs: set[Job] = attrs.field(factory=set)
    connected: bool = True
    #: Handles of jobs taken from this peer by CAN_DO_TIMEOUT while it may still run them,
    #: oldest first, each with the time until which the job is not handed back to it. Its
    #: late results for them are dropped without an ERROR (see ``server/attempts.py``).
    superseded: dict[bytes, float] = attrs.field(factory=dict)
    #: Broadcast deliveries for this connection alone, per priority (None until one comes).
    deliveries: tuple[deque[Job], deque[Job], deque[Job]] | None = None


def coalesce_key(unique: bytes, data: bytes) -> bytes | None:
    """What a job coalesces on (§3.3): its unique, its payload for ``-``, nothing if empty."""
    if not unique:
        return None
    if unique == b"-":
        return data or None
    return unique


#: GET_STATUS fields of a job the server does not know (or has not acknowledged yet).
UNKNOWN_STATUS = (b"0", b"0", b"0", b"0")


def status_fields(job: Job | None) -> tuple[bytes, bytes, bytes, bytes]:
    """GET_STATUS's known, running, numerator and denominator for ``job`` (None: unknown)."""
    if job is None or job.state == PENDING or job.state == FINISHED:
        return UNKNOWN_STATUS
    return (
        b"1",
        b"1" if job.state == RUNNING else b"0",
        b"%d" % job.numerator,
        b"%d" % job.denominator,
    )


def is_live(job: Job) -> bool:
    """Whether ``job`` is acknowledged and not finished (what ``show jobs`` lists)."""
    return job.state != PENDING and job.state != FINISHED


__all__ = [
    "FINISHED",
    "Broadcast",
    "GRAB_ALL",
    "GRAB_PLAIN",
    "GRAB_UNIQ",
    "PENDING",
    "QUEUED",
    "RUNNING",
    "SCHEDULED",
    "Function",
    "Job",
    "Holdings",
    "JobCounters",
    "LATENCY_BUCKETS",
    "Latencies",
    "Peer",
    "ReplySink",
    "SERVER_WIDE_COUNTERS",
    "UNKNOWN_STATUS",
    "coalesce_key",
    "is_live",
    "status_fields",
]
