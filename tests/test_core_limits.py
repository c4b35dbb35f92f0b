"""Tests for the core's trust rules: timed-out attempts, retries, queue bounds, maxqueue, cancel.

In memory on a Clock, like tests/test_core.py; each test fails on the code before issue 11.
"""

from __future__ import annotations

from typing import cast

from twisted.logger import ILogObserver, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from gearmanpy.server.admin import live_jobs, status_rows
from gearmanpy.server.attempts import MAX_SUPERSEDED
from gearmanpy.server.core import HIGH, LOW
from tests.serverhelpers import P, RecordingPeer, make_core

QUEUE_ERROR = (P.ERROR, (b"QUEUE_ERROR", b"Job queue is full"))


class TimedOutAttemptTests(SynchronousTestCase):
    """A job that overran CAN_DO_TIMEOUT never runs twice at once on one connection."""

    def setUp(self) -> None:
        self.core, self.clock = make_core()
        self.client = RecordingPeer(self.core)

    def worker(self, timeout: bytes = b"1000") -> RecordingPeer:
        w = RecordingPeer(self.core)
        self.core.can_do(w.peer, b"f", timeout)
        return w

    def test_not_handed_back_to_the_worker_still_running_it(self) -> None:
        """The bug: a worker with free slots got the job again at once after the timeout,
        while the first copy still ran. Now its GRABs get NO_JOB until the stale attempt
        has ended (or one more timeout has passed: see the lapse test)."""
        w = self.worker()
        self.client.submit(b"f")
        self.assertEqual(w.grab()[0], P.JOB_ASSIGN_UNIQ)
        self.clock.advance(1.0)
        for _ in range(3):
            self.assertEqual(w.grab(), (P.NO_JOB, ()))
            self.clock.advance(0.3)
        self.assertEqual(status_rows(self.core), [(b"f", 1, 0, 1)])
        self.assertEqual(self.core.counters.timed_out, 1)

    def test_another_worker_takes_it(self) -> None:
        """The requeued job goes to a worker that is not running it."""
        w1, w2 = self.worker(), self.worker()
        h = self.client.submit(b"f")
        w1.grab()
        self.clock.advance(1.0)
        self.assertEqual(w1.grab(), (P.NO_JOB, ()))
        self.assertEqual(w2.grab()[1][0], h)

    def test_stale_results_are_dropped_quietly(self) -> None:
        """Every WORK_* of the superseded attempt is dropped without an ERROR (a Perl
        Gearman::Worker exits on ERROR JOB_NOT_FOUND); the new attempt's result counts."""
        w1, w2 = self.worker(), self.worker()
        h = self.client.submit(b"f")
        w1.grab()
        self.clock.advance(1.0)
        w2.grab()
        self.core.work_status(w1.peer, h, b"1", b"2")
        self.core.work_data(w1.peer, int(P.WORK_DATA), h, b"stale")
        self.core.work_complete(w1.peer, h, b"stale")
        self.assertEqual(w1.take(), [])
        self.assertEqual(self.client.take(), [])
        self.core.work_complete(w2.peer, h, b"fresh")
        self.assertEqual(self.client.take(), [(P.WORK_COMPLETE, (h, b"fresh"))])
        # ... and after the job is gone too.
        self.core.work_fail(w1.peer, h)
        self.assertEqual(
            w1.take(), [(P.ERROR, (b"JOB_NOT_FOUND", b"Job given in work result not found"))]
        )

    def test_stale_final_result_ends_the_exclusion(self) -> None:
        """Once the stale attempt has sent its result, the worker may take the job again."""
        w = self.worker()
        h = self.client.submit(b"f")
        w.grab()
        self.clock.advance(1.0)
        self.core.work_fail(w.peer, h)
        self.assertEqual(w.take(), [])
        self.assertEqual(w.grab()[1][0], h)

    def test_exclusion_lapses_and_wakes_the_sleeping_worker(self) -> None:
        """A lone worker that gave the attempt up (gearmanpy's Worker does) gets the job
        again one timeout after the requeue: it is woken, not left asleep for ever."""
        w = self.worker()
        h = self.client.submit(b"f")
        w.grab()
        self.clock.advance(1.0)
        self.assertEqual(w.grab(), (P.NO_JOB, ()))
        self.core.pre_sleep(w.peer)
        self.assertEqual(w.take(), [])  # no NOOP for a job it may not have: no busy loop
        self.clock.advance(0.99)
        self.assertEqual(w.take(), [])
        self.clock.advance(0.02)
        self.assertEqual(w.take(), [(P.NOOP, ())])
        self.assertEqual(w.grab()[1][0], h)

    def test_skipped_job_keeps_its_place(self) -> None:
        """Jobs behind an excluded one are served, and the excluded one stays first."""
        w1 = self.worker()
        h0 = self.client.submit(b"f", data=b"0")
        w1.grab()
        h1 = self.client.submit(b"f", data=b"1")
        self.clock.advance(1.0)  # h0 requeued behind h1
        h2 = self.client.submit(b"f", data=b"2")
        self.assertEqual(w1.grab()[1][0], h1)
        self.assertEqual(w1.grab()[1][0], h2)
        w2 = self.worker()
        self.assertEqual(w2.grab()[1][0], h0)

    def test_superseded_memory_is_bounded(self) -> None:
        """A worker that never sends its stale results does not grow the server for ever."""
        w = self.worker()
        for _ in range(MAX_SUPERSEDED + 10):
            self.client.submit(b"f")
            w.grab()
            self.clock.advance(1.0)
            self.core.cant_do(w.peer, b"f")  # let the job go elsewhere...
            self.core.can_do(w.peer, b"f", b"1000")
            other = self.worker()
            other.grab()
            other.disconnect()
        self.assertLessEqual(len(w.peer.superseded), MAX_SUPERSEDED)

    def test_timeouts_count_against_job_retries(self) -> None:
        """gearmand 1.1.20 with --job-retries=2: the second timeout fails the job to its
        client (two runs, about 2 s)."""
        self.core.job_retries = 2
        w1, w2 = self.worker(), self.worker()
        h = self.client.submit(b"f")
        w1.grab()
        self.clock.advance(1.0)
        w2.grab()
        self.assertEqual(self.client.take(), [])
        self.clock.advance(1.0)
        self.assertEqual(self.client.take(), [(P.WORK_FAIL, (h,))])
        self.assertEqual(self.core.jobs, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # Both stale attempts' late results are dropped quietly.
        self.core.work_complete(w1.peer, h, b"x")
        self.core.work_complete(w2.peer, h, b"x")
        self.assertEqual(w1.take() + w2.take(), [])


class ServerBoundTests(SynchronousTestCase):
    """--max-queued-jobs and --max-queued-bytes: QUEUE_ERROR, never an out-of-memory kill."""

    def test_job_bound(self) -> None:
        core, _ = make_core(max_queued_jobs=2)
        c = RecordingPeer(core)
        c.submit(b"f")
        c.submit(b"g", background=True)
        core.submit(c.peer, b"h", b"", b"x")
        self.assertEqual(c.take(), [QUEUE_ERROR])
        self.assertEqual(core.counters.refused, 1)
        w = RecordingPeer(core)
        w.can_do(b"f")
        h = w.grab()[1][0]
        core.work_complete(w.peer, h, b"")
        c.take()
        c.submit(b"h")  # room again

    def test_byte_bound(self) -> None:
        """The bound is on payload bytes of live jobs, and freed when they end."""
        core, _ = make_core(max_queued_bytes=10)
        c = RecordingPeer(core)
        c.submit(b"f", data=b"x" * 6, background=True)
        core.submit(c.peer, b"f", b"", b"y" * 5, background=True)
        self.assertEqual(c.take(), [QUEUE_ERROR])
        c.submit(b"f", data=b"y" * 4, background=True)
        self.assertEqual(core.held.payload_bytes, 10)
        w = RecordingPeer(core)
        w.can_do(b"f")
        core.work_complete(w.peer, w.grab()[1][0], b"")
        self.assertEqual(core.held.payload_bytes, 4)

    def test_coalesced_submissions_pass(self) -> None:
        """Joining a live job adds nothing, so it is never refused."""
        core, _ = make_core(max_queued_jobs=1)
        c = RecordingPeer(core)
        h = c.submit(b"f", unique=b"u")
        self.assertEqual(c.submit(b"f", unique=b"u"), h)

    def test_refusals_logged_once_a_minute(self) -> None:
        events: list[dict[str, object]] = []
        core, clock = make_core(max_queued_jobs=1)
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        c = RecordingPeer(core)
        c.submit(b"f")
        for _ in range(100):
            core.submit(c.peer, b"f", b"", b"x")
        clock.advance(61)
        core.submit(c.peer, b"f", b"", b"x")
        refusals = [e for e in events if "refusing submissions" in str(e.get("log_format"))]
        self.assertEqual(len(refusals), 2)
        self.assertEqual(core.counters.refused, 101)


class MaxQueueTests(SynchronousTestCase):
    """maxqueue for a function that does not exist yet takes effect when it appears."""

    def test_limit_before_the_function_exists(self) -> None:
        core, _ = make_core()
        core.set_max_queue(b"f", [1, 1, 1])
        c = RecordingPeer(core)
        c.submit(b"f")
        core.submit(c.peer, b"f", b"", b"x")
        self.assertEqual(c.take(), [QUEUE_ERROR])

    def test_limits_given_at_start_and_kept_over_drop_function(self) -> None:
        """--max-queue limits apply when the function first appears, and again after it is
        dropped and comes back (the limit compares the function's total, as gearmand's)."""
        core, _ = make_core(max_queues={b"f": [0, 1, 0]})
        c = RecordingPeer(core)
        c.submit(b"f", priority=HIGH)  # HIGH is unlimited
        core.submit(c.peer, b"f", b"", b"x")
        self.assertEqual(c.take(), [QUEUE_ERROR])
        w = RecordingPeer(core)
        w.can_do(b"f")
        core.work_complete(w.peer, w.grab()[1][0], b"")
        core.cant_do(w.peer, b"f")
        self.assertIsNone(core.drop_function(b"f"))
        c.submit(b"f")
        core.submit(c.peer, b"f", b"", b"y", LOW)
        self.assertEqual(c.take()[0][0], P.JOB_CREATED)  # LOW is unlimited
        core.submit(c.peer, b"f", b"", b"z")
        self.assertEqual(c.take(), [QUEUE_ERROR])

    def test_zero_clears_the_remembered_limit(self) -> None:
        core, _ = make_core()
        core.set_max_queue(b"f", [1, 1, 1])
        core.set_max_queue(b"f", [0, 0, 0])
        self.assertEqual(core.max_queues, {})
        self.assertEqual(core.function(b"f").max_queue, [0, 0, 0])


class CancelTests(SynchronousTestCase):
    def test_cancelled_queued_job_is_freed_at_once(self) -> None:
        """gearmand keeps it in status and show jobs, blocking drop function, until a worker
        reaches it: here it is gone at once."""
        core, _ = make_core()
        c = RecordingPeer(core)
        h = c.submit(b"f")
        c.submit(b"g")
        self.assertTrue(core.cancel(h))
        self.assertEqual(c.take(), [(P.WORK_FAIL, (h,))])
        self.assertNotIn(h, core.jobs)
        self.assertEqual(status_rows(core), [(b"f", 0, 0, 0), (b"g", 1, 0, 0)])
        self.assertEqual(len(live_jobs(core)), 1)
        self.assertIsNone(core.drop_function(b"f"))
        self.assertEqual(core.held.payload_bytes, 1)
