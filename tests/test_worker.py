"""Unit tests for gearmanpy.worker, in memory (fake endpoints, StringTransport, a fake clock)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gearmanpy import JobFailed, Worker, WorkerJob
from gearmanpy.protocol.packets import Packet, PacketType
from gearmanpy.worker import WorkerProtocol
from tests.fakes import FakeEndpoint, FakeServerConnection, with_fake_servers

P = PacketType


class ThreadReactor(MemoryReactorClock):
    """A MemoryReactorClock whose ``callFromThread`` runs the call at once."""

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``f`` now (there are no real threads in these tests)."""
        f(*args, **kwargs)


class InlineThreadPool:
    """A thread pool that runs each call synchronously, recording that it did."""

    def __init__(self) -> None:
        """No calls yet."""
        self.calls = 0

    def callInThreadWithCallback(
        self, on_result: Callable[[bool, Any], None], f: Callable[..., Any], *args: Any
    ) -> None:
        """Run ``f`` and report its outcome as a real pool would."""
        self.calls += 1
        try:
            result = f(*args)
        except BaseException:
            on_result(False, Failure())
        else:
            on_result(True, result)


def make_worker(n: int = 1, **kwargs: Any) -> tuple[Worker, list[FakeEndpoint], ThreadReactor]:
    """Build a worker over ``n`` fake endpoints with 1-second fixed retries."""
    return with_fake_servers(Worker, ThreadReactor(), n, **kwargs)


def holding(pending: list[Deferred[bytes]]) -> Callable[[WorkerJob], Deferred[bytes]]:
    """A job function that returns a new Deferred each time, kept in ``pending``."""

    def hold(job: WorkerJob) -> Deferred[bytes]:
        pending.append(Deferred())
        return pending[-1]

    return hold


def assign(
    server: FakeServerConnection,
    handle: bytes,
    function: bytes = b"f",
    data: bytes = b"",
    unique: bytes = b"",
) -> None:
    """Answer a GRAB_JOB_ALL with a job."""
    server.send(P.JOB_ASSIGN_UNIQ, handle, function, unique, data)


class RegistrationTests(SynchronousTestCase):
    """What a worker says when it connects."""

    def test_registers_then_grabs(self) -> None:
        """SET_CLIENT_ID, CAN_DO, CAN_DO_TIMEOUT (ms), then GRAB_JOB_ALL."""
        worker, (endpoint,), clock = make_worker(client_id="w1")
        worker.register("f", lambda job: b"")
        worker.register("g", lambda job: b"", timeout=2.5)
        worker.startService()
        server = endpoint.next().accept()
        self.assertTrue(server.transport.nodelay)
        self.assertEqual(
            server.received(),
            [
                Packet(P.SET_CLIENT_ID, (b"w1",)),
                Packet(P.CAN_DO, (b"f",)),
                Packet(P.CAN_DO_TIMEOUT, (b"g", b"2500")),
                Packet(P.GRAB_JOB_ALL, ()),
            ],
        )

    def test_no_functions_no_grab(self) -> None:
        """A worker with nothing registered does not GRAB; registering later starts it."""
        worker, (endpoint,), clock = make_worker()
        worker.startService()
        server = endpoint.next().accept()
        self.assertEqual(server.received(), [])
        worker.register("f", lambda job: b"")
        self.assertEqual(server.types(), [P.CAN_DO, P.GRAB_JOB_ALL])
        worker.unregister("f")
        self.assertEqual(server.types(), [P.CANT_DO])

    def test_decorator(self) -> None:
        """register() without a function is a decorator that returns the function."""
        worker, _, _ = make_worker()

        @worker.register("deco")
        def deco(job: WorkerJob) -> bytes:
            return b""

        self.assertIs(worker.functions[b"deco"].func, deco)

    def test_reconnect_reregisters(self) -> None:
        """After the server goes away, the worker reconnects after a backoff and registers again."""
        worker, (endpoint,), clock = make_worker(client_id="w1")
        worker.register("f", lambda job: b"")
        worker.startService()
        server = endpoint.next().accept()
        server.received()
        server.lose()
        self.assertEqual(endpoint.attempts, [])
        clock.advance(1.0)
        server2 = endpoint.next().accept()
        self.assertEqual(server2.types(), [P.SET_CLIENT_ID, P.CAN_DO, P.GRAB_JOB_ALL])

    def test_refused_then_retry(self) -> None:
        """A refused connection is retried with backoff."""
        worker, (endpoint,), clock = make_worker()
        worker.register("f", lambda job: b"")
        worker.startService()
        endpoint.next().refuse()
        clock.advance(1.0)
        server = endpoint.next().accept()
        self.assertEqual(server.types(), [P.CAN_DO, P.GRAB_JOB_ALL])

    def test_handler_coverage(self) -> None:
        """WorkerProtocol handles every server-to-worker type."""
        for ptype in [
            P.NOOP,
            P.NO_JOB,
            P.JOB_ASSIGN,
            P.JOB_ASSIGN_UNIQ,
            P.ERROR,
            P.OPTION_RES,
            P.ECHO_RES,
        ]:
            self.assertTrue(hasattr(WorkerProtocol, "packet_" + ptype.name), ptype)


class CycleTests(SynchronousTestCase):
    """The grab/sleep cycle and how results are reported."""

    def setUp(self) -> None:
        """A started worker with one connection, its registration packets read."""
        self.worker, (self.endpoint,), self.clock = make_worker()
        self.calls: list[WorkerJob] = []

    def connect(self, func: Callable[[WorkerJob], Any], **kwargs: Any) -> FakeServerConnection:
        """Register ``func`` as ``f``, start, connect; leave the first GRAB unread."""
        self.worker.register("f", func, **kwargs)
        self.worker.startService()
        server = self.endpoint.next().accept()
        self.assertEqual(server.types(), [P.CAN_DO, P.GRAB_JOB_ALL])
        return server

    def test_sleep_and_wake(self) -> None:
        """NO_JOB leads to PRE_SLEEP; NOOP leads to another GRAB."""
        server = self.connect(lambda job: b"")
        server.send(P.NO_JOB)
        self.assertEqual(server.types(), [P.PRE_SLEEP])
        server.send(P.NOOP)
        self.assertEqual(server.types(), [P.GRAB_JOB_ALL])
        server.send(P.NOOP)  # a stray NOOP while grabbing changes nothing
        self.assertEqual(server.types(), [])

    def test_complete(self) -> None:
        """The function sees the job's fields; its return value becomes WORK_COMPLETE."""

        def f(job: WorkerJob) -> bytes:
            self.calls.append(job)
            return job.data.upper()

        server = self.connect(f)
        assign(server, b"H:1", data=b"abc\0", unique=b"u")
        (job,) = self.calls
        self.assertEqual(
            (job.handle, job.function, job.unique, job.data), (b"H:1", "f", b"u", b"abc\0")
        )
        self.assertEqual(
            server.received(),
            [Packet(P.WORK_COMPLETE, (b"H:1", b"ABC\0")), Packet(P.GRAB_JOB_ALL, ())],
        )

    def test_plain_job_assign(self) -> None:
        """A JOB_ASSIGN (no unique) works too."""
        server = self.connect(lambda job: "é")
        server.send(P.JOB_ASSIGN, b"H:1", b"f", b"x")
        self.assertEqual(server.received()[0], Packet(P.WORK_COMPLETE, (b"H:1", "é".encode())))

    def test_progress(self) -> None:
        """send_data, send_warning and send_status go out before the result."""

        def f(job: WorkerJob) -> None:
            job.send_data(b"d")
            job.send_warning("w")
            job.send_status(1, 3)

        server = self.connect(f)
        assign(server, b"H:1")
        self.assertEqual(
            server.received()[:4],
            [
                Packet(P.WORK_DATA, (b"H:1", b"d")),
                Packet(P.WORK_WARNING, (b"H:1", b"w")),
                Packet(P.WORK_STATUS, (b"H:1", b"1", b"3")),
                Packet(P.WORK_COMPLETE, (b"H:1", b"")),
            ],
        )

    def test_exception(self) -> None:
        """An exception becomes WORK_EXCEPTION with a short description, and nothing else."""

        def f(job: WorkerJob) -> bytes:
            raise ValueError("bad input")

        server = self.connect(f)
        assign(server, b"H:1")
        self.assertEqual(
            server.received(),
            [
                Packet(P.WORK_EXCEPTION, (b"H:1", b"ValueError: bad input")),
                Packet(P.GRAB_JOB_ALL, ()),
            ],
        )

    def test_explicit_failure(self) -> None:
        """Raising JobFailed sends WORK_FAIL with the bare handle."""

        def f(job: WorkerJob) -> bytes:
            raise JobFailed()

        server = self.connect(f)
        assign(server, b"H:1")
        self.assertEqual(server.received()[0], Packet(P.WORK_FAIL, (b"H:1",)))

    def test_bad_return_type(self) -> None:
        """Returning something that is not bytes/str/None is reported as WORK_EXCEPTION."""
        server = self.connect(lambda job: 42)
        assign(server, b"H:1")
        packet = server.received()[0]
        self.assertEqual(packet.type, P.WORK_EXCEPTION)
        self.assertIn(b"TypeError", packet.args[1])

    def test_deferred_function(self) -> None:
        """A Deferred-returning function completes when its Deferred fires."""
        pending: list[Deferred[bytes]] = []
        server = self.connect(holding(pending))
        assign(server, b"H:1")
        self.assertEqual(server.received(), [])
        pending[0].callback(b"later")
        self.assertEqual(server.received()[0], Packet(P.WORK_COMPLETE, (b"H:1", b"later")))

    def test_coroutine_function(self) -> None:
        """An async def function can await Deferreds and its return value is the result."""
        gate: Deferred[bytes] = Deferred()

        async def f(job: WorkerJob) -> bytes:
            job.send_status(0, 1)
            value = await gate
            if value == b"raise":
                raise RuntimeError("async boom")
            return value + job.data

        server = self.connect(f)
        assign(server, b"H:1", data=b"!")
        self.assertEqual(server.types(), [P.WORK_STATUS])
        gate.callback(b"ok")
        self.assertEqual(server.received()[0], Packet(P.WORK_COMPLETE, (b"H:1", b"ok!")))

    def test_thread_function(self) -> None:
        """thread=True runs the function in the thread pool; its sends hop back."""
        pool = InlineThreadPool()
        self.worker._thread_pool = pool

        def f(job: WorkerJob) -> bytes:
            job.send_data(b"from thread")
            return b"t"

        server = self.connect(f, thread=True)
        assign(server, b"H:1")
        self.assertEqual(pool.calls, 1)
        self.assertEqual(server.types()[:2], [P.WORK_DATA, P.WORK_COMPLETE])

    def test_unknown_function(self) -> None:
        """A job for a function not registered here is failed, not run."""
        server = self.connect(lambda job: b"")
        assign(server, b"H:1", function=b"other")
        self.assertEqual(
            server.received(), [Packet(P.WORK_FAIL, (b"H:1",)), Packet(P.GRAB_JOB_ALL, ())]
        )

    def test_unexpected_packet_drops(self) -> None:
        """NO_JOB without a GRAB breaks the cycle: the connection is dropped."""
        server = self.connect(lambda job: b"")
        server.send(P.NO_JOB)
        server.received()
        server.send(P.NO_JOB)
        self.assertTrue(server.transport.disconnecting)

    def test_server_error_logged(self) -> None:
        """An ERROR from the server (e.g. JOB_NOT_FOUND) is logged, the connection stays."""
        server = self.connect(lambda job: b"")
        server.send(P.ERROR, b"JOB_NOT_FOUND", b"Job given in work result not found")
        self.assertFalse(server.transport.disconnecting)


class ConcurrencyTests(SynchronousTestCase):
    """The worker never holds more than ``concurrency`` jobs."""

    def test_single_server(self) -> None:
        """With concurrency=2, two GRABs go out; a third waits for a finished job."""
        worker, (endpoint,), clock = make_worker(concurrency=2)
        pending: list[Deferred[bytes]] = []
        worker.register("f", holding(pending))
        worker.startService()
        server = endpoint.next().accept()
        self.assertEqual(server.types(), [P.CAN_DO, P.GRAB_JOB_ALL])  # one GRAB in flight
        assign(server, b"H:1")
        self.assertEqual(server.types(), [P.GRAB_JOB_ALL])
        assign(server, b"H:2")
        self.assertEqual(server.types(), [])
        self.assertEqual(worker.busy, 2)
        pending[0].callback(b"r")
        self.assertEqual(server.types(), [P.WORK_COMPLETE, P.GRAB_JOB_ALL])

    def test_shared_across_servers(self) -> None:
        """Slots are shared by all servers, and every server gets its turn."""
        worker, endpoints, clock = make_worker(3, concurrency=2)
        pending: list[Deferred[bytes]] = []
        worker.register("f", holding(pending))
        worker.startService()
        servers = [e.next().accept() for e in endpoints]
        grabs = [s.types().count(P.GRAB_JOB_ALL) for s in servers]
        self.assertEqual(sum(grabs), 2)
        high = 0
        served = [0, 0, 0]
        handles = iter(range(1, 1000))
        # Answer every outstanding GRAB with a job, finish jobs one by one, and watch the count.
        for _ in range(12):
            for index, (server, count) in enumerate(zip(servers, grabs, strict=True)):
                for _ in range(count):
                    assign(server, b"H:%d" % next(handles))
                    served[index] += 1
            high = max(high, worker.busy)
            self.assertLessEqual(worker.busy, 2)
            pending.pop(0).callback(b"")
            grabs = [s.types().count(P.GRAB_JOB_ALL) for s in servers]
        self.assertEqual(high, 2)
        self.assertTrue(all(served), served)  # every server got work

    def test_round_robin_turns(self) -> None:
        """With concurrency=1 and two servers, GRABs alternate between them."""
        worker, endpoints, clock = make_worker(2, concurrency=1)
        worker.register("f", lambda job: b"")
        worker.startService()
        a, b = (e.next().accept() for e in endpoints)
        order = []
        for _ in range(4):
            for name, s in (("a", a), ("b", b)):
                if P.GRAB_JOB_ALL in s.types():
                    order.append(name)
                    assign(s, b"H:1")
        self.assertEqual(order[:4], ["a", "b", "a", "b"])

    def test_no_job_frees_slot_for_other_server(self) -> None:
        """NO_JOB on one server lets an awake connection to another server grab."""
        worker, endpoints, clock = make_worker(2, concurrency=1)
        worker.register("f", lambda job: b"")
        worker.startService()
        a, b = (e.next().accept() for e in endpoints)
        self.assertEqual(a.types(), [P.CAN_DO, P.GRAB_JOB_ALL])
        self.assertEqual(b.types(), [P.CAN_DO])
        a.send(P.NO_JOB)
        self.assertEqual(a.types(), [P.PRE_SLEEP])
        self.assertEqual(b.types(), [P.GRAB_JOB_ALL])
        b.send(P.NO_JOB)
        self.assertEqual(b.types(), [P.PRE_SLEEP])
        a.send(P.NOOP)
        self.assertEqual(a.types(), [P.GRAB_JOB_ALL])


class LossTests(SynchronousTestCase):
    """Connection loss at each step of a job's life."""

    def test_lost_while_grabbing(self) -> None:
        """A GRAB in flight on a lost connection frees its slot."""
        worker, endpoints, clock = make_worker(2, concurrency=1)
        worker.register("f", lambda job: b"")
        worker.startService()
        a, b = (e.next().accept() for e in endpoints)
        a.received()
        b.received()
        a.lose()
        self.assertEqual(worker.busy, 1)
        self.assertEqual(b.types(), [P.GRAB_JOB_ALL])

    def test_lost_while_running(self) -> None:
        """A job whose connection died keeps its slot until it ends; its result is dropped."""
        worker, (endpoint,), clock = make_worker(concurrency=1)
        pending: list[Deferred[bytes]] = []
        sent: list[WorkerJob] = []

        def f(job: WorkerJob) -> Deferred[bytes]:
            sent.append(job)
            pending.append(Deferred())
            return pending[-1]

        worker.register("f", f)
        worker.startService()
        server = endpoint.next().accept()
        server.received()
        assign(server, b"H:1")
        server.lose()
        clock.advance(1.0)
        server2 = endpoint.next().accept()
        self.assertEqual(server2.types(), [P.CAN_DO])  # no slot free: no GRAB yet
        sent[0].send_data(b"dropped")
        pending[0].callback(b"done")
        self.assertEqual(server.received(), [])
        self.assertEqual(server2.types(), [P.GRAB_JOB_ALL])

    def test_lost_while_sleeping(self) -> None:
        """A sleeping connection that drops comes back awake and grabs again."""
        worker, (endpoint,), clock = make_worker()
        worker.register("f", lambda job: b"")
        worker.startService()
        server = endpoint.next().accept()
        server.received()
        server.send(P.NO_JOB)
        server.lose()
        self.assertEqual(worker.busy, 0)
        clock.advance(1.0)
        self.assertEqual(endpoint.next().accept().types(), [P.CAN_DO, P.GRAB_JOB_ALL])

    def test_send_after_finish_dropped(self) -> None:
        """Sending progress after the job ended is dropped with a warning."""
        worker, (endpoint,), clock = make_worker()
        jobs: list[WorkerJob] = []

        def keep(job: WorkerJob) -> bytes:
            jobs.append(job)
            return b""

        worker.register("f", keep)
        worker.startService()
        server = endpoint.next().accept()
        assign(server, b"H:1")
        server.received()
        jobs[0].send_data(b"late")
        self.assertEqual(server.types(), [])


class StopTests(SynchronousTestCase):
    """stopService: no new jobs, a grace period for running ones, then disconnect."""

    def setUp(self) -> None:
        """A worker running one never-ending-until-told job."""
        self.worker, (self.endpoint,), self.clock = make_worker(concurrency=2, grace_period=10)
        self.pending: list[Deferred[bytes]] = []
        self.worker.register("f", holding(self.pending))
        self.worker.startService()
        self.server = self.endpoint.next().accept()
        self.server.received()
        assign(self.server, b"H:1")
        self.server.received()

    def test_waits_for_running_job(self) -> None:
        """Stopping waits for the running job, sends its result, then disconnects."""
        d = self.worker.stopService()
        self.assertNoResult(d)
        self.server.send(P.NO_JOB)  # answer to the GRAB that was in flight
        self.assertEqual(self.server.types(), [P.PRE_SLEEP])
        self.server.send(P.NOOP)
        self.assertEqual(self.server.types(), [])  # no GRAB while stopping
        self.pending[0].callback(b"r")
        self.assertEqual(self.server.types(), [P.WORK_COMPLETE])
        self.assertTrue(self.server.transport.disconnecting)
        self.server.protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(d)

    def test_grace_period(self) -> None:
        """After the grace period the worker disconnects even with a job still running."""
        d = self.worker.stopService()
        self.clock.advance(9)
        self.assertFalse(self.server.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(self.server.transport.disconnecting)
        self.server.protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(d)
        self.pending[0].callback(b"too late")
        self.assertEqual(self.server.types(), [])

    def test_assignment_while_stopping_not_run(self) -> None:
        """A job assigned after stopping began is not run (the server requeues it)."""
        self.worker.stopService()
        assign(self.server, b"H:2")
        self.assertEqual(len(self.pending), 1)

    def test_restart(self) -> None:
        """A stopped worker can be started again and registers afresh."""
        d = self.worker.stopService()
        self.pending[0].callback(b"r")
        self.server.protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(d)
        self.worker.startService()
        server = self.endpoint.next().accept()
        self.assertEqual(server.types(), [P.CAN_DO, P.GRAB_JOB_ALL])

    def test_parent_service(self) -> None:
        """The worker runs under a parent service (setServiceParent)."""
        from twisted.application.service import MultiService

        worker, (endpoint,), clock = make_worker()
        worker.register("f", lambda job: b"")
        parent = MultiService()
        worker.setServiceParent(parent)
        self.assertEqual(endpoint.attempts, [])
        parent.startService()
        self.assertEqual(endpoint.next().accept().types(), [P.CAN_DO, P.GRAB_JOB_ALL])
