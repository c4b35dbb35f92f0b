"""Coalescing submissions of two nodes at once (gearmanpy/store/pg_cluster.py): the unique
index's locks are taken in one order on every node, so batches with the same uniques in
opposite orders never deadlock, and a batch's rows keep their submission order (FIFO)."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.internet.threads import deferToThread

from gearmanpy.server.cluster import coalesce_column
from gearmanpy.store.pg_cluster import SUBMIT
from tests.test_pg_cluster import _OnPostgres, batch_at_once, row, watch_deadlocks


@pytest.mark.realdb
class CoalescingTests(_OnPostgres):
    """Two nodes' stores on one table, their batches written at the same moment."""

    @inlineCallbacks
    def test_opposite_orders_do_not_deadlock(self) -> Any:
        """20 rounds: A writes 20 uniques in one order, B the same 20 in the other, both
        batches at once. PostgreSQL finds no deadlock (it would abort a batch, which the
        writer retries or answers with QUEUE_ERROR), and each unique is one row."""
        a = yield self.node("a")
        b = yield self.node("b")
        deadlocks = watch_deadlocks(self)
        batch = batch_at_once

        for r in range(20):
            uniques = [b"r%d-u%d" % (r, i) for i in range(20)]

            def ops(node: str, order: list[bytes], r: int = r) -> list[Any]:
                return [
                    (SUBMIT, (row(f"{node}{r}-{u.decode()}", unique=u), coalesce_column(u), 0, 0))
                    for u in order
                ]

            barrier = threading.Barrier(2)
            yield DeferredList(
                [
                    deferToThread(batch, a, ops("a", uniques), barrier),
                    deferToThread(batch, b, ops("b", uniques[::-1]), barrier),
                ],
                fireOnOneErrback=True,
            )
        self.assertEqual(deadlocks, [])
        with psycopg.connect(self.server.url) as conn:
            (n,) = conn.execute(f"SELECT count(*) FROM {self.table}").fetchone()  # type: ignore[misc]
        self.assertEqual(n, 400)

    @inlineCallbacks
    def test_a_batch_keeps_its_order(self) -> Any:
        """One batch of uniques in reverse key order (and a job without one among them) is
        claimed in the order it was submitted."""
        a = yield self.node("a")
        uniques = [b"u%02d" % i for i in range(10)][::-1] + [b""]
        ops = [
            (SUBMIT, (row(f"k{i}", unique=u), coalesce_column(u), 0, 0))
            for i, u in enumerate(uniques)
        ]
        yield deferToThread(a._cluster.write, ops)
        claimed = yield a.claim(b"f", 20)
        self.assertEqual([c.job.unique for c in claimed], uniques)
