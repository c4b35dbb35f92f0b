"""``show nodes`` on a cluster's node (gearmanpy/server/cluster_admin.py,
gearmanpy/store/pg_cluster_jobs.py): the nodes holding a lease, with the rows each holds, on
a real PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import fail, inlineCallbacks

from gearmanpy.errors import StoreError
from tests.serverhelpers import RecordingPeer
from tests.test_pg_cluster import admin_lines
from tests.test_pg_cluster_results import TwoNodes


@pytest.mark.realdb
class ShowNodesTests(TwoNodes):
    """Nodes A and B, each with its ClusterNode and listener."""

    @inlineCallbacks
    def test_show_nodes_lists_the_live_nodes(self) -> Any:
        """A and B, by name, with their owner tokens, start, lease left, the rows each
        holds (B's worker runs one) and ``*`` for the node asked; on B the mark moves."""
        (core_a, node_a), (core_b, node_b) = yield self.pair()
        worker = RecordingPeer(core_b)
        worker.can_do(b"f")
        client = RecordingPeer(core_a)
        core_a.submit(client.peer, b"f", b"", b"x", background=True)
        yield self.until(client)
        yield self.worker_gets(worker, core_b)
        on_a = yield admin_lines(core_a, node_a.store, b"show nodes")
        self.assertEqual(on_a[-2:], [b".", b""])
        rows = [line.split(b"\t") for line in on_a[:-2]]
        self.assertEqual([r[0] for r in rows], [b"a", b"b"])
        self.assertEqual([r[1].decode() for r in rows], [node_a.store.owner, node_b.store.owner])
        self.assertTrue(all(r[2].endswith(b"Z") for r in rows), rows)
        self.assertTrue(all(0 < float(r[3]) <= 10.0 for r in rows), rows)  # the lease: 10 s
        self.assertEqual([(r[4], r[5]) for r in rows], [(b"0", b"*"), (b"1", b"-")])
        on_b = yield admin_lines(core_b, node_b.store, b"SHOW NODES")
        self.assertEqual([line.split(b"\t")[5] for line in on_b[:-2]], [b"-", b"*"])

    @inlineCallbacks
    def test_show_nodes_without_the_table_is_an_error(self) -> Any:
        """When the table cannot be read, ``show nodes`` answers one ERR line."""
        (core_a, node_a), _ = yield self.pair()
        node_a.store.nodes = lambda: fail(StoreError("connection refused"))  # type: ignore[method-assign]
        on_a = yield admin_lines(core_a, node_a.store, b"show nodes")
        self.assertEqual(on_a, [b"ERR UNAVAILABLE the+cluster+table+cannot+be+read\r", b""])
