"""The cluster's shared queue (gearmanpy/store/pg_cluster.py) and its nodes
(gearmanpy/server/cluster.py) against a real PostgreSQL started on loopback.

Two stores on one table stand for two nodes: coalescing across them is atomic, claims never
overlap and come in priority and FIFO order, a finish for a superseded attempt changes
nothing, an expired lease requeues its rows (once, with the retry counted), epoch rows wait for
the database's clock. Two in-memory cores on the real reactor, each with its own
:class:`ClusterNode`, show a job submitted on one waking and running on a worker of the other.
A node on a fake queue and a Clock shows how it claims: pipelined, within its window, and
never while a lease tick reconciles.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import psycopg
import pytest
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, succeed
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase

from gearmanpy.protocol.admin import parse_admin_line
from gearmanpy.protocol.packets import PacketType as P
from gearmanpy.server.admin import AdminCommands
from gearmanpy.server.cluster import ClusterNode, coalesce_column
from gearmanpy.server.cluster_admin import ClusterAdmin
from gearmanpy.server.core import JobServerCore
from gearmanpy.server.outbound import Outbound
from gearmanpy.store.interface import Priority, StoredJob
from gearmanpy.store.pg_cluster import Claimed, ClusterStore, LeaseTick, NotifyListener
from tests import dbservers
from tests.serverhelpers import RecordingPeer, SlowStore


def _reactor() -> Any:
    """The real reactor (the store's writer thread hands results back through it)."""
    from twisted.internet import reactor

    return reactor


def row(key: str, function: bytes = b"f", **kw: Any) -> StoredJob:
    """A NORMAL job ``key`` of ``function`` whose handle is ``H:<key>``."""
    return StoredJob(
        key,
        function,
        kw.pop("unique", b""),
        kw.pop("priority", Priority.NORMAL),
        kw.pop("data", b"x"),
        handle=b"H:" + key.encode(),
        **kw,
    )


def sleep(seconds: float) -> Any:
    """A Deferred that fires after ``seconds`` on the real reactor."""
    return deferLater(_reactor(), seconds, lambda: None)


@inlineCallbacks
def admin_lines(
    core: JobServerCore,
    store: ClusterStore,
    line: bytes,
    access: Any = None,
    settings: Any = None,
    **peer: Any,
) -> Any:
    """The cluster admin's answer to ``line`` on ``core``'s node (with its shared
    ``settings``), from a new admin connection (``peer``: its ip and fd; ``access``: its
    permissions), waited for at most 5 s: its lines."""
    admin = ClusterAdmin(AdminCommands(core), store, settings)
    out: list[bytes] = []
    connection = core.connect(Outbound(out.append), lambda: None, **peer)
    connection.access = access
    admin.handle(connection, parse_admin_line(line))
    for _ in range(250):
        if out:
            break
        yield sleep(0.02)
    core.disconnect(connection)
    return b"".join(out).split(b"\n")


class _OnPostgres(TestCase):
    """A PostgreSQL per class, a table per test, and stores for nodes on it."""

    server: ClassVar[dbservers.PostgresServer]

    @classmethod
    def setUpClass(cls) -> None:
        """One PostgreSQL for the class."""
        cls.server = dbservers.start_postgres()

    @classmethod
    def tearDownClass(cls) -> None:
        """Stop it and delete its files."""
        cls.server.destroy()

    def setUp(self) -> None:
        """A table per test."""
        self.table = ("c_" + self.id().rsplit(".", 1)[-1])[:40]

    @inlineCallbacks
    def node(self, name: str, lease: float = 10.0) -> Any:
        """An opened store for node ``name`` on this test's table, closed at the end."""
        store = ClusterStore(
            self.server.url, _reactor(), table=self.table, node_name=name, lease=lease
        )
        yield store.open()
        self.addCleanup(store.close)
        return store

    def rows(self) -> list[tuple[Any, ...]]:
        """(key, owner, attempt, retries) of every row, by key."""
        with psycopg.connect(self.server.url) as conn:
            return conn.execute(
                f"SELECT job_key, owner, attempt, retries FROM {self.table} ORDER BY job_key"
            ).fetchall()


@pytest.mark.realdb
class ClusterQueueTests(_OnPostgres):
    """Two ClusterStores on one table, as two nodes see it."""

    @inlineCallbacks
    def test_coalescing_across_nodes_is_atomic(self) -> Any:
        """The same function and unique submitted on two nodes at once, 30 times over, makes
        30 rows, each submission answered with its group's one handle."""
        a = yield self.node("a")
        b = yield self.node("b")
        ds = []
        for i in range(30):
            key = coalesce_column(b"u%d" % i)
            ds.append(a.submit(row(f"a{i}", unique=b"u%d" % i), key))
            ds.append(b.submit(row(f"b{i}", unique=b"u%d" % i), key))
        results = yield DeferredList(ds, fireOnOneErrback=True)
        answers = [r for _, r in results]
        for i in range(30):
            first, second = answers[2 * i], answers[2 * i + 1]
            self.assertEqual(first.handle, second.handle)
            self.assertEqual(sorted([first.created, second.created]), [False, True])
        self.assertEqual(len(self.rows()), 30)

    @inlineCallbacks
    def test_claims_are_disjoint_and_ordered(self) -> Any:
        """Rows come out high priority first, FIFO within a priority; two nodes claiming at
        once never get the same row, and together get them all."""
        a = yield self.node("a")
        b = yield self.node("b")
        prios = [Priority.LOW, Priority.NORMAL, Priority.HIGH] * 10
        for i, p in enumerate(prios):
            yield a.submit(row(f"k{i:02}", priority=p), b"")
        first = yield a.claim(b"f", 3)
        self.assertEqual([c.job.key for c in first], ["k02", "k05", "k08"])
        self.assertEqual({c.attempt for c in first}, {1})
        got = yield DeferredList(
            [a.claim(b"f", 5) for _ in range(3)] + [b.claim(b"f", 5) for _ in range(3)],
            fireOnOneErrback=True,
        )
        keys = [c.job.key for _, claimed in got for c in claimed]
        self.assertEqual(len(keys), len(set(keys)))
        self.assertEqual(len(keys) + 3, 30)
        nothing = yield b.claim(b"f", 5)
        self.assertEqual(nothing, [])
        other = yield b.claim(b"g", 5)
        self.assertEqual(other, [])

    @inlineCallbacks
    def test_finish_checks_owner_and_attempt(self) -> Any:
        """A finish for another attempt, or from a node that does not hold the row, leaves it;
        the holder's finish for its attempt deletes it."""
        a = yield self.node("a")
        b = yield self.node("b")
        yield a.submit(row("k"), b"")
        (claimed,) = yield a.claim(b"f", 1)
        yield a.finish("k", claimed.attempt + 1)
        yield b.finish("k", claimed.attempt)
        self.assertEqual(len(self.rows()), 1)
        yield a.finish("k", claimed.attempt)
        self.assertEqual(self.rows(), [])

    @inlineCallbacks
    def test_expired_lease_requeues_once(self) -> Any:
        """A node that stops renewing loses its rows after its lease: the next lease tick
        anywhere requeues them with one more retry, another node claims attempt 2, and the
        dead node's late finish for attempt 1 is dropped."""
        a = yield self.node("a", lease=1.0)
        b = yield self.node("b", lease=1.0)
        yield a.submit(row("k"), b"")
        (claimed,) = yield a.claim(b"f", 1)
        tick = yield b.tick(1.0)
        self.assertEqual((tick.expired, tick.requeued), ([], 0))
        yield sleep(1.3)
        tick = yield b.tick(1.0)
        self.assertTrue(tick.alive)
        self.assertEqual(tick.requeued, 1)
        self.assertEqual([o.split("/")[0] for o in tick.expired], ["a"])
        again = yield b.tick(1.0)
        self.assertEqual(again.requeued, 0)
        (second,) = yield b.claim(b"f", 1)
        self.assertEqual((second.attempt, second.job.retries), (2, 1))
        yield a.finish("k", claimed.attempt)
        self.assertEqual([r[2] for r in self.rows()], [2])
        # The dead node's next tick finds its lease gone, and takes a new one.
        tick = yield a.tick(1.0)
        self.assertFalse(tick.alive)
        yield b.finish("k", second.attempt)
        self.assertEqual(self.rows(), [])

    @inlineCallbacks
    def test_tick_gives_back_rows_held_unknowingly(self) -> Any:
        """A lease tick given the keys a node knows it holds gives back its other rows (a
        claim whose answer was lost), and leaves the known ones and other nodes' rows."""
        a = yield self.node("a")
        b = yield self.node("b")
        for k in ("k1", "k2", "k3"):
            yield a.submit(row(k), b"")
        yield a.claim(b"f", 2)
        yield b.claim(b"f", 1)
        tick = yield a.tick(10.0, ["k1"])
        self.assertEqual(tick.reconciled, 1)
        self.assertEqual(
            [(k, o and o.split("/")[0]) for k, o, _, _ in self.rows()],
            [("k1", "a"), ("k2", None), ("k3", "b")],
        )
        tick = yield a.tick(10.0)
        self.assertEqual(tick.reconciled, 0)

    @inlineCallbacks
    def test_retried_submission_finds_its_own_row(self) -> Any:
        """A submission whose row is there already under its own key (the batch is retried
        after a lost commit) counts as created, not as a conflict."""
        a = yield self.node("a")
        first = yield a.submit(row("k"), b"")
        again = yield a.submit(row("k"), b"")
        self.assertEqual((first.created, again.created), (True, True))
        self.assertEqual(len(self.rows()), 1)

    @inlineCallbacks
    def test_release_and_leave(self) -> Any:
        """Released rows go back unclaimed with no retry counted; leaving releases the given
        rows and requeues the others the node holds, with a retry."""
        a = yield self.node("a")
        for k in ("k1", "k2", "k3"):
            yield a.submit(row(k), b"")
        claimed = yield a.claim(b"f", 3)
        pairs = [(c.job.key, c.attempt) for c in claimed]
        n = yield a.release(pairs[:1])
        self.assertEqual(n, 1)
        n = yield a.leave(pairs[1:2])
        self.assertEqual(n, 2)
        self.assertEqual(
            [(k, o, r) for k, o, _, r in self.rows()],
            [("k1", None, 0), ("k2", None, 0), ("k3", None, 1)],
        )

    @inlineCallbacks
    def test_leave_comes_after_claims_in_flight(self) -> Any:
        """A claim still in flight when the node leaves (claims have a connection of their
        own) commits first, and its rows are requeued with the others the node holds."""
        a = yield self.node("a")
        for k in ("k1", "k2"):
            yield a.submit(row(k), b"")
        claim = a.claim(b"f", 2)
        yield a.leave([])
        claimed = yield claim
        self.assertEqual(len(claimed), 2)
        self.assertEqual([(r[1], r[3]) for r in self.rows()], [(None, 1), (None, 1)])

    @inlineCallbacks
    def test_epoch_rows_wait_for_the_database_clock(self) -> Any:
        """A row due in the future (by the database's now()) is not claimed; a due one is."""
        a = yield self.node("a")
        with psycopg.connect(self.server.url) as conn:
            now = conn.execute("SELECT extract(epoch FROM now())::bigint").fetchone()[0]  # type: ignore[index]
        yield a.submit(row("later", when=int(now) + 3600), b"")
        yield a.submit(row("due", when=int(now) - 1), b"")
        claimed = yield a.claim(b"f", 5)
        self.assertEqual([c.job.key for c in claimed], ["due"])

    @inlineCallbacks
    def test_restart_under_the_same_name_requeues_at_once(self) -> Any:
        """A node restarted under its name gives its earlier incarnation's rows back when it
        opens, without waiting for the old lease."""
        a = yield self.node("a")
        yield a.submit(row("k"), b"")
        yield a.claim(b"f", 1)
        yield self.node("a")
        self.assertEqual([(r[1], r[3]) for r in self.rows()], [(None, 1)])

    @inlineCallbacks
    def test_notify_reaches_the_other_node(self) -> Any:
        """A committed submission is heard on the table's channel, with its function name."""
        a = yield self.node("a")
        heard: list[bytes | None] = []
        listener = NotifyListener(self.server.url, a.channel, _reactor(), heard.append)
        listener.start()
        self.addCleanup(listener.stop)
        yield sleep(0.5)  # LISTEN issued
        yield a.submit(row("k", function=b"fn\0x"), b"")
        for _ in range(40):
            if heard:
                break
            yield sleep(0.05)
        self.assertEqual(heard, [b"fn\0x"])


@pytest.mark.realdb
class ClusterNodeTests(_OnPostgres):
    """Two cores, each with its ClusterNode, on one table."""

    def cluster_core(self, store: ClusterStore, **kw: Any) -> tuple[JobServerCore, ClusterNode]:
        """A core on ``store`` with its node installed and started."""
        core = JobServerCore(clock=_reactor(), store=store)
        core.set_boot(int(time.time() * 1000) % 10**9)
        node = ClusterNode(core, store, _reactor(), **kw)
        node.install()
        node.start()
        self.addCleanup(lambda: node._loops and node.stop())
        return core, node

    @inlineCallbacks
    def test_job_runs_on_the_other_node(self) -> Any:
        """A background job submitted on A wakes B's sleeping worker (through the poll: no
        listener here), runs there with A's handle, and its row is gone when it completes;
        A's memory holds nothing of it."""
        sa = yield self.node("a")
        sb = yield self.node("b")
        core_a, _ = self.cluster_core(sa, poll=0.2)
        core_b, _ = self.cluster_core(sb, poll=0.2)
        worker = RecordingPeer(core_b)
        worker.can_do(b"f")
        worker.grab()
        core_b.pre_sleep(worker.peer)
        worker.take()
        client = RecordingPeer(core_a)
        core_a.submit(client.peer, b"f", b"", b"payload", background=True)
        for _ in range(50):
            if client.packets:
                break
            yield sleep(0.05)
        ((kind, (handle,)),) = client.take()
        self.assertEqual(kind, P.JOB_CREATED)
        self.assertEqual(core_a.jobs, {})
        for _ in range(50):
            if worker.packets:
                break
            yield sleep(0.05)
        self.assertEqual(worker.take(), [(P.NOOP, ())])
        kind, args = worker.grab()
        self.assertEqual((kind, args), (P.JOB_ASSIGN_UNIQ, (handle, b"f", b"", b"payload")))
        core_b.work_complete(worker.peer, handle, b"ok")
        yield sleep(0.3)
        self.assertEqual(self.rows(), [])

    @inlineCallbacks
    def test_unstarted_claims_go_back(self) -> Any:
        """Jobs B claimed for a worker that never asked for them go back after ``hold``,
        and A's worker gets them."""
        sa = yield self.node("a")
        sb = yield self.node("b")
        core_b, _ = self.cluster_core(sb, poll=0.1, hold=0.3)
        idle = RecordingPeer(core_b)
        idle.can_do(b"f")
        core_b.pre_sleep(idle.peer)  # asleep: B claims for it, sends NOOP, it never grabs
        yield sa.submit(row("k"), b"")
        for _ in range(40):
            if idle.packets:
                break
            yield sleep(0.05)
        self.assertEqual(idle.take(), [(P.NOOP, ())])
        self.assertEqual(len(core_b.jobs), 1)
        yield sleep(0.5)
        self.assertEqual(core_b.jobs, {})
        self.assertEqual([r[1] for r in self.rows()], [None])


def watch_deadlocks(case: Any) -> list[str]:
    """The deadlocks the log reports from now on, for ``case`` (removed at its end)."""
    from typing import cast

    from twisted.logger import ILogObserver, globalLogPublisher

    seen: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if "deadlock" in str(event.get("error", "")).lower():
            seen.append(str(event["error"]))

    observer = cast(ILogObserver, observe)
    globalLogPublisher.addObserver(observer)
    case.addCleanup(globalLogPublisher.removeObserver, observer)
    return seen


def batch_at_once(store: Any, ops: list[Any], barrier: Any) -> Any:
    """Write ``ops`` on ``store``'s backend once the other thread at ``barrier`` is ready."""
    barrier.wait(5)
    return store._cluster.write(ops)


class FakeQueue(SlowStore):
    """The queue a node sees, in memory: claims and lease ticks answer when the test says."""

    owner = "n/1"

    def __init__(self) -> None:
        super().__init__()
        self.claims: list[tuple[bytes, int, Deferred[list[Claimed]]]] = []
        self.ticks: list[tuple[list[str] | None, Deferred[LeaseTick]]] = []
        self.finished: list[str] = []
        self.rows = 0

    def claim(self, function: bytes, n: int, limits: Any = None) -> Deferred[list[Claimed]]:
        assert limits is None  # these tests set no throttle
        d: Deferred[list[Claimed]] = Deferred()
        self.claims.append((function, n, d))
        return d

    def answer(self, limit: int | None = None) -> int:
        """Answer the claim in flight with as many new rows as it asked for (at most
        ``limit``); return how many."""
        function, n, d = self.claims[-1]
        assert not d.called
        got = [
            Claimed(row(f"k{self.rows + i}", function=function), 1)
            for i in range(n if limit is None else min(n, limit))
        ]
        self.rows += len(got)
        d.callback(got)
        return len(got)

    def in_flight(self) -> bool:
        return bool(self.claims) and not self.claims[-1][2].called

    def finish(self, key: str, attempt: int, final: bytes = b"") -> Deferred[None]:
        self.finished.append(key)
        return succeed(None)

    def release(self, pairs: list[tuple[str, int]]) -> Deferred[int]:
        return succeed(len(pairs))

    def tick(self, lease: float, held: list[str] | None = None) -> Deferred[LeaseTick]:
        d: Deferred[LeaseTick] = Deferred()
        self.ticks.append((held, d))
        return d

    def leave(self, pairs: list[tuple[str, int]]) -> Deferred[int]:
        return succeed(len(pairs))


class ClaimPipelineTests(TestCase):
    """One node on a :class:`FakeQueue` and a Clock: when it claims, and how much."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.queue = FakeQueue()
        self.core = JobServerCore(clock=self.clock, store=self.queue, handle_prefix=b"H:t")
        self.core.set_boot(1)
        # (a fake of the claims half of ClusterQueue only)
        self.node = ClusterNode(self.core, self.queue, self.clock, poll=1.0, lease=30.0)  # type: ignore[arg-type]
        self.node.install()

    def workers(self, n: int) -> list[RecordingPeer]:
        """``n`` workers of ``f``, asleep (each PRE_SLEEP asks for a claim)."""
        out = []
        for _ in range(n):
            w = RecordingPeer(self.core)
            w.can_do(b"f")
            self.assertEqual(w.grab()[0], P.NO_JOB)
            self.core.pre_sleep(w.peer)
            out.append(w)
        return out

    def run_one(self, w: RecordingPeer, seconds: float) -> bool:
        """``w`` grabs a job and completes it ``seconds`` later; False if it got NO_JOB."""
        w.take()  # a NOOP from when it slept
        kind, args = w.grab()
        if kind == P.NO_JOB:
            return False
        self.assertIn(kind, (P.JOB_ASSIGN, P.JOB_ASSIGN_UNIQ))
        self.clock.advance(seconds)
        self.core.work_complete(w.peer, args[0], b"")
        return True

    def test_busy_workers_never_wait_for_a_claim(self) -> None:
        """While its claims come back full, the node claims the next batch at the low-water
        mark, so workers that keep running jobs (each answer coming after a few jobs) never
        find the queue empty; one claim is in flight at a time and the unstarted jobs held
        stay within the window's bound."""
        ws = self.workers(4)
        f = self.core.functions[b"f"]
        bound = min(self.node.batch, 16 * len(ws))
        self.assertEqual(len(self.queue.claims), 1)  # one in flight, however many asked
        self.queue.answer()
        for w in ws:
            self.assertEqual(w.take(), [(P.NOOP, ())])
        ran = 0
        for _ in range(150):
            for w in ws:
                self.assertTrue(self.run_one(w, 0.001), f"NO_JOB after {ran} jobs")
                ran += 1
                self.assertLessEqual(f.queued(), bound)
            if self.queue.in_flight():
                self.assertGreater(f.queued(), 0)  # sent before the queue ran dry
                self.queue.answer()
        self.assertGreater(len(self.queue.claims), 10)
        self.assertEqual(len(self.queue.finished), ran)

    def test_slow_workers_hold_little(self) -> None:
        """Workers that take a second per job make the node hold about one job per worker
        after its first claim, so that another node's idle workers get the rest."""
        ws = self.workers(2)
        f = self.core.functions[b"f"]
        self.queue.answer()  # the first claim: eight per worker
        first = len(self.queue.claims)
        for _ in range(40):
            for w in ws:
                self.run_one(w, 0.5)
                if self.queue.in_flight():  # claims answer at once, next to a job's time
                    self.queue.answer()
        asked = [n for _, n, _ in self.queue.claims[first:]]
        self.assertTrue(asked)
        self.assertLessEqual(max(asked), len(ws))
        self.assertLessEqual(f.queued(), len(ws))

    def test_reconciling_tick_waits_for_claims_in_flight(self) -> None:
        """A lease tick with a claim in flight renews at once; the tick that gives back rows
        held unknowingly goes out once that claim answered, with its rows among those held,
        and no claim goes out until it has answered."""
        (w,) = self.workers(1)  # its claim in flight
        self.node.start()
        self.assertEqual([held for held, _ in self.queue.ticks], [None])  # renewed at once
        self.queue.ticks[0][1].callback(LeaseTick(True, [], 0))
        self.clock.advance(10.0)  # the next lease tick: still renews only
        self.assertEqual([held for held, _ in self.queue.ticks], [None, None])
        self.queue.answer(limit=3)
        self.assertEqual(len(self.queue.ticks), 3)
        held, d = self.queue.ticks[-1]
        self.assertEqual(sorted(held or []), ["k0", "k1", "k2"])
        claims = len(self.queue.claims)
        self.assertEqual(w.take(), [(P.NOOP, ())])
        for _ in range(3):
            self.run_one(w, 0.0)
        self.assertEqual(w.grab()[0], P.NO_JOB)  # asks for a claim, which waits
        self.assertEqual(len(self.queue.claims), claims)
        d.callback(LeaseTick(True, [], 0))
        self.assertEqual(len(self.queue.claims), claims + 1)
        self.node.stop()

    def test_claims_answered_after_stop_are_not_queued(self) -> None:
        """Rows of a claim that answers after the node stopped stay out of the core (the
        store's leave, sent after every claim, requeues them)."""
        self.workers(1)
        self.node.start()
        self.node.stop()
        self.queue.answer()
        self.assertEqual(self.core.jobs, {})
