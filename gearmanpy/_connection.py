# -*- test-case-name: tests.test_client -*-
"""Code shared by the client and the worker: server addresses, the packet protocol base.

* :func:`client_endpoint` turns a server description (``"host:port"``, ``"host"``, or a
  Twisted client endpoint string such as ``tcp:host=h:port=4730``, ``unix:path=/s``,
  ``tls:h:4730``) into an ``IStreamClientEndpoint``. Endpoint objects pass through.
* :class:`PacketProtocol` frames packets with the shared codec, has the single
  :meth:`~PacketProtocol.sendPacket` write path, dispatches every decoded packet to a
  ``packet_<TYPE>`` method, and sets ``TCP_NODELAY`` when it connects.
* :class:`ClientTLS` is how a client or worker speaks TLS to ``host:port`` servers: the
  server's certificate and host name verified (against a CA file, or the system's roots),
  optionally a client certificate; :class:`TLSClientEndpoint` connects only once the
  handshake is over, and fails with a :class:`~gearmanpy.errors.TLSHandshakeError` saying why.
* :func:`resolve_reactor` finds the global reactor lazily, so nothing here imports it at
  module scope.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Generator, Sequence
from typing import Any, TypeVar

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, clientFromString
from twisted.internet.interfaces import IHandshakeListener, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gearmanpy._transport import SocketWriter, openssl_reason, set_nodelay
from gearmanpy.errors import ProtocolError, TLSHandshakeError
from gearmanpy.protocol.packets import Packet, PacketDecoder, encode

_T = TypeVar("_T")

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


class AsyncDeferred(Deferred[_T]):
    """A Deferred that ``await`` also works on from a coroutine asyncio runs.

    A plain Deferred's ``__await__`` yields the Deferred itself, which only Twisted's
    coroutine driver (``ensureDeferred``, ``Deferred.fromCoroutine``) understands; an asyncio
    Task (``asyncio.run``, or a Task under Twisted's asyncioreactor) fails with "Task got bad
    yield". Inside an asyncio Task this one waits on an asyncio Future instead; everywhere
    else it is an ordinary Deferred. Awaiting consumes the result, as with any Deferred.
    """

    def __await__(self) -> Generator[Any, Any, _T]:
        """Wait as the coroutine's driver expects: a Deferred for Twisted, a Future for asyncio."""
        if self.called and not self.paused:
            return (yield from Deferred.__iter__(self))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or asyncio.current_task(loop) is None:
            return (yield from Deferred.__iter__(self))
        future = self.asFuture(loop)
        future._asyncio_future_blocking = True
        sent = yield future
        if sent is future:
            # Twisted's driver after all (ensureDeferred called from inside an asyncio Task
            # runs the coroutine's first step in that Task): it sends back what it does not
            # know. Wait on the Future through a Deferred instead.
            future._asyncio_future_blocking = False
            return (yield from Deferred.__iter__(Deferred.fromFuture(future)))
        return future.result()


def awaitable(d: Deferred[_T]) -> AsyncDeferred[_T]:
    """Return ``d`` as an :class:`AsyncDeferred` (the same object if it is one); cancelling the
    result cancels ``d``."""
    if isinstance(d, AsyncDeferred):
        return d
    result: AsyncDeferred[_T] = AsyncDeferred(lambda _: d.cancel())
    d.chainDeferred(result)
    return result


def copy_deferred(d: Deferred[None]) -> AsyncDeferred[None]:
    """A Deferred that fires (with ``None``) when ``d`` does, so each caller of a stop gets
    its own to await, and ``d``'s result is left alone."""
    copy: AsyncDeferred[None] = AsyncDeferred()

    def fire(result: object) -> object:
        copy.callback(None)
        return result

    d.addBoth(fire)
    return copy


class ReentrantClientService(ClientService):
    """A ClientService whose ``stopService`` and ``whenConnected`` may be called from anywhere,
    its own callbacks included.

    ClientService's state machine (automat) refuses an input that returns a value while one
    of its transitions runs ("attempting to reentrantly run _Client.stop"), and the callbacks
    it fires run inside one: a ``whenConnected`` waiter failed by a refused connection, the
    waiters a stop cancels, the stop's own Deferred. Such a call is made again as soon as the
    transition is over (``callLater(0)``); the caller gets a Deferred for its outcome.
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        factory: Any,
        *,
        retryPolicy: Callable[[int], float],
        clock: Any,
        prepareConnection: Callable[[Any], object],
    ) -> None:
        """As ClientService; ``clock`` (required here) also schedules the retried call."""
        super().__init__(
            endpoint, factory, retryPolicy, clock=clock, prepareConnection=prepareConnection
        )
        self._clock = clock

    def stopService(self) -> Deferred[None]:
        """Stop reconnecting and close the connection, now or once the transition is over."""
        try:
            return super().stopService()
        except RuntimeError as e:
            if "reentrantly" not in str(e):
                raise
        return self._later(self._stop_again)

    def _stop_again(self) -> Deferred[None]:
        """The deferred stop, unless the service was started again meanwhile."""
        if self.running:
            return succeed(None)
        return super().stopService()

    def whenConnected(self, failAfterFailures: int | None = None) -> Deferred[Any]:
        """As ClientService's, now or once the transition is over."""
        try:
            return super().whenConnected(failAfterFailures)
        except RuntimeError as e:
            if "reentrantly" not in str(e):
                raise
        return self._later(lambda: ClientService.whenConnected(self, failAfterFailures))

    def _later(self, call: Callable[[], Deferred[Any]]) -> Deferred[Any]:
        """Make ``call`` on the next turn; its Deferred's outcome goes to the one returned."""
        result: Deferred[Any] = Deferred()
        self._clock.callLater(0, lambda: call().chainDeferred(result))
        return result


class ClientTLS:
    """TLS to the servers given as ``host:port``: their certificate must chain to ``ca``
    (the system's trusted roots without it) and name the host (or ``hostname``).

    The files are read once, here: a missing or broken one is a ``ValueError`` saying which.
    """

    def __init__(
        self,
        ca: str | None = None,
        certificate: str | None = None,
        key: str | None = None,
        hostname: str | None = None,
    ) -> None:
        """
        :param ca: CA certificates (PEM) the server's certificate is verified against.
        :param certificate: this client's certificate (PEM), for servers that ask for one.
        :param key: its private key (PEM); None: it is in ``certificate``'s file.
        :param hostname: the name the server's certificate must carry, if not the host
            connected to (an IP address, say).
        """
        from twisted.internet import ssl

        self.hostname = hostname
        self._trust: Any = ssl.platformTrust()
        if ca is not None:
            self._trust = ssl.Certificate.loadPEM(_read_pem(ca, "ca"))
        self._client: Any = None
        if certificate is not None:
            pem = _read_pem(certificate, "certificate")
            pem += _read_pem(key, "key") if key is not None else b""
            try:
                self._client = ssl.PrivateCertificate.loadPEM(pem)
            except Exception as e:
                raise ValueError(
                    f"TLS certificate {certificate} (key {key or 'in it'}): {e}"
                ) from None
        elif key is not None:
            raise ValueError("a TLS key needs its certificate")

    def endpoint(self, reactor: Any, host: str, port: int, timeout: float) -> TLSClientEndpoint:
        """A TLS endpoint to ``host:port``, verifying the server as ``hostname or host``."""
        from twisted.internet import ssl

        name = self.hostname or host
        options = ssl.optionsForClientTLS(
            name, trustRoot=self._trust, clientCertificate=self._client
        )
        tcp = HostnameEndpoint(reactor, host, port, timeout=timeout)
        return TLSClientEndpoint(reactor, tcp, options, f"{host}:{port}", timeout, name)


def _read_pem(path: str, what: str) -> bytes:
    """The bytes of a PEM file; a ValueError naming it if it cannot be read."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"cannot read the TLS {what} file {path}: {e.strerror or e}") from None
    if b"-----BEGIN" not in data:
        raise ValueError(f"the TLS {what} file {path} holds no PEM data")
    return data


@implementer(IStreamClientEndpoint)
class TLSClientEndpoint:
    """TLS over a TCP endpoint, connected only once the handshake is over: the protocol is
    built then, and a handshake that fails (or takes longer than ``timeout``) fails the
    connection attempt with a :class:`~gearmanpy.errors.TLSHandshakeError` saying why, so
    the client and the worker log it and retry as for a refused connection. The first
    failure after a success (or ever) is logged here too, with its reason: a worker's
    reconnection attempts are otherwise silent."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        tcp: IStreamClientEndpoint,
        options: Any,
        where: str,
        timeout: float,
        name: str = "",
    ) -> None:
        """
        :param where: ``host:port``, for messages.
        :param name: the host name the server's certificate must carry, for messages.
        """
        self._reactor = reactor
        self._tcp = tcp
        self._options = options
        self._where = where
        self._name = name
        self._timeout = timeout
        self._failing = False

    def __repr__(self) -> str:
        """For ClientService's retry messages."""
        return f"<TLS endpoint {self._where}>"

    def _outcome(self, error: TLSHandshakeError | None) -> None:
        """Note a handshake's outcome; log a failure if the last attempt did not fail."""
        if error is not None and not self._failing:
            self.log.warn("{error}", error=str(error))
        self._failing = error is not None

    def connect(self, factory: Any) -> Deferred[Any]:
        """Connect, handshake, then hand the connection to ``factory``'s protocol."""
        from twisted.protocols.tls import TLSMemoryBIOFactory

        done: Deferred[Any] = Deferred()
        waiting = Factory.forProtocol(lambda: _AwaitHandshake(self, factory, done))
        tls = TLSMemoryBIOFactory(self._options, True, waiting, self._reactor)

        def not_connected(failure: Failure) -> None:
            if not done.called:
                done.errback(failure)

        self._tcp.connect(tls).addErrback(not_connected)
        return done


@implementer(IHandshakeListener)
class _AwaitHandshake(Protocol):
    """Stands in for the real protocol until the TLS handshake is over, then gives it the
    connection (the TLS layer talks to it directly from then on)."""

    def __init__(self, endpoint: TLSClientEndpoint, factory: Any, done: Deferred[Any]) -> None:
        self._endpoint = endpoint
        self._factory = factory
        self._done = done
        self._timer: Any = None

    def connectionMade(self) -> None:
        """Bound the handshake's time."""
        self._timer = self._endpoint._reactor.callLater(
            self._endpoint._timeout,
            self.transport.abortConnection,  # type: ignore[union-attr]
        )

    def handshakeCompleted(self) -> None:
        """The server's certificate verified: build the real protocol and hand over."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        transport: Any = self.transport
        proto = self._factory.buildProtocol(transport.getPeer())
        transport.wrappedProtocol = proto
        proto.makeConnection(transport)
        self._endpoint._outcome(None)
        self._done.callback(proto)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Lost before the handshake was over: fail the attempt, saying why."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        elif self._timer is not None:
            reason = Failure(TimeoutError(f"no TLS handshake within {self._endpoint._timeout} s"))
        if not self._done.called:
            why = openssl_reason(reason.value or Exception("connection lost"))
            if type(reason.value).__name__ == "VerificationError":  # service_identity's
                why = f"the server's certificate is not for {self._endpoint._name}"
            error = TLSHandshakeError(f"TLS handshake with {self._endpoint._where} failed: {why}")
            self._endpoint._outcome(error)
            self._done.errback(error)


def client_endpoint(
    reactor: Any,
    spec: ServerSpec,
    timeout: float = DEFAULT_CONNECT_TIMEOUT,
    tls: ClientTLS | None = None,
) -> IStreamClientEndpoint:
    """Turn one server description into a client endpoint.

    :param reactor: the reactor the endpoint connects with.
    :param timeout: seconds a ``host:port`` connection attempt may take (endpoint strings
        carry their own ``timeout=`` option).
    :param tls: speak TLS to a ``host:port`` server (endpoint strings say for themselves).
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
    if tls is not None:
        return tls.endpoint(reactor, host, port, timeout)
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
