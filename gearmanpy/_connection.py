# -*- test-case-name: tests.test_client -*-
"""Code shared by the client and the worker: server addresses, the packet protocol base.

* :func:`client_endpoint` turns a server description (``"host:port"``, ``"host"``, or a
  Twisted client endpoint string such as ``tcp:host=h:port=4730``, ``unix:path=/s``,
  ``tls:h:4730``) into an ``IStreamClientEndpoint``. Endpoint objects pass through.
* :class:`PacketProtocol` frames packets with the shared codec, has the single
  :meth:`~PacketProtocol.sendPacket` write path, dispatches every decoded packet to a
  ``packet_<TYPE>`` method, and sets ``TCP_NODELAY`` when it connects.
* :func:`resolve_reactor` finds the global reactor lazily, so nothing here imports it at
  module scope.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.internet.endpoints import HostnameEndpoint, clientFromString
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from gearmanpy._transport import SocketWriter, set_nodelay
from gearmanpy.errors import ProtocolError
from gearmanpy.protocol.packets import Packet, PacketDecoder, encode

#: The port gearmand and gearmanpy listen on by default.
DEFAULT_PORT = 4730

#: Seconds a connection attempt to a ``host:port`` server may take before it counts as failed.
DEFAULT_CONNECT_TIMEOUT = 10.0

#: Endpoint-string prefixes passed to :func:`twisted.internet.endpoints.clientFromString`.
_ENDPOINT_PREFIXES = ("tcp:", "tcp6:", "unix:", "tls:", "ssl:")

#: A server as the user gives it: a string, or an endpoint object (handy in tests).
ServerSpec = str | IStreamClientEndpoint


def resolve_reactor(reactor: Any | None) -> Any:
    """Return ``reactor`` or, when it is ``None``, the global reactor (imported only now).

    :param reactor: an injected reactor/clock, or ``None``.
    :return: the reactor to use.
    """
    if reactor is not None:
        return reactor
    from twisted.internet import reactor as global_reactor

    return global_reactor


def server_list(servers: Sequence[ServerSpec] | ServerSpec, owner: str) -> list[ServerSpec]:
    """One server or several, as a list; ``owner`` ("Client", "Worker") names the error.

    :raises ValueError: if there is no server at all.
    """
    if isinstance(servers, (str, bytes)) or not isinstance(servers, Sequence):
        servers = [servers]  # type: ignore[list-item]
    if not servers:
        raise ValueError(f"a {owner} needs at least one server")
    return list(servers)  # type: ignore[arg-type]


def default_retry_policy() -> Callable[[int], float]:
    """How long to wait before each reconnection attempt: backoff from 0.5 s to 30 s,
    jittered so that many clients and workers do not all come back at once."""
    return backoffPolicy(initialDelay=0.5, maxDelay=30.0, factor=2.0, jitter=random.random)


class LazyReactor:
    """Mixin for services that take an optional reactor: ``self._reactor`` resolves it (or
    the global reactor) on first use, so constructing one never installs a reactor."""

    _reactor_arg: Any

    @property
    def _reactor(self) -> Any:
        """The reactor, resolved when first needed."""
        self._reactor_arg = resolve_reactor(self._reactor_arg)
        return self._reactor_arg


def client_endpoint(
    reactor: Any, spec: ServerSpec, timeout: float = DEFAULT_CONNECT_TIMEOUT
) -> IStreamClientEndpoint:
    """Turn one server description into a client endpoint.

    :param reactor: the reactor the endpoint connects with.
    :param timeout: seconds a ``host:port`` connection attempt may take (endpoint strings
        carry their own ``timeout=`` option).
    :param spec: ``"host"`` (port 4730), ``"host:port"``, ``"[v6addr]:port"``, a client
        endpoint string starting with ``tcp:``, ``tcp6:``, ``unix:``, ``tls:`` or ``ssl:``,
        or an object that already provides ``IStreamClientEndpoint``.
    :return: the endpoint.
    :raises ValueError: if the string cannot be understood.
    """
    if not isinstance(spec, str):
        if IStreamClientEndpoint.providedBy(spec):
            return spec
        raise TypeError(f"a server must be a string or a client endpoint, not {spec!r}")
    if spec.startswith(_ENDPOINT_PREFIXES):
        return clientFromString(reactor, spec)
    host, port = split_host_port(spec)
    return HostnameEndpoint(reactor, host, port, timeout=timeout)


def split_host_port(spec: str) -> tuple[str, int]:
    """Split ``"host"``, ``"host:port"`` or ``"[v6]:port"`` into a host and a port.

    :raises ValueError: on an empty host or a port that is not a number in 1..65535.
    """
    if spec.startswith("["):
        host, sep, rest = spec[1:].partition("]")
        if not sep:
            raise ValueError(f"unclosed '[' in server address {spec!r}")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"bad server address {spec!r}")
    elif spec.count(":") > 1:
        host, port_text = spec, ""
    else:
        host, _, port_text = spec.partition(":")
    if not host:
        raise ValueError(f"no host in server address {spec!r}")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in server address {spec!r}")
    return host, int(port_text)


def server_key(spec: ServerSpec, index: int) -> str:
    """Return a stable name for a server, used for consistent hashing and in messages.

    Strings name themselves, so clients configured with the same list hash the same way.
    An endpoint object is named by its position in the list.
    """
    return spec if isinstance(spec, str) else f"endpoint#{index}"


def to_bytes(value: str | bytes | bytearray | memoryview, what: str) -> bytes:
    """Return ``value`` as bytes, encoding a ``str`` as UTF-8.

    :raises TypeError: for anything else.
    """
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")


class PacketProtocol(Protocol):
    """A Gearman client-side connection: decode ``\\0RES`` packets, write ``\\0REQ`` ones.

    Subclasses define ``packet_<TYPE>(packet)`` methods, and send only through
    :meth:`sendPacket` (never ``self.transport.write``: the write-through writer must be
    the connection's only writer). A packet without a handler, or
    bytes the codec rejects, is a protocol error: it is logged and the connection drops.
    """

    log = Logger()

    def __init__(self) -> None:
        """Create the decoder; nothing is sent until the connection is made."""
        self._decoder = PacketDecoder(allow_admin=False)
        self._writer: SocketWriter

    def connectionMade(self) -> None:
        """Turn on ``TCP_NODELAY`` and set up the write path."""
        set_nodelay(self.transport)
        self._writer = SocketWriter(self.transport)

    def unwrap(self) -> PacketProtocol:
        """Return this protocol itself, even when called through ClientService's proxy."""
        return self

    def sendPacket(self, packet: Packet) -> None:
        """Write one packet: the only place this protocol writes to its transport."""
        self._writer.write(encode(packet))

    def dataReceived(self, data: bytes) -> None:
        """Decode ``data`` and dispatch every whole packet it completes, in order."""
        try:
            packets = self._decoder.feed(data)
        except ProtocolError as e:
            for event in e.events:
                self._dispatch(event)
            self.log.error("Protocol error from the server: {error}; dropping", error=e)
            self._writer.close()
            return
        for packet in packets:
            if not self._dispatch(packet):
                return

    def _dispatch(self, packet: Any) -> bool:
        """Send one decoded packet to its handler; return ``False`` if the connection dropped."""
        if not isinstance(packet, Packet):
            return True
        handler = getattr(self, "packet_" + packet.type.name, None)
        if handler is None:
            self.protocolViolation(f"unexpected {packet.type.name} packet")
            return False
        try:
            handler(packet)
        except ProtocolError as e:
            self.protocolViolation(str(e))
            return False
        except Exception:
            self.log.failure("Error while handling {ptype}", ptype=packet.type.name)
            self._writer.close()
            return False
        return True

    def protocolViolation(self, why: str) -> None:
        """Log that the server broke the protocol, and drop the connection."""
        self.log.error("Server protocol violation: {why}; dropping the connection", why=why)
        self._writer.close()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Subclasses fail what is outstanding."""
