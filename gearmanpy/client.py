# -*- test-case-name: tests.test_client -*-
"""The Gearman client: submit jobs to one or more servers and collect their results.

Quick start::

    from gearmanpy import Client

    async def main(reactor):
        client = Client(["127.0.0.1:4730"])
        job = client.submit("reverse", b"hello")
        async for event in job:          # WorkData / WorkWarning / WorkStatus as they come
            print(event)
        print(await job)                 # b"olleh"
        await client.stop()

Design:

* One :class:`~twisted.application.internet.ClientService` per server keeps a connection
  up, reconnecting with jittered exponential backoff. Its ``prepareConnection`` hook sends
  ``OPTION_REQ exceptions`` so WORK_EXCEPTION payloads reach us.
* Each connection (:class:`ClientProtocol`) keeps a FIFO of requests waiting for their
  answer (gearmand answers in order, protocol.md §2, §6.2) and a map from job handle to the
  foreground jobs waiting for results.
* When a connection is lost, every request still waiting for its answer fails with
  :class:`~gearmanpy.errors.RequestLost` (the request is *not* resent elsewhere: a submit
  may already have created a job) and every accepted foreground job fails with
  :class:`~gearmanpy.errors.JobLost`. Every Deferred fires exactly once.
* A job with a unique key goes to the server picked by consistent hashing of the key, so
  coalescing works across servers; other requests go round-robin. A server whose last
  connection attempt failed is skipped until it reconnects; if no server can be reached
  the request fails at once with :class:`~gearmanpy.errors.NoServersAvailable`.
"""

from __future__ import annotations

import bisect
import datetime
import functools
import hashlib
import itertools
from collections import deque
from collections.abc import Callable, Generator, Sequence
from typing import Any, TypeVar

import attrs
from twisted.application.internet import ClientService
from twisted.application.service import MultiService
from twisted.internet.defer import CancelledError, Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gearmanpy._connection import (
    DEFAULT_CONNECT_TIMEOUT,
    LazyReactor,
    PacketProtocol,
    ServerSpec,
    client_endpoint,
    default_retry_policy,
    server_key,
    server_list,
    to_bytes,
)
from gearmanpy.errors import (
    JobException,
    JobFailed,
    JobLost,
    JobTimeout,
    NoServersAvailable,
    ProtocolError,
    RequestLost,
    ServerError,
)
from gearmanpy.protocol.packets import Packet, PacketType, Priority, request

_T = TypeVar("_T")

#: Longest unique key or job handle gearmand stores in full (protocol.md §1.3).
MAX_UNIQUE = 63


_FOREGROUND = {
    Priority.HIGH: PacketType.SUBMIT_JOB_HIGH,
    Priority.NORMAL: PacketType.SUBMIT_JOB,
    Priority.LOW: PacketType.SUBMIT_JOB_LOW,
}
_BACKGROUND = {
    Priority.HIGH: PacketType.SUBMIT_JOB_HIGH_BG,
    Priority.NORMAL: PacketType.SUBMIT_JOB_BG,
    Priority.LOW: PacketType.SUBMIT_JOB_LOW_BG,
}


@attrs.frozen
class WorkData:
    """A partial result (WORK_DATA) sent by the worker."""

    data: bytes


@attrs.frozen
class WorkWarning:
    """A warning (WORK_WARNING) sent by the worker."""

    data: bytes


@attrs.frozen
class WorkStatus:
    """A progress report (WORK_STATUS): ``numerator`` of ``denominator`` done."""

    numerator: int
    denominator: int


#: What iterating over a :class:`Job` yields.
JobEvent = WorkData | WorkWarning | WorkStatus


@attrs.frozen
class JobStatus:
    """The answer to :meth:`Client.get_status` or :meth:`Client.get_status_unique`.

    :ivar key: the handle (or unique key) that was asked about.
    :ivar known: whether the server knows the job (queued or running).
    :ivar running: whether a worker holds it.
    :ivar numerator: the last WORK_STATUS numerator (0 before any).
    :ivar denominator: the last WORK_STATUS denominator (0 before any).
    :ivar clients: for :meth:`Client.get_status_unique` only, how many foreground clients
        wait on the job; ``None`` for :meth:`Client.get_status`.
    """

    key: bytes
    known: bool
    running: bool
    numerator: int
    denominator: int
    clients: int | None = None


def _int(value: bytes) -> int:
    """Parse an ASCII decimal field the way gearmand writes it; junk reads as 0."""
    try:
        return int(value)
    except ValueError:
        return 0


class Job:
    """A foreground job: its result, and the progress packets the worker sends meanwhile.

    * ``await job`` (or ``job.result``, a Deferred) gives the result bytes, or raises
      :class:`~gearmanpy.errors.JobFailed`, :class:`~gearmanpy.errors.JobException`,
      :class:`~gearmanpy.errors.JobTimeout`, :class:`~gearmanpy.errors.JobLost`,
      :class:`~gearmanpy.errors.RequestLost`, :class:`~gearmanpy.errors.ServerError` or
      :class:`~gearmanpy.errors.NoServersAvailable`.
    * ``async for event in job`` yields :class:`WorkData`, :class:`WorkWarning` and
      :class:`WorkStatus` in arrival order and ends when the job ends, however it ends (then
      ``await job`` for the outcome). Events are kept from submission on, so iterating
      late misses nothing.
    * :meth:`on_data`, :meth:`on_warning`, :meth:`on_status` register callbacks.
    * Cancelling ``job.result`` forgets the job (the server-side job is not stopped).
    """

    log = Logger()

    def __init__(self, function: bytes, data: bytes, unique: bytes) -> None:
        """Create a job not yet sent anywhere."""
        self.function = function
        self.data = data
        self.unique = unique
        #: The job handle once the server accepted the job, else ``None``.
        self.handle: bytes | None = None
        #: Fires with the result bytes, or fails (see the class docstring).
        self.result: Deferred[bytes] = Deferred(self._cancel)
        #: Called to forget the job wherever it is pending (set by the client).
        self._forget: Callable[[], None] = lambda: None
        self._timer: IDelayedCall | None = None
        self._done = False
        self._events: deque[JobEvent] = deque()
        self._waiters: deque[Deferred[JobEvent]] = deque()
        self._callbacks: dict[type, list[Callable[..., object]]] = {
            WorkData: [],
            WorkWarning: [],
            WorkStatus: [],
        }
        self._created_waiters: list[Deferred[bytes]] = []
        self._outcome_failure: Failure | None = None

    def __repr__(self) -> str:
        """Name the function and handle, for logs."""
        return f"<Job {self.function!r} handle={self.handle!r} done={self._done}>"

    @property
    def done(self) -> bool:
        """Whether the job has ended (its result Deferred has fired)."""
        return self._done

    def __await__(self) -> Generator[Any, None, bytes]:
        """``await job`` waits for the result."""
        return self.result.__await__()

    def on_data(self, callback: Callable[[bytes], object]) -> Job:
        """Call ``callback(data)`` for each WORK_DATA; return the job (for chaining)."""
        self._callbacks[WorkData].append(lambda e: callback(e.data))
        return self

    def on_warning(self, callback: Callable[[bytes], object]) -> Job:
        """Call ``callback(data)`` for each WORK_WARNING; return the job."""
        self._callbacks[WorkWarning].append(lambda e: callback(e.data))
        return self

    def on_status(self, callback: Callable[[int, int], object]) -> Job:
        """Call ``callback(numerator, denominator)`` for each WORK_STATUS; return the job."""
        self._callbacks[WorkStatus].append(lambda e: callback(e.numerator, e.denominator))
        return self

    def when_created(self) -> Deferred[bytes]:
        """Return a Deferred that fires with the handle once the server accepted the job.

        It fails like :attr:`result` if the job ends before that.
        """
        if self.handle is not None:
            return succeed(self.handle)
        if self._done:
            return fail(self._outcome_failure or JobLost("the job ended without a handle"))
        d: Deferred[bytes] = Deferred()
        self._created_waiters.append(d)
        return d

    def __aiter__(self) -> Job:
        """``async for event in job``."""
        return self

    def __anext__(self) -> Deferred[JobEvent]:
        """Return a Deferred for the next event; it fails with StopAsyncIteration at the end."""
        if self._events:
            return succeed(self._events.popleft())
        if self._done:
            return fail(StopAsyncIteration())
        d: Deferred[JobEvent] = Deferred()
        self._waiters.append(d)
        return d

    # -- called by the connection ------------------------------------------------------

    def _created(self, handle: bytes) -> None:
        """The server accepted the job under ``handle``."""
        self.handle = handle
        waiters, self._created_waiters = self._created_waiters, []
        for d in waiters:
            d.callback(handle)

    def _event(self, event: JobEvent) -> None:
        """Deliver one progress event to the callbacks and the iterator."""
        if self._done:
            return
        for callback in self._callbacks[type(event)]:
            try:
                callback(event)
            except Exception:
                self.log.failure("Error in a {job} event callback", job=self)
        if self._waiters:
            self._waiters.popleft().callback(event)
        else:
            self._events.append(event)

    def _finish(self, outcome: bytes | Failure) -> None:
        """End the job: fire :attr:`result` once, end the iterator, drop timers."""
        if self._done:
            return
        self._done = True
        if isinstance(outcome, Failure):
            self._outcome_failure = outcome
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        waiters, self._waiters = self._waiters, deque()
        for d in waiters:
            d.errback(StopAsyncIteration())
        created, self._created_waiters = self._created_waiters, []
        for waiter in created:
            waiter.errback(
                outcome if isinstance(outcome, Failure) else Failure(JobLost("no handle"))
            )
        if isinstance(outcome, Failure):
            self.result.errback(outcome)
        else:
            self.result.callback(outcome)

    def _cancel(self, _d: Deferred[bytes]) -> None:
        """The caller cancelled :attr:`result`: forget the job everywhere."""
        self._forget()
        self._finish(Failure(CancelledError()))

    def _timed_out(self, timeout: float) -> None:
        """The per-call timeout expired: forget the job and fail it."""
        self._timer = None
        self._forget()
        self._finish(Failure(JobTimeout(f"job {self.function!r} did not finish in {timeout}s")))


def _fail_entry(entry: _Pending, failure: Failure) -> None:
    """Fail one pending request (its job, or its Deferred), unless it was given up."""
    if entry.cancelled:
        return
    if entry.job is not None:
        entry.job._finish(failure)
    elif entry.deferred is not None and not entry.deferred.called:
        entry.deferred.errback(failure)


@attrs.define(eq=False)
class _Pending:
    """A request waiting for its answer on one connection.

    :ivar expect: the packet types that answer it (ERROR always may).
    :ivar deferred: fired with the answer (or a failure); for a foreground submit, the job.
    :ivar job: the foreground job this submit belongs to, or ``None``.
    :ivar cancelled: the caller gave up; the answer is consumed and ignored.
    """

    expect: tuple[PacketType, ...]
    deferred: Deferred[Any] | None = None
    job: Job | None = None
    cancelled: bool = False


class ClientProtocol(PacketProtocol):
    """One client connection: a FIFO of requests awaiting answers, and jobs by handle."""

    log = Logger()

    def __init__(self) -> None:
        """Start with nothing outstanding."""
        super().__init__()
        self._pending: deque[_Pending] = deque()
        # handle -> [jobs, index of the job that gets the next copy of a packet]. The same
        # connection joining one job twice gets every packet twice (protocol.md §3.3); the
        # copies are dealt out one per job.
        self._jobs: dict[bytes, list[Any]] = {}
        self._lost = False

    # -- sending -------------------------------------------------------------------------

    def send_request(self, packet: Packet, entry: _Pending) -> None:
        """Send ``packet`` and queue ``entry`` for its answer.

        If the connection is already gone the entry fails at once.
        """
        if self._lost or self.transport is None:
            _fail_entry(entry, Failure(RequestLost("the connection is closed")))
            return
        self._pending.append(entry)
        self.sendPacket(packet)

    def forget_job(self, job: Job) -> None:
        """Stop routing packets to ``job`` (after a timeout or cancellation)."""
        if job.handle is None:
            return
        slot = self._jobs.get(job.handle)
        if slot is None:
            return
        jobs = slot[0]
        if job in jobs:
            jobs.remove(job)
        if not jobs:
            del self._jobs[job.handle]
        else:
            slot[1] %= len(jobs)

    # -- answers to requests -----------------------------------------------------------

    def _answer(self, packet: Packet) -> _Pending:
        """Pop the oldest pending request, checking that ``packet`` can answer it."""
        if not self._pending:
            raise _OrderError(f"{packet.type.name} with no request outstanding")
        entry = self._pending[0]
        if packet.type is not PacketType.ERROR and packet.type not in entry.expect:
            raise _OrderError(
                f"{packet.type.name} does not answer the oldest request "
                f"(expected {'/'.join(t.name for t in entry.expect)})"
            )
        return self._pending.popleft()

    def packet_JOB_CREATED(self, packet: Packet) -> None:
        """A submit was accepted: wire the job to its handle, or fire the BG Deferred."""
        entry = self._answer(packet)
        handle = packet.args[0]
        if entry.cancelled:
            return
        if entry.job is not None:
            job = entry.job
            slot = self._jobs.setdefault(handle, [[], 0])
            slot[0].append(job)
            job._forget = lambda: self.forget_job(job)
            job._created(handle)
        elif entry.deferred is not None and not entry.deferred.called:
            entry.deferred.callback(handle)

    def packet_ERROR(self, packet: Packet) -> None:
        """The server refused the oldest request."""
        entry = self._answer(packet)
        code, text = packet.args
        if entry.expect == (PacketType.OPTION_RES,):
            self.log.warn(
                "Server refused OPTION_REQ: {code} {text}; WORK_EXCEPTION will arrive as "
                "WORK_FAIL",
                code=code,
                text=text,
            )
        _fail_entry(entry, Failure(ServerError(code, text)))

    def packet_STATUS_RES(self, packet: Packet) -> None:
        """Answer to GET_STATUS."""
        entry = self._answer(packet)
        handle, known, running, num, den = packet.args
        self._fire(
            entry, JobStatus(handle, known == b"1", running == b"1", _int(num), _int(den))
        )

    def packet_STATUS_RES_UNIQUE(self, packet: Packet) -> None:
        """Answer to GET_STATUS_UNIQUE."""
        entry = self._answer(packet)
        unique, known, running, num, den, clients = packet.args
        self._fire(
            entry,
            JobStatus(
                unique, known == b"1", running == b"1", _int(num), _int(den), _int(clients)
            ),
        )

    def packet_ECHO_RES(self, packet: Packet) -> None:
        """Answer to ECHO_REQ."""
        self._fire(self._answer(packet), packet.args[0])

    def packet_OPTION_RES(self, packet: Packet) -> None:
        """Answer to OPTION_REQ."""
        self._fire(self._answer(packet), packet.args[0])

    def _fire(self, entry: _Pending, value: object) -> None:
        """Fire a non-submit request's Deferred, unless the caller gave up on it."""
        if not entry.cancelled and entry.deferred is not None and not entry.deferred.called:
            entry.deferred.callback(value)

    # -- job results, matched by handle --------------------------------------------------

    def _job_for(self, handle: bytes, final: bool) -> Job | None:
        """Return the job that gets this copy of a result packet; drop it if ``final``."""
        slot = self._jobs.get(handle)
        if slot is None:
            # A job we forgot (timeout/cancel) or a coalesced duplicate: nothing waits.
            self.log.debug("Result for unknown handle {handle!r} ignored", handle=handle)
            return None
        jobs, index = slot
        job: Job = jobs[index]
        if final:
            jobs.pop(index)
            if not jobs:
                del self._jobs[handle]
                return job
        slot[1] = (index + (0 if final else 1)) % len(jobs)
        return job

    def packet_WORK_DATA(self, packet: Packet) -> None:
        """A partial result."""
        job = self._job_for(packet.args[0], False)
        if job is not None:
            job._event(WorkData(packet.args[1]))

    def packet_WORK_WARNING(self, packet: Packet) -> None:
        """A warning."""
        job = self._job_for(packet.args[0], False)
        if job is not None:
            job._event(WorkWarning(packet.args[1]))

    def packet_WORK_STATUS(self, packet: Packet) -> None:
        """A progress report."""
        handle, num, den = packet.args
        job = self._job_for(handle, False)
        if job is not None:
            job._event(WorkStatus(_int(num), _int(den)))

    def packet_WORK_COMPLETE(self, packet: Packet) -> None:
        """The job succeeded."""
        job = self._job_for(packet.args[0], True)
        if job is not None:
            job._finish(packet.args[1])

    def packet_WORK_FAIL(self, packet: Packet) -> None:
        """The job failed. gearmand may add a NUL after the handle (protocol.md §3.7)."""
        handle = packet.args[0].split(b"\0", 1)[0]
        job = self._job_for(handle, True)
        if job is not None:
            job._finish(Failure(JobFailed(f"the worker failed job {handle!r}")))

    def packet_WORK_EXCEPTION(self, packet: Packet) -> None:
        """The worker raised; the payload describes the exception."""
        job = self._job_for(packet.args[0], True)
        if job is not None:
            job._finish(Failure(JobException(packet.args[1])))

    # -- loss ----------------------------------------------------------------------------

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Fail everything outstanding: unanswered requests, then accepted jobs."""
        self._lost = True
        pending, self._pending = self._pending, deque()
        jobs, self._jobs = self._jobs, {}
        why = reason.getErrorMessage()
        for entry in pending:
            _fail_entry(
                entry, Failure(RequestLost(f"connection lost before the server answered: {why}"))
            )
        for handle, (slot_jobs, _) in jobs.items():
            for job in slot_jobs:
                job._finish(
                    Failure(
                        JobLost(
                            f"connection lost after the server accepted job {handle!r}; "
                            f"its outcome is unknown: {why}"
                        )
                    )
                )

    @property
    def lost(self) -> bool:
        """Whether this connection has closed."""
        return self._lost


class _OrderError(ProtocolError):
    """Raised by a handler when the server breaks the request/answer order."""


class _Server:
    """One configured server: its ClientService and what we know about its health."""

    #: Set by the client right after construction.
    service: ClientService

    def __init__(self, key: str) -> None:
        """Start in the unknown state: the first request waits for one connection attempt."""
        self.key = key
        self.protocol: ClientProtocol | None = None
        self.down = False

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

    def __init__(self, server: _Server) -> None:
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


class _HashRing:
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


_DEFAULT: Any = object()


class Client(LazyReactor, MultiService):
    """A Gearman client over one or more servers.

    It is a Twisted service (``setServiceParent`` it, or let the first request start it);
    :meth:`stop` closes its connections.

    :param servers: ``"host:port"`` strings, client endpoint strings (``tcp:``, ``unix:``,
        ``tls:``...) or endpoint objects.
    :param reactor: the reactor (also the clock); the global one if ``None``.
    :param timeout: default per-call timeout in seconds (``None``: wait forever).
    :param client_id: sent as SET_CLIENT_ID on each connection if given.
    :param exceptions: send ``OPTION_REQ exceptions`` on each connection (default on).
    :param retry_policy: ClientService retry policy (default: backoff from 0.5s to 30s,
        jittered).
    :param connect_timeout: seconds a ``host:port`` connection attempt may take.
    """

    log = Logger()

    def __init__(
        self,
        servers: Sequence[ServerSpec] | ServerSpec,
        *,
        reactor: Any = None,
        timeout: float | None = None,
        client_id: str | bytes | None = None,
        exceptions: bool = True,
        retry_policy: Callable[[int], float] | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        """Record the configuration; nothing connects until the client starts."""
        super().__init__()
        self._specs = server_list(servers, "Client")
        self._reactor_arg = reactor
        self.timeout = timeout
        self._client_id = to_bytes(client_id, "client_id") if client_id is not None else None
        self._exceptions = exceptions
        self._connect_timeout = connect_timeout
        self._retry_policy = retry_policy or default_retry_policy()
        self._servers: list[_Server] = []
        self._ring: _HashRing | None = None
        self._next = 0

    # -- lifecycle -----------------------------------------------------------------------

    def _build(self) -> None:
        """Create one ClientService per server (once)."""
        if self._servers:
            return
        keys = [server_key(spec, i) for i, spec in enumerate(self._specs)]
        for key, spec in zip(keys, self._specs, strict=True):
            server = _Server(key)
            endpoint = _WatchedEndpoint(
                client_endpoint(self._reactor, spec, self._connect_timeout), server.failed
            )
            server.service = ClientService(
                endpoint,
                _ClientFactory(server),
                retryPolicy=self._retry_policy,
                clock=self._reactor,
                prepareConnection=functools.partial(self._prepare, server),
            )
            self._servers.append(server)
            service = server.service
            service.setServiceParent(self)
        self._ring = _HashRing(keys)

    def startService(self) -> None:
        """Start connecting to every server (idempotent)."""
        if self.running:
            return
        self._build()
        super().startService()

    def stopService(self) -> Deferred[None]:  # type: ignore[override]
        """Close every connection; outstanding requests fail with RequestLost/JobLost."""
        if not self.running:
            return succeed(None)
        return super().stopService()  # type: ignore[return-value]

    def stop(self) -> Deferred[None]:
        """Alias of :meth:`stopService` for code that is not managing services."""
        return self.stopService()

    def _prepare(self, server: _Server, proxy: Any) -> None:
        """Set up a new connection: SET_CLIENT_ID, OPTION_REQ exceptions; then mark it up.

        :param proxy: ClientService's proxy for our protocol (it delegates attributes).
        """
        proto: ClientProtocol = proxy.unwrap()
        if self._client_id is not None:
            proto.sendPacket(request(PacketType.SET_CLIENT_ID, self._client_id))
        if not self._exceptions:
            server.connected(proto)
            return None
        # The answer is not waited for: requests sent after it queue behind it in the FIFO
        # anyway, and ClientService (Twisted 26.10) cannot handle a connection that closes
        # while prepareConnection's Deferred is pending (NoTransition in state Connecting).
        d: Deferred[bytes] = Deferred()
        proto.send_request(
            request(PacketType.OPTION_REQ, b"exceptions"),
            _Pending((PacketType.OPTION_RES,), d),
        )
        d.addErrback(lambda f: None)  # refused: logged by packet_ERROR; lost: seen elsewhere
        server.connected(proto)
        return None

    # -- server choice -------------------------------------------------------------------

    def _order(self, key: bytes | None) -> list[_Server]:
        """Servers to try, best first: hashed by ``key`` if given, else round-robin."""
        self.startService()
        assert self._ring is not None
        if key:
            return [self._servers[i] for i in self._ring.order(key)]
        n = len(self._servers)
        start = self._next % n
        self._next = (start + 1) % n
        return self._servers[start:] + self._servers[:start]

    def _connection(self, order: list[_Server]) -> Deferred[ClientProtocol]:
        """Fire with a ready connection to the first reachable server in ``order``.

        A server whose last connection attempt failed is skipped without waiting. Fails
        with NoServersAvailable when none can be reached.
        """
        state: dict[str, Any] = {"current": None, "cancelled": False}

        def cancel(_: Deferred[ClientProtocol]) -> None:
            state["cancelled"] = True
            if state["current"] is not None:
                state["current"].cancel()

        result: Deferred[ClientProtocol] = Deferred(cancel)
        remaining = list(order)

        def attempt() -> None:
            state["current"] = None
            while remaining:
                server = remaining.pop(0)
                if server.protocol is not None and not server.protocol.lost:
                    result.callback(server.protocol)
                    return
                if server.down:
                    continue
                wait = server.service.whenConnected(failAfterFailures=1)
                state["current"] = wait

                def connected(proto: ClientProtocol, server: _Server = server) -> None:
                    state["current"] = None
                    if proto.lost:
                        # Asked from inside a connectionLost callback: ClientService has
                        # not seen the loss yet. Ask again once it has.
                        remaining.insert(0, server)
                        state["current"] = self._reactor.callLater(0, attempt)
                        return
                    result.callback(proto)

                def failed(f: Failure, server: _Server = server) -> None:
                    state["current"] = None
                    if state["cancelled"]:
                        return
                    if not f.check(CancelledError):  # CancelledError: the service stopped
                        server.down = True
                    self.log.warn(
                        "Cannot reach Gearman server {server}: {why}",
                        server=server.key,
                        why=f.getErrorMessage(),
                    )
                    attempt()

                wait.addCallbacks(connected, failed)
                return
            if not result.called:
                names = ", ".join(s.key for s in order)
                result.errback(NoServersAvailable(f"no Gearman server reachable ({names})"))

        attempt()
        return result

    def _send(
        self, order: list[_Server], packet: Packet, entry: _Pending, timeout: float | None
    ) -> None:
        """Send a request on the first connected server in ``order`` (see :meth:`_order`);
        apply the timeout meanwhile."""
        d = self._connection(order)
        job = entry.job

        def give_up() -> None:
            entry.cancelled = True
            d.cancel()

        if job is not None:
            job._forget = give_up

        def send(proto: ClientProtocol) -> None:
            if entry.cancelled:
                return
            proto.send_request(packet, entry)

        def failed(f: Failure) -> None:
            if f.check(CancelledError):
                return
            _fail_entry(entry, f)

        d.addCallbacks(send, failed)
        if timeout is not None:
            if job is not None:
                job._timer = self._reactor.callLater(timeout, job._timed_out, timeout)
            elif entry.deferred is not None:
                self._timeout_deferred(entry, timeout, packet.type.name)

    def _timeout_deferred(self, entry: _Pending, timeout: float, what: str) -> None:
        """Fail a non-job request with JobTimeout after ``timeout`` seconds."""
        d = entry.deferred
        assert d is not None

        def expire() -> None:
            if not d.called:
                entry.cancelled = True
                d.errback(JobTimeout(f"{what} got no answer in {timeout}s"))

        timer = self._reactor.callLater(timeout, expire)

        def stop_timer(result: _T) -> _T:
            if timer.active():
                timer.cancel()
            return result

        d.addBoth(stop_timer)

    def _timeout(self, timeout: float | None) -> float | None:
        """The effective timeout of a call."""
        return self.timeout if timeout is _DEFAULT else timeout

    # -- public API ------------------------------------------------------------------------

    def submit(
        self,
        function: str | bytes,
        data: str | bytes = b"",
        *,
        unique: str | bytes | None = None,
        priority: Priority = Priority.NORMAL,
        timeout: float | None = _DEFAULT,
    ) -> Job:
        """Submit a foreground job and return it at once (see :class:`Job`).

        :param function: the function name.
        :param data: the payload (``str`` is sent as UTF-8).
        :param unique: a unique key (at most 63 bytes); jobs with the same key and function
            coalesce on the server, and the key picks the server. ``"-"`` coalesces on
            the payload (gearmand).
        :param priority: HIGH, NORMAL or LOW.
        :param timeout: seconds before ``job.result`` fails with JobTimeout (default: the
            client's ``timeout``).
        :raises ValueError: if ``unique`` is longer than 63 bytes or a name contains NUL.
        """
        fname, payload, ukey = self._check(function, data, unique)
        job = Job(fname, payload, ukey)
        packet = request(_FOREGROUND[Priority(priority)], fname, ukey, payload)
        self._send(self._order(ukey), packet, _Pending((PacketType.JOB_CREATED,), job=job),
                   self._timeout(timeout))
        return job

    def submit_background(
        self,
        function: str | bytes,
        data: str | bytes = b"",
        *,
        unique: str | bytes | None = None,
        priority: Priority = Priority.NORMAL,
        timeout: float | None = _DEFAULT,
    ) -> Deferred[bytes]:
        """Submit a background job; the Deferred fires with its handle once accepted.

        Parameters as for :meth:`submit`.
        """
        fname, payload, ukey = self._check(function, data, unique)
        packet = request(_BACKGROUND[Priority(priority)], fname, ukey, payload)
        return self._background(ukey, packet, timeout)

    def submit_at(
        self,
        when: float | datetime.datetime,
        function: str | bytes,
        data: str | bytes = b"",
        *,
        unique: str | bytes | None = None,
        timeout: float | None = _DEFAULT,
    ) -> Deferred[bytes]:
        """Submit a background job to run at ``when`` (SUBMIT_JOB_EPOCH); fires with the handle.

        :param when: a Unix time, or an aware ``datetime`` (a naive one is taken as UTC).
        """
        if isinstance(when, datetime.datetime):
            if when.tzinfo is None:
                when = when.replace(tzinfo=datetime.UTC)
            when = when.timestamp()
        fname, payload, ukey = self._check(function, data, unique)
        epoch = str(int(when)).encode("ascii")
        packet = request(PacketType.SUBMIT_JOB_EPOCH, fname, ukey, epoch, payload)
        return self._background(ukey, packet, timeout)

    def _background(self, key: bytes, packet: Packet, timeout: float | None) -> Deferred[bytes]:
        """Send a background submission; fires with the handle."""
        d: Deferred[bytes] = Deferred()
        entry = _Pending((PacketType.JOB_CREATED,), d)
        self._send(self._order(key), packet, entry, self._timeout(timeout))
        return d

    def get_status(
        self, handle: bytes | str, *, timeout: float | None = _DEFAULT
    ) -> Deferred[JobStatus]:
        """Ask for a job's status by handle (GET_STATUS).

        A handle only means something on the server that issued it: every reachable server
        is asked, and the first answer that knows the job wins (else an unknown status).
        """
        key = to_bytes(handle, "handle")
        self._check_key(key, "handle")
        self.startService()
        asks = []
        for server in self._servers:
            d: Deferred[JobStatus] = Deferred()
            self._send([server], request(PacketType.GET_STATUS, key),
                          _Pending((PacketType.STATUS_RES,), d), self._timeout(timeout))
            asks.append(d)

        def pick(results: list[tuple[bool, Any]]) -> JobStatus | Failure:
            statuses = [r for ok, r in results if ok]
            for status in statuses:
                if status.known:
                    return status
            if statuses:
                return statuses[0]
            return results[0][1]  # every server failed: report the first failure

        return DeferredList(asks, consumeErrors=True).addCallback(pick)  # type: ignore[return-value]

    def get_status_unique(
        self, unique: bytes | str, *, timeout: float | None = _DEFAULT
    ) -> Deferred[JobStatus]:
        """Ask for a job's status by unique key (GET_STATUS_UNIQUE), on the key's server."""
        key = to_bytes(unique, "unique")
        self._check_key(key, "unique")
        d: Deferred[JobStatus] = Deferred()
        self._send(self._order(key), request(PacketType.GET_STATUS_UNIQUE, key),
                   _Pending((PacketType.STATUS_RES_UNIQUE,), d), self._timeout(timeout))
        return d

    def echo(self, data: bytes | str = b"", *, timeout: float | None = _DEFAULT) -> Deferred[bytes]:
        """Send ECHO_REQ to the next server; fires with the echoed bytes."""
        d: Deferred[bytes] = Deferred()
        self._send(self._order(None), request(PacketType.ECHO_REQ, to_bytes(data, "data")),
                   _Pending((PacketType.ECHO_RES,), d), self._timeout(timeout))
        return d

    # -- argument checks -----------------------------------------------------------------

    @staticmethod
    def _check_key(key: bytes, what: str) -> None:
        """Reject a handle/unique gearmand would not answer (>63 bytes) or that has NUL."""
        if len(key) > MAX_UNIQUE:
            raise ValueError(f"{what} is {len(key)} bytes; at most {MAX_UNIQUE} are allowed")
        if b"\0" in key:
            raise ValueError(f"{what} must not contain NUL")

    def _check(
        self, function: str | bytes, data: str | bytes, unique: str | bytes | None
    ) -> tuple[bytes, bytes, bytes]:
        """Convert and validate submit arguments."""
        fname = to_bytes(function, "function")
        if b"\0" in fname:
            raise ValueError("function name must not contain NUL")
        ukey = b"" if unique is None else to_bytes(unique, "unique")
        self._check_key(ukey, "unique")
        return fname, to_bytes(data, "data"), ukey


__all__ = [
    "Client",
    "ClientProtocol",
    "Job",
    "JobEvent",
    "JobStatus",
    "Priority",
    "WorkData",
    "WorkStatus",
    "WorkWarning",
]
