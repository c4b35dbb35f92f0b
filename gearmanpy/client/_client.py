# -*- test-case-name: tests.test_client -*-
"""The :class:`Client` facade: its lifecycle, the public request methods, argument checks.

A :class:`Client` is a :class:`~twisted.application.service.MultiService` with one
:class:`~twisted.application.internet.ClientService` child per server. Each request picks
its servers (:mod:`gearmanpy.client.routing`), waits for a ready connection and queues a
:class:`~gearmanpy.client.protocol.Pending` record on it, applying the call's timeout.
"""

from __future__ import annotations

import atexit
import datetime
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from twisted.application.service import MultiService
from twisted.internet.defer import CancelledError, Deferred, DeferredList, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from gearmanpy._connection import (
    DEFAULT_CONNECT_TIMEOUT,
    AsyncDeferred,
    ClientTLS,
    LazyReactor,
    ServerSpec,
    awaitable,
    client_endpoint,
    copy_deferred,
    default_retry_policy,
    server_key,
    server_list,
    to_bytes,
)
from gearmanpy.admin import AdminClient, KeptResult
from gearmanpy.client.broadcast import BroadcastJob
from gearmanpy.client.events import Job, JobStatus
from gearmanpy.client.protocol import ClientProtocol, Pending, fail_entry
from gearmanpy.client.routing import ConnectionSearch, HashRing, Server
from gearmanpy.errors import AdminError, JobTimeout, NoServersAvailable
from gearmanpy.protocol.limits import MAX_HANDLE_SIZE, PORTABLE_UNIQUE_SIZE
from gearmanpy.protocol.packets import Packet, PacketType, Priority, request

_T = TypeVar("_T")


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


_DEFAULT: Any = object()


def _closing(admin: AdminClient) -> Callable[[Any], Deferred[Any]]:
    """A callback that closes ``admin``'s connection and passes the outcome on."""

    def close(outcome: Any) -> Deferred[Any]:
        return admin.close().addCallback(lambda _: outcome)

    return close


def _no_result_kept(failure: Failure) -> None:
    """An ``ERR`` answer to ``show result`` (gearmand's UNKNOWN_COMMAND) is still an answer:
    that server keeps no result. Anything else (no connection) passes on."""
    failure.trap(AdminError)


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
    :param tls: speak TLS to the ``host:port`` servers, verifying each server's certificate
        and host name (:class:`~gearmanpy.ClientTLS`; it may carry a client certificate).
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
        tls: ClientTLS | None = None,
    ) -> None:
        """Record the configuration; nothing connects until the client starts."""
        super().__init__()
        self._specs = server_list(servers, "Client")
        self._reactor_arg = reactor
        self._global_reactor = reactor is None
        #: Requests made on the global reactor before it ever ran (see _watch_unsent).
        self._unsent: list[int] | None = None
        self.timeout = timeout
        self._client_id = to_bytes(client_id, "client_id") if client_id is not None else None
        self._exceptions = exceptions
        self._connect_timeout = connect_timeout
        self._tls = tls
        self._retry_policy = retry_policy or default_retry_policy()
        self._servers: list[Server] = []
        self._ring: HashRing | None = None
        self._next = 0
        #: While stopping: the Deferred every caller of stop() gets a copy of.
        self._stopping: Deferred[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def _build(self) -> None:
        """Create one ClientService per server (once)."""
        if self._servers:
            return
        keys = [server_key(spec, i) for i, spec in enumerate(self._specs)]
        for key, spec in zip(keys, self._specs, strict=True):
            server = Server(
                key,
                client_endpoint(self._reactor, spec, self._connect_timeout, self._tls),
                retry_policy=self._retry_policy,
                clock=self._reactor,
                prepare=self._prepare,
            )
            self._servers.append(server)
            server.service.setServiceParent(self)
        self._ring = HashRing(keys)

    def startService(self) -> None:
        """Start connecting to every server (idempotent; not while a stop is under way)."""
        if self.running or self._stopping is not None:
            return
        self._build()
        super().startService()

    def stopService(self) -> Deferred[None]:  # type: ignore[override]
        """Close every connection; outstanding requests fail with RequestLost/JobLost (or
        NoServersAvailable if not yet sent).

        It may be called from anywhere, the client's own callbacks included (an ``except
        NoServersAvailable`` handler, a JobLost errback, inside another stop): each call
        gets a Deferred that fires once everything has stopped, and requests made meanwhile
        fail with NoServersAvailable rather than start the client again. A request made
        after that starts it again.
        """
        if self._stopping is not None:
            return copy_deferred(self._stopping)
        if not self.running:
            return awaitable(succeed(None))
        stopping: Deferred[None] = Deferred()
        self._stopping = stopping

        def stopped(_: object) -> None:
            self._stopping = None
            stopping.callback(None)

        MultiService.stopService(self).addBoth(stopped)
        return copy_deferred(stopping)

    def stop(self) -> Deferred[None]:
        """Alias of :meth:`stopService` for code that is not managing services."""
        return self.stopService()

    def _prepare(self, server: Server, proxy: Any) -> None:
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
            Pending((PacketType.OPTION_RES,), d),
        )
        d.addErrback(lambda f: None)  # refused: logged by packet_ERROR; lost: seen elsewhere
        server.connected(proto)
        return None

    # -- server choice -------------------------------------------------------------------

    def _order(self, key: bytes | None) -> list[Server]:
        """Servers to try, best first: hashed by ``key`` if given, else round-robin; none
        while the client is stopping."""
        if self._stopping is not None:
            return []
        self.startService()
        assert self._ring is not None
        if key:
            return [self._servers[i] for i in self._ring.order(key)]
        n = len(self._servers)
        start = self._next % n
        self._next = (start + 1) % n
        return self._servers[start:] + self._servers[:start]

    def _send(
        self, order: list[Server], packet: Packet, entry: Pending, timeout: float | None
    ) -> None:
        """Send a request on the first connected server in ``order`` (see :meth:`_order`);
        apply the timeout meanwhile. No servers: the client is stopping, fail at once."""
        if not order:
            fail_entry(entry, Failure(NoServersAvailable("the client is stopping")))
            return
        self._watch_unsent()
        d = ConnectionSearch(order, self._reactor, self.log).start()
        job = entry.job

        def give_up() -> None:
            """The job timed out or was cancelled: drop the request wherever it is."""
            entry.cancelled = True
            d.cancel()

        if job is not None:
            job._forget = give_up

        def send(proto: ClientProtocol) -> None:
            """A connection is ready: send, unless the caller gave up meanwhile."""
            if entry.cancelled:
                return
            proto.send_request(packet, entry)

        def failed(f: Failure) -> None:
            """No server could be reached: fail the request (not if it was given up)."""
            if f.check(CancelledError):
                return
            fail_entry(entry, f)

        d.addCallbacks(send, failed)
        if timeout is not None:
            if job is not None:
                job._timer = self._reactor.callLater(timeout, job._timed_out, timeout)
            elif entry.deferred is not None:
                self._timeout_deferred(entry, timeout, packet.type.name)

    def _watch_unsent(self) -> None:
        """Count a request made on the global reactor before it runs; complain at exit if it
        never ran.

        Submitting before ``reactor.run()`` is ordinary Twisted usage, so nothing fails here.
        But a script that never runs the reactor sends nothing: its Deferreds never fire and
        it would exit 0 having silently lost every job. So at interpreter exit, if the
        reactor never ran, one line on stderr names the fix and the process exits with
        status 1. (An ``atexit`` handler can only change the status with ``os._exit``, which
        skips the handlers registered before this one; the std streams are flushed first.)
        """
        if not self._global_reactor:
            return
        if self._unsent is None:
            if self._reactor.running:
                self._unsent = [-1]  # it runs: nothing to watch
                return
            unsent = self._unsent = [0]
            self._reactor.callWhenRunning(unsent.__setitem__, 0, -1)
            atexit.register(_exit_if_never_sent, unsent)
        if self._unsent[0] >= 0:
            self._unsent[0] += 1

    def _timeout_deferred(self, entry: Pending, timeout: float, what: str) -> None:
        """Fail a non-job request with JobTimeout after ``timeout`` seconds."""
        d = entry.deferred
        assert d is not None

        def expire() -> None:
            """Time is up: fail the Deferred and ignore the answer if it comes later."""
            if not d.called:
                entry.cancelled = True
                d.errback(JobTimeout(f"{what} got no answer in {timeout}s"))

        timer = self._reactor.callLater(timeout, expire)

        def stop_timer(result: _T) -> _T:
            """The Deferred fired: the timer is no longer needed."""
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
        self._send(
            self._order(ukey),
            packet,
            Pending((PacketType.JOB_CREATED,), job=job),
            self._timeout(timeout),
        )
        return job

    def broadcast(
        self,
        function: str | bytes,
        data: str | bytes = b"",
        *,
        unique: str | bytes | None = None,
        priority: Priority = Priority.NORMAL,
        timeout: float | None = _DEFAULT,
    ) -> BroadcastJob:
        """Submit to a broadcast function (a gearmanpy server's ``broadcast = true``): every
        worker of it runs the job once. ``async for reply in job`` gives each worker's
        :class:`~gearmanpy.client.broadcast.Reply`, ``await job`` the
        :class:`~gearmanpy.client.broadcast.Summary`. Arguments as for :meth:`submit`.
        """
        return BroadcastJob(
            self.submit(function, data, unique=unique, priority=priority, timeout=timeout)
        )

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
        d: Deferred[bytes] = AsyncDeferred()
        entry = Pending((PacketType.JOB_CREATED,), d)
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
        self._check_key(key, "handle", MAX_HANDLE_SIZE)
        self.startService()
        asks = []
        # While stopping, one request with no server, which fails at once.
        targets = [[s] for s in self._servers] if self._stopping is None else [[]]
        for target in targets:
            d: Deferred[JobStatus] = Deferred()
            self._send(
                target,
                request(PacketType.GET_STATUS, key),
                Pending((PacketType.STATUS_RES,), d),
                self._timeout(timeout),
            )
            asks.append(d)

        def pick(results: list[tuple[bool, Any]]) -> JobStatus | Failure:
            """The first status that knows the job, else the first answer or failure."""
            statuses = [r for ok, r in results if ok]
            for status in statuses:
                if status.known:
                    return status
            if statuses:
                return statuses[0]
            return results[0][1]  # every server failed: report the first failure

        return awaitable(DeferredList(asks, consumeErrors=True).addCallback(pick))  # type: ignore[arg-type]

    def get_status_unique(
        self, unique: bytes | str, *, timeout: float | None = _DEFAULT
    ) -> Deferred[JobStatus]:
        """Ask for a job's status by unique key (GET_STATUS_UNIQUE), on the key's server."""
        key = to_bytes(unique, "unique")
        self._check_key(key, "unique", PORTABLE_UNIQUE_SIZE)
        d: Deferred[JobStatus] = AsyncDeferred()
        self._send(
            self._order(key),
            request(PacketType.GET_STATUS_UNIQUE, key),
            Pending((PacketType.STATUS_RES_UNIQUE,), d),
            self._timeout(timeout),
        )
        return d

    def result(
        self,
        handle: bytes | str | None = None,
        *,
        function: bytes | str | None = None,
        unique: bytes | str | None = None,
    ) -> Deferred[KeptResult | None]:
        """A background job's kept result (gearmanpy's ``keep_results`` policy), by handle or
        by function and unique: the outcome, its data, the last status and the times.

        Every server is asked over the admin protocol (``show result``); the first that keeps
        the result answers. Fires with None if none does (never kept, expired, or a server
        that is not gearmanpy); fails if no server could be asked at all.
        """
        if handle is None and (function is None or unique is None):
            raise TypeError("result() takes a handle, or a function and a unique")
        asks = []
        for spec in self._specs:
            admin = AdminClient(spec, reactor=self._reactor, connect_timeout=self._connect_timeout)
            d = admin.show_result(handle, function=function, unique=unique)
            d.addErrback(_no_result_kept)
            asks.append(d.addBoth(_closing(admin)))

        def pick(results: list[tuple[bool, Any]]) -> KeptResult | None | Failure:
            """The first kept result, else None, else (nobody answered) the first failure."""
            found = [value for ok, value in results if ok and value is not None]
            if found:
                return found[0]
            if any(ok for ok, _ in results):
                return None
            return results[0][1]  # type: ignore[no-any-return]

        return awaitable(DeferredList(asks, consumeErrors=True).addCallback(pick))  # type: ignore[arg-type]

    def echo(self, data: bytes | str = b"", *, timeout: float | None = _DEFAULT) -> Deferred[bytes]:
        """Send ECHO_REQ to the next server; fires with the echoed bytes."""
        d: Deferred[bytes] = AsyncDeferred()
        self._send(
            self._order(None),
            request(PacketType.ECHO_REQ, to_bytes(data, "data")),
            Pending((PacketType.ECHO_RES,), d),
            self._timeout(timeout),
        )
        return d

    # -- argument checks -----------------------------------------------------------------

    @staticmethod
    def _check_key(key: bytes, what: str, limit: int) -> None:
        """Reject a handle or unique longer than ``limit`` or with a NUL: no server answers it.

        :param limit: :data:`~gearmanpy.protocol.limits.MAX_HANDLE_SIZE` for a handle,
            :data:`~gearmanpy.protocol.limits.PORTABLE_UNIQUE_SIZE` for a unique.
        """
        if len(key) > limit:
            raise ValueError(f"{what} is {len(key)} bytes; at most {limit} are allowed")
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
        self._check_key(ukey, "unique", PORTABLE_UNIQUE_SIZE)
        return fname, to_bytes(data, "data"), ukey


def _exit_if_never_sent(unsent: list[int]) -> None:
    """At exit: fail loudly if requests were made and the reactor never ran (see
    :meth:`Client._watch_unsent`); ``unsent[0]`` is their count, or -1 once it ran."""
    if unsent[0] <= 0:
        return
    sys.stdout.flush()
    sys.stderr.write(
        f"gearmanpy: {unsent[0]} Gearman request(s) were never sent because the Twisted "
        "reactor never ran; run it, e.g. with twisted.internet.task.react(main)\n"
    )
    sys.stderr.flush()
    os._exit(1)


__all__ = ["Client"]
