"""``workers`` across a cluster (gearmanpy/server/cluster_workers.py, cluster_admin.py and
gearmanpy/store/pg_cluster_workers.py): two nodes' cores on one real PostgreSQL, each
publishing its workers; ``workers`` on either prints its own connections, then the other live
node's under that node's name, and a node's rows go with its lease."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from twisted.internet.defer import inlineCallbacks

from gearmanpy.server.cluster_workers import WorkerBoard
from gearmanpy.server.core import JobServerCore
from gearmanpy.store.pg_cluster import ClusterStore
from tests.serverhelpers import RecordingPeer
from tests.test_pg_cluster import _OnPostgres, _reactor, admin_lines, sleep


@pytest.mark.realdb
class ClusterWorkersTests(_OnPostgres):
    """Nodes ``a`` and ``b`` (named ``node b``, with a space) on one table."""

    @inlineCallbacks
    def board(self, name: str, lease: float = 10.0) -> Any:
        """A core on a new store for node ``name``, and its started WorkerBoard."""
        store = yield self.node(name, lease)
        core = JobServerCore(clock=_reactor(), store=store)
        board = WorkerBoard(core, store, _reactor(), name, interval=0.1)
        board.start()
        self.addCleanup(board.stop)
        return store, core, board

    def workers(self, core: JobServerCore, store: ClusterStore) -> Any:
        """``workers`` on ``core``'s node, from a new admin connection: its lines."""
        return admin_lines(core, store, b"workers", ip=b"10.0.0.9", fd=99)

    def published(self) -> dict[str, bytes]:
        """The workers table: lines by node name."""
        with psycopg.connect(self.server.url) as conn:
            rows = conn.execute(f"SELECT name, lines FROM {self.table}_workers").fetchall()
        return {name: bytes(lines) for name, lines in rows}

    @inlineCallbacks
    def until_published(self, name: str, lines: bytes) -> Any:
        """Wait (at most 5 s) until node ``name``'s row is ``lines``."""
        for _ in range(250):
            if self.published().get(name) == lines:
                return
            yield sleep(0.02)
        self.fail(f"{name}'s row is {self.published().get(name)!r}, not {lines!r}")

    @inlineCallbacks
    def test_workers_shows_every_live_node(self) -> Any:
        """A's ``workers`` is A's connections (their IPs), then B's with ``node_b`` as the IP;
        B's row follows B's registrations, is rewritten only when it changed, and goes when
        B's lease expires."""
        sa, core_a, _ = yield self.board("a")
        sb, core_b, board_b = yield self.board("node b", lease=1.0)
        here = RecordingPeer(core_a, ip=b"10.0.0.1")
        here.can_do(b"h")
        there = RecordingPeer(core_b, ip=b"10.0.0.2")
        there.can_do(b"f")
        there.can_do(b"g")
        fd_here, fd_there = here.peer.fd, there.peer.fd
        yield self.until_published("node b", b"%d node_b - : g f\n" % fd_there)
        lines = yield self.workers(core_a, sa)
        self.assertEqual(
            lines,
            [
                b"%d 10.0.0.1 - : h" % fd_here,
                b"99 10.0.0.9 - :",  # the admin connection itself, as gearmand shows it
                b"%d node_b - : g f" % fd_there,
                b".",
                b"",
            ],
        )
        writes: list[bytes] = []
        publish = sb.publish_workers

        def counted(lines: bytes) -> Any:
            writes.append(lines)
            return publish(lines)

        sb.publish_workers = counted  # type: ignore[method-assign]
        yield sleep(0.5)
        self.assertEqual(writes, [])  # nothing changed: nothing written
        there.can_do(b"k")
        yield self.until_published("node b", b"%d node_b - : k g f\n" % fd_there)
        self.assertEqual(len(writes), 1)
        board_b.stop()  # node b stops renewing its lease...
        yield sleep(1.3)
        yield sa.tick(10.0)  # ...and A's lease tick finds it expired
        self.assertNotIn("node b", self.published())
        lines = yield self.workers(core_a, sa)
        self.assertEqual(lines[-3:], [b"99 10.0.0.9 - :", b".", b""])

    @inlineCallbacks
    def test_a_node_that_leaves_takes_its_row(self) -> Any:
        """A clean stop deletes the node's row; B's ``workers`` then shows B only."""
        sa, core_a, board_a = yield self.board("a")
        sb, core_b, _ = yield self.board("b")
        RecordingPeer(core_a).can_do(b"f")
        yield self.until_published("a", b"%d a - : f\n" % next(iter(core_a.peers)).fd)
        board_a.stop()
        yield sa.leave([])
        self.assertNotIn("a", self.published())
        lines = yield self.workers(core_b, sb)
        self.assertEqual(lines, [b"99 10.0.0.9 - :", b".", b""])

    @inlineCallbacks
    def test_a_node_that_takes_a_new_lease_publishes_again(self) -> Any:
        """A node whose lease lapsed (its row deleted by another node's tick) writes its row
        again when its next tick takes a new lease, though its workers did not change."""
        sa, _, _ = yield self.board("a")
        sb, core_b, _ = yield self.board("b")
        RecordingPeer(core_b).can_do(b"f")
        row = b"%d b - : f\n" % next(iter(core_b.peers)).fd
        yield self.until_published("b", row)
        with psycopg.connect(self.server.url, autocommit=True) as conn:
            conn.execute(f"DELETE FROM {self.table}_nodes WHERE name = 'b'")  # lapsed
        yield sa.tick(10.0)
        self.assertNotIn("b", self.published())
        tick = yield sb.tick(10.0)
        self.assertFalse(tick.alive)
        self.assertEqual(self.published().get("b"), row)
