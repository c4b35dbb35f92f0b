"""``maxqueue`` across a cluster (gearmanpy/store/pg_cluster_limits.py, the cluster's
durability): a node's limit bounds its function's queued rows in the shared table, every
node's, checked as a background submission is written; two nodes' cores on one real
PostgreSQL table."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from twisted.internet.defer import inlineCallbacks

from gearmanpy.protocol.packets import PacketType as P
from gearmanpy.server.core import JobServerCore
from tests.serverhelpers import RecordingPeer
from tests.test_pg_cluster import row
from tests.test_pg_cluster_results import TwoNodes

FULL = (P.ERROR, (b"QUEUE_ERROR", b"Job queue is full"))


@pytest.mark.realdb
class ClusterMaxQueueTests(TwoNodes):
    """Nodes A and B, each with its ClusterNode and listener."""

    @inlineCallbacks
    def submit(self, core: JobServerCore, data: bytes, unique: bytes = b"") -> Any:
        """A background f from a new client on ``core``: its one reply."""
        client = RecordingPeer(core)
        core.submit(client.peer, b"f", unique, data, background=True)
        got = yield self.until(client)
        self.assertEqual(len(got), 1, got)
        return got[0]

    def queued(self) -> int:
        """f's rows that no node has claimed."""
        with psycopg.connect(self.server.url) as conn:
            row = conn.execute(
                f"SELECT count(*) FROM {self.table} WHERE function = 'f' AND owner IS NULL"
            ).fetchone()
        assert row is not None
        return int(row[0])

    @inlineCallbacks
    def test_the_limit_counts_every_nodes_rows(self) -> Any:
        """``maxqueue f 2`` on both: one row from A and one from B fill f; a third on either
        gets ERROR QUEUE_ERROR, one that coalesces with a queued row joins it, a node
        without the limit still adds rows, and a claimed row no longer counts."""
        (core_a, _), (core_b, _) = yield self.pair()
        core_a.set_max_queue(b"f", [2, 2, 2])
        core_b.set_max_queue(b"f", [2, 2, 2])
        first = yield self.submit(core_a, b"1", unique=b"u")
        self.assertEqual(first[0], P.JOB_CREATED)
        got = yield self.submit(core_b, b"2")
        self.assertEqual(got[0], P.JOB_CREATED)
        for core in (core_a, core_b):
            got = yield self.submit(core, b"3")
            self.assertEqual(got, FULL)
        self.assertEqual(core_b.counters.refused, 1)
        joined = yield self.submit(core_b, b"1", unique=b"u")  # coalesces: not refused
        self.assertEqual(joined, first)
        self.assertEqual(self.queued(), 2)
        core_b.set_max_queue(b"f", [0, 0, 0])  # the limit is each node's own
        got = yield self.submit(core_b, b"4")
        self.assertEqual(got[0], P.JOB_CREATED)
        self.assertEqual(self.queued(), 3)
        for _ in range(2):  # B claims two of f's three rows (or all)
            worker = RecordingPeer(core_b)
            worker.can_do(b"f")
            yield self.worker_gets(worker, core_b)
        self.assertLess(self.queued(), 2)  # claimed rows no longer count
        while self.queued() < 2:
            got = yield self.submit(core_a, b"5")
            self.assertEqual(got[0], P.JOB_CREATED)
        got = yield self.submit(core_a, b"6")
        self.assertEqual(got, FULL)

    @inlineCallbacks
    def test_the_limit_holds_under_concurrent_submissions(self) -> Any:
        """With ``maxqueue f 5`` on both, 12 submissions sent at once on each node (each
        node's one group-commit batch, both batches at once) make exactly 5 rows; the other
        19 clients get ERROR QUEUE_ERROR."""
        (core_a, _), (core_b, _) = yield self.pair()
        clients = []
        for core in (core_a, core_b):
            core.set_max_queue(b"f", [5, 5, 5])
        for i in range(12):
            for core in (core_a, core_b):
                client = RecordingPeer(core)
                core.submit(client.peer, b"f", b"", b"%d" % i, background=True)
                clients.append(client)
        replies = []
        for client in clients:
            got = yield self.until(client)
            replies.extend(got)
        self.assertEqual(sum(1 for kind, _ in replies if kind == P.JOB_CREATED), 5)
        self.assertEqual(replies.count(FULL), 19)
        self.assertEqual(self.queued(), 5)

    @inlineCallbacks
    def test_a_retried_submission_finds_its_own_row(self) -> Any:
        """A limited submission whose first commit went through (the writer retries a batch
        whose answer it lost) is answered with its own row, not refused by it."""
        store = yield self.node("a")
        first = yield store.submit(row("a1"), b"", 1)
        again = yield store.submit(row("a1"), b"", 1)
        self.assertEqual((first.created, first.full), (True, False))
        self.assertEqual((again.created, again.full, again.handle), (True, False, b"H:a1"))
        refused = yield store.submit(row("a2"), b"", 1)
        self.assertTrue(refused.full)
        self.assertEqual(self.queued(), 1)
