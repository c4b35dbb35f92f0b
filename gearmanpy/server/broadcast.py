# -*- test-case-name: tests.test_broadcast -*-
"""Broadcast functions: one submission delivered to every worker of the function.

A function whose policy says ``broadcast = true`` (:mod:`~gearmanpy.server.policy`) turns a
submission into a *broadcast*: the submitted job (the parent, with the handle its client
got) is not queued; instead each worker connection that has registered the function when
the job is accepted gets a *delivery*, an ordinary job with its own handle that only that
connection is given (JOB_ASSIGN, as for any job, so every Gearman worker runs it unchanged).

The parent's foreground clients hear one WORK_DATA per delivery that completed (the worker's
client id, a NUL, then its result) and one WORK_WARNING per delivery that failed or was lost
(the client id, a NUL, then ``failed``, the exception text, or ``lost``), each followed by a
WORK_STATUS of deliveries done out of all; then WORK_COMPLETE with the summary
``completed=N failed=N lost=N total=N``. A broadcast with no worker completes at once with a
total of 0. GET_STATUS on the parent answers done/total while it runs.

Background broadcasts are durable: the parent is stored as any background job, and so is
each delivery, its row naming the parent's handle in the reducer column after a NUL (which no
real reducer can hold, since the wire separates fields with NUL). After a restart the
deliveries that had not ended go, one per broadcast and connection, to the workers that
register the function; a broadcast that had not started yet starts
:data:`RESTART_GRACE` seconds after the first of them registers. A delivery whose worker goes
away is counted lost, unless the function's retry policy has attempts left: then it waits for
a connection of the function that has not had this broadcast.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime

from gearmanpy.protocol import replies
from gearmanpy.protocol.packets import PacketType
from gearmanpy.server.jobs import (
    FINISHED,
    QUEUED,
    RUNNING,
    Broadcast,
    Function,
    Holdings,
    Job,
    JobCounters,
    Peer,
)

if TYPE_CHECKING:
    from gearmanpy.server.durability import Durability

#: What a delivery's row holds in its reducer column before the parent's handle.
DELIVERY_MARK = b"\0broadcast:"
#: Seconds after the first worker registers, past a restart, that a broadcast which had not
#: started waits for the others, before it is delivered to those registered then.
RESTART_GRACE = 1.0


class Broadcasts:
    """The core's rules for broadcast functions (mixed into the core)."""

    __slots__ = ()

    clock: IReactorTime
    counters: JobCounters
    jobs: dict[bytes, Job]
    held: Holdings
    _durable: Durability | None

    if TYPE_CHECKING:

        def new_handle(self) -> bytes:
            """The next job handle (the core's)."""

        def _assign(self, peer: Peer, job: Job, grab_type: int) -> None:
            """Hand ``job`` to ``peer`` (the core's)."""

        def _finish(self, job: Job) -> None:
            """End ``job`` for good (the core's)."""

        def _unassign(self, job: Job) -> None:
            """Take ``job`` back from its worker (the core's)."""

    # -- starting -----------------------------------------------------------------------------

    def _start_broadcast(self, parent: Job) -> None:
        """Deliver ``parent`` to every connection registered for its function now."""
        f = parent.function
        record = Broadcast(parent)
        parent.broadcast = record
        parent.state = RUNNING
        self.counters.broadcasts += 1
        f.counters.broadcasts += 1
        targets = list(dict.fromkeys(f.workers))  # each connection once, oldest first
        record.total = len(targets)
        parent.denominator = record.total
        if parent.persisted and self._durable is not None:
            parent.retries = record.total  # a stored parent with retries > 0 has started
            self._durable.set_retries(parent)
        for peer in targets:
            self._deliver_to(record, self._delivery(record), peer)
        if self._durable is not None:
            self._durable.fan_out(record)  # a cluster's other nodes (record.remote)
        if not targets and not record.remote and parent.state != FINISHED:
            self._broadcast_over(record)

    def _delivery(self, record: Broadcast) -> Job:
        """A new delivery of ``record``'s job (not yet given to anyone)."""
        parent = record.parent
        child = Job(
            self.new_handle(), parent.function, b"", parent.data, parent.priority,
            parent.background,
        )  # fmt: skip
        child.broadcast = record
        child.submitted_at = parent.submitted_at
        self.jobs[child.handle] = child
        self.held.payload_bytes += len(child.data)
        record.pending[child] = None
        self.counters.deliveries += 1
        parent.function.counters.deliveries += 1
        if parent.background and self._durable is not None:
            self._durable.keep(child, reducer=DELIVERY_MARK + parent.handle)
        return child

    def _deliver_to(self, record: Broadcast, child: Job, peer: Peer) -> None:
        """Queue ``child`` for ``peer`` alone, and wake it if it sleeps."""
        record.targets[child] = peer
        child.state = QUEUED
        child.function.delivering += 1
        if peer.deliveries is None:
            peer.deliveries = (deque(), deque(), deque())
        peer.deliveries[child.priority].append(child)
        if peer.sleeping and not peer.noop_sent and peer.connected:
            peer.noop_sent = True
            peer.out.send(replies.NOOP)

    # -- handing out ----------------------------------------------------------------------

    def _take_delivery(self, peer: Peer, grab_type: int) -> bool:
        """GRAB: assign ``peer``'s next delivery (highest priority first); False if none."""
        assert peer.deliveries is not None
        for q in peer.deliveries:
            if q:
                child = q.popleft()
                child.function.delivering -= 1
                self._assign(peer, child, grab_type)
                return True
        return False

    @staticmethod
    def _has_deliveries(peer: Peer) -> bool:
        """Whether deliveries wait for ``peer`` (PRE_SLEEP answers NOOP if so)."""
        return peer.deliveries is not None and any(peer.deliveries)

    def _offer(self, f: Function, peer: Peer) -> None:
        """``peer`` registered ``f``: give it the deliveries waiting for a connection (one per
        broadcast it has not had), and start the broadcasts a restart left unstarted."""
        for child in list(f.orphans):
            record = child.broadcast
            assert record is not None
            if peer not in record.targets.values():
                f.orphans.remove(child)
                self._deliver_to(record, child, peer)
        if f.unstarted and f.broadcast_timer is None:
            f.broadcast_timer = self.clock.callLater(RESTART_GRACE, self._start_unstarted, f)

    def _start_unstarted(self, f: Function) -> None:
        """Start the broadcasts of ``f`` that a restart left unstarted."""
        f.broadcast_timer = None
        waiting, f.unstarted = f.unstarted, []
        for parent in waiting:
            if parent.state != FINISHED:
                self._start_broadcast(parent)

    # -- results ------------------------------------------------------------------------------

    def _delivered(self, child: Job, outcome: bytes, data: bytes) -> None:
        """A delivery ended (its worker already unassigned): tell the parent's clients."""
        record = child.broadcast
        assert record is not None
        peer = record.targets.get(child)
        if outcome == b"complete":
            record.completed += 1
            forwarded = replies.work_forward(PacketType.WORK_DATA, record.parent.handle,
                                             _who(peer) + b"\0" + data)  # fmt: skip
        else:
            if outcome == b"lost":
                record.lost += 1
            else:
                record.failed += 1
            forwarded = replies.work_forward(PacketType.WORK_WARNING, record.parent.handle,
                                             _who(peer) + b"\0" + (data or outcome))  # fmt: skip
        record.pending.pop(child, None)
        self._finish(child)
        self.tell_parent(record, forwarded)
        if not record.pending and not record.remote:
            self._broadcast_over(record)

    def tell_parent(self, record: Broadcast, forwarded: bytes) -> None:
        """A delivery (here or, on a cluster, on another node) ended: the parent's clients
        hear ``forwarded`` (its WORK_DATA or WORK_WARNING) and the WORK_STATUS done/total."""
        parent = record.parent
        parent.numerator = record.completed + record.failed + record.lost
        if parent.clients and not parent.cancelled:
            status = replies.work_status(
                parent.handle, b"%d" % parent.numerator, b"%d" % record.total
            )
            for c in parent.clients:
                c.out.send(forwarded)
                c.out.send(status)

    def remote_ended(self, record: Broadcast) -> None:
        """One other node's part of a broadcast ended (server/cluster_broadcast.py): the
        broadcast is over if nothing else is pending."""
        record.remote -= 1
        if not record.pending and not record.remote and record.parent.state != FINISHED:
            self._broadcast_over(record)

    def _delivery_lost(self, child: Job) -> None:
        """A delivery's worker went away (or ran out of time) before it ended: lost, or (retry
        policy) waiting for another connection of the function."""
        self._unassign(child)
        record = child.broadcast
        assert record is not None
        attempts = child.function.policy.attempts
        child.retries += 1
        if attempts is not None and child.retries < attempts and not record.parent.cancelled:
            self._orphan(child)
            return
        self._delivered(child, b"lost", b"")

    def _orphan(self, child: Job) -> None:
        """Give ``child`` to a connection of its function that has not had this broadcast,
        or keep it until one registers."""
        record = child.broadcast
        assert record is not None
        record.targets.pop(child, None)
        child.state = QUEUED
        for peer in dict.fromkeys(child.function.workers):
            if peer not in record.targets.values():
                self._deliver_to(record, child, peer)
                return
        child.function.orphans.append(child)

    def _drop_deliveries(self, peer: Peer, f: Function | None = None) -> None:
        """``peer`` left (or stopped doing ``f``): its deliveries not yet taken are lost."""
        if peer.deliveries is None:
            return
        for q in peer.deliveries:
            for child in [c for c in q if f is None or c.function is f]:
                q.remove(child)
                child.function.delivering -= 1
                self._delivery_lost(child)

    def _broadcast_over(self, record: Broadcast) -> None:
        """Every delivery ended: WORK_COMPLETE with the summary, and the parent is done."""
        parent = record.parent
        if parent.clients and not parent.cancelled:
            summary = b"completed=%d failed=%d lost=%d total=%d" % (
                record.completed, record.failed, record.lost, record.total,
            )  # fmt: skip
            done = replies.work_complete(parent.handle, summary)
            for c in parent.clients:
                c.out.send(done)
        self._finish(parent)

    def cancel_broadcast(self, job: Job) -> None:
        """``cancel job`` on a broadcast (its deliveries not yet taken are dropped, running
        ones end unheard) or on one delivery (counted as failed once it ends)."""
        record = job.broadcast
        assert record is not None
        waiting = [job] if record.parent is not job else list(record.pending)
        for child in waiting:
            if child.state != QUEUED:
                continue  # running: its result ends it
            peer = record.targets.get(child)
            if peer is not None and peer.deliveries is not None:
                peer.deliveries[child.priority].remove(child)
                child.function.delivering -= 1
            elif child in child.function.orphans:
                child.function.orphans.remove(child)
            self._delivered(child, b"cancelled", b"")
        if record.parent is job and job.state != FINISHED and not record.pending:
            self._finish(job)  # other nodes' parts end unheard

    # -- restart -----------------------------------------------------------------------------

    def _restore_delivery(self, child: Job) -> bool:
        """A replayed row that is a delivery: attach it to its broadcast (replayed before it,
        as it was stored first) to wait for a worker; False if it is no delivery."""
        if not child.reducer.startswith(DELIVERY_MARK):
            return False
        parent = self.jobs.get(child.reducer[len(DELIVERY_MARK) :])
        record = parent.broadcast if parent is not None else None
        if record is None:
            return False  # its parent is gone: it runs as an ordinary job
        child.broadcast = record
        child.reducer = b""  # the mark is the row's only, never the wire's
        record.pending[child] = None
        child.function.orphans.append(child)
        child.state = QUEUED
        return True

    def _restore_parent(self, parent: Job) -> None:
        """A replayed broadcast: started before (``retries`` holds its total) and waiting for
        its deliveries' rows, or not started, to start once workers register."""
        record = Broadcast(parent, total=parent.retries)
        parent.state = RUNNING
        parent.denominator = record.total
        if parent.retries:
            parent.broadcast = record
            record.completed = parent.retries  # until its pending deliveries are counted
        else:
            parent.function.unstarted.append(parent)

    def _restored_broadcasts(self) -> None:
        """After replay: a started broadcast's done count; one with nothing left is over."""
        for job in list(self.jobs.values()):
            record = job.broadcast
            if record is not None and record.parent is job:
                record.completed = record.total - len(record.pending)
                job.numerator = record.completed
                if not record.pending:
                    self._broadcast_over(record)


def _who(peer: Peer | None) -> bytes:
    """A delivery's worker as its results name it: the connection's client id."""
    return peer.client_id if peer is not None else b"-"


__all__ = ["DELIVERY_MARK", "RESTART_GRACE", "Broadcasts"]
