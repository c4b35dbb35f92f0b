"""The dead set, scheduled jobs and kept results across a cluster
(gearmanpy/server/cluster_dead.py, gearmanpy/store/pg_cluster_dead.py): two nodes' cores on one
real PostgreSQL table. A job buried on A is shown and retried on B (and runs on B's worker),
dropped on B and gone from A, a result kept on A is shown on B, ``cancel unique`` cancels a
row whichever node wrote it, ``show scheduled`` lists every node's waiting rows once, and each
falls back to the node's own answer with a warning when the table cannot be read."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from twisted.internet.defer import fail, inlineCallbacks

from gearmanpy.errors import StoreError
from gearmanpy.protocol.packets import PacketType as P
from gearmanpy.server import cluster_dead
from gearmanpy.server.acl import ADMIN, STATUS, Acl, Grant, Identity
from gearmanpy.server.cluster_dead import DeadSweeper
from gearmanpy.server.core import JobServerCore
from gearmanpy.store import pg_cluster_dead
from gearmanpy.store.pg_cluster import ClusterStore
from tests.serverhelpers import RecordingPeer
from tests.test_pg_cluster import admin_lines, sleep
from tests.test_pg_cluster_jobs import log_messages
from tests.test_pg_cluster_results import TwoNodes


def admin(core: JobServerCore, store: ClusterStore, line: bytes) -> Any:
    """``line`` on ``core``'s node from a trusted (loopback) admin connection: its lines."""
    return admin_lines(core, store, line, ip=b"127.0.0.1", trusted=True)


class DeadSetNodes(TwoNodes):
    """Nodes A and B, each with its ClusterNode and listener, and ways to fill and read
    the cluster's dead table (tests/test_web_cluster.py uses them too)."""

    def cluster_core(self, store: ClusterStore, boot: int) -> Any:
        """A node's core, its timers (the sweeper, retries) stopped at the end."""
        core, node = super().cluster_core(store, boot)
        self.addCleanup(core.stop_timers)
        return core, node

    def warnings(self) -> list[str]:
        """The log's messages from now on (removed at the end)."""
        return log_messages(self)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """The rows of ``sql`` on this test's tables (``{t}``: the queue table's name)."""
        with psycopg.connect(self.server.url) as conn:
            return conn.execute(sql.format(t=self.table)).fetchall()

    @inlineCallbacks
    def settled(self, sql: str, want: int) -> Any:
        """Wait (at most 5 s) until ``sql`` counts ``want`` rows (a node's writes reach the
        table through its group commit, after a moment)."""
        for _ in range(100):
            if self.query(sql)[0][0] == want:
                return
            yield sleep(0.05)
        self.fail(f"{sql} never counted {want}")

    @inlineCallbacks
    def run_on(self, core: JobServerCore, function: bytes, outcome: str, **submit: Any) -> Any:
        """Submit a background job of ``function`` on ``core``'s node, run it there on a new
        worker that ends it with ``outcome`` (``fail`` or ``complete``); the job's handle,
        and the worker (still connected)."""
        client, worker = RecordingPeer(core), RecordingPeer(core)
        worker.can_do(function)
        core.submit(client.peer, function, submit.pop("unique", b""), b"in", background=True)
        (_, (handle, *_)), *_ = yield self.until(client)
        got = yield self.worker_gets(worker, core)
        self.assertEqual(got[0], handle)
        if outcome == "fail":
            core.work_fail(worker.peer, handle)
        else:
            core.work_complete(worker.peer, handle, b"the result")
        return handle, worker

    @inlineCallbacks
    def buried_on_a(self, *uniques: bytes) -> Any:
        """A job of f per unique, run and failed on A's worker (to the dead set; A's worker
        then leaves): the handles, and both nodes' (core, store)."""
        (core_a, node_a), (core_b, node_b) = yield self.pair()
        handles = []
        for unique in uniques:
            handle, worker = yield self.run_on(core_a, b"f", "fail", unique=unique)
            worker.disconnect()
            handles.append(handle)
        yield self.settled("SELECT count(*) FROM {t}_dead", len(uniques))
        return handles, (core_a, node_a.store), (core_b, node_b.store)


@pytest.mark.realdb
class ClusterDeadSetTests(DeadSetNodes):
    """The admin commands on the cluster's dead set, scheduled jobs and kept results."""

    @inlineCallbacks
    def test_a_job_buried_on_a_is_shown_and_retried_on_b(self) -> Any:
        """A keeps no dead set in memory; B's ``show dead`` lists A's dead job in today's
        columns; ``retry dead HANDLE`` on B queues it in the table, unclaimed, and B's worker
        runs it under its handle; then neither node shows it dead."""
        (h,), (core_a, sa), (core_b, sb) = yield self.buried_on_a(b"u1")
        self.assertEqual(len(core_a.dead), 0)
        on_b = yield admin(core_b, sb, b"show dead")
        self.assertEqual(len(on_b), 3, on_b)
        self.assertEqual(on_b[0].split(b"\t")[:4], [h, b"f", b"u1", b"1"])
        self.assertEqual(on_b[0].split(b"\t")[5], b"failed")
        self.assertEqual(on_b[1:], [b".", b""])
        on_a = yield admin(core_a, sa, b"show dead f")
        self.assertEqual(on_a, on_b)
        none = yield admin(core_a, sa, b"show dead g")
        self.assertEqual(none, [b".", b""])
        retried = yield admin(core_b, sb, b"retry dead " + h)
        self.assertEqual(retried, [b"OK\r", b""])
        self.assertEqual(
            self.query("SELECT handle, owner, retries, coalesce_key <> ''::bytea FROM {t}"),
            [(h, None, 0, True)],
        )
        worker = RecordingPeer(core_b)
        worker.can_do(b"f")
        got = yield self.worker_gets(worker, core_b)
        self.assertEqual(got[:3], (h, b"f", b"u1"))
        for core, store in ((core_a, sa), (core_b, sb)):
            lines = yield admin(core, store, b"show dead")
            self.assertEqual(lines, [b".", b""])
        again = yield admin(core_a, sa, b"retry dead all")
        self.assertEqual(again, [b"ERR NO_DEAD_JOB no+dead+job+matches\r", b""])
        self.assertEqual(len(core_a.dead) + len(core_b.dead), 0)

    @inlineCallbacks
    def test_a_retried_job_whose_unique_is_live_runs_on_its_own(self) -> Any:
        """A dead job of unique u1 retried while B queues a live u1: it gets a row of its own
        (no coalescing key), as a node's retry dead does, and both wait for a worker."""
        (h,), (core_a, sa), (core_b, sb) = yield self.buried_on_a(b"u1")
        client = RecordingPeer(core_b)
        core_b.submit(client.peer, b"f", b"u1", b"again", background=True)
        yield self.until(client)
        retried = yield admin(core_b, sb, b"retry dead f")
        self.assertEqual(retried, [b"OK\r", b""])
        rows = self.query("SELECT handle, coalesce_key = ''::bytea FROM {t} ORDER BY seq")
        self.assertEqual(len(rows), 2)
        self.assertEqual(rows[1], (h, True))

    @inlineCallbacks
    def test_dropped_on_b_is_gone_from_a(self) -> Any:
        """``drop dead f`` on B deletes both of A's dead jobs: A's ``show dead`` is empty,
        and ``drop dead all`` finds nothing more."""
        _, (core_a, sa), (core_b, sb) = yield self.buried_on_a(b"u1", b"u2")
        dropped = yield admin(core_b, sb, b"drop dead f")
        self.assertEqual(dropped, [b"OK\r", b""])
        on_a = yield admin(core_a, sa, b"show dead")
        self.assertEqual(on_a, [b".", b""])
        self.assertEqual(self.query("SELECT count(*) FROM {t}_dead"), [(0,)])
        again = yield admin(core_a, sa, b"drop dead all")
        self.assertEqual(again, [b"ERR NO_DEAD_JOB no+dead+job+matches\r", b""])

    def as_peer(self, core: JobServerCore, store: ClusterStore, line: bytes, grant: str) -> Any:
        """``line`` from 10.0.0.5 granted admin on the functions ``grant`` (and status on
        all): its lines."""
        acl = Acl([Grant("anyone", STATUS), Grant("10.0.0.5", ADMIN, grant)])
        access = acl.for_peer(Identity.from_host("10.0.0.5"))
        return admin_lines(core, store, line, access=access, ip=b"10.0.0.5")

    @inlineCallbacks
    def test_retry_and_drop_need_admin_on_the_dead_jobs_function(self) -> Any:
        """``retry dead HANDLE`` and ``drop dead HANDLE`` on B are checked on the function of
        A's dead row: a peer with admin on g only is refused and the row stays; one with
        admin on f drops it."""
        (h,), (_, _), (core_b, sb) = yield self.buried_on_a(b"u1")
        for verb in (b"retry", b"drop"):
            refused = yield self.as_peer(core_b, sb, verb + b" dead " + h, "g")
            self.assertTrue(refused[0].startswith(b"ERR PERMISSION_DENIED"), refused)
        self.assertEqual(self.query("SELECT count(*) FROM {t}_dead"), [(1,)])
        dropped = yield self.as_peer(core_b, sb, b"drop dead " + h, "f")
        self.assertEqual(dropped, [b"OK\r", b""])
        self.assertEqual(self.query("SELECT count(*) FROM {t}_dead"), [(0,)])

    @inlineCallbacks
    def test_a_result_kept_on_a_is_shown_on_b(self) -> Any:
        """f keeps its results on A: B, which kept nothing, shows the result by handle and by
        function and unique, in today's rows; an unknown handle is NO_RESULT."""
        (core_a, node_a), (core_b, node_b) = yield self.pair()
        core_a.set_policy("f", {"keep_results": 3600})
        h, _ = yield self.run_on(core_a, b"f", "complete", unique=b"u1")
        yield self.settled("SELECT count(*) FROM {t}_results", 1)
        self.assertEqual(len(core_b.kept.results), 0)
        by_handle = yield admin(core_b, node_b.store, b"show result " + h)
        self.assertEqual(by_handle[0], b"handle\t" + h)
        self.assertIn(b"outcome\tcomplete", by_handle)
        self.assertIn(b"data\tdGhlIHJlc3VsdA==", by_handle)  # base64 of "the result"
        by_unique = yield admin(core_b, node_b.store, b"show result f u1")
        self.assertEqual(by_unique, by_handle)
        on_a = yield admin(core_a, node_a.store, b"show result " + h)
        self.assertEqual(on_a, by_handle)
        missing = yield admin(core_b, node_b.store, b"show result H:nothing")
        self.assertEqual(missing, [b"ERR NO_RESULT no+result+is+kept+for+that+job\r", b""])

    @inlineCallbacks
    def test_cancel_unique_cancels_the_row_whichever_node_wrote_it(self) -> Any:
        """A queues a background u1 (no worker anywhere): ``cancel unique f u1`` on B deletes
        its row, a second one finds nothing; a u2 that B's worker holds is named as held by
        node b on A; a shared foreground u3 of A's client is cancelled on B, and the client
        hears WORK_FAIL."""
        (core_a, node_a), (core_b, node_b) = yield self.pair()
        client = RecordingPeer(core_a)
        core_a.submit(client.peer, b"f", b"u1", b"x", background=True)
        yield self.until(client)
        ok = yield admin(core_b, node_b.store, b"cancel unique f u1")
        self.assertEqual(ok, [b"OK\r", b""])
        self.assertEqual(self.query("SELECT count(*) FROM {t}"), [(0,)])
        gone = yield admin(core_b, node_b.store, b"cancel unique f u1")
        self.assertEqual(gone, [b"ERR UNKNOWN_JOB\r", b""])
        core_a.submit(client.peer, b"f", b"u2", b"x", background=True)
        yield self.until(client)
        worker = RecordingPeer(core_b)
        worker.can_do(b"f")
        yield self.worker_gets(worker, core_b)
        held = yield admin(core_a, node_a.store, b"cancel unique f u2")
        self.assertEqual(held, [b"ERR UNKNOWN_JOB held+by+node+b;+send+cancel+unique+there\r", b""])
        waiting = RecordingPeer(core_a)
        core_a.submit(waiting.peer, b"g", b"u3", b"x")
        (_, (handle, *_)), *_ = yield self.until(waiting)
        ok = yield admin(core_b, node_b.store, b"cancel unique g u3")
        self.assertEqual(ok, [b"OK\r", b""])
        got = yield self.until(waiting)
        self.assertEqual(got, [(P.WORK_FAIL, (handle,))])

    @inlineCallbacks
    def test_show_scheduled_lists_every_nodes_waiting_rows_once(self) -> Any:
        """B queues an epoch job due in an hour; A's job of f failed once and waits an hour
        for its retry (held by A): A lists its retry, then B's epoch job from the table; B
        lists both from the table, each job once, in today's columns."""
        (core_a, node_a), (core_b, node_b) = yield self.pair()
        core_a.set_policy("f", {"attempts": 3, "backoff": 3600, "jitter": 0})
        h, _ = yield self.run_on(core_a, b"f", "fail", unique=b"r1")
        due = int(core_b.clock.seconds()) + 7200
        client = RecordingPeer(core_b)
        core_b.submit(client.peer, b"e", b"e1", b"x", background=True, when=due)
        (_, (epoch, *_)), *_ = yield self.until(client)
        yield self.settled("SELECT count(*) FROM {t} WHERE error = 'failed'::bytea", 1)
        on_a = yield admin(core_a, node_a.store, b"show scheduled")
        self.assertEqual([line.split(b"\t")[0] for line in on_a], [h, epoch, b".", b""])
        self.assertEqual(on_a[0].split(b"\t")[1:3] + on_a[0].split(b"\t")[4:], [
            b"f", b"r1", b"normal", b"1", b"failed"
        ])  # fmt: skip
        on_b = yield admin(core_b, node_b.store, b"show scheduled")
        self.assertEqual(on_b, on_a)
        only_e = yield admin(core_a, node_a.store, b"show scheduled e")
        self.assertEqual([line.split(b"\t")[0] for line in only_e], [epoch, b".", b""])

    @inlineCallbacks
    def test_without_the_table_the_nodes_own_answer_and_a_warning(self) -> Any:
        """When the tables cannot be read: ``show dead`` is A's own (empty: a node keeps no
        dead set), ``show scheduled`` and ``show result`` A's own, ``retry dead`` and ``cancel
        unique`` an ERR; each with a one-line warning."""
        (core_a, node_a), _ = yield self.pair()
        sa = node_a.store
        core_a.set_policy("f", {"keep_results": 3600})
        h, _ = yield self.run_on(core_a, b"f", "complete")
        yield self.settled("SELECT count(*) FROM {t}_results", 1)
        seen = self.warnings()
        broken = lambda *args: fail(StoreError("connection\nrefused"))  # noqa: E731
        for name in ("show_dead", "show_result", "select_dead", "show_scheduled", "cancel_unique"):
            setattr(sa, name, broken)
        dead = yield admin(core_a, sa, b"show dead")
        self.assertEqual(dead, [b".", b""])
        result = yield admin(core_a, sa, b"show result " + h)
        self.assertEqual(result[0], b"handle\t" + h)
        retry = yield admin(core_a, sa, b"retry dead all")
        self.assertEqual(retry, [b"ERR STORE_ERROR the+cluster's+table+cannot+be+read\r", b""])
        scheduled = yield admin(core_a, sa, b"show scheduled")
        self.assertEqual(scheduled, [b".", b""])
        cancel = yield admin(core_a, sa, b"cancel unique f u9")
        self.assertEqual(cancel, retry)
        for what in ("show dead", "show result", "show scheduled"):
            self.assertIn(
                f"{what} shows this node only: the cluster's table cannot be read"
                " (connection refused)",
                seen,
            )
        for what in ("retry dead", "cancel unique"):
            self.assertIn(
                f"{what} failed: the cluster's table cannot be read (connection refused)", seen
            )

    @inlineCallbacks
    def test_show_dead_reads_a_bounded_number_of_rows(self) -> Any:
        """At a limit of 1, ``show dead`` lists the oldest dead row and warns that the list
        was cut."""
        handles, (core_a, sa), _ = yield self.buried_on_a(b"u1", b"u2")
        seen = self.warnings()
        self.patch(pg_cluster_dead, "SHOW_JOBS_LIMIT", 1)
        self.patch(cluster_dead, "SHOW_JOBS_LIMIT", 1)
        lines = yield admin(core_a, sa, b"show dead")
        self.assertEqual([line.split(b"\t")[0] for line in lines], [handles[0], b".", b""])
        self.assertIn("show dead lists the table's oldest 1 rows only", seen)

    @inlineCallbacks
    def test_the_sweep_bounds_the_shared_dead_set_and_results(self) -> Any:
        """B's sweep, with B's dead set bounds of one job, drops the older of A's two dead
        rows; at a time past the results' expiry it drops A's kept result."""
        _, (core_a, sa), (core_b, sb) = yield self.buried_on_a(b"u1", b"u2")
        core_a.set_policy("f", {"keep_results": 60})
        yield self.run_on(core_a, b"f", "complete", unique=b"u3")
        yield self.settled("SELECT count(*) FROM {t}_results", 1)
        core_b.dead.max_jobs = 1
        yield DeadSweeper(core_b, sb, core_b.clock).sweep()
        self.assertEqual(self.query("SELECT unique_id FROM {t}_dead"), [(b"u2",)])
        self.assertEqual(self.query("SELECT count(*) FROM {t}_results"), [(1,)])
        yield sb.sweep(core_b.clock.seconds() + 61, 0, 0)
        self.assertEqual(self.query("SELECT count(*) FROM {t}_results"), [(0,)])
        replayed = yield sb.dead()
        self.assertEqual(replayed, [])  # a node replays no dead set: the table is it
