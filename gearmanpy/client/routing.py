# -*- test-case-name: tests.test_client -*-
"""Which server a request goes to: the hash ring, and what the client knows of each server.

A job with a unique key goes to the server picked by consistent hashing of the key
(:class:`HashRing`), so coalescing works across servers; other requests go round-robin. A
:class:`Server` records one configured server's health; a server whose last connection
attempt failed is skipped until it reconnects.

Package-internal: :class:`HashRing` and :class:`Server`, used by the :class:`Client` facade.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.internet import ClientService
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from gearmanpy.client.protocol import ClientProtocol


class Server:
    """One configured server: its ClientService and what we know about its health."""

    def __init__(
        self,
        key: str,
        endpoint: IStreamClientEndpoint,
        *,
        retry_policy: Callable[[int], float],
        clock: Any,
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
        self.protocol: ClientProtocol | None = None
        self.down = False
        self.service = ClientService(
            _WatchedEndpoint(endpoint, self.failed),
            _ClientFactory(self),
            retryPolicy=retry_policy,
            clock=clock,
            prepareConnection=functools.partial(prepare, self),
        )

    def connected(self, protocol: ClientProtocol) -> None:
        """A connection is ready (its OPTION_REQ was answered)."""
        self.protocol = protocol
        self.down = False

    def failed(self) -> None:
        """A connection attempt failed: skip this server until a connection succeeds."""
        self.down = True

    def disconnected(self, protocol: ClientProtocol) -> None:
        """The connection closed; ClientService will reconnect after its backoff delay."""
        if self.protocol is protocol:
            self.protocol = None


@implementer(IStreamClientEndpoint)
class _WatchedEndpoint:
    """Wraps an endpoint to learn about failed connection attempts as they happen.

    ClientService retries on its own and reports failures only to ``whenConnected``
    callers; the client wants to know at once, so it can skip a dead server.
    """

    def __init__(self, endpoint: IStreamClientEndpoint, on_failure: Callable[[], None]) -> None:
        """:param on_failure: called after each failed attempt."""
        self._endpoint = endpoint
        self._on_failure = on_failure

    def connect(self, factory: Any) -> Deferred[Any]:
        """Connect through the wrapped endpoint, noting a failure."""

        def failed(f: Failure) -> Failure:
            if not f.check(CancelledError):
                self._on_failure()
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
        """:param on_lost: called with the protocol after it failed its work."""
        super().__init__()
        self._on_lost = on_lost

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Tell the server record, then fail what was outstanding."""
        self._on_lost(self)
        super().connectionLost(reason)


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


#: Nothing here is public; see the module docstring.
__all__: list[str] = []
