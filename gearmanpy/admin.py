# -*- test-case-name: tests.test_admin_client -*-
"""The admin API: ask a job server (gearmanpy or gearmand) what ``gearadmin`` asks, in Python.

An :class:`AdminClient` talks the admin text protocol (protocol.md §4) on one server's port
over one connection, opened on first use and again after it is lost. Each ``gearadmin``
command has a method whose Deferred fires with typed rows parsed from the text reply; the
generic :meth:`AdminClient.command` (replies that end with a ``.`` line) and
:meth:`AdminClient.command_ok` (``OK``/``ERR`` one-liners) carry any other command, so a new
one is a few lines::

    admin = AdminClient("127.0.0.1:4730")
    for row in await admin.status():
        print(row.name, row.queued, row.running, row.workers)
    await admin.close()

Replies are read as gearmand writes them: lines end with ``\\n`` and an optional ``\\r``; a
list reply ends with ``.``; an ``ERR CODE TEXT`` line (instead of a list, or as a one-line
reply) fails the call with :class:`~gearmanpy.errors.AdminError`. Names are decoded as
UTF-8 with ``surrogateescape``, so ``name.encode("utf-8", "surrogateescape")`` gives back
the server's bytes.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from gearmanpy import _admin_rows
from gearmanpy._admin_rows import (
    DeadJob,
    FunctionStatus,
    JobInfo,
    KeptResult,
    PriorityStatus,
    RecurringJob,
    ScheduledJob,
    WorkerInfo,
    parse_dead,
    parse_jobs,
    parse_priority_status,
    parse_recurring,
    parse_result,
    parse_scheduled,
    parse_settings,
    parse_stats,
    parse_status,
    parse_workers,
)
from gearmanpy._admin_rows import (
    text as _text,
)
from gearmanpy._connection import (
    DEFAULT_CONNECT_TIMEOUT,
    ClientTLS,
    LazyReactor,
    ServerSpec,
    awaitable,
    client_endpoint,
    server_key,
    to_bytes,
)
from gearmanpy._transport import SocketWriter, openssl_reason, set_nodelay
from gearmanpy.errors import AdminError, JobTimeout, NoServersAvailable, ProtocolError, RequestLost
from gearmanpy.protocol.admin import format_command
from gearmanpy.protocol.text import show

_T = TypeVar("_T")

#: An ``ERR`` reply line: the code, then optional text.
_ERR = re.compile(rb"^ERR (\S+)(?: (.*))?$")

#: Seconds an admin command may wait for its reply by default.
DEFAULT_ADMIN_TIMEOUT = 10.0


@attrs.define(eq=False)
class _Request:
    """One command waiting for its reply: a list (to ``.``) or one line."""

    listing: bool
    deferred: Deferred[Any]
    lines: list[bytes] = attrs.Factory(list)
    timer: IDelayedCall | None = None


class AdminProtocol(Protocol):
    """One admin connection: commands written in order, replies matched to them in order."""

    def __init__(self) -> None:
        """No command sent yet."""
        self._buffer = b""
        self._pending: deque[_Request] = deque()
        self._writer: SocketWriter | None = None
        self.lost = False

    def connectionMade(self) -> None:
        """Turn on ``TCP_NODELAY`` and set up the write path, as the client does."""
        set_nodelay(self.transport)
        self._writer = SocketWriter(self.transport)

    def send(self, line: bytes, listing: bool) -> _Request:
        """Write one command line; the returned request's Deferred fires with its reply."""
        request = _Request(listing, Deferred())
        if self.lost or self._writer is None:
            request.deferred.errback(RequestLost("the admin connection is closed"))
            return request
        self._pending.append(request)
        self._writer.write(format_command(line))
        return request

    def dataReceived(self, data: bytes) -> None:
        """Split the bytes into lines (``\\n``, one ``\\r`` before it dropped) and use each."""
        self._buffer += data
        while not self.lost:
            line, newline, rest = self._buffer.partition(b"\n")
            if not newline:
                return
            self._buffer = rest
            self._line(line.removesuffix(b"\r"))

    def _line(self, line: bytes) -> None:
        """One reply line: it ends the first pending request's reply, or adds to its list."""
        if not self._pending:
            self.drop(f"unexpected admin reply {show(line)}")
            return
        request = self._pending[0]
        error = _ERR.match(line) if not request.lines else None
        if error is not None:
            self._finish(Failure(AdminError(error.group(1), error.group(2) or b"")))
        elif not request.listing:
            self._finish(line)
        elif line == b".":
            self._finish(request.lines)
        else:
            request.lines.append(line)

    def _finish(self, result: object) -> None:
        """End the first pending request with ``result``."""
        request = self._pending.popleft()
        if request.timer is not None and request.timer.active():
            request.timer.cancel()
        if isinstance(result, Failure):
            request.deferred.errback(result)
        else:
            request.deferred.callback(result)

    def drop(self, why: str) -> None:
        """Close the connection, failing what waits with :class:`RequestLost` saying why."""
        if self._writer is not None and not self.lost:
            self._writer.abort()
        self._fail_all(why)

    def _fail_all(self, why: str) -> None:
        """Fail every pending request (once the connection is unusable)."""
        self.lost = True
        pending, self._pending = self._pending, deque()
        for request in pending:
            if request.timer is not None and request.timer.active():
                request.timer.cancel()
            if not request.deferred.called:
                request.deferred.errback(RequestLost(why))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """The server closed the connection: nothing pending will be answered (the reason
        said when it is not a clean close: a TLS alert such as a missing client certificate)."""
        why = (
            ""
            if reason.check(ConnectionDone)
            else f": {openssl_reason(reason.value or Exception('lost'))}"
        )
        self._fail_all(f"the server closed the admin connection{why}")


class AdminClient(LazyReactor):
    """Admin commands to one job server, over one connection kept open between calls.

    :param server: ``"host:port"``, a client endpoint string or an endpoint object, as for
        :class:`~gearmanpy.Client`.
    :param reactor: the reactor (also the clock); the global one if ``None``.
    :param timeout: seconds a command may wait for its reply (``None``: for ever); at the
        limit it fails with :class:`~gearmanpy.errors.JobTimeout` and the connection is
        dropped (a late reply would be taken for the next command's).
    :param connect_timeout: seconds a ``host:port`` connection attempt may take.
    :param tls: speak TLS to a ``host:port`` server, verifying its certificate and host name
        (:class:`~gearmanpy.ClientTLS`), as the client does.
    """

    def __init__(
        self,
        server: ServerSpec,
        *,
        reactor: Any = None,
        timeout: float | None = DEFAULT_ADMIN_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        tls: ClientTLS | None = None,
    ) -> None:
        """Record the configuration; nothing connects until the first command."""
        self._spec = server
        self.name = server_key(server, 0)
        self._reactor_arg = reactor
        self.timeout = timeout
        self._connect_timeout = connect_timeout
        self._tls = tls
        self._proto: AdminProtocol | None = None
        self._connecting: Deferred[AdminProtocol] | None = None
        self._waiting: list[Deferred[AdminProtocol]] = []

    # -- the connection ------------------------------------------------------------------

    def _connection(self) -> Deferred[AdminProtocol]:
        """The open connection, or one being opened (a lost one is replaced)."""
        if self._proto is not None and not self._proto.lost:
            return succeed(self._proto)
        waiter: Deferred[AdminProtocol] = Deferred()
        self._waiting.append(waiter)
        if self._connecting is None:
            endpoint = client_endpoint(self._reactor, self._spec, self._connect_timeout, self._tls)
            self._connecting = connectProtocol(endpoint, AdminProtocol())
            self._connecting.addBoth(self._connected)
        return waiter

    def _connected(self, result: AdminProtocol | Failure) -> None:
        """The connection attempt ended: hand the connection (or the failure) to the waiters."""
        self._connecting = None
        waiting, self._waiting = self._waiting, []
        if isinstance(result, Failure):
            reason = str(result.value) or type(result.value).__name__
            result = Failure(NoServersAvailable(f"cannot reach {self.name}: {reason}"))
        else:
            self._proto = result
        for waiter in waiting:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def close(self) -> Deferred[None]:
        """Close the connection (the next command opens a new one)."""
        proto, self._proto = self._proto, None
        if proto is not None and not proto.lost:
            proto.drop("the admin client was closed")
        return awaitable(succeed(None))

    # -- generic commands ------------------------------------------------------------------

    def _send(self, line: str | bytes, listing: bool) -> Deferred[Any]:
        """Send one command once connected; apply the timeout to its reply."""
        data = to_bytes(line, "command")
        if b"\n" in data or b"\r" in data:
            raise ValueError("an admin command is one line")

        def send(proto: AdminProtocol) -> Deferred[Any]:
            request = proto.send(data, listing)
            if self.timeout is not None and not request.deferred.called:
                request.timer = self._reactor.callLater(
                    self.timeout, self._expired, proto, request, data
                )
            return request.deferred

        return awaitable(self._connection().addCallback(send))

    def _expired(self, proto: AdminProtocol, request: _Request, line: bytes) -> None:
        """A reply did not come in time: fail it with JobTimeout, and drop the connection."""
        request.timer = None
        if not request.deferred.called:
            request.deferred.errback(
                JobTimeout(f"{self.name} did not answer {show(line)!r} in {self.timeout}s")
            )
        proto.drop(f"an earlier command to {self.name} timed out")

    def command(self, line: str | bytes) -> Deferred[list[bytes]]:
        """Send a command whose reply is a list ending with ``.``; fires with its lines
        (``\\r\\n`` and the ``.`` removed), or fails with AdminError on an ``ERR`` reply."""
        return self._send(line, True)

    def command_ok(self, line: str | bytes) -> Deferred[bytes]:
        """Send a command answered by one line; fires with what follows ``OK `` (``b""`` for
        a bare ``OK``), or fails with AdminError on ``ERR``."""

        def value(reply: bytes) -> bytes:
            if reply == b"OK":
                return b""
            if reply.startswith(b"OK "):
                return reply[3:]
            raise ProtocolError(f"unexpected reply from {self.name}: {show(reply)}")

        return self._send(line, False).addCallback(value)

    def _parsed(self, line: str, parse: Callable[[list[bytes]], _T]) -> Deferred[_T]:
        """A list command, its lines parsed into rows."""
        return self.command(line).addCallback(parse)

    # -- gearadmin's commands ------------------------------------------------------------

    def status(self) -> Deferred[list[FunctionStatus]]:
        """``status``: every function with its jobs and workers (``gearadmin --status``)."""
        return self._parsed("status", parse_status)

    def priority_status(self) -> Deferred[list[PriorityStatus]]:
        """``prioritystatus``: queued jobs per priority (``gearadmin --priority-status``)."""
        return self._parsed("prioritystatus", parse_priority_status)

    def workers(self) -> Deferred[list[WorkerInfo]]:
        """``workers``: every connection and its functions (``gearadmin --workers``)."""
        return self._parsed("workers", parse_workers)

    def show_jobs(self) -> Deferred[list[JobInfo]]:
        """``show jobs``: every job the server holds (``gearadmin --show-jobs``)."""
        return self._parsed("show jobs", parse_jobs)

    def show_unique_jobs(self) -> Deferred[list[str]]:
        """``show unique jobs``: every job's unique key, ``""`` for none."""
        return self._parsed("show unique jobs", lambda lines: [_text(u) for u in lines])

    def version(self) -> Deferred[str]:
        """``version``: the server's version string."""
        return self.command_ok("version").addCallback(_text)

    def getpid(self) -> Deferred[int]:
        """``getpid``: the server's process id."""
        return self.command_ok("getpid").addCallback(self._number, "getpid")

    def verbose(self) -> Deferred[str]:
        """``verbose``: the server's log level name."""
        return self.command_ok("verbose").addCallback(_text)

    def cancel_job(self, handle: str | bytes) -> Deferred[None]:
        """``cancel job HANDLE``: fail the job's waiting clients and forget it if queued."""
        return self._ok(b"cancel job " + self._word(handle, "handle"))

    def drop_function(self, function: str | bytes) -> Deferred[None]:
        """``drop function NAME``: forget a function no worker serves and no job runs for."""
        return self._ok(b"drop function " + self._word(function, "function"))

    def create_function(self, function: str | bytes) -> Deferred[None]:
        """``create function NAME``: make the function known before any worker or job."""
        return self._ok(b"create function " + self._word(function, "function"))

    def maxqueue(self, function: str | bytes, *limits: int) -> Deferred[None]:
        """``maxqueue NAME [ALL | HIGH NORMAL [LOW]]``: limit the queue (0 or none: no limit).

        :raises ValueError: for more than three limits or a negative one.
        """
        if len(limits) > 3 or any(int(n) < 0 for n in limits):
            raise ValueError("maxqueue takes at most three limits, none negative")
        words = [b"maxqueue", self._word(function, "function")]
        words += [str(int(n)).encode("ascii") for n in limits]
        return self._ok(b" ".join(words))

    def shutdown(self, graceful: bool = False) -> Deferred[None]:
        """``shutdown [graceful]``: stop the server (gearmanpy only, from a trusted peer)."""
        return self._ok(b"shutdown graceful" if graceful else b"shutdown")

    # -- gearmanpy's own: the failure policy, kept results, stats --------------------------

    def _maybe(self, command: bytes, value: str | bytes | None, what: str) -> bytes:
        """``command``, and ``value`` as one more word if given."""
        return command if value is None else command + b" " + self._word(value, what)

    def show_dead(self, function: str | bytes | None = None) -> Deferred[list[DeadJob]]:
        """``show dead [FUNCTION]``: the dead set, oldest failure first."""
        return self.command(self._maybe(b"show dead", function, "function")).addCallback(parse_dead)

    def retry_dead(self, what: str | bytes) -> Deferred[None]:
        """``retry dead HANDLE|FUNCTION|all``: queue dead jobs again, attempts reset."""
        return self._ok(b"retry dead " + self._word(what, "handle or function"))

    def drop_dead(self, what: str | bytes) -> Deferred[None]:
        """``drop dead HANDLE|FUNCTION|all``: forget dead jobs."""
        return self._ok(b"drop dead " + self._word(what, "handle or function"))

    def show_scheduled(self, function: str | bytes | None = None) -> Deferred[list[ScheduledJob]]:
        """``show scheduled [FUNCTION]``: jobs waiting for their time, soonest first."""
        line = self._maybe(b"show scheduled", function, "function")
        return self.command(line).addCallback(parse_scheduled)

    def show_recurring(self) -> Deferred[list[RecurringJob]]:
        """``show recurring``: the configured recurring jobs and their next run."""
        return self.command("show recurring").addCallback(parse_recurring)

    def show_result(
        self, handle: str | bytes | None = None, *, function: str | bytes | None = None,
        unique: str | bytes | None = None,
    ) -> Deferred[KeptResult | None]:  # fmt: skip
        """``show result HANDLE`` (or by ``function`` and ``unique``); None if none is kept.

        :raises TypeError: without a handle, or a function and a unique.
        """
        if handle is not None:
            line = b"show result " + self._word(handle, "handle")
        elif function is not None and unique is not None:
            line = b"show result %s %s" % (
                self._word(function, "function"),
                self._word(unique, "unique"),
            )
        else:
            raise TypeError("show_result takes a handle, or a function and a unique")

        def none_if_missing(failure: Failure) -> None:
            failure.trap(AdminError)
            if not isinstance(failure.value, AdminError) or failure.value.code != b"NO_RESULT":
                failure.raiseException()

        return self.command(line).addCallbacks(parse_result, none_if_missing)

    def cancel_unique(self, function: str | bytes, unique: str | bytes) -> Deferred[None]:
        """``cancel unique FUNCTION UNIQUE``: cancel a job (scheduled ones too) by its unique."""
        return self._ok(
            b"cancel unique %s %s"
            % (self._word(function, "function"), self._word(unique, "unique"))
        )

    def show_policy(self, function: str | bytes) -> Deferred[dict[str, str]]:
        """``show policy FUNCTION``: the policy in force for it, setting by setting."""

        line = b"show policy " + self._word(function, "function")
        return self.command(line).addCallback(parse_settings)

    def policy_set(self, pattern: str | bytes, **settings: object) -> Deferred[None]:
        """``policy set PATTERN NAME=VALUE...``: change settings at run time (not saved).

        :raises ValueError: for no setting, or more than the admin line takes (three).
        """
        if not 1 <= len(settings) <= 3:
            raise ValueError("policy_set takes one to three settings")
        words = [self._word(f"{k}={v}", "setting") for k, v in settings.items()]
        return self._ok(b" ".join([b"policy set", self._word(pattern, "pattern"), *words]))

    def policy_reset(self, pattern: str | bytes) -> Deferred[None]:
        """``policy reset PATTERN``: back to the configured policy."""
        return self._ok(b"policy reset " + self._word(pattern, "pattern"))

    def stats(self) -> Deferred[dict[str, str]]:
        """``stats``: the server's counters and gauges, by name."""
        return self.command("stats").addCallback(parse_stats)

    def _ok(self, line: bytes) -> Deferred[None]:
        """A command whose success is a bare ``OK``."""
        return self.command_ok(line).addCallback(lambda _: None)

    def _number(self, value: bytes, what: str) -> int:
        """An ``OK N`` value as a number."""
        if not value.strip().isdigit():
            raise ProtocolError(f"unexpected {what} reply from {self.name}: {show(value)}")
        return int(value)

    @staticmethod
    def _word(value: str | bytes, what: str) -> bytes:
        """One word of a command: no space, no line break, not empty (``str`` as in
        :func:`_text`, so a name read from a reply can be passed back)."""
        data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
        if not data or any(c in data for c in b" \r\n\0"):
            raise ValueError(f"{what} must be one word, without spaces or line breaks")
        return data


__all__ = ["DEFAULT_ADMIN_TIMEOUT", "AdminClient", "AdminProtocol", *_admin_rows.__all__]
