"""Client.broadcast with real Client and Worker objects on an in-memory server."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from gearmanpy import WorkerJob
from gearmanpy.client import Reply, Summary
from gearmanpy.errors import GearmanError
from gearmanpy.server.policy import Policies
from gearmanpy.testing import MemoryGearman


class BroadcastClientTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.gearman = MemoryGearman(policies=Policies(rules={"du": {"broadcast": True}}))
        self.addCleanup(self.gearman.stop)

    def test_replies_then_summary(self) -> None:
        """Three workers (one failing): three replies with their ids, then the summary."""

        def broken(job: WorkerJob) -> bytes:
            raise RuntimeError("disk gone")

        for name, func in (("w1", lambda j: b"10G"), ("w2", lambda j: b"20G"), ("w3", broken)):
            self.gearman.worker(client_id=name).register("du", func)
        self.gearman.flush()
        client = self.gearman.client()
        job = client.broadcast("du", b"/var")

        async def collect() -> tuple[list[Reply], Summary]:
            replies = [reply async for reply in job]
            return replies, await job

        d = ensureDeferred(collect())
        self.gearman.flush()
        replies, summary = self.successResultOf(d)
        self.assertEqual(
            sorted((r.worker, r.ok) for r in replies),
            [(b"w1", True), (b"w2", True), (b"w3", False)],
        )
        self.assertEqual({r.data for r in replies if r.ok}, {b"10G", b"20G"})
        self.assertEqual(summary, Summary(completed=2, failed=1, lost=0, total=3))

    def test_not_a_broadcast_function(self) -> None:
        """An ordinary function's result is no summary: a clear error."""
        self.gearman.worker().register("plain", lambda j: b"just a result")
        self.gearman.flush()
        d: Any = self.gearman.client().broadcast("plain").summary
        self.gearman.flush()
        self.assertIn("not a broadcast summary", str(self.failureResultOf(d, GearmanError).value))
