# -*- test-case-name: tests.test_admin_client -*-
"""The admin text protocol from Python: :class:`AdminClient`.

One connection to one server (gearmanpy or gearmand), commands answered in order, each
method returning a Deferred (``await``-able) of parsed rows. Besides gearadmin's commands
(``status``, ``workers``, ``show jobs``...) it has gearmanpy's own: the failure policy's dead
set, scheduled jobs, recurring jobs, kept results and policies. :meth:`AdminClient.command`
and :meth:`AdminClient.command_ok` send any other line.

A list reply ends with a line holding ``.``; other commands answer one ``OK`` or ``ERR``
line. An ``ERR`` answer raises :class:`AdminError` (``code``, ``text`` with gearmand's ``+``
for spaces turned back into spaces).
"""

from __future__ import annotations

import base64
import datetime
from collections import deque
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import Factory, connectionDone
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from gearmanpy._connection import (
    AsyncDeferred,
    ServerSpec,
    awaitable,
    client_endpoint,
    resolve_reactor,
)
from gearmanpy.errors import GearmanError

__all__ = [
    "AdminClient",
    "AdminError",
    "DeadJobRow",
    "FunctionStatus",
    "KeptResultRow",
    "ScheduledRow",
    "WorkerRow",
]


class AdminError(GearmanError):
    """The server answered an admin command with ``ERR CODE TEXT``."""

    def __init__(self, code: str, text: str = "") -> None:
        super().__init__(f"{code}: {text}" if text else code)
        self.code = code
        self.text = text


@attrs.frozen
class FunctionStatus:
    """A ``status`` row: jobs of a function (queued, scheduled and running), running, workers."""

    function: bytes
    total: int
    running: int
    workers: int


@attrs.frozen
class WorkerRow:
    """A ``workers`` row: a connection, its address, client id and functions."""

    fd: int
    ip: bytes
    client_id: bytes
    functions: tuple[bytes, ...]


@attrs.frozen
class DeadJobRow:
    """A ``show dead`` row."""

    handle: bytes
    function: bytes
    unique: bytes
    attempts: int
    failed_at: datetime.datetime | None
    error: str


@attrs.frozen
class ScheduledRow:
    """A ``show scheduled`` row: a SUBMIT_JOB_EPOCH job or a retry waiting for its time."""

    handle: bytes
    function: bytes
    unique: bytes
    due: datetime.datetime | None
    priority: str
    attempts: int
    error: str | None


@attrs.frozen
class KeptResultRow:
    """``show result``: a background job's kept outcome."""

    handle: bytes
    function: bytes
    unique: bytes
    outcome: str
    attempts: int
    numerator: int
    denominator: int
    submitted: datetime.datetime | None
    started: datetime.datetime | None
    finished: datetime.datetime | None
    expires: datetime.datetime | None
    data: bytes


def _time(text: bytes) -> datetime.datetime | None:
    """An ISO 8601 UTC time of a gearmanpy row (``-`` for none)."""
    if text == b"-" or not text:
        return None
    return datetime.datetime.strptime(text.decode(), "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.UTC
    )


def _text(field: bytes) -> str:
    """A text field of a row (control characters stay escaped as the server wrote them)."""
    return field.decode("utf-8", "replace")


class _AdminProtocol(LineOnlyReceiver):
    """Lines in and out; each request's Deferred fires with its reply's lines."""

    delimiter = b"\n"
    MAX_LENGTH = 1 << 24

    def __init__(self) -> None:
        self._waiting: deque[tuple[bool, Deferred[list[bytes]]]] = deque()
        self._lines: list[bytes] = []
        self.closed: Failure | None = None
        #: Fired when the connection is gone (:meth:`AdminClient.close` waits on one).
        self.on_lost: list[Deferred[None]] = []

    def ask(self, line: bytes, listing: bool) -> Deferred[list[bytes]]:
        """Send ``line``; fire with the reply (every line up to ``.`` for a listing)."""
        if self.closed is not None:
            return fail(self.closed)
        d: Deferred[list[bytes]] = Deferred()
        self._waiting.append((listing, d))
        # CRLF: gearmand takes the last character of a line for a CR (it would cut a
        # ``create function`` name short on a bare LF); gearmanpy drops the CR.
        assert self.transport is not None
        self.transport.write(line + b"\r\n")
        return d

    def lineReceived(self, line: bytes) -> None:
        """Collect a reply; hand it over when it is complete."""
        if not self._waiting:
            return
        line = line[:-1] if line.endswith(b"\r") else line
        listing, d = self._waiting[0]
        if listing and not (not self._lines and line.startswith(b"ERR ")):
            if line != b".":
                self._lines.append(line)
                return
        lines, self._lines = self._lines if listing and line == b"." else [line], []
        self._waiting.popleft()
        d.callback(lines)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Fail whatever still waits."""
        self.closed = Failure(GearmanError(f"admin connection lost: {reason.getErrorMessage()}"))
        while self._waiting:
            self._waiting.popleft()[1].errback(self.closed)
        for d in self.on_lost:
            d.callback(None)


def _error(line: bytes) -> AdminError:
    """An ``ERR CODE TEXT`` line as an AdminError."""
    words = line.decode("utf-8", "replace").split(" ", 2)
    return AdminError(
        words[1] if len(words) > 1 else "", (words[2] if len(words) > 2 else "").replace("+", " ")
    )


class AdminClient:
    """The admin commands of one server, over one connection opened on first use.

    :param server: ``host``, ``host:port`` (4730 by default) or a client endpoint string.
    :param reactor: the reactor to connect with (the global one by default).
    :param timeout: seconds the connection attempt may take.
    """

    def __init__(self, server: ServerSpec = "127.0.0.1:4730", *, reactor: Any = None,
                 timeout: float = 10.0) -> None:  # fmt: skip
        self.server = server
        self._reactor = reactor
        self._timeout = timeout
        self._conn: _AdminProtocol | None = None
        self._waiters: list[Deferred[_AdminProtocol]] | None = None

    # -- sending ---------------------------------------------------------------------------

    def _connected(self) -> Deferred[_AdminProtocol]:
        """The connection (made on first use, and again after it was lost)."""
        if self._conn is not None and self._conn.closed is None:
            return succeed(self._conn)
        waiter: Deferred[_AdminProtocol] = Deferred()
        if self._waiters is None:
            self._waiters = [waiter]
            reactor = resolve_reactor(self._reactor)
            endpoint = client_endpoint(reactor, self.server, self._timeout)
            d = endpoint.connect(Factory.forProtocol(_AdminProtocol))
            d.addCallbacks(self._made, self._not_made)
        else:
            self._waiters.append(waiter)
        return waiter

    def _made(self, proto: _AdminProtocol) -> None:
        """Connected: the waiting commands go out."""
        self._conn = proto
        waiters, self._waiters = self._waiters or [], None
        for w in waiters:
            w.callback(proto)

    def _not_made(self, failure: Failure) -> None:
        """The connection attempt failed: the waiting commands fail, the next one retries."""
        error = Failure(GearmanError(f"cannot reach {self.server}: {failure.getErrorMessage()}"))
        waiters, self._waiters = self._waiters or [], None
        for w in waiters:
            w.errback(error)

    def command(self, line: str | bytes) -> AsyncDeferred[list[bytes]]:
        """Send a command whose reply is a list; fire with its lines (without the ``.``).

        :raises AdminError: (in the Deferred) for an ``ERR`` answer.
        """
        raw = line.encode() if isinstance(line, str) else line
        d = self._connected().addCallback(lambda p: p.ask(raw, True))
        return awaitable(d.addCallback(self._listing))

    def command_ok(self, line: str | bytes) -> AsyncDeferred[bytes]:
        """Send a command answered by one line; fire with what follows ``OK`` (often empty).

        :raises AdminError: (in the Deferred) for an ``ERR`` answer.
        """
        raw = line.encode() if isinstance(line, str) else line
        d = self._connected().addCallback(lambda p: p.ask(raw, False))
        return awaitable(d.addCallback(self._ok))

    @staticmethod
    def _listing(lines: list[bytes]) -> list[bytes]:
        if len(lines) == 1 and lines[0].startswith(b"ERR "):
            raise _error(lines[0])
        return lines

    @staticmethod
    def _ok(lines: list[bytes]) -> bytes:
        (line,) = lines
        if line.startswith(b"ERR"):
            raise _error(line)
        if line == b"OK" or line.startswith(b"OK "):
            return line[3:]
        raise AdminError("UNEXPECTED_REPLY", line.decode("utf-8", "replace"))

    def _rows(self, line: str) -> AsyncDeferred[list[list[bytes]]]:
        """A list command's lines split on tabs."""
        return awaitable(self.command(line).addCallback(lambda ls: [x.split(b"\t") for x in ls]))

    def close(self) -> Deferred[None]:
        """Close the connection (if open); fires once it is closed."""
        conn, self._conn = self._conn, None
        if conn is None or conn.closed is not None or conn.transport is None:
            return succeed(None)
        done: Deferred[None] = Deferred()
        conn.on_lost.append(done)
        conn.transport.loseConnection()
        return done

    # -- gearadmin's commands ----------------------------------------------------------------

    def status(self) -> Deferred[list[FunctionStatus]]:
        """``status``: every function with its jobs, running jobs and workers."""
        return self._rows("status").addCallback(
            lambda rows: [FunctionStatus(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]
        )

    def workers(self) -> Deferred[list[WorkerRow]]:
        """``workers``: every connection, its client id and its functions."""

        def parse(lines: list[bytes]) -> list[WorkerRow]:
            out = []
            for line in lines:
                head, _, functions = (line + b" ").partition(b" : ")
                fd, ip, client_id = (head.split(b" ", 2) + [b"", b""])[:3]
                out.append(WorkerRow(int(fd), ip, client_id, tuple(functions.split())))
            return out

        return self.command("workers").addCallback(parse)

    def show_jobs(self) -> Deferred[list[list[bytes]]]:
        """``show jobs``: handle, retries, ignored, persisted per live job."""
        return self._rows("show jobs")

    def show_unique_jobs(self) -> Deferred[list[bytes]]:
        """``show unique jobs``: the uniques of the live jobs."""
        return self.command("show unique jobs")

    def priority_status(self) -> Deferred[list[list[bytes]]]:
        """``prioritystatus``: function, high, normal, low, workers."""
        return self._rows("prioritystatus")

    def version(self) -> Deferred[str]:
        """``version``."""
        return self.command_ok("version").addCallback(lambda v: v.decode())

    def getpid(self) -> Deferred[int]:
        """``getpid``."""
        return self.command_ok("getpid").addCallback(int)

    def cancel_job(self, handle: bytes | str) -> Deferred[bytes]:
        """``cancel job HANDLE``."""
        return self.command_ok(b"cancel job " + _b(handle))

    def drop_function(self, name: bytes | str) -> Deferred[bytes]:
        """``drop function NAME``."""
        return self.command_ok(b"drop function " + _b(name))

    def create_function(self, name: bytes | str) -> Deferred[bytes]:
        """``create function NAME``."""
        return self.command_ok(b"create function " + _b(name))

    def maxqueue(self, name: bytes | str, *limits: int) -> Deferred[bytes]:
        """``maxqueue NAME [N | HIGH NORMAL [LOW]]``."""
        return self.command_ok(b" ".join([b"maxqueue", _b(name), *(b"%d" % n for n in limits)]))

    def shutdown(self, graceful: bool = False) -> Deferred[bytes]:
        """``shutdown [graceful]``."""
        return self.command_ok("shutdown graceful" if graceful else "shutdown")

    # -- gearmanpy's failure policy ----------------------------------------------------------

    def show_dead(self, function: bytes | str | None = None) -> Deferred[list[DeadJobRow]]:
        """``show dead [FUNCTION]``: the dead set, oldest failure first."""
        line = b"show dead" + (b" " + _b(function) if function is not None else b"")
        return self._rows(line.decode("utf-8", "surrogateescape")).addCallback(
            lambda rows: [
                DeadJobRow(r[0], r[1], r[2], int(r[3]), _time(r[4]), _text(r[5])) for r in rows
            ]
        )

    def retry_dead(self, what: bytes | str) -> Deferred[bytes]:
        """``retry dead HANDLE|FUNCTION|all``."""
        return self.command_ok(b"retry dead " + _b(what))

    def drop_dead(self, what: bytes | str) -> Deferred[bytes]:
        """``drop dead HANDLE|FUNCTION|all``."""
        return self.command_ok(b"drop dead " + _b(what))

    def show_scheduled(self, function: bytes | str | None = None) -> Deferred[list[ScheduledRow]]:
        """``show scheduled [FUNCTION]``: jobs waiting for their time, soonest first."""
        line = b"show scheduled" + (b" " + _b(function) if function is not None else b"")
        return self._rows(line.decode("utf-8", "surrogateescape")).addCallback(
            lambda rows: [
                ScheduledRow(
                    r[0],
                    r[1],
                    r[2],
                    _time(r[3]),
                    _text(r[4]),
                    int(r[5]),
                    None if r[6] == b"-" else _text(r[6]),
                )  # fmt: skip
                for r in rows
            ]
        )

    def show_recurring(self) -> Deferred[list[list[bytes]]]:
        """``show recurring``: name, cron, function, unique, next tick."""
        return self._rows("show recurring")

    def show_result(
        self, handle: bytes | str | None = None, *, function: bytes | str | None = None,
        unique: bytes | str | None = None,
    ) -> Deferred[KeptResultRow | None]:  # fmt: skip
        """``show result HANDLE`` (or by ``function`` and ``unique``); None if none is kept."""
        if handle is not None:
            line = b"show result " + _b(handle)
        elif function is not None and unique is not None:
            line = b"show result " + _b(function) + b" " + _b(unique)
        else:
            raise TypeError("show_result takes a handle, or a function and a unique")

        def parse(rows: list[list[bytes]]) -> KeptResultRow:
            f = {r[0]: r[1] if len(r) > 1 else b"" for r in rows}
            numerator, _, denominator = f[b"status"].partition(b"/")
            return KeptResultRow(
                f[b"handle"], f[b"function"], f[b"unique"], f[b"outcome"].decode(),
                int(f[b"attempts"]), int(numerator), int(denominator), _time(f[b"submitted"]),
                _time(f[b"started"]), _time(f[b"finished"]), _time(f[b"expires"]),
                base64.b64decode(f[b"data"]),
            )  # fmt: skip

        def none_if_missing(failure: Failure) -> None:
            failure.trap(AdminError)
            if getattr(failure.value, "code", None) != "NO_RESULT":
                failure.raiseException()

        d = self._rows(line.decode("utf-8", "surrogateescape")).addCallback(parse)
        return d.addErrback(none_if_missing)

    def show_policy(self, function: bytes | str) -> Deferred[dict[str, str]]:
        """``show policy FUNCTION``: the policy in force, setting by setting."""
        return self._rows("show policy " + _s(function)).addCallback(
            lambda rows: {r[0].decode(): r[1].decode() for r in rows}
        )

    def policy_set(self, pattern: str, **settings: Any) -> Deferred[bytes]:
        """``policy set PATTERN NAME=VALUE...`` (at most three settings per command)."""
        words = [f"{k}={v}" for k, v in settings.items()]
        return self.command_ok(" ".join(["policy", "set", pattern, *words]))

    def policy_reset(self, pattern: str) -> Deferred[bytes]:
        """``policy reset PATTERN``."""
        return self.command_ok("policy reset " + pattern)

    def cancel_unique(self, function: bytes | str, unique: bytes | str) -> Deferred[bytes]:
        """``cancel unique FUNCTION UNIQUE``."""
        return self.command_ok(b"cancel unique " + _b(function) + b" " + _b(unique))

    def stats(self) -> Deferred[dict[str, str]]:
        """``stats``: the server's counters and gauges by name."""
        return self.command("stats").addCallback(
            lambda lines: dict(line.decode().split(" ", 1) for line in lines if b" " in line)
        )


def _b(value: bytes | str) -> bytes:
    """A command word as bytes."""
    return value.encode() if isinstance(value, str) else value


def _s(value: bytes | str) -> str:
    """A command word as text."""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
