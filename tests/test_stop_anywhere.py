"""Stopping a Client or a Worker from inside any of its callbacks (issue 11).

ClientService's state machine refuses ``stop`` while one of its own transitions runs, and
the failures it delivers (a refused connection failing a request with NoServersAvailable,
a stop cancelling waiters) run inside such a transition. Whatever the caller was in, stop
must stop everything: no reconnection attempts, no timers left.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gearmanpy import Client, JobLost, NoServersAvailable, WorkerJob
from gearmanpy.protocol.packets import PacketType
from gearmanpy.testing import MemoryGearman
from tests.fakes import ready
from tests.test_client import make_client
from tests.test_worker import assign, make_worker

P = PacketType


class ClientStopTests(SynchronousTestCase):
    """Client.stop from the client's own callbacks."""

    def test_stop_in_no_servers_handler(self) -> None:
        """``await client.stop()`` in an ``except NoServersAvailable`` handler stops it."""
        client, (endpoint,), clock = make_client(timeout=30)

        async def main() -> str:
            try:
                await client.submit("f", b"x")
            except NoServersAvailable:
                await client.stop()
                return "stopped"
            return "not reached"

        d = ensureDeferred(main())
        endpoint.next().refuse()  # the refusal is delivered inside ClientService's transition
        clock.advance(0)
        self.assertEqual(self.successResultOf(d), "stopped")
        self.assertFalse(client.running)
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(60)
        self.assertEqual(endpoint.attempts, [])  # no reconnection

    def test_stop_from_errback_while_stopping(self) -> None:
        """A request failed by stop() whose errback calls stop() again: one stop, done."""
        client, _, clock = make_client(2)
        job = client.submit("f")
        stops: list[Deferred[None]] = []
        errors: list[Failure] = []
        job.result.addErrback(errors.append)
        job.result.addCallback(lambda _: stops.append(client.stop()))
        d = client.stop()
        clock.advance(0)
        self.successResultOf(d)
        self.assertEqual(len(stops), 1)
        self.successResultOf(stops[0])
        errors[0].trap(NoServersAvailable)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_request_while_stopping_fails(self) -> None:
        """A request made from a callback of stop's failures fails; it does not restart the
        client (which would reconnect after stop)."""
        client, (endpoint,), clock = make_client()
        job = client.submit("f")
        retried: list[Any] = []
        job.result.addErrback(lambda f: f.trap(NoServersAvailable))
        job.result.addCallback(lambda _: retried.append(client.submit("f")))
        d = client.stop()
        clock.advance(0)
        self.successResultOf(d)
        self.failureResultOf(retried[0].result, NoServersAvailable)
        self.assertFalse(client.running)
        clock.advance(60)
        self.assertEqual([a for a in endpoint.attempts if not a.deferred.called], [])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stop_in_job_lost_handler(self) -> None:
        """stop() from a JobLost errback when the connection drops."""
        client, (endpoint,), clock = make_client()
        job = client.submit("f")
        server = ready(endpoint)
        server.send(P.JOB_CREATED, b"H:1")
        stops: list[Deferred[None]] = []
        errors: list[Failure] = []
        job.result.addErrback(errors.append)
        job.result.addCallback(lambda _: stops.append(client.stop()))
        server.lose()
        clock.advance(0)
        errors[0].trap(JobLost)
        self.successResultOf(stops[0])
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(60)
        self.assertEqual(endpoint.attempts, [])

    def test_memory_gearman_stopped_server(self) -> None:
        """With MemoryGearman (synchronous connections), stop from a handler of the refusal."""
        gearman = MemoryGearman()
        client = gearman.client()
        gearman.stop()
        client2 = Client([gearman.endpoint()], reactor=gearman.reactor)

        async def main() -> str:
            try:
                await client2.submit("f")
            except NoServersAvailable:
                await client2.stop()
                return "stopped"
            return "not reached"

        d = ensureDeferred(main())
        gearman.clock.advance(0)
        self.assertEqual(self.successResultOf(d), "stopped")
        self.assertFalse(client.running or client2.running)
        self.assertEqual(gearman.clock.getDelayedCalls(), [])


class WorkerStopTests(SynchronousTestCase):
    """Worker.stopService from a job, twice, and after the grace period."""

    def test_stop_from_job_function(self) -> None:
        """A job function that stops its worker: the job's result goes out, then it stops."""
        worker, (endpoint,), clock = make_worker()
        stops: list[Deferred[None]] = []

        def f(job: WorkerJob) -> bytes:
            stops.append(worker.stopService())
            stops.append(worker.stopService())  # twice: the same stop
            return b"r"

        worker.register("f", f)
        worker.startService()
        server = endpoint.next().accept()
        server.received()
        assign(server, b"H:1")
        self.assertEqual(server.types(), [P.WORK_COMPLETE])
        self.assertTrue(server.transport.disconnecting)
        server.protocol.connectionLost(Failure(ConnectionDone()))
        clock.advance(0)
        for d in stops:
            self.successResultOf(d)
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(60)
        self.assertEqual(endpoint.attempts, [])

    def test_no_timers_after_grace(self) -> None:
        """A job with a time limit still running when the grace period ends leaves no timer."""
        worker, (endpoint,), clock = make_worker(grace_period=1)
        worker.register("f", lambda job: Deferred(), timeout=100)
        worker.startService()
        server = endpoint.next().accept()
        assign(server, b"H:1")
        d = worker.stopService()
        clock.advance(1)
        server.protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(d)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stop_while_reconnecting(self) -> None:
        """A worker whose server refused stops without trying again."""
        worker, (endpoint,), clock = make_worker()
        worker.register("f", lambda job: b"")
        worker.startService()
        endpoint.next().refuse()
        self.successResultOf(worker.stopService())
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(60)
        self.assertEqual(endpoint.attempts, [])
