"""``maxqueue`` across a cluster (gearmanpy/store/pg_cluster_limits.py, the cluster's
durability): a node's limit bounds its function's queued rows in the shared table, every
node's, checked as a background submission is written; two nodes' cores on one real
PostgreSQL table."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.internet.threads import deferToThread

from gearmanpy.protocol.packets import PacketType as P
from gearmanpy.server.cluster import coalesce_column
from gearmanpy.server.core import JobServerCore
from gearmanpy.store.pg_cluster import CLAIM_JOBS, SUBMIT
from tests.serverhelpers import RecordingPeer
from tests.test_pg_cluster import batch_at_once, row, watch_deadlocks
from tests.test_pg_cluster_results import TwoNodes

FULL = (P.ERROR, (b"QUEUE_ERROR", b"Job queue is full"))


@inlineCallbacks
def burst(test: TwoNodes, cores: tuple[JobServerCore, ...], functions: list[bytes]) -> Any:
    """12 background submissions sent at once on each of ``cores`` (each node's one
    group-commit batch, the batches at once), of ``functions`` in turn: every reply."""
    clients = []
    for i in range(12):
        for core in cores:
            client = RecordingPeer(core)
            core.submit(client.peer, functions[i % len(functions)], b"", b"%d" % i, background=True)
            clients.append(client)
    replies = []
    for client in clients:
        got = yield test.until(client)
        replies.extend(got)
    return replies


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
        for core in (core_a, core_b):
            core.set_max_queue(b"f", [5, 5, 5])
        replies = yield burst(self, (core_a, core_b), [b"f"])
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

    @inlineCallbacks
    def test_mixed_batches_on_two_nodes_do_not_deadlock(self) -> Any:
        """Each node's group commit mixes a limited submission of f with an unlimited one of
        g that coalesces with the other node's (A writes g's row before it counts f, B locks
        f before it writes g's row), 20 rounds, both nodes' batches at once: PostgreSQL never
        finds a deadlock (it would abort a batch, which the writer retries or answers with
        QUEUE_ERROR), and every round makes one g row and two f rows."""
        a = yield self.node("a")
        b = yield self.node("b")
        deadlocks = watch_deadlocks(self)
        batch = batch_at_once

        for i in range(20):
            u = b"u%d" % i
            g = (coalesce_column(u),)
            on_a = [
                (SUBMIT, (row(f"a{i}g", b"g", unique=u), *g, 0, 0)),
                (CLAIM_JOBS, (b"z", 1, None)),
                (SUBMIT, (row(f"a{i}f"), b"", 100, 0)),
            ]
            on_b = [
                (SUBMIT, (row(f"b{i}f"), b"", 100, 0)),
                (SUBMIT, (row(f"b{i}g", b"g", unique=u), *g, 0, 0)),
            ]
            barrier = threading.Barrier(2)
            yield DeferredList(
                [deferToThread(batch, a, on_a, barrier), deferToThread(batch, b, on_b, barrier)],
                fireOnOneErrback=True,
            )
        self.assertEqual(deadlocks, [])
        with psycopg.connect(self.server.url) as conn:
            counts = conn.execute(
                f"SELECT function, count(*) FROM {self.table} GROUP BY function ORDER BY 1"
            ).fetchall()
        self.assertEqual([(bytes(f), n) for f, n in counts], [(b"f", 40), (b"g", 20)])


@pytest.mark.realdb
class ClusterMaxQueuedJobsTests(TwoNodes):
    """``--max-queued-jobs`` on a cluster: every node's queued rows count."""

    @inlineCallbacks
    def test_the_server_wide_limit_counts_the_tables_queued_rows(self) -> Any:
        """With a limit of 3 rows, two from A and one from B (of two functions) fill the
        table for both; one more is refused on either unless it coalesces with a queued row;
        a node without the limit still adds rows; a claimed row no longer counts; with a
        ``maxqueue`` limit too, both hold."""
        a = yield self.node("a")
        b = yield self.node("b")
        for store, key, function in ((a, "a1", b"f"), (a, "a2", b"g"), (b, "b1", b"f")):
            got = yield store.submit(row(key, function, unique=key.encode()), key.encode(), 0, 3)
            self.assertEqual((got.created, got.full), (True, False))
        for store in (a, b):
            got = yield store.submit(row(f"{store.node_name}3", b"h"), b"", 0, 3)
            self.assertTrue(got.full)
        joined = yield b.submit(row("b4", b"g", unique=b"a2"), b"a2", 0, 3)
        self.assertEqual((joined.created, joined.full, joined.handle), (False, False, b"H:a2"))
        free = yield b.submit(row("b5", b"h"), b"", 0, 0)  # B's own flag: none
        self.assertTrue(free.created)
        claimed = yield a.claim(b"f", 2)
        self.assertEqual(len(claimed), 2)
        got = yield a.submit(row("a6", b"f"), b"", 2, 3)  # 2 queued of 3: room for f
        self.assertTrue(got.created)
        got = yield a.submit(row("a7", b"h"), b"", 0, 3)
        self.assertTrue(got.full)
        got = yield a.submit(row("a8", b"f"), b"", 1, 4)  # room in the table, not for f
        self.assertTrue(got.full)
        self.assertEqual(len(self.rows()), 5)

    @inlineCallbacks
    def test_the_server_wide_limit_holds_under_concurrent_submissions(self) -> Any:
        """With ``--max-queued-jobs 5`` on both cores, 12 background submissions of f and g
        sent at once on each node make exactly 5 rows in the table (not 5 a node); the other
        clients get ERROR QUEUE_ERROR."""
        (core_a, _), (core_b, _) = yield self.pair()
        for core in (core_a, core_b):
            core.max_queued_jobs = 5
        replies = yield burst(self, (core_a, core_b), [b"f", b"g"])
        self.assertEqual(sum(1 for kind, _ in replies if kind == P.JOB_CREATED), 5)
        self.assertEqual(replies.count(FULL), 19)
        self.assertEqual(len(self.rows()), 5)

    @inlineCallbacks
    def test_a_batch_fills_the_room_its_joins_leave(self) -> Any:
        """One batch with ``maxqueue`` 2 and one queued row of f: the first submission
        coalesces with that row (so it takes no room), the second is written in the room it
        left, the third is refused."""
        a = yield self.node("a")
        yield a.submit(row("a0", unique=b"u"), b"u", 2)
        ops = [
            (SUBMIT, (row("a1", unique=b"u"), b"u", 2, 0)),
            (SUBMIT, (row("a2"), b"", 2, 0)),
            (SUBMIT, (row("a3"), b"", 2, 0)),
        ]
        got = yield deferToThread(a._cluster.write, ops)  # one transaction (the writer idles)
        self.assertEqual(
            [(s.created, s.full, s.handle) for s in got],
            [(False, False, b"H:a0"), (True, False, b"H:a2"), (False, True, b"")],
        )
        self.assertEqual(len(self.rows()), 2)
