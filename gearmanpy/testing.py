# -*- test-case-name: tests.test_testing -*-
"""A Gearman job server in memory, for testing code that uses gearmanpy's Client and Worker.

:class:`MemoryGearman` runs a real job server core on a
:class:`~twisted.internet.task.Clock` and connects real :class:`~gearmanpy.Client` and
:class:`~gearmanpy.Worker` services to it over in-memory transports
(:mod:`twisted.test.iosim`, as :mod:`treq.testing` does). Nothing touches a socket, a thread
or the global reactor, so a test decides when bytes move and when time passes, and runs the
same way every time::

    from twisted.trial.unittest import SynchronousTestCase
    from gearmanpy.testing import MemoryGearman

    class ReverseTests(SynchronousTestCase):
        def test_reverse(self):
            gearman = MemoryGearman()
            self.addCleanup(gearman.stop)
            worker = gearman.worker()
            worker.register("reverse", lambda job: job.data[::-1])
            job = gearman.client().submit("reverse", b"hello")
            gearman.flush()                 # every packet, both ways, until all is quiet
            self.assertEqual(self.successResultOf(job.result), b"olleh")

How it behaves:

* Bytes move only in :meth:`MemoryGearman.flush` (and in the methods that call it:
  :meth:`~MemoryGearman.client`, :meth:`~MemoryGearman.worker`,
  :meth:`~MemoryGearman.advance`, :meth:`~MemoryGearman.disconnect`,
  :meth:`~MemoryGearman.admin`, :meth:`~MemoryGearman.stop`). After ``client.submit(...)``,
  ``worker.register(...)`` or firing a Deferred a job function returned, call ``flush()``.
* Time moves only in :meth:`MemoryGearman.advance`: timers (client timeouts, reconnections,
  CAN_DO_TIMEOUT, SUBMIT_JOB_EPOCH) fire in time order, and bytes move after each one. A
  flush runs the calls that are due already (``callLater(0, ...)``), as a reactor turn would.
* Job functions run as they would under a reactor, in the flush that delivers their job. A
  ``thread=True`` function runs there too, synchronously in the calling thread (there is no
  thread pool here), so a blocking one blocks the test; a real ``thread_pool`` is refused.
* Clients and workers made here reconnect :data:`RECONNECT_DELAY` seconds after losing
  their connection, without jitter.
* When the test ends, :meth:`MemoryGearman.stop` (a good ``addCleanup``) fails the jobs still
  outstanding with :class:`~gearmanpy.errors.JobLost`; a test that leaves one should consume
  that failure (``failureResultOf``), or Twisted logs it as an unhandled error.
* A store given to :class:`MemoryGearman` is written to (background jobs) but never
  replayed: the server starts empty.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.error import ConnectionLost, ConnectionRefusedError, NoProtocol
from twisted.internet.interfaces import (
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IReactorFromThreads,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, IOPump
from twisted.test.iosim import connect as iosim_connect
from zope.interface import implementer

from gearmanpy._connection import DEFAULT_PORT, to_bytes
from gearmanpy.client import Client
from gearmanpy.server.core import JobServerCore
from gearmanpy.server.policy import Policies
from gearmanpy.server.protocol import ServerFactory
from gearmanpy.store.interface import IJobStore
from gearmanpy.store.memory import MemoryJobStore
from gearmanpy.worker import Worker

#: Seconds after losing its connection that a client or worker made here connects again.
RECONNECT_DELAY = 1.0

#: Rounds :meth:`MemoryGearman.flush` runs before deciding that its peers never go quiet.
MAX_FLUSH_ROUNDS = 10_000

#: Where the in-memory server appears to listen (``workers`` shows the peers' address).
_LOOPBACK = "127.0.0.1"


def _reconnect_delay(attempt: int) -> float:
    """The retry policy of clients and workers made here: always :data:`RECONNECT_DELAY`."""
    return RECONNECT_DELAY


_Service = TypeVar("_Service", Client, Worker)


def _no_reactor(kwargs: dict[str, Any]) -> None:
    """Refuse ``reactor=``: a client or worker made here runs on the server's clock.

    :raises TypeError: with the way to use another reactor.
    """
    if "reactor" in kwargs:
        raise TypeError(
            "MemoryGearman's clients and workers use its clock; pass clock= to MemoryGearman, "
            "or build your own Client/Worker on endpoint()"
        )


class _InlineThreadPool:
    """Stands in for the reactor's thread pool: runs each call at once, in this thread."""

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, Any], object],
        func: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> None:
        """Call ``func`` and report its outcome to ``onResult`` as a real pool would."""
        try:
            result = func(*args, **kwargs)
        except BaseException:
            onResult(False, Failure())
        else:
            onResult(True, result)


@implementer(IReactorTime, IReactorFromThreads)
class _InlineReactor:
    """What clients and workers made here get as their reactor: the server's clock, plus
    the thread calls a Worker makes for ``thread=True`` functions, run inline."""

    def __init__(self, clock: Clock) -> None:
        """:param clock: the clock every timer goes to."""
        self._clock = clock
        self._pool = _InlineThreadPool()

    def seconds(self) -> float:
        """The clock's time."""
        return self._clock.seconds()

    def callLater(
        self, delay: float, callable: Callable[..., Any], *args: object, **kwargs: object
    ) -> IDelayedCall:
        """Schedule ``callable`` on the clock."""
        return self._clock.callLater(delay, callable, *args, **kwargs)

    def getDelayedCalls(self) -> Sequence[IDelayedCall]:
        """The clock's pending calls."""
        return self._clock.getDelayedCalls()

    def callFromThread(self, callable: Callable[..., Any], *args: object, **kwargs: object) -> None:
        """Run ``callable`` now: "threads" here are the calling thread."""
        callable(*args, **kwargs)

    def getThreadPool(self) -> _InlineThreadPool:
        """The pool that runs ``thread=True`` job functions inline."""
        return self._pool


@attrs.define(eq=False)
class _Connection:
    """One in-memory connection: the two transports and the pump between them.

    In iosim's terms a transport's ``disconnected`` means the protocol at the *other* end
    has been told about the loss, so the connection is over when both are set.
    """

    endpoint: MemoryEndpoint | None
    client: FakeTransport
    server: FakeTransport
    pump: IOPump

    @property
    def closed(self) -> bool:
        """Whether both ends have seen ``connectionLost``."""
        return bool(self.client.disconnected and self.server.disconnected)

    def move(self) -> bool:
        """Deliver what each end wrote, or one end's close; return whether anything moved."""
        return bool(self.pump.pump(advanceClock=False))

    def drop(self, why: str) -> None:
        """Break the connection now, as a network failure would: bytes not yet delivered are
        lost and both ends see :class:`~twisted.internet.error.ConnectionLost`."""
        for side in (self.client, self.server):
            side.getOutBuffer()
            # iosim types the attribute by its ConnectionDone default; any error will do.
            side.disconnectReason = ConnectionLost(why)  # type: ignore[assignment]
            side.disconnecting = True
        for near, far in ((self.server, self.client), (self.client, self.server)):
            if not far.disconnected:
                far.disconnected = True
                near.reportDisconnect()


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """A client endpoint that connects to a :class:`MemoryGearman`, in memory.

    Get one from :meth:`MemoryGearman.endpoint` when the code under test builds its own
    Client or Worker and only needs to be told where the server is.
    """

    def __init__(self, server: MemoryGearman) -> None:
        """:param server: the server every connection goes to."""
        self._server = server

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """Connect a protocol from ``protocolFactory`` to a new server connection.

        :return: a Deferred that has already fired with the protocol, or failed with
            :class:`~twisted.internet.error.ConnectionRefusedError` once the server is
            stopped.
        """
        return self._server._connect(protocolFactory, self)


class _Reply(Protocol):
    """The client end of an admin connection: keeps every byte the server sends."""

    def __init__(self) -> None:
        """Nothing received yet."""
        self.received = bytearray()

    def dataReceived(self, data: bytes) -> None:
        """Keep ``data``."""
        self.received += data


class MemoryGearman:
    """A job server in memory, with clients and workers connected to it without sockets.

    :param clock: the clock the server, its clients and its workers use; a new
        :class:`~twisted.internet.task.Clock` if not given. Pass your own to share it with
        the code under test.
    :param store: where background jobs are kept (a new
        :class:`~gearmanpy.store.memory.MemoryJobStore` if not given), so a test can look at
        what would have been made durable. It is neither opened nor replayed, and its
        Deferreds must fire in the test's thread: give it an in-process store such as
        ``MemoryJobStore`` or a fake of your own, not a database-backed one.
    :param handle_prefix: job handles are ``<prefix>:1``, ``<prefix>:2``... (fixed, unlike a
        real server's ``H:<hostname>``, so tests can expect them).
    :param policies: the failure policy per function (retries, timeouts, throttles, kept
        results), as ``--config`` gives it to a real server; none by default.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        store: IJobStore | None = None,
        handle_prefix: bytes = b"H:memory",
        policies: Policies | None = None,
    ) -> None:
        """Build the core and its protocol factory; nothing is connected yet."""
        self.clock: Clock = clock if clock is not None else Clock()
        self.store: IJobStore = store if store is not None else MemoryJobStore()
        self.core = JobServerCore(
            clock=self.clock,
            store=self.store,
            handle_prefix=handle_prefix,
            policies=policies if policies is not None else Policies(),
        )
        self._factory = ServerFactory(self.core)
        self._reactor = _InlineReactor(self.clock)
        self._connections: list[_Connection] = []
        self._services: list[tuple[Client | Worker, MemoryEndpoint]] = []
        self._ports = itertools.count(40000)
        self._flushing = False
        self._stopped = False

    @property
    def reactor(self) -> _InlineReactor:
        """What to pass as ``reactor=`` to a Client or Worker built by the code under test:
        the clock, able to run a Worker's ``thread=True`` functions inline (give such a
        Worker no ``thread_pool``: a real pool's threads would call back into the test)."""
        return self._reactor

    # -- peers -------------------------------------------------------------------------------

    def endpoint(self) -> MemoryEndpoint:
        """A new client endpoint to this server, for a Client or Worker you build yourself
        (with ``reactor=`` :attr:`reactor`). :meth:`disconnect` can drop its connections."""
        return MemoryEndpoint(self)

    def client(self, **kwargs: Any) -> Client:
        """A started :class:`~gearmanpy.Client` of this server, its connection set up.

        :param kwargs: passed to :class:`~gearmanpy.Client` (``timeout``, ``client_id``,
            ``exceptions``...); ``retry_policy`` defaults to :data:`RECONNECT_DELAY`.
        """
        return self._start(Client, kwargs)

    def worker(self, **kwargs: Any) -> Worker:
        """A started :class:`~gearmanpy.Worker` of this server, connected; register its
        functions and :meth:`flush` (or register them and then ask for the work).

        :param kwargs: passed to :class:`~gearmanpy.Worker` (``concurrency``,
            ``client_id``, ``grace_period``...); ``retry_policy`` defaults to
            :data:`RECONNECT_DELAY`.
        :raises TypeError: for ``thread_pool``: ``thread=True`` functions run inline here.
        """
        if "thread_pool" in kwargs:
            raise TypeError(
                "MemoryGearman workers run thread=True functions inline; a real thread pool "
                "would call back from another thread"
            )
        return self._start(Worker, kwargs)

    def _start(self, make: Callable[..., _Service], kwargs: dict[str, Any]) -> _Service:
        """Make a Client or Worker on a new endpoint and this clock, remember it (for
        :meth:`disconnect` and :meth:`stop`), start it and let its connection set itself up."""
        _no_reactor(kwargs)
        endpoint = self.endpoint()
        kwargs.setdefault("retry_policy", _reconnect_delay)
        service = make([endpoint], reactor=self._reactor, **kwargs)
        self._services.append((service, endpoint))
        service.startService()
        self.flush()
        return service

    def _connect(self, factory: IProtocolFactory, endpoint: MemoryEndpoint) -> Deferred[IProtocol]:
        """Join a protocol from ``factory`` to a new server protocol (see
        :meth:`MemoryEndpoint.connect`)."""
        if self._stopped:
            return fail(ConnectionRefusedError("the in-memory Gearman server is stopped"))
        protocol = factory.buildProtocol(IPv4Address("TCP", _LOOPBACK, DEFAULT_PORT))
        if protocol is None:
            return fail(NoProtocol())
        self._join(protocol, endpoint)
        return succeed(protocol)

    def _join(self, protocol: IProtocol, endpoint: MemoryEndpoint | None) -> _Connection:
        """Connect ``protocol`` to a new server connection; both ends see connectionMade."""
        here = IPv4Address("TCP", _LOOPBACK, DEFAULT_PORT)
        there = IPv4Address("TCP", _LOOPBACK, next(self._ports))
        server = self._factory.buildProtocol(there)
        client_io = FakeTransport(protocol, isServer=False, hostAddress=there, peerAddress=here)
        server_io = FakeTransport(server, isServer=True, hostAddress=here, peerAddress=there)
        pump = iosim_connect(server, server_io, protocol, client_io, greet=False, clock=self.clock)
        connection = _Connection(endpoint, client_io, server_io, pump)
        self._connections.append(connection)
        return connection

    # -- driving -------------------------------------------------------------------------------

    def flush(self) -> bool:
        """Move bytes both ways on every connection, and run the calls due now, until
        nothing moves any more.

        Called while a flush is already running (say from a job function, through
        :meth:`disconnect`), it does nothing: the running flush carries on until all is quiet.

        :return: whether anything moved (bytes, or a connection closing).
        :raises RuntimeError: if the peers are still talking after :data:`MAX_FLUSH_ROUNDS`
            rounds (a job that submits itself forever, say).
        """
        if self._flushing:
            return False
        self._flushing = True
        moved = False
        try:
            for _ in range(MAX_FLUSH_ROUNDS):
                self.clock.advance(0)
                active = [connection.move() for connection in list(self._connections)]
                self._connections = [c for c in self._connections if not c.closed]
                if not any(active):
                    return moved
                moved = True
        finally:
            self._flushing = False
        raise RuntimeError(f"still moving bytes after {MAX_FLUSH_ROUNDS} flush rounds")

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward, stopping at each timer due on the way to fire it
        and :meth:`flush` after it, so timers and bytes interleave as under a real reactor.

        :raises ValueError: if ``seconds`` is negative.
        """
        if seconds < 0:
            raise ValueError("time only moves forward")
        end = self.clock.seconds() + seconds
        self.flush()
        while True:
            due = [call.getTime() for call in self.clock.getDelayedCalls()]
            due = [when for when in due if when <= end]
            if not due:
                break
            self.clock.advance(max(0.0, min(due) - self.clock.seconds()))
            self.flush()
        self.clock.advance(max(0.0, end - self.clock.seconds()))
        self.flush()

    def admin(self, command: str | bytes) -> bytes:
        """Send one admin text command (``"status"``, ``"workers"``, ``"show jobs"``...) on a
        new connection and return the whole reply, exactly as the server wrote it.

        :raises ValueError: if ``command`` holds a line break other than a final one.
        :raises RuntimeError: from inside a flush (the reply could not arrive), or once the
            server is stopped.
        """
        line = to_bytes(command, "command").removesuffix(b"\n").removesuffix(b"\r")
        if b"\n" in line or b"\r" in line:
            raise ValueError("an admin command is one line")
        if self._flushing:
            raise RuntimeError("admin() cannot be called from inside a flush")
        if self._stopped:
            raise RuntimeError("the in-memory Gearman server is stopped")
        reply = _Reply()
        connection = self._join(reply, None)
        connection.client.write(line + b"\n")
        self.flush()
        connection.client.loseConnection()
        self.flush()
        return bytes(reply.received)

    def disconnect(self, peer: Client | Worker | MemoryEndpoint | None = None) -> int:
        """Break connections as a network failure would, then :meth:`flush`.

        Bytes not yet delivered are lost, and both ends see ``ConnectionLost``: the server
        requeues the jobs a lost worker was running, a lost client's jobs fail with
        :class:`~gearmanpy.errors.JobLost`. Clients and workers reconnect after
        :data:`RECONNECT_DELAY` (see :meth:`advance`).

        :param peer: a client or worker made here, or an endpoint from :meth:`endpoint`; all
            connections if ``None``.
        :return: how many connections were broken.
        :raises ValueError: if ``peer`` did not come from this server.
        """
        if peer is None or isinstance(peer, MemoryEndpoint):
            endpoint = peer
        else:
            owners = [e for service, e in self._services if service is peer]
            if not owners:
                raise ValueError(f"{peer!r} was not made by this MemoryGearman")
            endpoint = owners[0]
        doomed = [
            c
            for c in self._connections
            if not c.closed and (endpoint is None or c.endpoint is endpoint)
        ]
        for connection in doomed:
            connection.drop("dropped by MemoryGearman.disconnect()")
        self.flush()
        return len(doomed)

    def stop(self) -> Deferred[None]:
        """Stop every client and worker made here, break whatever is still connected, and
        refuse new connections.

        Outstanding requests fail (:class:`~gearmanpy.errors.RequestLost`,
        :class:`~gearmanpy.errors.JobLost`). It is safe to call more than once and as a
        test's cleanup. Clients and workers built elsewhere on :meth:`endpoint` keep trying
        to reconnect (on the clock) and are refused.

        :return: a Deferred that fires once they have stopped: at once, unless a worker is
            still waiting for a running job (up to its ``grace_period``: :meth:`advance`).
        """
        self._stopped = True
        stopping = [service.stopService() for service, _ in self._services]
        self.flush()
        self.disconnect()
        return gatherResults(stopping, consumeErrors=True).addCallback(lambda _: None)


__all__ = ["MAX_FLUSH_ROUNDS", "RECONNECT_DELAY", "MemoryEndpoint", "MemoryGearman"]
