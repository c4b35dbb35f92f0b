# -*- test-case-name: tests.test_client -*-
"""Which server a request goes to: the hash ring, and what the client knows of each server.

A job with a unique key goes to the server picked by consistent hashing of the key
(:class:`HashRing`), so coalescing works across servers; other requests go round-robin. A
:class:`Server` records one configured server's health; a server whose last connection
attempt failed is skipped until it reconnects.

Package-internal: :class:`HashRing`, :class:`Server` and :class:`ConnectionSearch`, used by
the :class:`Client` facade.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
from collections.abc import Callable, Sequence
from typing import Any
from typing import Protocol as TypingProtocol

import attrs
from automat import TypeMachineBuilder, pep614
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gearmanpy._connection import ReentrantClientService
from gearmanpy.client.protocol import ClientProtocol
from gearmanpy.errors import NoServersAvailable


class HashRing:
    """Consistent hashing of unique keys onto servers (160 points per server, MD5)."""

    POINTS = 160

    def __init__(self, keys: Sequence[str]) -> None:
        """Place every server on the ring."""
        ring: list[tuple[int, int]] = []
        for index, key in enumerate(keys):
            for point in range(self.POINTS):
                ring.append((self._hash(f"{key}-{point}".encode()), index))
        ring.sort()
        self._hashes = [h for h, _ in ring]
        self._indexes = [i for _, i in ring]
        self._count = len(keys)

    @staticmethod
    def _hash(data: bytes) -> int:
        """A stable 64-bit hash (the same in every process, unlike ``hash()``)."""
        return int.from_bytes(hashlib.md5(data).digest()[:8], "big")

    def order(self, key: bytes) -> list[int]:
        """Return every server index, starting with the one ``key`` maps to, ring order."""
        start = bisect.bisect(self._hashes, self._hash(key)) % len(self._hashes)
        seen: list[int] = []
        for i in itertools.chain(range(start, len(self._indexes)), range(start)):
            index = self._indexes[i]
            if index not in seen:
                seen.append(index)
                if len(seen) == self._count:
                    break
        return seen


class _Health(TypingProtocol):
    """Inputs of one server's health machine (automat; kept private behind :class:`Server`).

    States: Unknown (no connection, and no failed attempt since the last one closed: a
    request waits for one connection attempt), Up (a prepared connection, kept in the core:
    requests use it), Down (the last attempt failed: requests skip the server until a
    connection succeeds).
    """

    def connected(self, protocol: ClientProtocol) -> None:
        """A connection was prepared: use it from now on (Up)."""

    def failed(self) -> None:
        """A connection attempt failed (Down)."""

    def closed(self) -> None:
        """The connection in use closed; ClientService reconnects after its backoff delay."""

    def current(self) -> ClientProtocol | None:
        """Return the connection in use (Up only; it may be closing), else ``None``."""

    def is_down(self) -> bool:
        """Return whether requests should skip this server without waiting (Down only)."""


@attrs.define(eq=False)
class _HealthCore:
    """Shared state of the health machine: the connection in use, set only while Up."""

    protocol: ClientProtocol | None = None


def _build_health() -> Callable[[_HealthCore], _Health]:
    """Build the Unknown/Up/Down machine of one server's health.

    Transitions: Unknown or Down --connected--> Up; Up --connected--> Up (a newer connection
    replaces the old); Unknown or Down --failed--> Down; Up --failed--> Up (stale, see
    below); Up --closed--> Unknown. ``closed`` in another state and the queries
    ``current`` and ``is_down`` change nothing.
    """
    machine = TypeMachineBuilder(_Health, _HealthCore)
    unknown = machine.state("Unknown")
    up = machine.state("Up")
    down = machine.state("Down")

    @pep614(unknown.upon(_Health.connected).to(up))
    @pep614(down.upon(_Health.connected).to(up))
    @pep614(up.upon(_Health.connected).loop())
    def use(c: _Health, s: _HealthCore, protocol: ClientProtocol) -> None:
        """Keep the new connection as the one requests use."""
        s.protocol = protocol

    unknown.upon(_Health.failed).to(down).returns(None)
    down.upon(_Health.failed).loop().returns(None)
    # ClientService makes no attempt while a connection is up (it reconnects only after
    # the loss, which reaches us first), so a failure reported now is stale: keep the
    # connection, and once it closes wait for one attempt as usual.
    up.upon(_Health.failed).loop().returns(None)

    @pep614(up.upon(_Health.closed).to(unknown))
    def forget(c: _Health, s: _HealthCore) -> None:
        """Drop the closed connection."""
        s.protocol = None

    for state in (unknown, down):
        state.upon(_Health.closed).loop().returns(None)

    @pep614(up.upon(_Health.current).loop())
    def in_use(c: _Health, s: _HealthCore) -> ClientProtocol | None:
        """Return the connection in use."""
        return s.protocol

    for state in (unknown, down):
        state.upon(_Health.current).loop().returns(None)

    down.upon(_Health.is_down).loop().returns(True)
    for state in (unknown, up):
        state.upon(_Health.is_down).loop().returns(False)

    return machine.build()


_new_health = _build_health()


class Server:
    """One configured server: its ClientService and what we know about its health.

    Package-internal. The health is a private state machine (see :class:`_Health`); the
    client reports to it through :meth:`connected`, :meth:`failed` and
    :meth:`disconnected`, and asks :meth:`ready` and :attr:`down`.
    """

    def __init__(
        self,
        key: str,
        endpoint: IStreamClientEndpoint,
        *,
        retry_policy: Callable[[int], float],
        clock: IReactorTime,
        prepare: Callable[[Server, Any], None],
    ) -> None:
        """Start in the unknown state: the first request waits for one connection attempt.

        :param key: the server's name (on the hash ring and in logs).
        :param endpoint: where to connect; failed attempts are noted as they happen.
        :param retry_policy: the ClientService retry policy.
        :param clock: the reactor ClientService schedules retries on.
        :param prepare: ClientService's ``prepareConnection``, given this record first.
        """
        self.key = key
        #: Why the last connection attempt failed (a refused connection, a TLS handshake
        #: that failed and why), for the error a request gets when no server is reachable.
        self.last_error: str | None = None
        self._health = _new_health(_HealthCore())
        self.service = ReentrantClientService(
            _WatchedEndpoint(endpoint, self._attempt_failed),
            _ClientFactory(self),
            retryPolicy=retry_policy,
            clock=clock,
            prepareConnection=functools.partial(prepare, self),
        )

    def connected(self, protocol: ClientProtocol) -> None:
        """A connection is ready (SET_CLIENT_ID and OPTION_REQ sent): requests use it."""
        self.last_error = None
        self._health.connected(protocol)

    def failed(self) -> None:
        """A connection attempt failed: skip this server until a connection succeeds."""
        self._health.failed()

    def _attempt_failed(self, reason: Failure) -> None:
        """A connection attempt failed with ``reason``: note why, and skip the server."""
        self.last_error = reason.getErrorMessage()
        self.failed()

    def disconnected(self, protocol: ClientProtocol) -> None:
        """A connection closed; if it was the one in use, wait for the next attempt again."""
        if self._health.current() is protocol:
            self._health.closed()

    def ready(self) -> ClientProtocol | None:
        """Return the connection to send on now, if one is up and has not closed."""
        protocol = self._health.current()
        if protocol is not None and not protocol.lost:
            return protocol
        return None

    @property
    def down(self) -> bool:
        """Whether the last connection attempt failed (requests skip the server)."""
        return self._health.is_down()


@implementer(IStreamClientEndpoint)
class _WatchedEndpoint:
    """Wraps an endpoint to learn about failed connection attempts as they happen.

    ClientService retries on its own and reports failures only to ``whenConnected``
    callers; the client wants to know at once, so it can skip a dead server.
    """

    def __init__(
        self, endpoint: IStreamClientEndpoint, on_failure: Callable[[Failure], None]
    ) -> None:
        """:param on_failure: called with the reason after each failed attempt."""
        self._endpoint = endpoint
        self._on_failure = on_failure

    def connect(self, factory: Any) -> Deferred[Any]:
        """Connect through the wrapped endpoint, noting a failure."""

        def failed(f: Failure) -> Failure:
            """Report a failed attempt (not a cancelled one), and pass the failure on."""
            if not f.check(CancelledError):
                self._on_failure(f)
            return f

        return self._endpoint.connect(factory).addErrback(failed)


class _ClientFactory(Factory):
    """Builds the connections for one server and reports their life to the server record."""

    def __init__(self, server: Server) -> None:
        """:param server: the record told when a connection closes."""
        self._server = server

    def buildProtocol(self, addr: Any) -> ClientProtocol:
        """Make a connection that tells its server record when it closes."""
        proto = _TrackedClientProtocol(self._server.disconnected)
        proto.factory = self
        return proto


class _TrackedClientProtocol(ClientProtocol):
    """A :class:`ClientProtocol` that reports its loss."""

    def __init__(self, on_lost: Callable[[ClientProtocol], None]) -> None:
        """:param on_lost: called with the protocol as it closes, before it fails its requests.

        The order matters: a request made by a callback of a failed request must not be
        given this connection again.
        """
        super().__init__()
        self._on_lost = on_lost

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Tell the server record, then fail what was outstanding."""
        self._on_lost(self)
        super().connectionLost(reason)


class ConnectionSearch:
    """One request's search for a ready connection: the first reachable server in order.

    Package-internal (the :class:`Client` facade makes one per request). A server with a
    live connection is used at once and a Down one is skipped; otherwise the search waits
    for that server's next connection attempt and moves on if it fails. Cancelling
    :attr:`result` stops the search.
    """

    def __init__(self, order: Sequence[Server], clock: IReactorTime, log: Logger) -> None:
        """:param order: the servers to try, best first; :param log: where failures go."""
        self._order = tuple(order)
        self._remaining = list(order)
        self._clock = clock
        self._log = log
        #: What the search waits for now: a ``whenConnected`` Deferred or a retry call.
        self._current: Deferred[Any] | IDelayedCall | None = None
        self._cancelled = False
        #: Fires with the connection, or fails with NoServersAvailable.
        self.result: Deferred[ClientProtocol] = Deferred(self._cancel)

    def start(self) -> Deferred[ClientProtocol]:
        """Start searching; return :attr:`result`."""
        self._attempt()
        return self.result

    def _cancel(self, _: Deferred[ClientProtocol]) -> None:
        """The caller gave up: stop waiting."""
        self._cancelled = True
        if self._current is not None:
            self._current.cancel()

    def _attempt(self) -> None:
        """Use, skip or wait for the next server; fail when none is left."""
        self._current = None
        while self._remaining:
            server = self._remaining.pop(0)
            proto = server.ready()
            if proto is not None:
                self.result.callback(proto)
                return
            if server.down:
                continue
            wait = server.service.whenConnected(failAfterFailures=1)
            self._current = wait
            wait.addCallbacks(
                self._connected, self._failed, callbackArgs=(server,), errbackArgs=(server,)
            )
            return
        if not self.result.called:
            names = ", ".join(
                f"{s.key}: {s.last_error}" if s.last_error else s.key for s in self._order
            )
            self.result.errback(NoServersAvailable(f"no Gearman server reachable ({names})"))

    def _connected(self, proto: ClientProtocol, server: Server) -> None:
        """``server`` connected: done, unless that connection is already closing."""
        self._current = None
        if proto.lost:
            # Asked from inside a connectionLost callback: ClientService has not seen the
            # loss yet. Ask again once it has.
            self._remaining.insert(0, server)
            self._current = self._clock.callLater(0, self._attempt)
            return
        self.result.callback(proto)

    def _failed(self, f: Failure, server: Server) -> None:
        """Waiting for ``server`` failed: note it (unless the service stopped), try the next."""
        self._current = None
        if self._cancelled:
            return
        if not f.check(CancelledError):  # CancelledError: the service stopped
            server.failed()
        self._log.warn(
            "Cannot reach Gearman server {server}: {why}",
            server=server.key,
            why=f.getErrorMessage(),
        )
        self._attempt()


#: Nothing here is public; see the module docstring.
__all__: list[str] = []
