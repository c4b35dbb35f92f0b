"""The failure policy's throttles across a cluster (gearmanpy/store/pg_cluster_throttle.py,
gearmanpy/server/cluster_throttle.py): ``max_running`` and ``rate`` bound a function's jobs
on every node at once, applied as nodes claim rows; two nodes' cores on one real PostgreSQL
table."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.internet.task import Clock, LoopingCall

from gearmanpy.protocol.packets import PacketType as P
from gearmanpy.server.cluster import ClusterNode
from gearmanpy.server.core import JobServerCore
from gearmanpy.store.pg_cluster import CLAIM_JOBS, _ClusterBackend
from gearmanpy.store.pg_cluster_throttle import BUSY_RETRY, RUNNING_RECHECK, Limits
from tests.serverhelpers import RecordingPeer
from tests.test_pg_cluster import _reactor, row, sleep
from tests.test_pg_cluster_results import TwoNodes


def test_the_local_throttle_takes_no_tokens_on_a_cluster() -> None:
    """A core whose claims come from a cluster (its on_idle hook set) keeps a function's
    running cap but no rate of its own; a rate alone leaves it no local throttle; without
    the hook the rate is the core's."""
    core = JobServerCore(clock=Clock())
    core.set_policy("f", {"rate": 5.0, "max_running": 3})
    core.set_policy("g", {"rate": 5.0})
    assert core.function(b"f").throttle is not None
    assert core.function(b"f").throttle.rate == 5.0  # type: ignore[union-attr]
    core.on_idle = lambda f: None
    core._reapply_policies()
    f = core.function(b"f")
    assert f.throttle is not None and (f.throttle.max_running, f.throttle.rate) == (3, 0.0)
    assert core.function(b"g").throttle is None
    assert core.function(b"g").policy.rate == 5.0  # the cluster's claims apply it


class _Recording:
    """A cursor that records the statements it runs."""

    def __init__(self, cur: Any) -> None:
        self.cur = cur
        self.statements: list[str] = []

    def execute(self, sql: str, args: Any = None) -> Any:
        self.statements.append(sql)
        return self.cur.execute(sql, args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cur, name)


@pytest.mark.realdb
class ThrottledClaimTests(TwoNodes):
    """Claims with limits on the shared table (the stores alone)."""

    @inlineCallbacks
    def stores(self, rows: int) -> Any:
        """The stores of nodes A and B, with ``rows`` rows of f (k0, k1...) submitted."""
        sa = yield self.node("a")
        sb = yield self.node("b")
        for i in range(rows):
            yield sa.submit(row(f"k{i}"), b"")
        return sa, sb

    @inlineCallbacks
    def test_running_cap_counts_every_nodes_rows(self) -> Any:
        """With ``max_running`` 2, A claims 2 of 5 rows and B then none, each told to look
        again after the recheck; when A finishes one, B claims one."""
        sa, sb = yield self.stores(5)
        limits = Limits(2, 0.0, 1.0)
        got_a = yield sa.claim(b"f", 5, limits)
        self.assertEqual([c.job.key for c in got_a], ["k0", "k1"])
        self.assertEqual(got_a.wait, RUNNING_RECHECK)
        got_b = yield sb.claim(b"f", 5, limits)
        self.assertEqual((list(got_b), got_b.wait), ([], RUNNING_RECHECK))
        yield sa.finish("k0", got_a[0].attempt)
        got_b = yield sb.claim(b"f", 1, limits)
        self.assertEqual([c.job.key for c in got_b], ["k2"])
        self.assertIsNone(got_b.wait)  # it asked for one and got it

    @inlineCallbacks
    def test_a_retry_waiting_for_its_time_does_not_count(self) -> Any:
        """A row its node holds for a retry an hour away is not running: with
        ``max_running`` 1, B claims the next row while A's waits."""
        sa, sb = yield self.stores(2)
        limits = Limits(1, 0.0, 1.0)
        got_a = yield sa.claim(b"f", 1, limits)
        self.assertEqual([c.job.key for c in got_a], ["k0"])
        yield sa.reschedule("k0", int(time.time()) + 3600, 1, b"failed")
        got_b = yield sb.claim(b"f", 1, limits)
        self.assertEqual([c.job.key for c in got_b], ["k1"])
        self.assertEqual((yield sa.claim(b"f", 1, limits)).wait, RUNNING_RECHECK)

    @inlineCallbacks
    def test_the_bucket_is_shared(self) -> Any:
        """With ``rate`` 1 and ``burst`` 3, A's claim of 5 takes the 3 tokens and B's gets
        none; both are told when the next token comes (within a second); B then gets it."""
        sa, sb = yield self.stores(6)
        limits = Limits(0, 1.0, 3.0)
        got_a = yield sa.claim(b"f", 5, limits)
        self.assertEqual(len(got_a), 3)
        got_b = yield sb.claim(b"f", 5, limits)
        self.assertEqual(list(got_b), [])
        for wait in (got_a.wait, got_b.wait):
            self.assertIsNotNone(wait)
            self.assertTrue(0.5 < wait <= 1.0, wait)
        yield sleep(got_b.wait + 0.1)
        got_b = yield sb.claim(b"f", 5, limits)
        self.assertEqual(len(got_b), 1)

    @inlineCallbacks
    def test_a_held_lock_is_skipped_not_waited_for(self) -> Any:
        """While another transaction holds f's throttle lock, a claim gets nothing at once
        and is told to try again shortly; once it is released the claim goes through."""
        sa = yield self.node("a")
        yield sa.submit(row("k"), b"")
        other = psycopg.connect(self.server.url)
        self.addCleanup(other.close)
        other.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(encode(%b, 'hex')))",
            (f"{self.table}_throttles", b"f"),
        )
        limits = Limits(1, 0.0, 1.0)
        got = yield sa.claim(b"f", 1, limits)
        self.assertEqual((list(got), got.wait), ([], BUSY_RETRY))
        other.rollback()
        got = yield sa.claim(b"f", 1, limits)
        self.assertEqual([c.job.key for c in got], ["k"])

    @inlineCallbacks
    def test_an_unthrottled_claim_runs_no_throttle_statement(self) -> Any:
        """A claim without limits runs the claim statement alone (and makes no bucket); one
        with limits runs the throttle's statements around it."""
        store = yield self.node("a")  # sets the table up
        yield store.submit(row("k1"), b"")
        yield store.submit(row("k2"), b"")
        backend = _ClusterBackend(self.server.url, self.table, 5.0, store.owner + "x", "x", 10)
        backend.open()
        self.addCleanup(backend.close)

        def claim(limits: Limits | None) -> Callable[[Any], list[str]]:
            def action(conn: Any) -> list[str]:
                with conn.cursor() as cur:
                    cur.execute("SELECT set_config('gearmanpy.owner', %s, true)", ("x",))
                    recording = _Recording(cur)
                    (got,) = backend._cluster_claim(recording, [(b"f", 1, limits)])
                    assert len(got) == 1
                    return recording.statements

            return action

        plain = backend._with_connection(claim(None))
        self.assertEqual(plain, [backend._cluster_sql[CLAIM_JOBS]])
        with psycopg.connect(self.server.url) as conn:
            buckets = conn.execute(f"SELECT count(*) FROM {self.table}_throttles").fetchone()
        self.assertEqual(buckets, (0,))
        limited = backend._with_connection(claim(Limits(5, 1.0, 2.0)))
        sql = backend._cluster_sql
        self.assertEqual(
            limited,
            [sql["throttle_read"], sql["throttle_held"], sql[CLAIM_JOBS], sql["throttle_take"]],
        )


@pytest.mark.realdb
class ClusterThrottleTests(TwoNodes):
    """Nodes A and B with their cores, and workers on both."""

    def setUp(self) -> None:
        super().setUp()
        self.stopped = False
        self.started: list[tuple[float, str]] = []
        self.workers: list[Any] = []

    @inlineCallbacks
    def work(self, core: JobServerCore, name: str, busy: float) -> Any:
        """A worker of f on ``core``: grab, run each job ``busy`` seconds, sleep when there
        is none; each start is logged in :attr:`started`."""
        worker = RecordingPeer(core)
        worker.can_do(b"f")
        while not self.stopped:
            kind, args = worker.grab()
            if kind == P.JOB_ASSIGN_UNIQ:
                self.started.append((time.monotonic(), name))
                if busy:
                    yield sleep(busy)
                core.work_complete(worker.peer, args[0], b"ok")
                continue
            core.pre_sleep(worker.peer)
            while not worker.packets and not self.stopped:
                yield sleep(0.005)
            worker.take()
        worker.disconnect()

    def start_workers(self, core_a: JobServerCore, core_b: JobServerCore, busy: float) -> None:
        """Two workers on each node."""
        for core, name in ((core_a, "a1"), (core_a, "a2"), (core_b, "b1"), (core_b, "b2")):
            self.workers.append(self.work(core, name, busy))

    def stop_workers(self) -> Any:
        """Stop the workers; fires when each has left."""
        self.stopped = True
        return DeferredList(self.workers)

    @inlineCallbacks
    def test_max_running_holds_across_nodes(self) -> Any:
        """``max_running`` 2 on both nodes, two workers on each: never more than 2 jobs of
        f run, nor rows of f are held, at once across the cluster; all 6 run."""
        (core_a, _), (core_b, _) = yield self.pair()
        for core in (core_a, core_b):
            core.set_policy("f", {"max_running": 2})
        for i in range(6):
            core_a.submit(RecordingPeer(core_a).peer, b"f", b"", b"%d" % i, background=True)
        yield sleep(0.1)
        db = psycopg.connect(self.server.url, autocommit=True)
        self.addCleanup(db.close)
        seen: list[tuple[int, int]] = []

        def sample() -> None:
            running = sum(c.function(b"f").running for c in (core_a, core_b))
            (held,) = db.execute(
                f"SELECT count(*) FROM {self.table} WHERE owner IS NOT NULL"
            ).fetchone() or (0,)
            seen.append((running, held))

        sampler = LoopingCall(sample)
        sampler.clock = _reactor()
        sampler.start(0.01)
        self.addCleanup(lambda: sampler.stop() if sampler.running else None)
        self.addCleanup(self.stop_workers)
        self.start_workers(core_a, core_b, 0.15)
        for _ in range(300):
            if len(self.started) == 6:
                break
            yield sleep(0.02)
        yield sleep(0.2)
        sampler.stop()
        yield self.stop_workers()
        self.assertEqual(len(self.started), 6)
        self.assertEqual(max(r for r, _ in seen), 2)
        self.assertLessEqual(max(h for _, h in seen), 2)

    @inlineCallbacks
    def test_rate_holds_across_nodes(self) -> Any:
        """``rate`` 10 with ``burst`` 2 on both nodes, two quick workers on each: over 2 s
        the cluster starts about 22 jobs (the first two tokens, then 10 a second), not each
        node's 10 a second."""
        (core_a, _), (core_b, _) = yield self.pair()
        for core in (core_a, core_b):
            core.set_policy("f", {"rate": 10.0, "burst": 2})
        for i in range(60):
            core_a.submit(RecordingPeer(core_a).peer, b"f", b"", b"%d" % i, background=True)
        yield sleep(0.2)
        self.addCleanup(self.stop_workers)
        self.start_workers(core_a, core_b, 0.0)
        for _ in range(250):
            if self.started:
                break
            yield sleep(0.02)
        self.assertTrue(self.started)
        first = self.started[0][0]
        yield sleep(2.05)
        yield self.stop_workers()
        window = [t for t, _ in self.started if t - first <= 2.0]
        self.assertTrue(17 <= len(window) <= 23, len(window))
        self.assertEqual({n[0] for _, n in self.started}, {"a", "b"})  # both nodes ran some

    @inlineCallbacks
    def test_a_throttled_foreground_job_waits_for_the_cluster(self) -> Any:
        """With ``max_running`` 1, a foreground job submitted on A, which has a sleeping
        worker of f, waits while B's worker runs a background job of f (it is shared, so
        the cluster counts it), then runs on A and its client gets the result."""
        (core_a, _), (core_b, _) = yield self.pair()
        for core in (core_a, core_b):
            core.set_policy("f", {"max_running": 1})
        busy = RecordingPeer(core_b)
        busy.can_do(b"f")
        core_b.submit(RecordingPeer(core_b).peer, b"f", b"", b"bg", background=True)
        args = yield self.worker_gets(busy, core_b)
        idle = RecordingPeer(core_a)
        idle.can_do(b"f")
        self.assertEqual(idle.grab(), (P.NO_JOB, ()))
        core_a.pre_sleep(idle.peer)
        client = RecordingPeer(core_a)
        core_a.submit(client.peer, b"f", b"", b"fg")
        ((kind, (handle,)),) = yield self.until(client)
        self.assertEqual(kind, P.JOB_CREATED)
        yield sleep(0.8)
        self.assertEqual(idle.take(), [])  # B's job holds the one slot
        core_b.work_complete(busy.peer, args[0], b"done")
        self.assertEqual((yield self.until(idle)), [(P.NOOP, ())])
        kind, got = idle.grab()
        self.assertEqual((kind, got[1:]), (P.JOB_ASSIGN_UNIQ, (b"f", b"", b"fg")))
        core_a.work_complete(idle.peer, got[0], b"ok")
        self.assertEqual((yield self.until(client)), [(P.WORK_COMPLETE, (handle, b"ok"))])

    @inlineCallbacks
    def test_a_cut_claim_schedules_the_next(self) -> Any:
        """With ``rate`` 2 and ``burst`` 1, a sleeping worker's claim after the first job
        finds no token: the node sets a timer for the next token (its clock, not the
        poll's), and when it fires the claim gets the second row."""
        store = yield self.node("a")
        core = JobServerCore(clock=_reactor(), store=store)
        core.set_boot(7)
        clock = Clock()
        node = ClusterNode(core, store, clock)
        node.install()
        core.set_policy("f", {"rate": 2.0, "burst": 1})
        yield store.submit(row("k1"), b"")
        yield store.submit(row("k2"), b"")
        worker = RecordingPeer(core)
        worker.can_do(b"f")
        args = yield self.worker_gets(worker, core)
        core.work_complete(worker.peer, args[0], b"ok")
        self.assertEqual(worker.grab(), (P.NO_JOB, ()))
        core.pre_sleep(worker.peer)
        for _ in range(100):
            if clock.getDelayedCalls():
                break
            yield sleep(0.01)
        (timer,) = clock.getDelayedCalls()
        self.assertTrue(0 < timer.getTime() <= 0.5, timer.getTime())
        yield sleep(timer.getTime() + 0.05)  # the token is there by the database's clock
        self.assertEqual(worker.take(), [])  # nothing claimed it meanwhile
        clock.advance(timer.getTime())
        self.assertEqual((yield self.until(worker)), [(P.NOOP, ())])
        kind, got = worker.grab()
        self.assertEqual((kind, got[0]), (P.JOB_ASSIGN_UNIQ, b"H:k2"))
