# -*- test-case-name: tests.test_pg_cluster_results -*-
"""Foreground jobs and GET_STATUS across a cluster's nodes (mixed into ``ClusterNode``).

On the node a client submits to: a foreground job that no worker there can run (none of its
function is connected) is shared (:meth:`SharedResults.share`): its row is written, the
client gets JOB_CREATED once it is committed (with the handle of the live shared job it
joined, if another node's client submitted the same function and unique first), and the job
waits here, unqueued, for the events the running node publishes; each is forwarded to its
clients as the running node's core sent it (WORK_EXCEPTION as WORK_FAIL to a client that did
not ask for exceptions), and the final one ends the job here.

On the node that claims a row: every claimed job gets a :class:`ClusterSink` among its
clients, which keeps WORK_STATUS in the row (so GET_STATUS answers on every node) and, for a
shared foreground job, publishes its packets; the final one goes out with the row's delete.

GET_STATUS and GET_STATUS_UNIQUE for a job this node does not hold are answered from the table
(the core's ``on_status`` hook): known, running (claimed by a node), and the last WORK_STATUS.
"""

from __future__ import annotations

import hashlib
import struct
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from gearmanpy.protocol import replies
from gearmanpy.protocol.numbers import atoi
from gearmanpy.protocol.packets import PacketType
from gearmanpy.server.durability import stored_job
from gearmanpy.server.jobs import Job, Peer

#: The packets that end a job.
FINAL = frozenset({PacketType.WORK_COMPLETE, PacketType.WORK_FAIL, PacketType.WORK_EXCEPTION})
_HEAD = struct.Struct(">4sII")


def _rehandle(data: bytes, handle: bytes) -> bytes:
    """The reply packet ``data`` with its first argument (the job handle) replaced."""
    magic, kind, _ = _HEAD.unpack_from(data)
    body = data[_HEAD.size :]
    rest = body.split(b"\0", 1)
    body = handle + (b"\0" + rest[1] if len(rest) > 1 else b"")
    return _HEAD.pack(magic, kind, len(body)) + body


def coalesce_column(key: bytes | None) -> bytes:
    """A job's coalescing key as the table's unique index keeps it: a SHA-256 digest (a
    ``-`` unique coalesces on the payload, which may be far too long for an index), or
    empty for a job that does not coalesce."""
    return hashlib.sha256(key).digest() if key else b""


def packet_type(data: bytes) -> int:
    """The type of the reply packet ``data`` (one whole packet, as the core sends it)."""
    return _HEAD.unpack_from(data)[1]


def packet_args(data: bytes) -> list[bytes]:
    """The arguments of the reply packet ``data``, split at NUL."""
    return data[_HEAD.size :].split(b"\0")


class SinkOnly:
    """The reply sink's methods for a client that submits nothing (a cluster's own)."""

    def hold(self) -> list[Any]:
        """Never asked for: a sink submits nothing."""
        return []

    def release(self, slot: list[Any], data: bytes) -> None:
        """Never asked for: a sink submits nothing."""

    def stop(self) -> None:
        """Nothing to stop."""


class ClusterSink(SinkOnly):
    """A claimed job's client on the node that runs it: keeps progress in the row, and
    publishes the packets of a shared foreground job (the final one with the row's delete)
    and of a background job that other nodes' foreground clients joined (the final one of
    each attempt at once, since a retry or the dead set may keep the row)."""

    def __init__(
        self, node: Any, job: Job, key: str, foreground: bool, handle: bytes, waited: bool = False
    ) -> None:
        """A sink for ``job`` (row ``key``, whose handle is ``handle``) of ``node`` (the
        ClusterNode); ``waited``: a background row that foreground clients joined."""
        self.node = node
        self.job = job
        self.key = key
        self.foreground = foreground
        #: Whether packets are published (a shared job, or a joined background one).
        self.publish = foreground or waited
        #: The row's handle, which the waiting clients know the job by (the job has another
        #: here if its handle was taken: the waiting node claimed its own shared job).
        self.handle = handle
        #: The final packet not yet published (with the row's delete, or at a settle), and
        #: whether this attempt's final packet went to the joined clients already.
        self.final = b""
        self.settled = False

    def send(self, data: bytes) -> None:
        """A packet the core sends the job's clients."""
        kind = packet_type(data)
        store: Any = self.node.store
        if kind == PacketType.WORK_STATUS:
            job = self.job
            d = store.progress(self.key, job.numerator, job.denominator)
            d.addErrback(self.node._lost_write)
        final = kind in FINAL
        if not (final or self.publish):
            return
        if self.job.handle != self.handle:
            data = _rehandle(data, self.handle)
        if not final:
            store.event(self.handle, data).addErrback(self.node._lost_write)
        elif self.publish and not self.foreground:
            self.final, self.settled = b"", True
            store.settle(self.handle, data).addErrback(self.node._lost_write)
        else:
            self.final = data  # a client that joins before the row goes gets it then

    def last(self) -> bytes:
        """The final packet to publish with the row's end (WORK_FAIL if the job ended
        without one: it was cancelled)."""
        return self.final or replies.work_fail(self.handle)


class SharedResults:
    """The node's side of shared foreground jobs and cluster-wide status (mixed in)."""

    __slots__ = ()

    log = Logger()

    if TYPE_CHECKING:
        core: Any
        store: Any
        _waiting: dict[bytes, Job]
        _sinks: dict[str, ClusterSink]
        _attempts: dict[str, int]

        def forget_key(self, key: str | None) -> int:
            """Stop tracking a row (ClusterNode's)."""

    # -- the submitting node ---------------------------------------------------------------

    def share(self, job: Job, peer: Peer) -> bool:
        """Write a foreground job as a shared row when no worker here can run it, when it
        has a unique (so that it coalesces with every node's jobs), or when its function is
        throttled (so that the cluster's throttle counts it); answer its submitter once it
        is committed (the core's ``on_foreground`` hook; False: a worker here runs it)."""
        f = job.function
        if f.workers and (f.broadcast or (job.key is None and not f.policy.throttled())):
            return False
        durable = self.core._durable
        job.store_key = f"{durable.boot}-fg-{job.handle.rsplit(b':', 1)[-1].decode()}"
        job.held_replies = [(peer, peer.out.hold())]
        d = self.store.share(stored_job(job), coalesce_column(job.key))
        d.addCallbacks(self._shared, self._not_shared, (job,), errbackArgs=(job,))
        return True

    def wait_on(self, job: Job, clients: list[Peer], handle: bytes) -> None:
        """Make foreground ``clients``, which joined background ``job`` here while its row
        was written (they have their JOB_CREATED), wait for the row ``handle`` as a shared
        job's clients do."""
        core = self.core
        waiting = Job(
            handle, job.function, job.unique, job.data, job.priority, False, 0, job.reducer, job.key
        )
        suffix = core.new_handle().rsplit(b":", 1)[-1].decode()
        waiting.store_key = f"{core._durable.boot}-fg-{suffix}"
        waiting.clients = clients
        for client in clients:
            client.client_jobs.add(waiting)
        core.jobs[handle] = waiting
        core.held.payload_bytes += len(job.data)
        if job.key is not None:
            job.function.uniques.setdefault(job.key, waiting)
        d = self.store.share(stored_job(waiting), coalesce_column(job.key))
        d.addCallbacks(self._shared, self._not_waiting, (waiting,), errbackArgs=(waiting,))

    def _not_waiting(self, failure: Failure, job: Job) -> None:
        """The store refused to let ``job``'s clients wait: they hear the job failed."""
        self._lost_write(failure)
        for client in job.clients:
            client.out.send(replies.work_fail(job.handle))
        self.core._remove(job)

    def _shared(self, result: Any, job: Job) -> None:
        """The row is committed: answer the submitters, and wait for the events."""
        if result.handle != job.handle:  # joined another node's job: wait under its handle
            jobs = self.core.jobs
            if jobs.get(job.handle) is job:
                del jobs[job.handle]
            job.handle = result.handle
            jobs[job.handle] = job
        self._waiting[job.handle] = job
        self.core._durable.release_held(job, replies.job_created(job.handle))

    def _not_shared(self, failure: Failure, job: Job) -> None:
        """The store refused the row: the submitters get QUEUE_ERROR, as for a background
        job (a foreground job cannot run here)."""
        self.core._durable.outage.failed(failure, job_refused=True)
        self.core._durable.release_held(job, replies.QUEUE_ERROR)
        self.core._remove(job)

    def rewait(self) -> None:
        """This node's lease had lapsed and the cluster forgot its clients' waits: wait
        again for every shared job they wait for (store/pg_cluster_results.py)."""
        for job in list(self._waiting.values()):
            d = self.store.rewait(stored_job(job), coalesce_column(job.key))
            d.addCallbacks(self._rewaited, self._not_rewaited, (job,), errbackArgs=(job,))

    def _not_rewaited(self, failure: Failure, job: Job) -> None:
        """The database refused the wait: the clients hear WORK_FAIL (not silence)."""
        self._lost_write(failure)
        self._rewaited(None, job)

    def _rewaited(self, handle: bytes | None, job: Job) -> None:
        """``job``'s clients wait on its row again; if none could be found or put back (a
        new row of its unique took its place, under a handle they do not know), they hear
        WORK_FAIL."""
        if self._waiting.get(job.handle) is not job or handle == job.handle:
            return  # it ended meanwhile, or waits again
        for client in job.clients:
            client.out.send(replies.work_fail(job.handle))
        del self._waiting[job.handle]
        self.core._finish(job)

    def events(self, waiter: str) -> None:
        """A NOTIFY says events wait for node incarnation ``waiter``."""
        if waiter == self.store.owner and self._waiting:
            self._take_events()

    def _take_events(self) -> None:
        """Take this node's events and forward them."""
        self.store.take_events().addCallbacks(self._forward, self._lost_write)

    def _forward(self, events: list[tuple[bytes, bytes]]) -> None:
        """Forward each event to the clients of the job it is for; a final one ends it."""
        for handle, data in events:
            job = self._waiting.get(handle)
            if job is None:
                continue  # ended already (a superseded attempt's packet), or unknown here
            kind = packet_type(data)
            if kind == PacketType.WORK_STATUS:
                args = packet_args(data)
                job.numerator, job.denominator = atoi(args[1]), atoi(args[2])
            fail = replies.work_fail(handle) if kind == PacketType.WORK_EXCEPTION else data
            for client in job.clients:
                client.out.send(data if client.exceptions else fail)
            if kind in FINAL:
                del self._waiting[handle]
                self.core._finish(job)

    # -- the running node ------------------------------------------------------------------

    def attach_sink(self, job: Job, foreground: bool, handle: bytes, waited: bool = False) -> None:
        """Give a claimed job its :class:`ClusterSink` client (and make a shared foreground
        job a foreground job here, so a failure ends it instead of retrying)."""
        key = job.store_key
        assert key is not None
        sink = ClusterSink(self, job, key, foreground, handle, waited)
        self._sinks[key] = sink
        self.reattach(job)
        if foreground:
            job.background = False

    def reattach(self, job: Job) -> None:
        """Make ``job``'s sink one of its clients again (a failed attempt detached it: the
        next attempt is published too)."""
        sink = self._sinks.get(job.store_key) if job.store_key is not None else None
        if sink is None or any(c.out is sink for c in job.clients):
            return
        sink.settled = False
        client = Peer(sink, lambda: None, exceptions=True)
        if job.clients:
            job.clients.append(client)  # type: ignore[union-attr]
        else:
            job.clients = [client]
        client.client_jobs.add(job)

    def joined(self, payload: str) -> None:
        """A NOTIFY ``HANDLE-HEX:OWNER``: another node's foreground client joined a row
        this node holds; publish its packets from now on."""
        hexed, _, owner = payload.partition(":")
        if owner != self.store.owner:
            return
        try:
            handle = bytes.fromhex(hexed)
        except ValueError:
            return
        for sink in self._sinks.values():
            if sink.handle == handle:
                sink.publish = True
                return
        job = self.core.jobs.get(handle)
        if job is not None and job.store_key is not None and job.store_key in self._attempts:
            self.attach_sink(job, False, handle, waited=True)

    def settle_row(self, key: str | None) -> None:
        """A held row leaves the queue other than by a delete (to the dead set, or kept as
        a result): give the clients that joined it its final packet."""
        sink = self._sinks.get(key) if key is not None else None
        if sink is not None and not sink.settled:
            sink.settled = True
            self.store.settle(sink.handle, sink.last()).addErrback(self._lost_write)

    def finish_row(self, job: Job) -> None:
        """Delete the row of a job that ended here, for the attempt it ran (its final
        packet goes with it to the clients that wait for it, on any node)."""
        key = job.store_key
        sink = self._sinks.pop(key, None) if key is not None else None
        attempt = self.forget_key(key)
        if key is None:
            return
        if sink is not None and sink.foreground:
            d = self.store.finish_shared(key, attempt, sink.handle, sink.final)
        else:
            last = sink.last() if sink is not None else replies.work_fail(job.handle)
            d = self.store.finish(key, attempt, last)
        d.addErrback(self._lost_write)

    # -- status ----------------------------------------------------------------------------

    def status(self, peer: Peer, value: bytes, by_unique: bool) -> bool:
        """Answer GET_STATUS (GET_STATUS_UNIQUE) from the table, later (the core's
        ``on_status`` hook)."""
        slot = peer.out.hold()
        d = self.store.status_unique(value) if by_unique else self.store.status(value)

        def answer(found: Any) -> None:
            if found is None:
                fields = (b"0", b"0", b"0", b"0")
            else:
                fields = (
                    b"1",
                    b"1" if found.running else b"0",
                    b"%d" % found.numerator,
                    b"%d" % found.denominator,
                )
            if by_unique:
                clients = b"%d" % (found.waiters if found is not None else 0)
                peer.out.release(slot, replies.status_res_unique(value, fields, clients))
            else:
                peer.out.release(slot, replies.status_res(value, fields))

        def failed(failure: Failure) -> None:
            self._lost_write(failure)
            answer(None)

        d.addCallbacks(answer, failed)
        return True

    def _lost_write(self, failure: Failure) -> None:
        """A cluster write or read failed (the store's outage log says when it is down)."""
        self.log.debug("cluster operation failed: {e}", e=failure)


__all__ = [
    "FINAL",
    "ClusterSink",
    "SinkOnly",
    "SharedResults",
    "coalesce_column",
    "packet_args",
    "packet_type",
]
