"""The worker's own enforcement of CAN_DO_TIMEOUT: at the limit it cancels the attempt, frees
the slot and never sends anything more for it (the server requeues the job on its own timer)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.trial.unittest import SynchronousTestCase

from gearmanpy import WorkerJob
from gearmanpy.protocol.packets import Packet, PacketType
from tests.fakes import FakeServerConnection
from tests.test_worker import InlineThreadPool, assign, holding, make_worker

P = PacketType


class TimeLimitTests(SynchronousTestCase):
    """A function registered with ``timeout=2``: what happens when it runs longer."""

    def setUp(self) -> None:
        """A worker with two slots, not started yet."""
        self.worker, (self.endpoint,), self.clock = make_worker(concurrency=2)
        self.jobs: list[WorkerJob] = []

    def connect(self, func: Callable[[WorkerJob], Any], **kwargs: Any) -> FakeServerConnection:
        """Register ``func`` as ``f`` with a 2-second limit, start, connect, read the GRAB."""
        self.worker.register("f", func, timeout=2, **kwargs)
        self.worker.startService()
        server = self.endpoint.next().accept()
        self.assertEqual(server.types(), [P.CAN_DO_TIMEOUT, P.GRAB_JOB_ALL])
        return server

    def test_deferred_cancelled_at_limit(self) -> None:
        """The Deferred is cancelled at 2s, the slot frees (a new GRAB), nothing is sent."""
        cancelled: list[Deferred[bytes]] = []

        def hold(job: WorkerJob) -> Deferred[bytes]:
            self.jobs.append(job)
            return Deferred(cancelled.append)

        server = self.connect(hold)
        assign(server, b"H:1")
        self.assertEqual(server.types(), [P.GRAB_JOB_ALL])  # the second slot
        self.jobs[0].send_status(1, 2)
        self.assertEqual(server.types(), [P.WORK_STATUS])
        self.clock.advance(1.9)
        self.assertEqual(self.worker.busy, 2)
        self.assertEqual(cancelled, [])
        self.clock.advance(0.1)
        self.assertEqual(len(cancelled), 1)
        self.assertEqual(self.worker.busy, 1)
        server.send(P.NO_JOB)  # the second slot's GRAB
        self.assertEqual(server.types(), [P.PRE_SLEEP])
        server.send(P.NOOP)
        self.assertEqual(server.types(), [P.GRAB_JOB_ALL])  # the freed slot grabs again
        # Nothing for the stale attempt, ever: no WORK_* packets, no progress.
        self.jobs[0].send_data(b"late")
        self.jobs[0].send_status(2, 2)
        self.assertEqual(server.types(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_coroutine_cancelled_at_limit(self) -> None:
        """An ``async def`` function gets CancelledError at its await; its handler's result
        (or anything it sends while cleaning up) goes nowhere."""
        gate: Deferred[bytes] = Deferred()
        seen: list[str] = []

        async def f(job: WorkerJob) -> bytes:
            try:
                return await gate
            except CancelledError:
                seen.append("cancelled")
                job.send_warning(b"cleaning up")
                return b"too late"

        server = self.connect(f)
        assign(server, b"H:1")
        server.received()
        self.clock.advance(2)
        self.assertEqual(seen, ["cancelled"])
        self.assertEqual(server.types(), [])
        self.assertEqual(self.worker.busy, 1)  # just the GRAB in flight

    def test_plain_function_blocking_past_limit(self) -> None:
        """A plain function that blocks the reactor past its limit: its result is discarded.

        The clock moves under it without firing timers, as a blocked reactor's would.
        """

        def slow(job: WorkerJob) -> bytes:
            self.clock.rightNow += 3
            return b"late"

        server = self.connect(slow)
        assign(server, b"H:1")
        self.assertEqual(server.received(), [Packet(P.GRAB_JOB_ALL, ())])
        self.assertEqual(self.worker.busy, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_plain_function_advancing_clock(self) -> None:
        """A plain function during which the timer fires (a test clock advanced in it)."""

        def slow(job: WorkerJob) -> bytes:
            self.clock.advance(2)
            return b"late"

        server = self.connect(slow)
        assign(server, b"H:1")
        self.assertEqual(server.received(), [Packet(P.GRAB_JOB_ALL, ())])

    def test_thread_function_result_discarded(self) -> None:
        """A thread function cannot be interrupted; its late result is dropped."""
        pool = InlineThreadPool()
        self.worker._thread_pool = pool

        def slow(job: WorkerJob) -> bytes:
            self.clock.rightNow += 5
            return b"late"

        server = self.connect(slow, thread=True)
        assign(server, b"H:1")
        self.assertEqual(server.types(), [P.GRAB_JOB_ALL])

    def test_in_time_no_timer_left(self) -> None:
        """A job that finishes in time is reported and leaves no timer."""
        pending: list[Deferred[bytes]] = []
        server = self.connect(holding(pending))
        assign(server, b"H:1")
        server.received()
        self.clock.advance(1.5)
        pending[0].callback(b"ok")
        self.assertEqual(server.received()[0], Packet(P.WORK_COMPLETE, (b"H:1", b"ok")))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_same_handle_again_is_independent(self) -> None:
        """After a timeout the server may hand the same handle back (gearmand does): the new
        attempt runs and reports on its own, and the stale one stays silent."""
        gates: list[Deferred[bytes]] = []
        lates: list[Deferred[None]] = []

        async def f(job: WorkerJob) -> bytes:
            self.jobs.append(job)
            gates.append(Deferred())
            try:
                return await gates[-1]
            except CancelledError:
                # An attempt that ignores the cancellation and goes on for a while.
                lates.append(Deferred())
                await lates[-1]
                job.send_status(1, 1)
                return b"stale"

        server = self.connect(f)
        assign(server, b"H:1")
        server.received()
        self.clock.advance(2)
        self.assertEqual(server.types(), [])
        assign(server, b"H:1")  # the second slot's GRAB gets the same job again
        self.assertEqual(len(self.jobs), 2)
        self.assertEqual(server.types(), [P.GRAB_JOB_ALL])  # the slot freed at the limit
        lates[0].callback(None)
        self.assertEqual(server.types(), [])
        self.jobs[1].send_status(1, 2)
        gates[1].callback(b"fresh")
        self.assertEqual(
            server.received()[:2],
            [
                Packet(P.WORK_STATUS, (b"H:1", b"1", b"2")),
                Packet(P.WORK_COMPLETE, (b"H:1", b"fresh")),
            ],
        )

    def test_stop_does_not_wait_for_timed_out(self) -> None:
        """stopService waits only for attempts still inside their limit."""
        pending: list[Deferred[bytes]] = []
        server = self.connect(holding(pending))
        assign(server, b"H:1")
        self.clock.advance(2)
        d = self.worker.stopService()
        self.assertTrue(server.transport.disconnecting)
        server.lose()
        self.successResultOf(d)
