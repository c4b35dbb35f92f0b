"""Work a cluster node starts without claiming it goes through the shared queue instead:
recurring jobs' runs (gearmanpy/store/pg_cluster_ticks.py) and a throttled function's
retries (``ClusterNode.give_back_retry``), on a real PostgreSQL with two nodes' cores."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from twisted.internet.defer import inlineCallbacks

from gearmanpy.protocol.packets import PacketType as P
from gearmanpy.server.cluster_results import coalesce_column
from gearmanpy.server.recurring import RecurringJob, RecurringJobs
from tests.serverhelpers import RecordingPeer
from tests.test_pg_cluster import _reactor, row, sleep
from tests.test_pg_cluster_results import TwoNodes


@pytest.mark.realdb
class SharedTickTests(TwoNodes):
    """A recurring job's run is queued for the whole cluster, once per tick."""

    @inlineCallbacks
    def test_a_tick_is_claimed_once_and_queued_unclaimed(self) -> Any:
        """A's claim of a tick adds the run unclaimed; B's claim of the same tick, and A's
        of an earlier one, add nothing."""
        sa = yield self.node("a")
        sb = yield self.node("b")
        self.assertTrue((yield sa.share_tick("every", 120, row("recurring-every-120"), b"")))
        self.assertFalse((yield sb.share_tick("every", 120, row("recurring-every-120b"), b"")))
        self.assertFalse((yield sa.share_tick("every", 60, row("recurring-every-60"), b"")))
        self.assertEqual(self.rows(), [("recurring-every-120", None, 0, 0)])

    @inlineCallbacks
    def test_a_tick_whose_unique_is_live_on_another_node_adds_nothing(self) -> Any:
        """B holds a live row of unique u (submitted there); A's tick of a recurring job with
        unique u records the tick but adds no second row, as a single server skips it."""
        sa = yield self.node("a")
        sb = yield self.node("b")
        yield sb.submit(row("live", unique=b"u"), coalesce_column(b"u"))
        added = yield sa.share_tick("every", 120, row("recurring-every-120", unique=b"u"),
                                    coalesce_column(b"u"))  # fmt: skip
        self.assertFalse(added)
        self.assertEqual([r[0] for r in self.rows()], ["live"])
        again = yield sb.share_tick("every", 120, row("recurring-every-120x"), b"")
        self.assertFalse(again)  # the tick was recorded all the same

    @inlineCallbacks
    def test_a_tick_fired_on_a_node_without_workers_runs_on_another(self) -> Any:
        """A has no worker of f; its recurring job fires there; B's sleeping worker is
        woken and runs the run (which stayed on A before: A has nobody to run it)."""
        (core_a, node_a), (core_b, _) = yield self.pair()
        worker = RecordingPeer(core_b)
        worker.can_do(b"f")
        self.assertEqual(worker.grab(), (P.NO_JOB, ()))
        core_b.pre_sleep(worker.peer)
        job = RecurringJob.make("every", "* * * * *", "f", "payload")
        recurring = RecurringJobs(core_a, _reactor(), (job,), shared=node_a.claim_tick)
        self.addCleanup(recurring.stop)
        recurring._fire(job, 1_800_000_000.0)
        self.assertEqual((yield self.until(worker)), [(P.NOOP, ())])
        kind, args = worker.grab()
        self.assertEqual((kind, args[1:]), (P.JOB_ASSIGN_UNIQ, (b"f", b"", b"payload")))
        self.assertEqual(core_a.jobs, {})
        core_b.work_complete(worker.peer, args[0], b"ok")
        for _ in range(50):
            if not self.rows():
                break
            yield sleep(0.05)
        self.assertEqual(self.rows(), [])


@pytest.mark.realdb
class ThrottledRetryTests(TwoNodes):
    """A throttled function's retry waits in the table, claimed when due by any node."""

    @inlineCallbacks
    def test_a_throttled_retry_is_given_back_and_claimed_when_due(self) -> Any:
        """With ``max_running`` 1 and 3 attempts, A's worker fails the job: its row goes back
        unclaimed with its attempt and retry counted and its new time, A forgets it, and B's
        sleeping worker gets it once it is due (the claim counted it under the throttle)."""
        (core_a, _), (core_b, _) = yield self.pair()
        policy = {"max_running": 1, "attempts": 3, "backoff": 0.5, "jitter": 0.0}
        for core in (core_a, core_b):
            core.set_policy("f", policy)
        failing = RecordingPeer(core_a)
        failing.can_do(b"f")
        core_a.submit(RecordingPeer(core_a).peer, b"f", b"", b"p", background=True)
        args = yield self.worker_gets(failing, core_a)
        core_a.work_fail(failing.peer, args[0])
        failing.disconnect()
        for _ in range(50):
            if self.rows() and self.rows()[0][1] is None:
                break
            yield sleep(0.02)
        ((_, owner, attempt, retries),) = self.rows()
        self.assertEqual((owner, attempt, retries), (None, 1, 1))
        self.assertEqual(core_a.jobs, {})
        with psycopg.connect(self.server.url) as conn:
            (later,) = conn.execute(
                f"SELECT when_to_run > extract(epoch FROM now()) FROM {self.table}"
            ).fetchone() or (False,)
        self.assertTrue(later)
        worker = RecordingPeer(core_b)
        worker.can_do(b"f")
        got = yield self.worker_gets(worker, core_b)
        self.assertEqual(got[1:], (b"f", b"", b"p"))
        ((_, owner, attempt, retries),) = self.rows()
        self.assertEqual((owner, attempt, retries), (node_owner(core_b), 2, 1))


def node_owner(core: Any) -> str:
    """The owner token of the node whose core is ``core``."""
    return str(core.store.owner)
