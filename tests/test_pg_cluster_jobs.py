"""``show jobs`` across a cluster (gearmanpy/server/cluster_admin.py,
gearmanpy/store/pg_cluster_jobs.py): two nodes' cores on one real PostgreSQL table; ``show jobs``
on either lists its own jobs, then the shared rows the other node holds or no node does, each
job once; it falls back to the node's own jobs when the table cannot be read, and reads at most
SHOW_JOBS_LIMIT rows."""

from __future__ import annotations

from typing import Any, cast

import psycopg
import pytest
from twisted.internet.defer import fail, inlineCallbacks
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from gearmanpy.errors import StoreError
from gearmanpy.server import cluster_admin
from gearmanpy.server.core import JobServerCore
from gearmanpy.store import pg_cluster_jobs
from gearmanpy.store.pg_cluster import ClusterStore
from tests.serverhelpers import RecordingPeer
from tests.test_pg_cluster import admin_lines
from tests.test_pg_cluster_results import TwoNodes


def log_messages(test: TestCase) -> list[str]:
    """The log's messages from now on, until ``test`` ends."""
    seen: list[str] = []

    def observe(event: LogEvent) -> None:
        if event.get("log_format"):
            seen.append(formatEvent(event))

    observer = cast(ILogObserver, observe)
    globalLogPublisher.addObserver(observer)
    test.addCleanup(globalLogPublisher.removeObserver, observer)
    return seen


@pytest.mark.realdb
class ClusterShowJobsTests(TwoNodes):
    """Nodes A and B, each with its ClusterNode and listener."""

    def show_jobs(self, core: JobServerCore, store: ClusterStore) -> Any:
        """``show jobs`` on ``core``'s node, from a new admin connection: its lines."""
        return admin_lines(core, store, b"show jobs")

    def warnings(self) -> list[str]:
        """The log's messages from now on (removed at the end)."""
        return log_messages(self)

    @inlineCallbacks
    def cluster_jobs(self) -> Any:
        """On A: a foreground g run by A's worker (not shared), a background k claimed and
        run by A's worker, a background f that B's worker runs, a background h and a
        foreground m that no worker can run (queued rows); the handles by name, with both
        nodes' cores and stores."""
        (core_a, node_a), (core_b, node_b) = yield self.pair()
        on_a = RecordingPeer(core_a)
        local_g, local_k = RecordingPeer(core_a), RecordingPeer(core_a)
        local_g.can_do(b"g")
        local_k.can_do(b"k")
        remote = RecordingPeer(core_b)
        remote.can_do(b"f")
        handles = {}
        for name, background in (
            (b"g", False),
            (b"k", True),
            (b"f", True),
            (b"h", True),
            (b"m", False),
        ):
            core_a.submit(on_a.peer, name, b"", b"x", background=background)
            (_, (handle, *_)), *_ = yield self.until(on_a)
            handles[name] = handle
        yield self.worker_gets(remote, core_b)  # B holds f
        for worker, name in ((local_g, b"g"), (local_k, b"k")):  # A runs g, and k (claimed)
            got = yield self.worker_gets(worker, core_a)
            self.assertEqual(got[0], handles[name])
        return handles, (core_a, node_a.store), (core_b, node_b.store)

    @inlineCallbacks
    def test_show_jobs_lists_the_cluster_once(self) -> Any:
        """A lists g and k (its own, as without --cluster), then from the table f (held by
        B), h (queued) and m (a shared foreground job waiting for a worker); B lists f, then
        k, h and m; each job once, in the columns of today."""
        handles, (core_a, sa), (core_b, sb) = yield self.cluster_jobs()
        g, k, f, h, m = (handles[n] for n in (b"g", b"k", b"f", b"h", b"m"))
        on_a = yield self.show_jobs(core_a, sa)
        self.assertEqual(
            on_a,
            [g + b"\t0\t0\t0", k + b"\t0\t0\t1"]
            + [f + b"\t0\t0\t1", h + b"\t0\t0\t1", m + b"\t0\t0\t0", b".", b""],
        )
        on_b = yield self.show_jobs(core_b, sb)
        self.assertEqual(
            on_b,
            [f + b"\t0\t0\t1", k + b"\t0\t0\t1", h + b"\t0\t0\t1", m + b"\t0\t0\t0", b".", b""],
        )

    @inlineCallbacks
    def test_a_job_this_node_holds_is_listed_once_from_here(self) -> Any:
        """A's lease lapsed and B requeued k (retries 1 in the table) while A still runs it:
        A lists k once, as it holds it (retries 0), not again from the table."""
        handles, (core_a, sa), (_, sb) = yield self.cluster_jobs()
        with psycopg.connect(self.server.url, autocommit=True) as conn:
            conn.execute(f"DELETE FROM {self.table}_nodes WHERE name = 'a'")
        yield sb.tick(10.0)
        on_a = yield self.show_jobs(core_a, sa)
        k = handles[b"k"]
        self.assertEqual([line for line in on_a if line.startswith(k + b"\t")], [k + b"\t0\t0\t1"])

    @inlineCallbacks
    def test_show_jobs_without_the_table_is_the_nodes_own(self) -> Any:
        """When the table cannot be read, A lists its own jobs and logs a one-line warning."""
        handles, (core_a, sa), _ = yield self.cluster_jobs()
        seen = self.warnings()
        sa.table_jobs = lambda: fail(StoreError("connection\nrefused"))
        on_a = yield self.show_jobs(core_a, sa)
        self.assertEqual(
            on_a, [handles[b"g"] + b"\t0\t0\t0", handles[b"k"] + b"\t0\t0\t1", b".", b""]
        )
        self.assertIn(
            "show jobs shows this node only: the cluster's table cannot be read"
            " (connection refused)",
            seen,
        )

    @inlineCallbacks
    def test_show_jobs_reads_a_bounded_number_of_rows(self) -> Any:
        """At a limit of 4, A lists its 4 table rows whole, without a warning; at 2, B lists
        its own f and the table's two oldest rows that it does not hold (k and h, not m or the
        newer second h), and warns that the list is cut."""
        handles, (core_a, sa), (core_b, sb) = yield self.cluster_jobs()
        on_a = RecordingPeer(core_a)
        core_a.submit(on_a.peer, b"h", b"", b"later", background=True)
        yield self.until(on_a)
        seen = self.warnings()
        self.patch(pg_cluster_jobs, "SHOW_JOBS_LIMIT", 4)  # A's 4 table rows: the list is whole
        self.patch(cluster_admin, "SHOW_JOBS_LIMIT", 4)
        on_a = yield self.show_jobs(core_a, sa)
        self.assertEqual(len(on_a), 2 + 4 + 2)  # g, k; f, h, m, the second h; "." and ""
        self.assertEqual([line for line in seen if line.startswith("show jobs")], [])
        self.patch(pg_cluster_jobs, "SHOW_JOBS_LIMIT", 2)
        self.patch(cluster_admin, "SHOW_JOBS_LIMIT", 2)
        on_b = yield self.show_jobs(core_b, sb)
        f, k, h = (handles[n] for n in (b"f", b"k", b"h"))
        self.assertEqual(on_b, [f + b"\t0\t0\t1", k + b"\t0\t0\t1", h + b"\t0\t0\t1", b".", b""])
        self.assertIn("show jobs lists the table's oldest 2 rows only", seen)

    @inlineCallbacks
    def test_show_unique_jobs_lists_the_cluster_once(self) -> Any:
        """B queues an h with unique u1: A lists its own g and k's uniques, then the table's
        f, h, m and u1 (each job once); without the table, its own two and a warning."""
        handles, (core_a, sa), (core_b, _) = yield self.cluster_jobs()
        on_b = RecordingPeer(core_b)
        core_b.submit(on_b.peer, b"h", b"u1", b"x", background=True)
        yield self.until(on_b)
        lines = yield admin_lines(core_a, sa, b"show unique jobs")
        self.assertEqual(len(lines), 6 + 2)
        self.assertEqual(lines[-3:], [b"u1", b".", b""])
        seen = self.warnings()
        sa.table_jobs = lambda: fail(StoreError("connection\nrefused"))
        alone = yield admin_lines(core_a, sa, b"show unique jobs")
        self.assertEqual(alone, lines[:2] + [b".", b""])
        self.assertIn(
            "show unique jobs shows this node only: the cluster's table cannot be read"
            " (connection refused)",
            seen,
        )

    @inlineCallbacks
    def test_prioritystatus_counts_the_clusters_queued_rows(self) -> Any:
        """B queues a HIGH and a LOW h beside A's NORMAL h: A counts h 1/1/1 with no worker,
        and g and k (running, not queued) with its worker each; without the table, its own."""
        _, (core_a, sa), (core_b, _) = yield self.cluster_jobs()
        on_b = RecordingPeer(core_b)
        for priority in (0, 2):
            core_b.submit(on_b.peer, b"h", b"", b"x", priority=priority, background=True)
            yield self.until(on_b)
        lines = yield admin_lines(core_a, sa, b"prioritystatus")
        self.assertIn(b"h\t1\t1\t1\t0", lines)
        self.assertIn(b"m\t0\t1\t0\t0", lines)
        self.assertIn(b"g\t0\t0\t0\t1", lines)
        seen = self.warnings()
        sa.priority_counts = lambda keys: fail(StoreError("connection\nrefused"))
        alone = yield admin_lines(core_a, sa, b"prioritystatus")
        self.assertIn(b"g\t0\t0\t0\t1", alone)
        self.assertNotIn(b"h\t1\t1\t1\t0", alone)
        self.assertIn(
            "prioritystatus shows this node only: the cluster's table cannot be read"
            " (connection refused)",
            seen,
        )

    @inlineCallbacks
    def test_prioritystatus_counts_a_job_this_node_holds_once(self) -> Any:
        """A's lease lapsed and B requeued k (queued in the table) while A still runs it: A
        does not count k as queued (B does)."""
        _, (core_a, sa), (core_b, sb) = yield self.cluster_jobs()
        with psycopg.connect(self.server.url, autocommit=True) as conn:
            conn.execute(f"DELETE FROM {self.table}_nodes WHERE name = 'a'")
        yield sb.tick(10.0)
        on_a = yield admin_lines(core_a, sa, b"prioritystatus")
        self.assertIn(b"k\t0\t0\t0\t1", on_a)
        on_b = yield admin_lines(core_b, sb, b"prioritystatus")
        self.assertIn(b"k\t0\t1\t0\t0", on_b)
