"""Foreground jobs and GET_STATUS across a cluster's nodes (gearmanpy/server/cluster_results.py,
gearmanpy/store/pg_cluster_results.py), with two cores on one real PostgreSQL table, each with
its ClusterNode and LISTEN connection.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from twisted.internet.defer import inlineCallbacks

from gearmanpy.protocol.admin import parse_admin_line
from gearmanpy.protocol.packets import PacketType as P
from gearmanpy.server.admin import AdminCommands
from gearmanpy.server.cluster import ClusterNode
from gearmanpy.server.cluster_admin import ClusterAdmin
from gearmanpy.server.core import JobServerCore
from gearmanpy.server.outbound import Outbound
from gearmanpy.store.interface import Priority, StoredJob
from gearmanpy.store.pg_cluster import ClusterStore, NotifyListener
from tests.serverhelpers import RecordingPeer
from tests.test_pg_cluster import _OnPostgres, _reactor, sleep


class TwoNodes(_OnPostgres):
    """Nodes A and B on one table, each a core with its ClusterNode and listener."""

    #: Whether the listeners pass on ``j:`` notices (False: a node never hears that a client
    #: joined a row it holds, as when it finishes the job before the notice comes).
    hear_joins = True

    def cluster_core(self, store: ClusterStore, boot: int) -> tuple[JobServerCore, ClusterNode]:
        """A core on ``store`` with its node and listener started (stopped at the end)."""
        core = JobServerCore(clock=_reactor(), store=store)
        core.set_boot(boot)
        node = ClusterNode(core, store, _reactor(), poll=0.3)
        node.install()
        node.start()
        joined = node.joined if self.hear_joins else None
        listener = NotifyListener(
            self.server.url, store.channel, _reactor(), node.heard, node.events, joined
        )
        listener.start()
        self.addCleanup(listener.stop)
        self.addCleanup(lambda: node._loops and node.stop())
        return core, node

    @inlineCallbacks
    def pair(self) -> Any:
        """Nodes A and B: (core, node) each."""
        sa = yield self.node("a")
        sb = yield self.node("b")
        yield sleep(0.3)  # both listening
        return self.cluster_core(sa, 1), self.cluster_core(sb, 2)

    @inlineCallbacks
    def until(self, peer: RecordingPeer, n: int = 1, seconds: float = 5.0) -> Any:
        """Wait until ``peer`` has at least ``n`` packets; take them."""
        for _ in range(int(seconds / 0.02)):
            if len(peer.packets) >= n:
                break
            yield sleep(0.02)
        return peer.take()

    @inlineCallbacks
    def lapse(self, node: Any, other: Any) -> Any:
        """End ``node``'s lease as a stall would, let ``other``'s lease tick forget it (its
        waiters, and the unclaimed shared rows nobody else waits for), then let ``node``'s
        own tick find it out."""
        with psycopg.connect(self.server.url) as conn:
            conn.execute(
                f"UPDATE {self.table}_nodes SET lease_until = now() - interval '1 second'"
                " WHERE owner = %s",
                (node.store.owner,),
            )
        yield other.store.tick(other.lease)
        with psycopg.connect(self.server.url) as conn:
            waiters = conn.execute(f"SELECT count(*) FROM {self.table}_waiters").fetchone()
        self.assertEqual(waiters, (0,))
        node._lease_tick()
        yield sleep(0.3)

    @inlineCallbacks
    def worker_gets(self, worker: RecordingPeer, core: JobServerCore) -> Any:
        """``worker`` grabs a job, sleeping until its NOOP if none is here yet: the
        JOB_ASSIGN_UNIQ's args."""
        kind, args = worker.grab()
        if kind == P.NO_JOB:
            core.pre_sleep(worker.peer)
            got = yield self.until(worker)
            self.assertEqual(got, [(P.NOOP, ())])
            kind, args = worker.grab()
        self.assertEqual(kind, P.JOB_ASSIGN_UNIQ)
        return args


@pytest.mark.realdb
class SharedForegroundTests(TwoNodes):
    """A client on one node, the worker on the other."""

    def status(self, core: JobServerCore, handle: bytes) -> Any:
        """GET_STATUS on ``core`` from a new peer: a Deferred of its STATUS_RES fields."""
        asker = RecordingPeer(core)
        core.get_status(asker.peer, handle)
        return self.until(asker)

    @inlineCallbacks
    def status_becomes(self, core: JobServerCore, handle: bytes, want: Any) -> Any:
        """GET_STATUS on ``core`` until it answers ``want`` (the running node's writes reach
        the table through its group commit, after a moment), at most 5 s; the last answer."""
        got = None
        for _ in range(100):
            got = yield self.status(core, handle)
            if got == want:
                break
            yield sleep(0.05)
        return got

    @inlineCallbacks
    def test_events_reach_the_client_in_order(self) -> Any:
        """A foreground job submitted on A (no worker there) runs on B's worker; WORK_DATA,
        WORK_WARNING, WORK_STATUS and WORK_COMPLETE reach A's client in order, GET_STATUS
        answers the same on both nodes while it runs, and nothing is left afterwards."""
        (core_a, _), (core_b, _) = yield self.pair()
        worker = RecordingPeer(core_b)
        worker.can_do(b"f")
        client = RecordingPeer(core_a)
        core_a.submit(client.peer, b"f", b"", b"in")
        ((kind, (handle,)),) = yield self.until(client)
        self.assertEqual(kind, P.JOB_CREATED)
        args = yield self.worker_gets(worker, core_b)
        self.assertEqual(args, (handle, b"f", b"", b"in"))
        core_b.work_data(worker.peer, P.WORK_DATA, handle, b"d1")
        core_b.work_data(worker.peer, P.WORK_WARNING, handle, b"w1")
        core_b.work_status(worker.peer, handle, b"1", b"2")
        yield sleep(0.3)
        on_a = yield self.status(core_a, handle)
        on_b = yield self.status(core_b, handle)
        self.assertEqual(on_a, [(P.STATUS_RES, (handle, b"1", b"1", b"1", b"2"))])
        self.assertEqual(on_b, on_a)
        core_b.work_complete(worker.peer, handle, b"out")
        got = yield self.until(client, 4)
        self.assertEqual(
            got,
            [
                (P.WORK_DATA, (handle, b"d1")),
                (P.WORK_WARNING, (handle, b"w1")),
                (P.WORK_STATUS, (handle, b"1", b"2")),
                (P.WORK_COMPLETE, (handle, b"out")),
            ],
        )
        self.assertEqual((core_a.jobs, core_b.jobs), ({}, {}))
        yield sleep(0.2)
        with psycopg.connect(self.server.url) as conn:
            for suffix in ("", "_waiters", "_events"):
                (n,) = conn.execute(f"SELECT count(*) FROM {self.table}{suffix}").fetchone()  # type: ignore[misc]
                self.assertEqual(n, 0, suffix)

    @inlineCallbacks
    def test_coalesced_across_nodes_and_exceptions(self) -> Any:
        """The same unique submitted in the foreground on A and on B is one job under A's
        handle; B's own worker runs it (B claims the row it waits for itself), and the
        WORK_EXCEPTION reaches the client that asked for exceptions, WORK_FAIL the other."""
        (core_a, _), (core_b, _) = yield self.pair()
        on_a = RecordingPeer(core_a)
        on_a.peer.exceptions = True
        on_b = RecordingPeer(core_b)
        core_a.submit(on_a.peer, b"f", b"same", b"x")
        ((_, (handle,)),) = yield self.until(on_a)
        core_b.submit(on_b.peer, b"f", b"same", b"x")
        got = yield self.until(on_b)
        self.assertEqual(got, [(P.JOB_CREATED, (handle,))])
        worker = RecordingPeer(core_b)
        worker.can_do(b"f")
        local, _, unique, _ = yield self.worker_gets(worker, core_b)
        self.assertEqual(unique, b"same")
        core_b.work_exception(worker.peer, local, b"boom")
        got_a = yield self.until(on_a)
        got_b = yield self.until(on_b)
        self.assertEqual(got_a, [(P.WORK_EXCEPTION, (handle, b"boom"))])
        self.assertEqual(got_b, [(P.WORK_FAIL, (handle,))])

    @inlineCallbacks
    def test_background_status_on_every_node(self) -> Any:
        """A background job's WORK_STATUS on B is what GET_STATUS and GET_STATUS_UNIQUE
        answer on A; once it completes, A says it is unknown."""
        (core_a, _), (core_b, _) = yield self.pair()
        worker = RecordingPeer(core_b)
        worker.can_do(b"f")
        client = RecordingPeer(core_a)
        core_a.submit(client.peer, b"f", b"u1", b"x", background=True)
        ((_, (handle,)),) = yield self.until(client)
        yield self.worker_gets(worker, core_b)
        core_b.work_status(worker.peer, handle, b"3", b"4")
        want = [(P.STATUS_RES, (handle, b"1", b"1", b"3", b"4"))]
        got = yield self.status_becomes(core_a, handle, want)
        self.assertEqual(got, want)
        asker = RecordingPeer(core_a)
        core_a.get_status_unique(asker.peer, b"u1")
        got = yield self.until(asker)
        self.assertEqual(got, [(P.STATUS_RES_UNIQUE, (b"u1", b"1", b"1", b"3", b"4", b"0"))])
        core_b.work_complete(worker.peer, handle, b"")
        want = [(P.STATUS_RES, (handle, b"0", b"0", b"0", b"0"))]
        got = yield self.status_becomes(core_a, handle, want)
        self.assertEqual(got, want)

    @inlineCallbacks
    def test_dead_waiters_are_forgotten(self) -> Any:
        """When the node whose client waits for a shared job loses its lease, the others'
        lease tick deletes its waiter and the unclaimed row nobody waits for any more."""
        a = yield self.node("a", lease=1.0)
        b = yield self.node("b", lease=1.0)
        job = StoredJob("k", b"f", b"", Priority.NORMAL, b"x", handle=b"H:k")
        shared = yield a.share(job, b"")
        self.assertEqual((shared.joined, shared.handle), (False, b"H:k"))
        yield sleep(1.3)
        yield b.tick(1.0)
        self.assertEqual(self.rows(), [])
        with psycopg.connect(self.server.url) as conn:
            (n,) = conn.execute(f"SELECT count(*) FROM {self.table}_waiters").fetchone()  # type: ignore[misc]
        self.assertEqual(n, 0)

    @inlineCallbacks
    def test_admin_status_shows_the_cluster(self) -> Any:
        """``status`` on A counts B's running job and a queued one that no node has claimed
        (from the table) with A's own unshared foreground job, and A's workers; other
        commands are A's own."""
        (core_a, node_a), (core_b, _) = yield self.pair()
        worker = RecordingPeer(core_b)
        worker.can_do(b"f")
        on_a = RecordingPeer(core_a)
        local = RecordingPeer(core_a)
        local.can_do(b"g")  # a worker here: g's foreground job stays on A
        core_a.submit(on_a.peer, b"g", b"", b"x")
        core_a.submit(on_a.peer, b"f", b"", b"1", background=True)
        yield self.until(on_a, 2)
        yield self.worker_gets(worker, core_b)
        core_a.submit(on_a.peer, b"h", b"", b"2", background=True)  # no worker anywhere
        yield self.until(on_a)
        admin = ClusterAdmin(AdminCommands(core_a), node_a.store)
        lines: list[bytes] = []
        peer = core_a.connect(Outbound(lines.append), lambda: None)
        admin.handle(peer, parse_admin_line(b"status"))
        for _ in range(100):
            if lines:
                break
            yield sleep(0.02)
        self.assertEqual(
            sorted(b"".join(lines).split(b"\n")),
            [b"", b".", b"f\t1\t1\t0", b"g\t1\t0\t1", b"h\t1\t0\t0"],
        )
        lines.clear()
        admin.handle(peer, parse_admin_line(b"version"))
        self.assertTrue(lines and lines[0].startswith(b"OK "), lines)
