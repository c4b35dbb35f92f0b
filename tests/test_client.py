"""Unit tests for gearmanpy.client (and the shared gearmanpy._connection helpers).

Everything runs in memory: a fake endpoint hands each connection attempt to the test, which
accepts or refuses it, plays the server by decoding what the client wrote to a
StringTransport and feeding replies back, and drives time with MemoryReactorClock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, UNIXClientEndpoint
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gearmanpy import (
    Client,
    JobException,
    JobFailed,
    JobLost,
    JobTimeout,
    NoServersAvailable,
    Priority,
    RequestLost,
    ServerError,
    WorkData,
    WorkStatus,
    WorkWarning,
)
from gearmanpy._connection import client_endpoint, set_nodelay, split_host_port
from gearmanpy.client import ClientProtocol, Job, JobStatus
from gearmanpy.client.routing import HashRing, Server
from gearmanpy.protocol.limits import MAX_HANDLE_SIZE, PORTABLE_UNIQUE_SIZE
from gearmanpy.protocol.packets import Packet, PacketType
from tests.fakes import (
    FakeEndpoint,
    NoDelayTransport,
    ready,
    with_fake_servers,
)

P = PacketType


def make_client(n: int = 1, **kwargs: Any) -> tuple[Client, list[FakeEndpoint], MemoryReactorClock]:
    """Build a client over ``n`` fake endpoints, with 1-second fixed retries."""
    return with_fake_servers(Client, MemoryReactorClock(), n, **kwargs)


def collect_events(job: Job) -> Deferred[list[object]]:
    """Iterate ``job`` with ``async for``; the Deferred fires with every event it yielded."""

    async def consume() -> list[object]:
        """Gather the events until the job ends."""
        return [event async for event in job]

    return Deferred.fromCoroutine(consume())


class EndpointParsingTests(SynchronousTestCase):
    """Server descriptions become endpoints."""

    def test_host_port(self) -> None:
        """``host:port`` splits into a host and an integer port."""
        self.assertEqual(split_host_port("jobs.example:4731"), ("jobs.example", 4731))

    def test_default_port(self) -> None:
        """A bare host uses port 4730."""
        self.assertEqual(split_host_port("jobs.example"), ("jobs.example", 4730))

    def test_ipv6(self) -> None:
        """A bracketed IPv6 address keeps its colons."""
        self.assertEqual(split_host_port("[::1]:4731"), ("::1", 4731))
        self.assertEqual(split_host_port("[::1]"), ("::1", 4730))

    def test_bad(self) -> None:
        """Junk ports and empty hosts are refused."""
        for bad in [":4730", "h:abc", "h:0", "h:70000", "[::1"]:
            with self.assertRaises(ValueError, msg=bad):
                split_host_port(bad)

    def test_endpoint_kinds(self) -> None:
        """host:port gives a HostnameEndpoint; tcp:/unix: strings go to clientFromString."""
        reactor = MemoryReactorClock()
        self.assertIsInstance(client_endpoint(reactor, "127.0.0.1:4730"), HostnameEndpoint)
        self.assertIsInstance(
            client_endpoint(reactor, "tcp:host=127.0.0.1:port=4730"), TCP4ClientEndpoint
        )
        self.assertIsInstance(client_endpoint(reactor, "unix:path=/tmp/g.sock"), UNIXClientEndpoint)
        self.assertTrue(
            IStreamClientEndpoint.providedBy(client_endpoint(reactor, "tls:127.0.0.1:4730"))
        )
        endpoint = FakeEndpoint()
        self.assertIs(client_endpoint(reactor, endpoint), endpoint)
        with self.assertRaises(TypeError):
            client_endpoint(reactor, 4730)  # type: ignore[arg-type]

    def test_nodelay(self) -> None:
        """set_nodelay turns TCP_NODELAY on, also through a wrapping (TLS) transport."""
        inner = NoDelayTransport()
        outer = StringTransport()
        outer.transport = inner  # type: ignore[attr-defined]
        set_nodelay(outer)
        self.assertTrue(inner.nodelay)
        set_nodelay(StringTransport())  # no such method: left alone, no error


class HandlerCoverageTests(SynchronousTestCase):
    """Every packet a server may send a client has a handler."""

    def test_client_handlers(self) -> None:
        """ClientProtocol handles every server-to-client type."""
        for ptype in [
            P.JOB_CREATED,
            P.ERROR,
            P.STATUS_RES,
            P.STATUS_RES_UNIQUE,
            P.ECHO_RES,
            P.OPTION_RES,
            P.WORK_DATA,
            P.WORK_WARNING,
            P.WORK_STATUS,
            P.WORK_COMPLETE,
            P.WORK_FAIL,
            P.WORK_EXCEPTION,
        ]:
            self.assertTrue(hasattr(ClientProtocol, "packet_" + ptype.name), ptype)


class SubmitTests(SynchronousTestCase):
    """A foreground job from submission to result."""

    def test_round_trip(self) -> None:
        """SUBMIT_JOB carries function, unique and data; WORK_COMPLETE fires the result."""
        client, (endpoint,), clock = make_client()
        job = client.submit("reverse", b"hello", unique="u1")
        self.assertNoResult(job.result)
        server = ready(endpoint)
        self.assertTrue(server.transport.nodelay)
        self.assertEqual(server.received(), [Packet(P.SUBMIT_JOB, (b"reverse", b"u1", b"hello"))])
        created = job.when_created()
        server.send(P.JOB_CREATED, b"H:x:1")
        self.assertEqual(self.successResultOf(created), b"H:x:1")
        self.assertEqual(job.handle, b"H:x:1")
        server.send(P.WORK_COMPLETE, b"H:x:1", b"olleh\0!")
        self.assertEqual(self.successResultOf(job.result), b"olleh\0!")
        self.assertTrue(job.done)

    def test_priorities(self) -> None:
        """Each priority uses its own SUBMIT type, foreground and background."""
        client, (endpoint,), clock = make_client()
        client.submit("f", priority=Priority.HIGH)
        client.submit("f", priority=Priority.LOW)
        client.submit("f")
        client.submit_background("f", priority=Priority.HIGH)
        client.submit_background("f", priority=Priority.LOW)
        client.submit_background("f")
        server = ready(endpoint)
        self.assertEqual(
            server.types(),
            [
                P.SUBMIT_JOB_HIGH,
                P.SUBMIT_JOB_LOW,
                P.SUBMIT_JOB,
                P.SUBMIT_JOB_HIGH_BG,
                P.SUBMIT_JOB_LOW_BG,
                P.SUBMIT_JOB_BG,
            ],
        )

    def test_background(self) -> None:
        """submit_background fires with the handle from JOB_CREATED."""
        client, (endpoint,), clock = make_client()
        d = client.submit_background("f", "data")
        server = ready(endpoint)
        self.assertEqual(server.received(), [Packet(P.SUBMIT_JOB_BG, (b"f", b"", b"data"))])
        server.send(P.JOB_CREATED, b"H:x:9")
        self.assertEqual(self.successResultOf(d), b"H:x:9")

    def test_submit_at(self) -> None:
        """submit_at sends SUBMIT_JOB_EPOCH with the Unix time as ASCII decimal."""
        import datetime

        client, (endpoint,), clock = make_client()
        d = client.submit_at(1700000000.7, "f", b"x", unique="k")
        d2 = client.submit_at(datetime.datetime(2030, 1, 1), "f")
        server = ready(endpoint)
        self.assertEqual(
            server.received(),
            [
                Packet(P.SUBMIT_JOB_EPOCH, (b"f", b"k", b"1700000000", b"x")),
                Packet(P.SUBMIT_JOB_EPOCH, (b"f", b"", b"1893456000", b"")),
            ],
        )
        server.send(P.JOB_CREATED, b"H:1")
        server.send(P.JOB_CREATED, b"H:2")
        self.assertEqual(self.successResultOf(d), b"H:1")
        self.assertEqual(self.successResultOf(d2), b"H:2")

    def test_progress_events(self) -> None:
        """WORK_DATA/WARNING/STATUS reach the callbacks and the iterator, in order."""
        client, (endpoint,), clock = make_client()
        job = client.submit("f")
        seen: list[object] = []
        job.on_data(lambda d: seen.append(("data", d)))
        job.on_warning(lambda d: seen.append(("warning", d)))
        job.on_status(lambda n, d: seen.append(("status", n, d)))
        server = ready(endpoint)
        server.received()
        server.send(P.JOB_CREATED, b"H:1")
        server.send(P.WORK_DATA, b"H:1", b"a\0b")
        server.send(P.WORK_WARNING, b"H:1", b"careful")
        server.send(P.WORK_STATUS, b"H:1", b"3", b"10")
        self.assertEqual(seen, [("data", b"a\0b"), ("warning", b"careful"), ("status", 3, 10)])

        async def consume() -> tuple[list[Any], bytes]:
            """Gather every event, then the result."""
            events = [event async for event in job]
            return events, await job

        d = Deferred.fromCoroutine(consume())
        self.assertNoResult(d)
        server.send(P.WORK_DATA, b"H:1", b"late")
        server.send(P.WORK_COMPLETE, b"H:1", b"done")
        events, result = self.successResultOf(d)
        self.assertEqual(
            events,
            [WorkData(b"a\0b"), WorkWarning(b"careful"), WorkStatus(3, 10), WorkData(b"late")],
        )
        self.assertEqual(result, b"done")

    def test_work_fail(self) -> None:
        """WORK_FAIL fails the job with JobFailed, also with gearmand's trailing NUL."""
        client, (endpoint,), clock = make_client()
        job1 = client.submit("f")
        job2 = client.submit("f")
        server = ready(endpoint)
        server.send(P.JOB_CREATED, b"H:1")
        server.send(P.JOB_CREATED, b"H:2")
        server.send(P.WORK_FAIL, b"H:1")
        server.send(P.WORK_FAIL, b"H:2\0")
        self.failureResultOf(job1.result, JobFailed)
        self.failureResultOf(job2.result, JobFailed)

    def test_work_exception(self) -> None:
        """WORK_EXCEPTION fails the job with JobException carrying the payload."""
        client, (endpoint,), clock = make_client()
        job = client.submit("f")
        server = ready(endpoint)
        server.send(P.JOB_CREATED, b"H:1")
        server.send(P.WORK_EXCEPTION, b"H:1", b"ValueError: nope")
        failure = self.failureResultOf(job.result, JobException)
        self.assertEqual(failure.value.payload, b"ValueError: nope")

    def test_error_answers_oldest(self) -> None:
        """An ERROR answers the oldest pending request; later ones still pair in order."""
        client, (endpoint,), clock = make_client()
        job1 = client.submit("f", unique="x" * 10)
        job2 = client.submit("f")
        server = ready(endpoint)
        server.send(P.ERROR, b"QUEUE_ERROR", b"Job queue is full")
        server.send(P.JOB_CREATED, b"H:2")
        failure = self.failureResultOf(job1.result, ServerError)
        self.assertEqual(failure.value.code, b"QUEUE_ERROR")
        self.assertEqual(job2.handle, b"H:2")

    def test_option_refused(self) -> None:
        """A server that refuses OPTION_REQ exceptions is still used."""
        client, (endpoint,), clock = make_client()
        d = client.echo(b"x")
        server = endpoint.next().accept()
        self.assertEqual(server.types(), [P.OPTION_REQ, P.ECHO_REQ])
        server.send(P.ERROR, b"UNKNOWN_OPTION", b"nope")
        server.send(P.ECHO_RES, b"x")
        self.assertEqual(self.successResultOf(d), b"x")

    def test_client_id(self) -> None:
        """client_id goes out as SET_CLIENT_ID before OPTION_REQ."""
        client, (endpoint,), clock = make_client(client_id="me")
        client.echo()
        server = endpoint.next().accept()
        self.assertEqual(server.types(), [P.SET_CLIENT_ID, P.OPTION_REQ, P.ECHO_REQ])

    def test_duplicate_handle(self) -> None:
        """Two submissions joining one job on one connection each get one copy of each packet."""
        client, (endpoint,), clock = make_client()
        job1 = client.submit("f", unique="same")
        job2 = client.submit("f", unique="same")
        server = ready(endpoint)
        server.send(P.JOB_CREATED, b"H:1")
        server.send(P.JOB_CREATED, b"H:1")
        data1: list[bytes] = []
        data2: list[bytes] = []
        job1.on_data(data1.append)
        job2.on_data(data2.append)
        server.send(P.WORK_DATA, b"H:1", b"d")
        server.send(P.WORK_DATA, b"H:1", b"d")
        server.send(P.WORK_COMPLETE, b"H:1", b"r")
        server.send(P.WORK_COMPLETE, b"H:1", b"r")
        self.assertEqual((data1, data2), ([b"d"], [b"d"]))
        self.assertEqual(self.successResultOf(job1.result), b"r")
        self.assertEqual(self.successResultOf(job2.result), b"r")

    def test_bad_arguments(self) -> None:
        """Over-long uniques and NULs in names are refused before anything is sent."""
        client, (endpoint,), clock = make_client()
        with self.assertRaises(ValueError):
            client.submit("f", unique="u" * 64)
        with self.assertRaises(ValueError):
            client.submit("f\0g")
        with self.assertRaises(ValueError):
            client.get_status("h" * 64)
        with self.assertRaises(TypeError):
            client.submit("f", 42)  # type: ignore[arg-type]

    def test_key_limits(self) -> None:
        """A unique (PORTABLE_UNIQUE_SIZE) or handle (MAX_HANDLE_SIZE) may be 63 bytes, not 64."""
        client, (endpoint,), clock = make_client()
        self.assertEqual((PORTABLE_UNIQUE_SIZE, MAX_HANDLE_SIZE), (63, 63))
        client.submit("f", unique="u" * 63)
        client.get_status("h" * 63)
        refused: list[tuple[Callable[[], object], str]] = [
            (lambda: client.submit_background("f", unique="u" * 64), "unique"),
            (lambda: client.get_status_unique("u" * 64), "unique"),
            (lambda: client.get_status("h" * 64), "handle"),
        ]
        for call, what in refused:
            with self.assertRaises(ValueError) as caught:
                call()
            self.assertEqual(str(caught.exception), f"{what} is 64 bytes; at most 63 are allowed")

    def test_unexpected_reply_drops(self) -> None:
        """A reply with nothing outstanding is a protocol violation: the connection drops."""
        client, (endpoint,), clock = make_client()
        job = client.submit("f")
        server = ready(endpoint)
        server.send(P.STATUS_RES, b"H:1", b"0", b"0", b"0", b"0")
        self.assertTrue(server.transport.disconnecting)
        server.lose()
        self.failureResultOf(job.result, RequestLost)


class StatusAndEchoTests(SynchronousTestCase):
    """GET_STATUS, GET_STATUS_UNIQUE and ECHO."""

    def test_get_status(self) -> None:
        """STATUS_RES becomes a JobStatus."""
        client, (endpoint,), clock = make_client()
        d = client.get_status(b"H:1")
        server = ready(endpoint)
        self.assertEqual(server.received(), [Packet(P.GET_STATUS, (b"H:1",))])
        server.send(P.STATUS_RES, b"H:1", b"1", b"1", b"3", b"4")
        self.assertEqual(self.successResultOf(d), JobStatus(b"H:1", True, True, 3, 4))

    def test_get_status_asks_every_server(self) -> None:
        """With several servers, the one that knows the handle answers."""
        client, endpoints, clock = make_client(2)
        d = client.get_status(b"H:1")
        servers = [ready(e) for e in endpoints]
        for s in servers:
            self.assertEqual(s.types(), [P.GET_STATUS])
        servers[0].send(P.STATUS_RES, b"H:1", b"0", b"0", b"0", b"0")
        self.assertNoResult(d)
        servers[1].send(P.STATUS_RES, b"H:1", b"1", b"0", b"0", b"0")
        self.assertTrue(self.successResultOf(d).known)

    def test_get_status_unique(self) -> None:
        """STATUS_RES_UNIQUE carries the client count."""
        client, (endpoint,), clock = make_client()
        d = client.get_status_unique("u")
        server = ready(endpoint)
        self.assertEqual(server.received(), [Packet(P.GET_STATUS_UNIQUE, (b"u",))])
        server.send(P.STATUS_RES_UNIQUE, b"u", b"1", b"0", b"0", b"0", b"2")
        self.assertEqual(self.successResultOf(d), JobStatus(b"u", True, False, 0, 0, 2))

    def test_echo_and_order(self) -> None:
        """Different request kinds on one connection are answered in order."""
        client, (endpoint,), clock = make_client()
        e = client.echo(b"ping\0")
        job = client.submit("f")
        s = client.get_status(b"H:0")
        server = ready(endpoint)
        self.assertEqual(server.types(), [P.ECHO_REQ, P.SUBMIT_JOB, P.GET_STATUS])
        server.send(P.ECHO_RES, b"ping\0")
        server.send(P.JOB_CREATED, b"H:1")
        server.send(P.STATUS_RES, b"H:0", b"0", b"0", b"0", b"0")
        self.assertEqual(self.successResultOf(e), b"ping\0")
        self.assertEqual(job.handle, b"H:1")
        self.assertFalse(self.successResultOf(s).known)

    def test_mismatched_reply_drops(self) -> None:
        """A reply of the wrong kind for the oldest request drops the connection."""
        client, (endpoint,), clock = make_client()
        d = client.echo(b"x")
        server = ready(endpoint)
        server.send(P.JOB_CREATED, b"H:1")
        self.assertTrue(server.transport.disconnecting)
        server.lose()
        self.failureResultOf(d, RequestLost)


class ConnectionLossTests(SynchronousTestCase):
    """Every Deferred fires exactly once, whichever step the connection dies at."""

    def test_refused(self) -> None:
        """A refused connection fails the submit promptly with NoServersAvailable."""
        client, (endpoint,), clock = make_client()
        job = client.submit("f")
        endpoint.next().refuse()
        self.failureResultOf(job.result, NoServersAvailable)

    def test_down_server_fails_at_once(self) -> None:
        """Once a server is known down, later requests fail without waiting for a retry."""
        client, (endpoint,), clock = make_client()
        client.submit("f").result.addErrback(lambda f: None)
        endpoint.next().refuse()
        job = client.submit("g")
        self.failureResultOf(job.result, NoServersAvailable)
        self.assertEqual(endpoint.attempts, [])

    def test_recovers(self) -> None:
        """After a refusal, the retry (backoff) reconnects and the server is used again."""
        client, (endpoint,), clock = make_client()
        job = client.submit("f")
        endpoint.next().refuse()
        self.failureResultOf(job.result, NoServersAvailable)
        clock.advance(1.0)
        server = ready(endpoint)
        job2 = client.submit("f")
        self.assertEqual(server.types(), [P.SUBMIT_JOB])
        server.send(P.JOB_CREATED, b"H:1")
        server.send(P.WORK_COMPLETE, b"H:1", b"ok")
        self.assertEqual(self.successResultOf(job2.result), b"ok")

    def test_lost_before_option_res(self) -> None:
        """A connection lost before OPTION_RES fails the requests already sent on it."""
        client, (endpoint,), clock = make_client()
        job = client.submit("f")
        server = endpoint.next().accept()
        self.assertEqual(server.types(), [P.OPTION_REQ, P.SUBMIT_JOB])
        server.lose()
        self.failureResultOf(job.result, RequestLost)
        clock.advance(1.0)
        ready(endpoint)  # the service reconnects

    def test_lost_before_job_created(self) -> None:
        """Lost after SUBMIT but before JOB_CREATED: RequestLost (outcome unknown, not resent)."""
        client, (endpoint,), clock = make_client()
        job = client.submit("f")
        bg = client.submit_background("f")
        echo = client.echo(b"x")
        server = ready(endpoint)
        server.lose(ConnectionLost())
        self.failureResultOf(job.result, RequestLost)
        self.failureResultOf(bg, RequestLost)
        self.failureResultOf(echo, RequestLost)
        self.failureResultOf(job.when_created(), RequestLost)

    def test_lost_after_job_created(self) -> None:
        """Lost after JOB_CREATED: JobLost, and the iterator ends."""
        client, (endpoint,), clock = make_client()
        job = client.submit("f")
        server = ready(endpoint)
        server.send(P.JOB_CREATED, b"H:1")
        events = collect_events(job)
        server.lose()
        self.failureResultOf(job.result, JobLost)
        self.assertEqual(self.successResultOf(events), [])

    def test_lost_after_progress(self) -> None:
        """Lost after some WORK_DATA: JobLost, the events already seen are kept."""
        client, (endpoint,), clock = make_client()
        job = client.submit("f")
        server = ready(endpoint)
        server.send(P.JOB_CREATED, b"H:1")
        server.send(P.WORK_STATUS, b"H:1", b"1", b"2")
        server.lose()
        self.failureResultOf(job.result, JobLost)
        self.assertEqual(self.successResultOf(collect_events(job)), [WorkStatus(1, 2)])

    def test_lost_after_complete(self) -> None:
        """Lost after WORK_COMPLETE: the result stands."""
        client, (endpoint,), clock = make_client()
        job = client.submit("f")
        server = ready(endpoint)
        server.send(P.JOB_CREATED, b"H:1")
        server.send(P.WORK_COMPLETE, b"H:1", b"r")
        server.lose()
        self.assertEqual(self.successResultOf(job.result), b"r")

    def test_lost_then_new_connection(self) -> None:
        """After a loss, the next request waits for the reconnect and goes out on it."""
        client, (endpoint,), clock = make_client()
        client.startService()
        ready(endpoint).lose()
        job = client.submit("f")
        self.assertNoResult(job.result)
        clock.advance(1.0)
        server = ready(endpoint)
        self.assertEqual(server.types(), [P.SUBMIT_JOB])

    def submit_from_loss_callback(self) -> tuple[Job, FakeEndpoint, MemoryReactorClock]:
        """Lose an accepted job whose errback submits another; return that job, endpoint, clock."""
        client, (endpoint,), clock = make_client()
        job = client.submit("f")
        follow_up: list[Any] = []
        job.result.addErrback(lambda f: follow_up.append(client.submit("g")))
        server = ready(endpoint)
        server.send(P.JOB_CREATED, b"H:1")
        server.lose()
        (retry,) = follow_up
        return retry, endpoint, clock

    def test_request_from_loss_callback(self) -> None:
        """A request made by a callback of the failed job waits for the reconnect."""
        retry, endpoint, clock = self.submit_from_loss_callback()
        self.assertNoResult(retry.result)
        clock.advance(0)
        clock.advance(1.0)
        endpoint.next().refuse()
        self.failureResultOf(retry.result, NoServersAvailable)

    def test_cancel_before_retry_after_loss(self) -> None:
        """A request from a loss callback that is cancelled before its retry never goes out."""
        retry, endpoint, clock = self.submit_from_loss_callback()
        retry.result.cancel()
        self.failureResultOf(retry.result, CancelledError)
        clock.advance(0)
        clock.advance(1.0)
        self.assertEqual(ready(endpoint).types(), [])

    def test_stop(self) -> None:
        """stop() closes the connections and fails what is outstanding."""
        client, (endpoint,), clock = make_client()
        job = client.submit("f")
        server = ready(endpoint)
        server.send(P.JOB_CREATED, b"H:1")
        d = client.stop()
        self.assertTrue(server.transport.disconnecting)
        server.protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(d)
        self.failureResultOf(job.result, JobLost)

    def test_stop_before_connected(self) -> None:
        """Stopping while still connecting fails the waiting request."""
        client, (endpoint,), clock = make_client()
        job = client.submit("f")
        client.stop()
        self.failureResultOf(job.result, NoServersAvailable)


class TimeoutTests(SynchronousTestCase):
    """Per-call timeouts."""

    def test_timeout_after_created(self) -> None:
        """The result fails with JobTimeout; late packets for the job are ignored."""
        client, (endpoint,), clock = make_client(timeout=5)
        job = client.submit("f")
        server = ready(endpoint)
        server.send(P.JOB_CREATED, b"H:1")
        clock.advance(5)
        self.failureResultOf(job.result, JobTimeout)
        self.assertEqual(server.protocol._jobs, {})
        server.send(P.WORK_DATA, b"H:1", b"late")
        server.send(P.WORK_COMPLETE, b"H:1", b"late")
        self.assertFalse(server.transport.disconnecting)

    def test_timeout_before_created(self) -> None:
        """Timing out before JOB_CREATED: the late JOB_CREATED is consumed, FIFO stays paired."""
        client, (endpoint,), clock = make_client()
        job = client.submit("f", timeout=1)
        later = client.echo(b"e")
        server = ready(endpoint)
        clock.advance(1)
        self.failureResultOf(job.result, JobTimeout)
        server.send(P.JOB_CREATED, b"H:1")
        server.send(P.ECHO_RES, b"e")
        self.assertEqual(self.successResultOf(later), b"e")

    def test_timeout_while_connecting(self) -> None:
        """Timing out while the connection is still being made."""
        client, (endpoint,), clock = make_client()
        job = client.submit("f", timeout=2)
        clock.advance(2)
        self.failureResultOf(job.result, JobTimeout)
        server = ready(endpoint)
        self.assertEqual(server.types(), [])

    def test_timeout_other_requests(self) -> None:
        """echo/get_status/submit_background time out with JobTimeout too."""
        client, (endpoint,), clock = make_client(timeout=3)
        e = client.echo(b"x")
        bg = client.submit_background("f")
        server = ready(endpoint)
        clock.advance(3)
        self.failureResultOf(e, JobTimeout)
        self.failureResultOf(bg, JobTimeout)
        server.send(P.ECHO_RES, b"x")
        server.send(P.JOB_CREATED, b"H:1")
        self.assertFalse(server.transport.disconnecting)

    def test_timeout_then_loss(self) -> None:
        """A timed-out job is not failed a second time when its connection drops."""
        client, (endpoint,), clock = make_client()
        job = client.submit("f", timeout=1)
        pending = client.submit("f", timeout=1)
        server = ready(endpoint)
        server.send(P.JOB_CREATED, b"H:1")
        clock.advance(1)
        self.failureResultOf(job.result, JobTimeout)
        self.failureResultOf(pending.result, JobTimeout)
        server.lose()  # would raise AlreadyCalledError on a double fire

    def test_cancel_then_loss(self) -> None:
        """A cancelled job, before or after JOB_CREATED, stays cancelled through a loss."""
        client, (endpoint,), clock = make_client()
        early = client.submit("f")
        late = client.submit("f")
        server = ready(endpoint)
        early.result.cancel()
        server.send(P.JOB_CREATED, b"H:1")
        server.send(P.JOB_CREATED, b"H:2")
        late.result.cancel()
        server.lose()
        self.failureResultOf(early.result, CancelledError)
        self.failureResultOf(late.result, CancelledError)

    def test_cancel(self) -> None:
        """Cancelling the result forgets the job."""
        client, (endpoint,), clock = make_client()
        job = client.submit("f")
        server = ready(endpoint)
        server.send(P.JOB_CREATED, b"H:1")
        job.result.cancel()
        self.failureResultOf(job.result, CancelledError)
        self.assertEqual(server.protocol._jobs, {})
        server.send(P.WORK_COMPLETE, b"H:1", b"r")

    def test_completed_before_timeout(self) -> None:
        """A job that completes in time leaves no timer behind."""
        client, (endpoint,), clock = make_client(timeout=5)
        job = client.submit("f")
        server = ready(endpoint)
        server.send(P.JOB_CREATED, b"H:1")
        server.send(P.WORK_COMPLETE, b"H:1", b"r")
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(self.successResultOf(job.result), b"r")


class ServerChoiceTests(SynchronousTestCase):
    """Several servers: hashing, round-robin, skipping dead ones."""

    def test_ring_is_stable(self) -> None:
        """The same key always maps to the same server, and every server appears once."""
        ring = HashRing(["a:1", "b:1", "c:1"])
        self.assertEqual(ring.order(b"key"), ring.order(b"key"))
        self.assertEqual(sorted(ring.order(b"key")), [0, 1, 2])
        firsts = {ring.order(f"k{i}".encode())[0] for i in range(100)}
        self.assertEqual(firsts, {0, 1, 2})

    def test_ring_consistency(self) -> None:
        """Adding a server moves only the keys that now map to it."""
        keys = [f"k{i}".encode() for i in range(300)]
        old = HashRing(["a:1", "b:1", "c:1"])
        new = HashRing(["a:1", "b:1", "c:1", "d:1"])
        moved = [k for k in keys if old.order(k)[0] != new.order(k)[0]]
        self.assertTrue(all(new.order(k)[0] == 3 for k in moved))
        self.assertLess(len(moved), len(keys) / 2)

    def test_unique_goes_to_hashed_server(self) -> None:
        """Jobs with the same unique key go to the same server."""
        client, endpoints, clock = make_client(3)
        client.startService()
        servers = [ready(e) for e in endpoints]
        for _ in range(3):
            client.submit("f", unique="the-key")
        counts = [len(s.received()) for s in servers]
        self.assertEqual(sorted(counts), [0, 0, 3])

    def test_round_robin(self) -> None:
        """Jobs without a unique key are spread over the servers."""
        client, endpoints, clock = make_client(3)
        client.startService()
        servers = [ready(e) for e in endpoints]
        for _ in range(6):
            client.submit("f")
        self.assertEqual([len(s.received()) for s in servers], [2, 2, 2])

    def test_skips_refusing_server(self) -> None:
        """A refusing server is skipped; the request goes to the next one."""
        client, endpoints, clock = make_client(2)
        client.startService()
        endpoints[0].next().refuse()
        server = ready(endpoints[1])
        jobs = [client.submit("f") for _ in range(4)]
        self.assertEqual(server.types(), [P.SUBMIT_JOB] * 4)
        for job in jobs:
            self.assertNoResult(job.result)

    def test_unique_falls_back(self) -> None:
        """If the hashed server is down, a unique job goes to the next server on the ring."""
        client, endpoints, clock = make_client(2)
        client.startService()
        order = HashRing(["endpoint#0", "endpoint#1"]).order(b"k")
        endpoints[order[0]].next().refuse()
        server = ready(endpoints[order[1]])
        client.submit("f", unique="k")
        self.assertEqual(server.types(), [P.SUBMIT_JOB])

    def test_all_down(self) -> None:
        """With every server refusing, the request fails with NoServersAvailable."""
        client, endpoints, clock = make_client(2)
        job = client.submit("f")
        endpoints[0].next().refuse()
        self.assertNoResult(job.result)
        endpoints[1].next().refuse()
        self.failureResultOf(job.result, NoServersAvailable)

    def test_jittered_backoff_default(self) -> None:
        """Without a retry policy the delay grows and is jittered."""
        client = Client(["127.0.0.1:1"], reactor=MemoryReactorClock())
        policy = client._retry_policy
        self.assertLess(policy(1), policy(6))
        self.assertLessEqual(policy(50), 31.0)


def make_server() -> Server:
    """Build one server record over a fake endpoint; nothing connects until it starts."""
    return Server(
        "endpoint#0",
        FakeEndpoint(),
        retry_policy=lambda attempt: 1.0,
        clock=MemoryReactorClock(),
        prepare=lambda server, proxy: None,
    )


def lost(protocol: ClientProtocol) -> ClientProtocol:
    """Close ``protocol`` without telling any server record; return it."""
    protocol.connectionLost(Failure(ConnectionDone()))
    return protocol


class ServerHealthTests(SynchronousTestCase):
    """Each server's health machine: Unknown, Up and Down, as a request sees them."""

    def assertHealth(self, server: Server, ready: ClientProtocol | None, down: bool) -> None:
        """Check what a request would see: the connection to use, and whether to skip."""
        self.assertIs(server.ready(), ready)
        self.assertEqual(server.down, down)

    def test_starts_unknown(self) -> None:
        """A new server has no connection and is not down, so a request waits for an attempt."""
        self.assertHealth(make_server(), None, False)

    def test_failed_attempt_is_down(self) -> None:
        """A failed attempt from Unknown makes the server Down; another keeps it Down."""
        server = make_server()
        server.failed()
        self.assertHealth(server, None, True)
        server.failed()
        self.assertHealth(server, None, True)

    def test_connected_is_up(self) -> None:
        """A prepared connection makes an Unknown server Up, with that connection ready."""
        server, proto = make_server(), ClientProtocol()
        server.connected(proto)
        self.assertHealth(server, proto, False)

    def test_down_then_connected_is_up(self) -> None:
        """A connection after failed attempts brings a Down server back Up."""
        server, proto = make_server(), ClientProtocol()
        server.failed()
        server.connected(proto)
        self.assertHealth(server, proto, False)

    def test_newer_connection_replaces(self) -> None:
        """A second connection while Up becomes the one in use."""
        server, first, second = make_server(), ClientProtocol(), ClientProtocol()
        server.connected(first)
        server.connected(second)
        self.assertHealth(server, second, False)

    def test_closed_is_unknown(self) -> None:
        """When the connection in use closes the server is Unknown again, not Down."""
        server, proto = make_server(), ClientProtocol()
        server.connected(proto)
        server.disconnected(proto)
        self.assertHealth(server, None, False)

    def test_other_connection_closing_is_ignored(self) -> None:
        """A connection that is not the one in use closing leaves the server Up."""
        server, proto = make_server(), ClientProtocol()
        server.connected(proto)
        server.disconnected(ClientProtocol())
        self.assertHealth(server, proto, False)

    def test_closing_while_down_or_unknown_is_ignored(self) -> None:
        """A close report without a connection in use changes nothing."""
        unknown, down = make_server(), make_server()
        down.failed()
        unknown.disconnected(ClientProtocol())
        down.disconnected(ClientProtocol())
        self.assertHealth(unknown, None, False)
        self.assertHealth(down, None, True)

    def test_stale_failure_keeps_connection(self) -> None:
        """A failure reported while Up keeps the connection, and its close leads to Unknown."""
        server, proto = make_server(), ClientProtocol()
        server.connected(proto)
        server.failed()
        self.assertHealth(server, proto, False)
        server.disconnected(proto)
        self.assertHealth(server, None, False)

    def test_closed_connection_is_not_ready(self) -> None:
        """An Up server whose connection already closed offers nothing, and is not skipped."""
        server, proto = make_server(), ClientProtocol()
        server.connected(lost(proto))
        self.assertHealth(server, None, False)

    def test_down_server_is_used_again(self) -> None:
        """A server skipped after a refused attempt takes requests again once it reconnects."""
        client, endpoints, clock = make_client(2)
        client.startService()
        endpoints[0].next().refuse()
        second = ready(endpoints[1])
        client.submit("f")
        client.submit("f")
        self.assertEqual(second.types(), [P.SUBMIT_JOB] * 2)
        clock.advance(1.0)
        first = ready(endpoints[0])
        client.submit("f")
        client.submit("f")
        self.assertEqual((first.types(), second.types()), ([P.SUBMIT_JOB], [P.SUBMIT_JOB]))


class AwaitTests(SynchronousTestCase):
    """Jobs work in async def code."""

    def test_await_job(self) -> None:
        """``await job`` gives the result; a failure is raised."""
        client, (endpoint,), clock = make_client()

        async def run() -> tuple[bytes, str]:
            """Await a job that succeeds, then one that fails."""
            ok = await client.submit("f")
            try:
                await client.submit("g")
            except JobFailed as e:
                return ok, type(e).__name__
            return ok, ""

        d = Deferred.fromCoroutine(run())
        server = ready(endpoint)
        server.send(P.JOB_CREATED, b"H:1")
        server.send(P.WORK_COMPLETE, b"H:1", b"r")
        server.send(P.JOB_CREATED, b"H:2")
        server.send(P.WORK_FAIL, b"H:2")
        self.assertEqual(self.successResultOf(d), (b"r", "JobFailed"))
