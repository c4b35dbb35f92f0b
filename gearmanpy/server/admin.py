# -*- test-case-name: tests.test_server_protocol -*-
"""The admin text commands (``status``, ``workers``, ``show jobs``...) against the core.

Replies are byte-exact with gearmand 1.1.20 (protocol.md §4.2) except where gearmand loses
work: ``drop function`` refuses while jobs are queued, ``create function`` keeps the whole
name whatever the line ending, and ``shutdown [graceful]`` exists again for trusted peers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
from twisted.logger import Logger, LogLevel, LogLevelFilterPredicate

from gearmanpy._version import __version__
from gearmanpy.protocol import admin as fmt
from gearmanpy.protocol.admin import AdminCommand
from gearmanpy.protocol.numbers import atoi
from gearmanpy.protocol.text import show
from gearmanpy.server.acl import ADMIN, STATUS, Acl, AclError, Grant
from gearmanpy.server.admin_policy import PolicyCommands, dead_function
from gearmanpy.server.core import HIGH, LOW, NORMAL, JobServerCore
from gearmanpy.server.jobs import SERVER_WIDE_COUNTERS, Job, JobCounters, Peer, is_live

#: What ``version`` answers: the gearmand release we match, and who we are.
VERSION = b"1.1.20-gearmanpy-" + __version__.encode("ascii")


#: gearmand's verbose levels, most severe first, and the level gearmanpy logs from at each
#: (Twisted has five levels: NOTICE shows INFO's lines, FATAL and ALERT show CRITICAL's).
VERBOSE_LEVELS = {
    "FATAL": LogLevel.critical,
    "ALERT": LogLevel.critical,
    "CRITICAL": LogLevel.critical,
    "ERROR": LogLevel.error,
    "WARNING": LogLevel.warn,
    "NOTICE": LogLevel.info,
    "INFO": LogLevel.info,
    "DEBUG": LogLevel.debug,
}

#: Twisted's name for a level where it differs from gearmand's.
_TWISTED_NAMES = {"WARN": "WARNING"}


def verbose_level(name: str) -> str:
    """The gearmand name of the log level ``name`` (gearmand's names or Twisted's, in any
    case): ``warn`` is ``WARNING``, ``notice`` is ``NOTICE``.

    :raises ValueError: for any other name.
    """
    upper = name.strip().upper()
    upper = _TWISTED_NAMES.get(upper, upper)
    if upper not in VERBOSE_LEVELS:
        raise ValueError(
            f"unknown log level {name!r}: expected one of {', '.join(VERBOSE_LEVELS)}"
            " (or debug, info, warn, error, critical)"
        )
    return upper


@attrs.define(eq=False)
class Verbosity:
    """The log level gearmanpy logs from: what ``verbose`` reports and ``verbose LEVEL`` sets.

    :ivar predicate: drops gearmanpy's log events below the level (a Twisted log filter;
        ``twistd gearman`` puts it in front of its log observers), and passes every other
        namespace's.
    """

    name: str = attrs.field(default="INFO", converter=verbose_level)
    predicate: LogLevelFilterPredicate = attrs.field(
        init=False, factory=lambda: LogLevelFilterPredicate(defaultLogLevel=LogLevel.debug)
    )

    def __attrs_post_init__(self) -> None:
        self.set(self.name)

    def set(self, name: str) -> str:
        """Log from level ``name`` on; return its gearmand name.

        :raises ValueError: for a name :func:`verbose_level` does not know.
        """
        self.name = verbose_level(name)
        self.predicate.setLogLevelForNamespace("gearmanpy", VERBOSE_LEVELS[self.name])
        return self.name


_M = TypeVar("_M", bound=Callable[..., bytes])

#: Names the function an admin command acts on, from its arguments (None: none, or every).
FunctionOf = Callable[[Any, tuple[bytes, ...]], bytes | None]


def requires(permission: str | None, function: FunctionOf | None = None) -> Callable[[_M], _M]:
    """Mark an ``admin_<command>`` method with the permission it needs (``ADMIN`` for what
    changes or stops the server; None: anyone may). ``function`` finds the function it acts
    on, for grants by glob; without one the permission must be granted on every function.
    A command without the mark needs ``STATUS`` (it only reads)."""

    def mark(method: _M) -> _M:
        method.permission = permission  # type: ignore[attr-defined]
        method.function_of = function  # type: ignore[attr-defined]
        return method

    return mark


def _second_word(commands: Any, args: tuple[bytes, ...]) -> bytes | None:
    """``create function NAME``, ``drop function NAME``: NAME."""
    return args[1] if len(args) == 2 else None


def _first_word(commands: Any, args: tuple[bytes, ...]) -> bytes | None:
    """``maxqueue NAME ...``: NAME."""
    return args[0] if args else None


def maxqueue_limits(words: tuple[bytes, ...]) -> list[int]:
    """The limits (high, normal, low) of ``maxqueue FUNC [N | H N | H N L]`` from its numbers
    (gearmand's ``atoi``: junk is 0; none: all 0)."""
    numbers = [atoi(a) for a in words]
    if not numbers:
        return [0, 0, 0]
    if len(numbers) == 1:
        return numbers * 3
    if len(numbers) == 2:
        return [numbers[0], numbers[1], 0]
    return numbers[:3]


def _job_function(commands: Any, args: tuple[bytes, ...]) -> bytes | None:
    """``cancel job HANDLE``: the job's function (None for a job the server does not know);
    ``cancel unique FUNCTION UNIQUE``: FUNCTION."""
    if len(args) == 3 and args[0].lower() == b"unique":
        return args[1]
    job = commands.core.jobs.get(args[1]) if len(args) == 2 else None
    return job.function.name if job is not None else None


def _drop_target(commands: Any, args: tuple[bytes, ...]) -> bytes | None:
    """``drop function NAME``: NAME; ``drop dead WHAT``: the function WHAT names."""
    if len(args) == 2 and args[0].lower() == b"dead":
        return dead_function(commands.core, args[1])
    return _second_word(commands, args)


def _plus(text: str) -> bytes:
    """Text for an ``ERR`` line: spaces as ``+``, as gearmand writes them."""
    return text.replace(" ", "+").encode("utf-8", "backslashreplace")


def status_rows(core: JobServerCore) -> list[tuple[bytes, int, int, int]]:
    """Rows of ``status``: per function, total jobs, running jobs, registered workers."""
    return [(f.name, f.total(), f.running, len(f.workers)) for f in core.functions.values()]


def priority_rows(core: JobServerCore) -> list[tuple[bytes, int, int, int, int]]:
    """Rows of ``prioritystatus``: queued jobs per priority (scheduled count as NORMAL)."""
    return [
        (
            f.name,
            len(f.queues[HIGH]),
            len(f.queues[NORMAL]) + f.scheduled,
            len(f.queues[LOW]),
            len(f.workers),
        )
        for f in core.functions.values()
    ]


def worker_rows(core: JobServerCore) -> list[tuple[int, bytes, bytes, list[bytes]]]:
    """Rows of ``workers``: every connection with its functions, newest first."""
    return [(p.fd, p.ip, p.client_id, [f.name for f in reversed(p.abilities)]) for p in core.peers]


def stats_rows(core: JobServerCore) -> list[tuple[str, int]]:
    """Rows of ``stats``: the server's gauges and counters, then each function's (named
    ``function.NAME.FIELD``); every JobCounters field, so a new counter needs no change."""
    fields = [f.name for f in attrs.fields(JobCounters)]
    peers = core.peers
    rows = [
        ("connections", len(peers)),
        ("workers", sum(1 for p in peers if p.abilities)),
        ("clients_waiting", sum(1 for p in peers if p.client_jobs)),
        ("jobs", len(core.jobs)),
        ("payload_bytes", core.held.payload_bytes),
        ("functions", len(core.functions)),
    ]
    rows += [(name, getattr(core.counters, name)) for name in fields]
    per_function = [name for name in fields if name not in SERVER_WIDE_COUNTERS]
    for f in core.functions.values():
        prefix = f"function.{show(f.name)}."
        rows += [
            (prefix + "queued", f.queued()),
            (prefix + "running", f.running),
            (prefix + "scheduled", f.scheduled),
            (prefix + "workers", len(f.workers)),
        ]
        rows += [(prefix + name, getattr(f.counters, name)) for name in per_function]
    return rows


def live_jobs(core: JobServerCore) -> list[Job]:
    """Every acknowledged job that has not finished, in handle order (``show jobs``)."""
    return [j for j in core.jobs.values() if is_live(j)]


def show_jobs_rows(core: JobServerCore) -> list[tuple[bytes, int, bool, bool]]:
    """``show jobs`` rows: handle, retries, ignored, persisted of each live job."""
    # Without a store every background job counts as persisted, as gearmand's built-in
    # (no-op) queue reports it.
    stored = (lambda j: j.persisted) if core.store else (lambda j: j.background)
    return [(j.handle, j.retries, j.ignored, stored(j)) for j in live_jobs(core)]


#: ``show`` words the failure policy's commands answer (server/admin_policy.py).
_POLICY_SHOWS = frozenset({b"dead", b"scheduled", b"recurring", b"result", b"policy"})


class AdminCommands(PolicyCommands):
    """Dispatches admin lines to ``admin_<command>`` methods and sends their replies."""

    log = Logger()

    def __init__(
        self,
        core: JobServerCore,
        verbosity: Verbosity | None = None,
        allow_remote_shutdown: bool = False,
        acl: Acl | None = None,
    ) -> None:
        """
        :param core: the server state the commands read and change.
        :param verbosity: the log level ``verbose`` reports and sets (INFO if not given).
        :param allow_remote_shutdown: accept the ``admin`` commands (shutdown, verbose LEVEL,
            cancel, drop, create, maxqueue) from any peer, not just loopback and unix-socket
            ones, when there is no ACL.
        :param acl: the grants ``acl list/grant/revoke/reload`` show and change (each peer's
            own permissions come with it, as ``Peer.access``).
        """
        self.core = core
        self.verbosity = verbosity if verbosity is not None else Verbosity()
        self.allow_remote_shutdown = allow_remote_shutdown
        self.acl = acl

    def handle(self, peer: Peer, command: AdminCommand) -> None:
        """Run one admin command and send its reply to ``peer``."""
        name = command.name
        method: Callable[[Peer, tuple[bytes, ...]], bytes] | None = None
        if name and name.isalpha():
            method = getattr(self, "admin_" + name.decode("ascii"), None)
        if method is None:
            word = command.words[0] if command.words else b""
            peer.out.send(fmt.unknown_command(word))
            return
        permission = getattr(method, "permission", STATUS)
        if permission is not None:
            function_of = getattr(method, "function_of", None)
            function = function_of(self, command.args) if function_of is not None else None
            refused = self.refusal(peer, permission, function)
            if refused is not None:
                peer.out.send(refused)
                return
        peer.out.send(method(peer, command.args))

    def refusal(self, peer: Peer, permission: str, name: bytes | None = None) -> bytes | None:
        """The ``ERR PERMISSION_DENIED`` line if ``peer`` may not use ``permission`` on the
        function ``name`` (None: on every function), else None. Every admin command's check
        is this one call (made by :meth:`handle` for a command marked with :func:`requires`).

        Without an ACL (``peer.access`` None), ``admin`` is for loopback and unix peers (and
        anyone with ``allow_remote_shutdown``); everything else is for anyone.
        """
        access = peer.access
        if access is not None:
            if access.allows(permission, name):
                return None
            return fmt.error(b"PERMISSION_DENIED", _plus(access.refusal(permission, name)))
        if permission != ADMIN or peer.trusted or self.allow_remote_shutdown:
            return None
        self.log.warn("refused admin to {ip}: not a loopback or unix peer", ip=show(peer.ip))
        return fmt.error(b"PERMISSION_DENIED", _plus("admin is only for loopback or unix peers"))

    def _visible(self, peer: Peer, rows: list[Any]) -> list[Any]:
        """The rows (function name first) of the functions ``peer`` may see the status of."""
        access = peer.access
        if access is None or access.unrestricted(STATUS):
            return rows
        return [row for row in rows if access.allows(STATUS, row[0])]

    @requires(None)
    def admin_status(self, peer: Peer, args: tuple[bytes, ...]) -> bytes:
        """Per function: total jobs, running jobs, registered workers (of the functions the
        peer may see the status of)."""
        return fmt.format_status(self._visible(peer, status_rows(self.core)))

    @requires(None)
    def admin_prioritystatus(self, peer: Peer, args: tuple[bytes, ...]) -> bytes:
        """Per function: queued jobs per priority and registered workers (as ``status``)."""
        return fmt.format_priority_status(self._visible(peer, priority_rows(self.core)))

    def admin_workers(self, peer: Peer, args: tuple[bytes, ...]) -> bytes:
        """Every connection with its client id and functions."""
        return fmt.format_workers(worker_rows(self.core))

    def admin_stats(self, peer: Peer, args: tuple[bytes, ...]) -> bytes:
        """``stats`` (gearmanpy's own): ``name value`` lines, then ``.``."""
        return fmt.format_list(
            b"%s %d" % (name.encode("utf-8", "backslashreplace"), value)
            for name, value in stats_rows(self.core)
        )

    @requires(None)
    def admin_version(self, peer: Peer, args: tuple[bytes, ...]) -> bytes:
        """The server version."""
        return fmt.ok_value(VERSION)

    def admin_getpid(self, peer: Peer, args: tuple[bytes, ...]) -> bytes:
        """The server's process id."""
        return fmt.ok_value(b"%d" % os.getpid())

    @requires(None)  # reading it is for anyone; setting it needs admin (below)
    def admin_verbose(self, peer: Peer, args: tuple[bytes, ...]) -> bytes:
        """``verbose``: the log level, in gearmand's names; ``verbose LEVEL`` (gearmand has no
        such form) sets it, for the peers that may send ``shutdown``."""
        if not args:
            return fmt.ok_value(self.verbosity.name.encode("ascii"))
        refused = self.refusal(peer, ADMIN)
        if refused is not None:
            return refused
        if len(args) != 1:
            return fmt.invalid_arguments(b"verbose")
        text = show(args[0])
        try:
            name = self.verbosity.set(text)
        except ValueError:
            return fmt.error(
                b"UNKNOWN_VERBOSE_LEVEL",
                b"verbose+takes+" + ",".join(VERBOSE_LEVELS).encode("ascii"),
            )
        self.log.info("log level set to {name} by {ip}", name=name, ip=show(peer.ip))
        return fmt.ok_value(name.encode("ascii"))

    @requires(ADMIN, _first_word)
    def admin_maxqueue(self, peer: Peer, args: tuple[bytes, ...]) -> bytes:
        """``maxqueue FUNC [N | H N | H N L]``: per-priority queue limits (0 = none)."""
        if not args:
            return fmt.invalid_arguments(b"maxqueue")
        self.core.set_max_queue(args[0], maxqueue_limits(args[1:]))
        return fmt.ok()

    def admin_show(self, peer: Peer, args: tuple[bytes, ...]) -> bytes:
        """``show jobs`` and ``show unique jobs``."""
        if not args:
            return fmt.unknown_command(b"show")
        words = [a.lower() for a in args]
        if words == [b"jobs"]:
            return fmt.format_show_jobs(show_jobs_rows(self.core))
        if words == [b"unique", b"jobs"]:
            return fmt.format_show_unique_jobs(j.unique for j in live_jobs(self.core))
        if words[0] in _POLICY_SHOWS:
            return self.show_policy_state(peer, words, args)
        return fmt.error(b"UNKNOWN_SHOW_ARGUMENTS")

    @requires(ADMIN, _job_function)
    def admin_cancel(self, peer: Peer, args: tuple[bytes, ...]) -> bytes:
        """``cancel job HANDLE`` (and ``cancel unique FUNCTION UNIQUE``): fail a job to its
        clients and forget it."""
        if len(args) < 2:
            return fmt.unknown_command(b"cancel")
        if len(args) == 3 and args[0].lower() == b"unique":
            return self.cancel_unique_command(peer, args[1], args[2])
        if len(args) != 2 or args[0].lower() != b"job":
            return fmt.error(b"UNKNOWN_ERROR")
        if self.core.cancel(args[1]):
            self.log.info("job {handle} cancelled by an admin", handle=show(args[1]))
            return fmt.ok()
        return fmt.error(b"UNKNOWN_JOB")

    @requires(ADMIN, _second_word)
    def admin_create(self, peer: Peer, args: tuple[bytes, ...]) -> bytes:
        """``create function NAME``."""
        if len(args) != 2 or args[0].lower() != b"function":
            return fmt.invalid_arguments(b"create")
        self.core.function(args[1])
        return fmt.ok()

    @requires(ADMIN, _drop_target)
    def admin_drop(self, peer: Peer, args: tuple[bytes, ...]) -> bytes:
        """``drop function NAME``: only when no worker, running or queued job needs it
        (and ``drop dead ...``, server/admin_policy.py)."""
        if len(args) == 2 and args[0].lower() == b"dead":
            return self.drop_dead_command(peer, args[1])
        if len(args) != 2 or args[0].lower() != b"function":
            return fmt.invalid_arguments(b"drop")
        problem = self.core.drop_function(args[1])
        if problem is not None:
            return fmt.error(problem)
        return fmt.ok()

    @requires(ADMIN)
    def admin_shutdown(self, peer: Peer, args: tuple[bytes, ...]) -> bytes:
        """``shutdown [graceful]``: stop the server (an ``admin`` command)."""
        if args and [a.lower() for a in args] != [b"graceful"]:
            return fmt.invalid_arguments(b"shutdown")
        graceful = bool(args)
        self.log.info(
            "shutdown{how} requested by {ip}",
            how=" graceful" if graceful else "",
            ip=show(peer.ip),
        )
        self.core.clock.callLater(0, self.core.shutdown, graceful)
        return fmt.ok()

    @requires(ADMIN)
    def admin_acl(self, peer: Peer, args: tuple[bytes, ...]) -> bytes:
        """``acl list``; ``acl grant WHO PERMISSION GLOB``, ``acl revoke WHO PERMISSION GLOB``
        (until the next reload); ``acl reload`` (the ``--acl`` file again, as on SIGHUP)."""
        acl = self.acl
        if acl is None:
            return fmt.error(b"NO_ACL", _plus("this server keeps no permissions"))
        verb = args[0].lower() if args else b""
        if verb == b"list" and len(args) == 1:
            rows = [f"{g.who}\t{g.permission}\t{g.functions}\n" for g in acl.grants]
            return "".join(rows).encode("utf-8", "backslashreplace") + b".\n"
        if verb == b"reload" and len(args) == 1:
            try:
                acl.reload()
            except AclError as e:
                return fmt.error(b"ACL_ERROR", _plus(str(e)))
            self.log.info("permissions reloaded by {who}", who=_who(peer))
            return fmt.ok()
        if verb not in (b"grant", b"revoke") or len(args) != 4:
            return fmt.invalid_arguments(b"acl")
        who, permission, glob = (a.decode("utf-8", "surrogateescape") for a in args[1:])
        try:
            grant = Grant(who, permission.lower(), glob)
        except AclError as e:
            return fmt.error(b"ACL_ERROR", _plus(str(e)))
        changed = acl.grant(grant) if verb == b"grant" else acl.revoke(grant)
        if not changed:
            what = "already granted" if verb == b"grant" else "not granted"
            return fmt.error(b"ACL_UNCHANGED", _plus(f"{permission} on {glob} to {who} {what}"))
        self.log.info(
            "acl {verb} {who} {permission} {glob} by {by}",
            verb=verb.decode(),
            who=who,
            permission=permission,
            glob=glob,
            by=_who(peer),
        )
        return fmt.ok()


def _who(peer: Peer) -> str:
    """The peer, for a log line: its identity if it has one, else its address."""
    return str(peer.access.identity) if peer.access is not None else show(peer.ip)
