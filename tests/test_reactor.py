"""Tests for gearmanpy.reactor: event dispatch without the per-event log context."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.internet.abstract import FileDescriptor
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gearmanpy.reactor import GearmanReactor


class PipeReader(FileDescriptor):
    """Reads one end of a pipe; records reads and how it was disconnected."""

    def __init__(self, reactor: GearmanReactor, fd: int, explode: bool = False) -> None:
        super().__init__(reactor)
        self.fd = fd
        self.explode = explode
        self.got: list[bytes] = []
        self.lost: list[Failure] = []

    def fileno(self) -> int:
        return self.fd

    def doRead(self) -> None:
        if self.explode:
            raise RuntimeError("handler bug")
        self.got.append(os.read(self.fd, 100))

    def connectionLost(self, reason: Failure) -> None:
        self.lost.append(reason)


class GearmanReactorTests(SynchronousTestCase):
    """The lean reactor dispatches events as EPollReactor does."""

    def setUp(self) -> None:
        self.reactor = GearmanReactor()
        self.addCleanup(self.reactor._poller.close)
        self.r, self.w = os.pipe()
        self.addCleanup(os.close, self.r)
        self.addCleanup(os.close, self.w)

    def test_read_event_reaches_selectable(self) -> None:
        """A readable descriptor gets doRead on the next poll."""
        reader = PipeReader(self.reactor, self.r)
        self.reactor.addReader(reader)
        os.write(self.w, b"ping")
        self.reactor.doPoll(0)
        self.assertEqual(reader.got, [b"ping"])

    def test_no_event_no_call(self) -> None:
        """A poll with nothing ready calls nothing."""
        reader = PipeReader(self.reactor, self.r)
        self.reactor.addReader(reader)
        self.reactor.doPoll(0)
        self.assertEqual(reader.got, [])

    def test_handler_exception_disconnects_and_is_logged(self) -> None:
        """An exception from doRead is logged and drops that selectable, not the reactor."""
        reader = PipeReader(self.reactor, self.r, explode=True)
        self.reactor.addReader(reader)
        os.write(self.w, b"x")
        self.reactor.doPoll(0)
        self.assertEqual(len(reader.lost), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertNotIn(reader, self.reactor.getReaders())

    def test_raising_connection_lost_is_logged_and_the_poll_goes_on(self) -> None:
        """A connectionLost that raises is logged, and the same poll's other events still run."""
        r2, w2 = os.pipe()
        self.addCleanup(os.close, r2)
        self.addCleanup(os.close, w2)

        class BadLoss(PipeReader):
            def connectionLost(self, reason: Failure) -> None:
                raise ValueError("connectionLost bug")

        bad = BadLoss(self.reactor, self.r, explode=True)
        good = PipeReader(self.reactor, r2)
        self.reactor.addReader(bad)
        self.reactor.addReader(good)
        os.write(self.w, b"x")
        os.write(w2, b"y")
        self.reactor.doPoll(0)
        self.assertEqual(good.got, [b"y"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_read_returning_a_reason_disconnects(self) -> None:
        """A doRead that reports connection loss gets connectionLost with that reason."""
        from twisted.internet.error import ConnectionDone

        class Closing(PipeReader):
            def doRead(self) -> object:  # type: ignore[override]
                os.read(self.fd, 100)
                return ConnectionDone()

        reader = Closing(self.reactor, self.r)
        self.reactor.addReader(reader)
        os.write(self.w, b"x")
        self.reactor.doPoll(0)
        self.assertEqual(len(reader.lost), 1)
        reader.lost[0].trap(ConnectionDone)
        self.assertNotIn(reader, self.reactor.getReaders())

    def test_hang_up_goes_through_twisted(self) -> None:
        """An event other than plain readability (a closed writer) still disconnects."""
        reader = PipeReader(self.reactor, self.r)
        self.reactor.addReader(reader)
        os.close(self.w)
        self.w = os.open(os.devnull, os.O_WRONLY)  # keep the cleanup's close harmless
        self.reactor.doPoll(0)
        # A pipe whose writer is gone reports a hang-up: Twisted's path drops the reader.
        self.assertEqual(len(reader.lost), 1)
        self.assertNotIn(reader, self.reactor.getReaders())


class TCPFastPathTests(SynchronousTestCase):
    """Plain TCP server connections are read directly (the fast path), with the same outcomes."""

    def setUp(self) -> None:
        import socket

        from twisted.internet.protocol import Factory, Protocol, connectionDone

        self.reactor = GearmanReactor()
        self.addCleanup(self.reactor._poller.close)
        test = self
        self.received: list[bytes] = []
        self.lost: list[Failure] = []

        class Recorder(Protocol):
            def dataReceived(self, data: bytes) -> None:
                test.received.append(data)

            def connectionLost(self, reason: Failure = connectionDone) -> None:
                test.lost.append(reason)

        port = self.reactor.listenTCP(0, Factory.forProtocol(Recorder), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.client = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(self.client.close)
        # Accept: the listening port becomes readable, and its doRead accepts the connection.
        self.poll_until(lambda: bool(self.servers()))
        servers = self.servers()
        self.assertEqual(len(servers), 1)
        self.server = servers[0]
        self.addCleanup(self.server.socket.close)

    def servers(self) -> list[Any]:
        from twisted.internet.tcp import Server

        return [r for r in self.reactor.getReaders() if r.__class__ is Server]

    def poll_until(self, done: Callable[[], bool]) -> None:
        for _ in range(50):
            if done():
                return
            self.reactor.doPoll(0.1)
        self.fail("no event")

    def test_data_reaches_the_protocol(self) -> None:
        """Bytes sent by the peer arrive in dataReceived, read straight off the socket."""
        self.client.sendall(b"ping")
        self.poll_until(lambda: bool(self.received))
        self.assertEqual(b"".join(self.received), b"ping")
        self.assertEqual(self.lost, [])

    def test_peer_close_is_connection_done(self) -> None:
        """EOF from the peer disconnects the connection cleanly (ConnectionDone)."""
        from twisted.internet.error import ConnectionDone

        self.client.close()
        self.poll_until(lambda: bool(self.lost))
        self.lost[0].trap(ConnectionDone)
        self.assertNotIn(self.server, self.reactor.getReaders())
