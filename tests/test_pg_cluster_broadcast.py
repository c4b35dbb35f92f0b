"""Broadcast functions across a cluster's nodes (gearmanpy/server/cluster_broadcast.py,
gearmanpy/store/pg_cluster_broadcast.py): two or three cores on one real PostgreSQL table,
each with its ClusterNode, listener and worker board.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from twisted.internet.defer import inlineCallbacks

from gearmanpy.protocol.packets import PacketType as P
from gearmanpy.server.cluster import ClusterNode
from gearmanpy.server.cluster_workers import WorkerBoard
from gearmanpy.server.core import JobServerCore
from gearmanpy.server.policy import Policies
from gearmanpy.store.pg_cluster import ClusterStore, NotifyListener
from gearmanpy.store.pg_cluster_broadcast import serving
from tests.serverhelpers import RecordingPeer
from tests.test_pg_cluster import _reactor, sleep
from tests.test_pg_cluster_results import TwoNodes

BROADCAST = {"bc": {"broadcast": True}}


def test_serving_counts_the_connections_of_a_function() -> None:
    """A node's workers lines: the connections that list the function (not a prefix of it)."""
    lines = b"3 node_b wa : bc f\n4 node_b wb : bcx\n5 node_b - : g bc\n6 node_b - :\n"
    assert serving(lines, b"bc") == 2
    assert serving(lines, b"bcx") == 1
    assert serving(b"", b"bc") == 0


@pytest.mark.realdb
class ClusterBroadcastTests(TwoNodes):
    """A broadcast reaches the function's workers on every node, and its summary counts them."""

    def cluster_core(self, store: ClusterStore, boot: int) -> tuple[JobServerCore, ClusterNode]:
        """A broadcast-configured core on ``store``, its node (lease 1 s), listener and board."""
        core = JobServerCore(clock=_reactor(), store=store, policies=Policies(rules=BROADCAST))
        core.set_boot(boot)
        node = ClusterNode(core, store, _reactor(), poll=0.3, lease=1.0)
        node.install()
        node.start()
        listener = NotifyListener(
            self.server.url, store.channel, _reactor(), node.heard, node.events, node.joined
        )
        listener.start()
        board = WorkerBoard(core, store, _reactor(), store.node_name, interval=0.05)
        board.start()
        self.addCleanup(listener.stop)
        self.addCleanup(board.stop)
        self.addCleanup(lambda: node._loops and node.stop())
        return core, node

    @inlineCallbacks
    def nodes(self, *names: str) -> Any:
        """A (core, node) per name, each on its own store (lease 1 s)."""
        stores = []
        for name in names:
            store = yield self.node(name, lease=1.0)
            stores.append(store)
        yield sleep(0.3)  # every listener listening
        return [self.cluster_core(s, i + 1) for i, s in enumerate(stores)]

    def workers(self, core: JobServerCore, *ids: bytes) -> list[RecordingPeer]:
        """Worker connections of ``bc`` on ``core``, with these client ids."""
        out = []
        for cid in ids:
            w = RecordingPeer(core)
            w.peer.client_id = cid
            w.can_do(b"bc")
            out.append(w)
        return out

    @inlineCallbacks
    def published(self, want: int) -> Any:
        """Wait until the workers table lists ``want`` connections of ``bc``."""
        for _ in range(100):
            with psycopg.connect(self.server.url) as conn:
                rows = conn.execute(f"SELECT lines FROM {self.table}_workers").fetchall()
            if sum(serving(bytes(r[0]), b"bc") for r in rows) == want:
                return
            yield sleep(0.05)
        self.fail(f"the workers table never listed {want} workers of bc")

    @staticmethod
    def killed(node: ClusterNode) -> None:
        """``node`` stops renewing its lease and claiming, as if its process were killed."""
        for loop in node._loops:
            loop.stop()
        node._loops = []
        node._stopped = True

    @inlineCallbacks
    def run_delivery(self, worker: RecordingPeer, core: JobServerCore, result: bytes) -> Any:
        """``worker`` takes its delivery and completes it with ``result``: its handle."""
        args = yield self.worker_gets(worker, core)
        core.work_complete(worker.peer, args[0], result)
        return args[0]

    def table_counts(self) -> list[int]:
        """Rows left in the queue, waiters and events tables."""
        with psycopg.connect(self.server.url) as conn:
            return [
                conn.execute(f"SELECT count(*) FROM {self.table}{suffix}").fetchone()[0]  # type: ignore[index]
                for suffix in ("", "_waiters", "_events")
            ]

    @inlineCallbacks
    def left_empty(self, *cores: JobServerCore) -> Any:
        """Wait until no core holds a job and the tables are empty (at most 5 s)."""
        for _ in range(100):
            if all(not c.jobs for c in cores) and self.table_counts() == [0, 0, 0]:
                return
            yield sleep(0.05)
        self.fail(f"left: {[dict(c.jobs) for c in cores]}, tables {self.table_counts()}")

    @inlineCallbacks
    def test_foreground_reaches_every_nodes_workers(self) -> Any:
        """A foreground broadcast submitted on A (one worker there) reaches B's two workers
        too; A's client hears each delivery with the done/total of all three, then one
        summary; nothing is left on either node or in the tables."""
        (core_a, _), (core_b, _) = yield self.nodes("a", "b")
        (wa,) = self.workers(core_a, b"wa")
        wb1, wb2 = self.workers(core_b, b"wb1", b"wb2")
        yield self.published(3)
        client = RecordingPeer(core_a)
        core_a.submit(client.peer, b"bc", b"", b"drop K")
        ((kind, (parent,)),) = yield self.until(client)
        self.assertEqual(kind, P.JOB_CREATED)
        yield self.run_delivery(wb1, core_b, b"ok1")
        got = yield self.until(client, 2)
        self.assertEqual(
            got, [(P.WORK_DATA, (parent, b"wb1\0ok1")), (P.WORK_STATUS, (parent, b"1", b"3"))]
        )
        yield self.run_delivery(wa, core_a, b"oka")
        args = yield self.worker_gets(wb2, core_b)
        core_b.work_exception(wb2.peer, args[0], b"boom")
        got = yield self.until(client, 5)
        self.assertEqual(
            got,
            [
                (P.WORK_DATA, (parent, b"wa\0oka")),
                (P.WORK_STATUS, (parent, b"2", b"3")),
                (P.WORK_WARNING, (parent, b"wb2\0boom")),
                (P.WORK_STATUS, (parent, b"3", b"3")),
                (P.WORK_COMPLETE, (parent, b"completed=2 failed=1 lost=0 total=3")),
            ],
        )
        for w in (wa, wb1, wb2):
            self.assertEqual(w.grab(), (P.NO_JOB, ()))  # one delivery each
        yield self.left_empty(core_a, core_b)

    @inlineCallbacks
    def test_background_reaches_every_node_once(self) -> Any:
        """A background broadcast submitted on C, which has no worker of it, is claimed by A
        or B, which delivers it to its own worker and fans it out to the other's: each of the
        two workers runs it once, and nothing is left."""
        (core_a, _), (core_b, _), (core_c, _) = yield self.nodes("a", "b", "c")
        (wa,) = self.workers(core_a, b"wa")
        (wb,) = self.workers(core_b, b"wb")
        for w, core in ((wa, core_a), (wb, core_b)):
            self.assertEqual(w.grab(), (P.NO_JOB, ()))
            core.pre_sleep(w.peer)
        yield self.published(2)
        client = RecordingPeer(core_c)
        core_c.submit(client.peer, b"bc", b"", b"payload", background=True)
        ((kind, _),) = yield self.until(client)
        self.assertEqual(kind, P.JOB_CREATED)
        for w, core in ((wa, core_a), (wb, core_b)):
            got = yield self.until(w)
            self.assertEqual(got, [(P.NOOP, ())])
            kind, args = w.grab()
            self.assertEqual((kind, args[3]), (P.JOB_ASSIGN_UNIQ, b"payload"))
            core.work_complete(w.peer, args[0], b"done")
        yield self.left_empty(core_a, core_b, core_c)
        for w in (wa, wb):
            self.assertEqual(w.grab(), (P.NO_JOB, ()))
        self.assertEqual(core_a.counters.deliveries + core_b.counters.deliveries, 2)

    @inlineCallbacks
    def test_a_dead_nodes_part_is_counted_lost(self) -> Any:
        """B dies while its worker runs its delivery of A's foreground broadcast: once B's
        lease expires, A counts B's delivery lost (named by the node) and the summary comes;
        B's late result changes nothing."""
        (core_a, _), (core_b, node_b) = yield self.nodes("a", "b")
        (wa,) = self.workers(core_a, b"wa")
        (wb,) = self.workers(core_b, b"wb")
        yield self.published(2)
        client = RecordingPeer(core_a)
        core_a.submit(client.peer, b"bc", b"", b"x")
        ((_, (parent,)),) = yield self.until(client)
        args_b = yield self.worker_gets(wb, core_b)
        self.killed(node_b)
        yield self.run_delivery(wa, core_a, b"oka")
        got = yield self.until(client, 2)
        self.assertEqual(got[0], (P.WORK_DATA, (parent, b"wa\0oka")))
        got = yield self.until(client, 3, seconds=8.0)
        self.assertEqual(
            got,
            [
                (P.WORK_WARNING, (parent, b"b\0lost")),
                (P.WORK_STATUS, (parent, b"2", b"2")),
                (P.WORK_COMPLETE, (parent, b"completed=1 failed=0 lost=1 total=2")),
            ],
        )
        core_b.work_complete(wb.peer, args_b[0], b"late")
        yield sleep(0.3)
        self.assertEqual(client.take(), [])
        self.assertEqual(core_a.jobs, {})

    @inlineCallbacks
    def test_one_node_is_a_single_servers_broadcast(self) -> Any:
        """With no other node serving the function, a broadcast is this node's alone: the
        same packets as on a single server, and no row is written for it."""
        ((core_a, _), (core_b, _)) = yield self.nodes("a", "b")
        wa1, wa2 = self.workers(core_a, b"w1", b"w2")
        yield self.published(2)
        client = RecordingPeer(core_a)
        core_a.submit(client.peer, b"bc", b"", b"x")
        ((_, (parent,)),) = yield self.until(client)
        yield self.run_delivery(wa1, core_a, b"r1")
        yield self.run_delivery(wa2, core_a, b"r2")
        got = yield self.until(client, 5)
        self.assertEqual(
            got,
            [
                (P.WORK_DATA, (parent, b"w1\0r1")),
                (P.WORK_STATUS, (parent, b"1", b"2")),
                (P.WORK_DATA, (parent, b"w2\0r2")),
                (P.WORK_STATUS, (parent, b"2", b"2")),
                (P.WORK_COMPLETE, (parent, b"completed=2 failed=0 lost=0 total=2")),
            ],
        )
        self.assertEqual(self.table_counts(), [0, 0, 0])
        self.assertEqual((core_a.jobs, core_b.jobs), ({}, {}))

    @inlineCallbacks
    def test_a_dead_runners_broadcast_starts_again(self) -> Any:
        """A dies while its worker runs its background broadcast: once A's lease expires, B
        claims the requeued row and starts the broadcast again for its own worker (at least
        once); no delivery of A's is left in the table to run as a plain job."""
        (core_a, node_a), (core_b, _) = yield self.nodes("a", "b")
        (wa,) = self.workers(core_a, b"wa")
        self.assertEqual(wa.grab(), (P.NO_JOB, ()))
        core_a.pre_sleep(wa.peer)
        yield self.published(1)
        client = RecordingPeer(core_a)
        core_a.submit(client.peer, b"bc", b"", b"payload", background=True)
        yield self.until(client)
        got = yield self.until(wa)
        self.assertEqual(got, [(P.NOOP, ())])
        kind, args = wa.grab()
        self.assertEqual((kind, args[3]), (P.JOB_ASSIGN_UNIQ, b"payload"))
        self.killed(node_a)
        (wb,) = self.workers(core_b, b"wb")
        args = yield self.worker_gets(wb, core_b)  # after A's lease expired
        self.assertEqual(args[3], b"payload")
        core_b.work_complete(wb.peer, args[0], b"done")
        yield self.left_empty(core_b)
        self.assertEqual(core_b.counters.deliveries, 1)

    @inlineCallbacks
    def test_a_lapsed_lease_counts_the_other_parts_lost(self) -> Any:
        """A's lease lapses while B's part of A's broadcast runs (the cluster forgot A's
        waits): A counts B's delivery lost at once instead of waiting for ever, and does not
        put a row back for it."""
        (core_a, node_a), (core_b, node_b) = yield self.nodes("a", "b")
        (wa,) = self.workers(core_a, b"wa")
        (wb,) = self.workers(core_b, b"wb")
        yield self.published(2)
        client = RecordingPeer(core_a)
        core_a.submit(client.peer, b"bc", b"", b"x")
        ((_, (parent,)),) = yield self.until(client)
        args_b = yield self.worker_gets(wb, core_b)
        yield self.lapse(node_a, node_b)
        got = yield self.until(client, 2)
        self.assertEqual(
            got, [(P.WORK_WARNING, (parent, b"b\0lost")), (P.WORK_STATUS, (parent, b"1", b"2"))]
        )
        yield self.run_delivery(wa, core_a, b"oka")
        got = yield self.until(client, 3)
        self.assertEqual(
            got[-1], (P.WORK_COMPLETE, (parent, b"completed=1 failed=0 lost=1 total=2"))
        )
        core_b.work_complete(wb.peer, args_b[0], b"late")
        yield self.left_empty(core_a, core_b)
