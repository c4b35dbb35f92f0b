"""Fake servers for client and worker tests: endpoints whose connection attempts the test
accepts or refuses, and the server's end of each connection, all in memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from gearmanpy.protocol.packets import Magic, Packet, PacketDecoder, PacketType, encode, response

P = PacketType
S = TypeVar("S")


class NoDelayTransport(StringTransport):
    """A StringTransport that records ``setTcpNoDelay`` like a TCP transport."""

    nodelay = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        """Record the setting."""
        self.nodelay = enabled


@attrs.define(eq=False)
class FakeServerConnection:
    """The server's end of one connection: read what the peer sent, write replies.

    A gearmanpy worker starts each connection with OPTION_REQ ``attempts``; the fake keeps
    that in :attr:`options` instead of :meth:`received`, as a server that does not know the
    option only answers it, so the tests of everything else read the same.
    """

    protocol: Any
    transport: NoDelayTransport
    decoder: PacketDecoder = attrs.field(factory=PacketDecoder)
    backlog: list[Packet] = attrs.field(factory=list)
    options: list[bytes] = attrs.field(factory=list)

    def received(self) -> list[Packet]:
        """Return the packets written since the last call."""
        data = self.transport.value()
        self.transport.clear()
        packets: list[Packet] = list(self.backlog)
        self.backlog = []
        for packet in self.decoder.feed(data):
            assert isinstance(packet, Packet) and packet.magic is Magic.REQ
            if packet.type == PacketType.OPTION_REQ and packet.args == (b"attempts",):
                self.options.append(packet.args[0])
                continue
            packets.append(packet)
        return packets

    def types(self) -> list[PacketType]:
        """Return the types of the packets written since the last call."""
        return [p.type for p in self.received()]

    def send(self, ptype: PacketType, *args: bytes) -> None:
        """Deliver one server packet to the peer."""
        self.protocol.dataReceived(encode(response(ptype, *args)))

    def lose(self, reason: Exception | None = None) -> None:
        """Close the connection from the server side."""
        self.transport.loseConnection()
        self.protocol.connectionLost(Failure(reason or ConnectionDone("closed by server")))


@attrs.define(eq=False)
class Attempt:
    """One connection attempt made through a :class:`FakeEndpoint`."""

    factory: Any
    deferred: Deferred[Any]

    def accept(self) -> FakeServerConnection:
        """Let the connection succeed; return the server's end."""
        proto = self.factory.buildProtocol(None)
        transport = NoDelayTransport()
        proto.makeConnection(transport)
        self.deferred.callback(proto)
        return FakeServerConnection(proto, transport)

    def refuse(self) -> None:
        """Make the attempt fail as a refused TCP connection would."""
        self.deferred.errback(ConnectionRefusedError("refused"))


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """An endpoint whose connection attempts the test completes by hand."""

    def __init__(self) -> None:
        """No attempts yet."""
        self.attempts: list[Attempt] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        """Record an attempt and return its (unfired) Deferred."""
        d: Deferred[Any] = Deferred()
        self.attempts.append(Attempt(factory, d))
        return d

    def next(self) -> Attempt:
        """Pop the oldest attempt, failing if none was made."""
        assert self.attempts, "no connection attempt was made"
        return self.attempts.pop(0)


def with_fake_servers(
    cls: Callable[..., S], clock: Any, n: int = 1, **kwargs: Any
) -> tuple[S, list[FakeEndpoint], Any]:
    """Build a Client or Worker over ``n`` fake endpoints on ``clock``, 1-second fixed retries."""
    endpoints = [FakeEndpoint() for _ in range(n)]
    kwargs.setdefault("retry_policy", lambda attempt: 1.0)
    return cls(endpoints, reactor=clock, **kwargs), endpoints, clock


def ready(endpoint: FakeEndpoint) -> FakeServerConnection:
    """Accept the next attempt and answer the client's OPTION_REQ ``exceptions``."""
    server = endpoint.next().accept()
    packets = server.received()
    assert packets[0] == Packet(P.OPTION_REQ, (b"exceptions",)), packets
    server.backlog = packets[1:]
    server.send(P.OPTION_RES, b"exceptions")
    return server
