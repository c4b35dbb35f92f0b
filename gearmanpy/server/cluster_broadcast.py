# -*- test-case-name: tests.test_pg_cluster_broadcast -*-
"""Broadcast functions across a cluster's nodes (mixed into ``ClusterNode``).

The node that starts a broadcast (server/broadcast.py: the node a foreground one was
submitted to, if a worker of its function is connected there, else the node that claims its
row) delivers it to its own connections as a single server does, and fans it out to every
other live node that has a connection registered for its function (the workers table): one
shared foreground row per node, which only that node may claim
(:mod:`~gearmanpy.store.pg_cluster_broadcast`) and which this node waits for as for any
shared job. That node runs the row as a broadcast to its own connections (it fans out no
further) and publishes its packets; :class:`NodePart` folds them into the broadcast here, so
that its clients hear every node's deliveries (WORK_DATA or WORK_WARNING, each with a
WORK_STATUS of all the deliveries done out of all) and one summary that counts them all.

* The total starts with what the workers table said (at most a second old) and follows each
  node's own count as its packets arrive.
* A node that loses its lease before its part ended: the lease tick that forgets it deletes
  its row and publishes WORK_FAIL; the deliveries not heard of are counted lost (``lost``,
  named by the node).
* A node that registers the function after the fan-out gets none of this broadcast.
* A node that dies while it runs a background broadcast: the node that claims its requeued
  row starts it again, to every node's workers (at least once, as a job after a worker loss).
* ``cancel job`` on the parent ends it here; the other nodes' parts run on unheard.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import attrs
from twisted.python.failure import Failure

from gearmanpy.protocol import replies
from gearmanpy.protocol.packets import PacketType
from gearmanpy.server.cluster_results import SinkOnly, packet_args, packet_type
from gearmanpy.server.durability import stored_job
from gearmanpy.server.jobs import FINISHED, Broadcast, Function, Job, Peer
from gearmanpy.store.pg_cluster_broadcast import Target

#: What the reducer column of a row fanned out to another node holds before the parent's
#: handle: such a row's broadcast is that node's part, which it fans out no further.
NODE_MARK = b"\0node:"
_SUMMARY = re.compile(rb"completed=(\d+) failed=(\d+) lost=(\d+) total=(\d+)")


class NodePart(SinkOnly):
    """One other node's part of a broadcast started here: the client of the job that waits
    for its row's packets, which it folds into the broadcast's record."""

    def __init__(self, core: Any, record: Broadcast, target: Target) -> None:
        self.core = core
        self.record = record
        self.name = target.name.encode("utf-8", "backslashreplace")
        #: Its deliveries as counted in the broadcast's total, and those heard to end.
        self.counted = target.workers
        self.ended = 0

    def send(self, data: bytes) -> None:
        """A packet of the node's part: a delivery ended (WORK_DATA, WORK_WARNING), its
        done/total (WORK_STATUS), its summary (WORK_COMPLETE) or its loss (WORK_FAIL)."""
        record, kind = self.record, packet_type(data)
        if record.parent.state == FINISHED:
            return  # cancelled here: the rest is unheard
        rest = b"\0".join(packet_args(data)[1:])  # after the handle
        if kind == PacketType.WORK_DATA:
            self.ended += 1
            record.completed += 1
            self.core.tell_parent(record, self._forward(kind, rest))
        elif kind == PacketType.WORK_WARNING:
            self.ended += 1
            if rest.endswith(b"\0lost"):
                record.lost += 1
            else:
                record.failed += 1
            self.core.tell_parent(record, self._forward(kind, rest))
        elif kind == PacketType.WORK_STATUS:
            self._recount(int(rest.split(b"\0")[-1] or 0))
        elif kind == PacketType.WORK_COMPLETE:
            found = _SUMMARY.fullmatch(rest)
            if found is not None:
                self._recount(int(found.group(4)))
            self._lose_rest()
            self.core.remote_ended(record)
        elif kind in (PacketType.WORK_FAIL, PacketType.WORK_EXCEPTION):
            self._lose_rest()
            self.core.remote_ended(record)

    def _forward(self, kind: int, rest: bytes) -> bytes:
        """The packet for the parent's clients: the node's, under the parent's handle."""
        return replies.work_forward(kind, self.record.parent.handle, rest)

    def _recount(self, total: int) -> None:
        """The node says its part has ``total`` deliveries: the broadcast's total follows."""
        self.record.total += total - self.counted
        self.record.parent.denominator = self.record.total
        self.counted = total

    def _lose_rest(self) -> None:
        """The node's part ended: its deliveries not heard of are lost (named by the node)."""
        while self.ended < self.counted:
            self.ended += 1
            self.record.lost += 1
            self.core.tell_parent(self.record, self._forward(PacketType.WORK_WARNING,
                                                             self.name + b"\0lost"))  # fmt: skip


class ClusterBroadcasts:
    """The node's side of broadcasts across the cluster (mixed into ``ClusterNode``)."""

    __slots__ = ()

    if TYPE_CHECKING:
        core: Any
        store: Any
        _waiting: dict[bytes, Job]

        def _lost_write(self, failure: Failure) -> None:
            """Log a failed cluster write (SharedResults')."""

        def _forward(self, events: list[tuple[bytes, bytes]]) -> None:
            """Hand events to the jobs waiting for them (SharedResults')."""

    def fan_out(self, record: Broadcast) -> None:
        """A broadcast started here: send it to the other nodes serving its function (not
        if it is another node's part already); it is not over before they answered."""
        parent = record.parent
        if parent.reducer.startswith(NODE_MARK):
            return
        core = self.core
        record.remote += 1  # until the fan-out answers
        handle = core.new_handle()
        key = f"{core._durable.boot}-bc-{handle.rsplit(b':', 1)[-1].decode()}"
        row = attrs.evolve(stored_job(parent), unique=b"", reducer=NODE_MARK + parent.handle,
                           when=0, retries=0)  # fmt: skip
        d = self.store.fan_out(row, key, handle)
        d.addCallbacks(self._fanned, self._not_fanned, (record,), errbackArgs=(record,))

    def _fanned(self, targets: list[Target], record: Broadcast) -> None:
        """The rows went to ``targets``: wait for each node's part."""
        core = self.core
        for target in targets:
            part = NodePart(core, record, target)
            record.remote += 1
            record.total += target.workers
            waiting = Job(target.handle, record.parent.function, b"", b"", 0, False)
            client = Peer(part, lambda: None, exceptions=True)
            waiting.clients = [client]
            client.client_jobs.add(waiting)
            core.jobs[target.handle] = waiting
            self._waiting[target.handle] = waiting
        record.parent.denominator = record.total
        core.remote_ended(record)  # the fan-out's own count

    def _not_fanned(self, failure: Failure, record: Broadcast) -> None:
        """The database refused the fan-out: the broadcast reaches this node's workers only."""
        self._lost_write(failure)
        self.core.remote_ended(record)

    def parts_lapsed(self) -> None:
        """This node's lease had lapsed, and the cluster forgot that it waits for the other
        nodes' parts of its broadcasts: their deliveries not heard of count as lost (the
        parts run on, unheard), so no broadcast waits for ever."""
        lapsed = [h for h, job in self._waiting.items() if _is_part(job)]
        self._forward([(h, replies.work_fail(h)) for h in lapsed])

    def start_claimed(self, f: Function) -> None:
        """Start the broadcasts of ``f`` just claimed (replay left them unstarted, to wait
        for workers after a restart; here the workers are connected already)."""
        if not f.unstarted:
            return
        if f.broadcast_timer is not None:
            f.broadcast_timer.cancel()
        self.core._start_unstarted(f)


def _is_part(job: Job) -> bool:
    """Whether ``job`` waits for another node's part of a broadcast started here."""
    return any(isinstance(c.out, NodePart) for c in job.clients)


__all__ = ["NODE_MARK", "ClusterBroadcasts", "NodePart"]
