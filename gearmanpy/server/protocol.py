# -*- test-case-name: tests.test_server_protocol -*-
"""The server's Twisted protocol: bytes in, decoded packets dispatched to the core.

Each connection owns a :class:`~gearmanpy.protocol.packets.PacketDecoder`; every decoded
packet goes through one dispatch table to a ``packet_<TYPE>`` method (runs of plain
submissions, to the core in one call), every admin line to
:class:`~gearmanpy.server.admin.AdminCommands`. Malformed input gets an ERROR packet and a
closed connection, never a crash, a hang or a desynchronised stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import attrs
from twisted.internet import address
from twisted.internet.interfaces import IDelayedCall, IHandshakeListener
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gearmanpy._transport import set_nodelay
from gearmanpy.errors import AdminCommandError, ProtocolError
from gearmanpy.protocol import replies
from gearmanpy.protocol.admin import AdminCommand, invalid_arguments_line
from gearmanpy.protocol.limits import DEFAULT_MAX_PACKET_SIZE, MAX_CLIENT_ID_SIZE
from gearmanpy.protocol.numbers import parse_c_int
from gearmanpy.protocol.packets import Packet, PacketDecoder, PacketType
from gearmanpy.protocol.text import show
from gearmanpy.server.acl import REGISTER, STATUS, SUBMIT, Acl, Identity, Permissions
from gearmanpy.server.admin import AdminCommands
from gearmanpy.server.core import HIGH, LOW, NORMAL, JobServerCore
from gearmanpy.server.jobs import GRAB_ALL, GRAB_PLAIN, GRAB_UNIQ, Peer
from gearmanpy.server.memory import MemoryReleaser
from gearmanpy.server.outbound import Outbound, OutputGuard, OutputLimits, TurnCoalescer

P = PacketType
# Plain ints: looking a member up on the PacketType enum costs several times more (``python
# benchmarks/inprocess_bench.py`` measures the per-packet work this is part of).
_WORK_DATA = int(P.WORK_DATA)
_WORK_WARNING = int(P.WORK_WARNING)

#: Types a server never accepts from a peer: gearmand answers INVALID_COMMAND and goes on.
NOT_EXPECTED = frozenset(
    {
        P.UNUSED,
        P.NOOP,
        P.JOB_CREATED,
        P.NO_JOB,
        P.JOB_ASSIGN,
        P.ECHO_RES,
        P.ERROR,
        P.STATUS_RES,
        P.ALL_YOURS,
        P.OPTION_RES,
        P.JOB_ASSIGN_UNIQ,
        P.SUBMIT_JOB_SCHED,
        P.JOB_ASSIGN_ALL,
        P.STATUS_RES_UNIQUE,
    }
)

#: Every type a client or worker may send: the plain submissions below, and a
#: ``packet_<NAME>`` method for each of the others.
HANDLED = frozenset(PacketType) - NOT_EXPECTED

#: SUBMIT_JOB[_HIGH|_LOW][_BG]: priority and background. The decoder hands these over in
#: runs, so a client pipelining submissions costs one call into the core per run, not per job.
SUBMITS = {
    P.SUBMIT_JOB: (NORMAL, False),
    P.SUBMIT_JOB_BG: (NORMAL, True),
    P.SUBMIT_JOB_HIGH: (HIGH, False),
    P.SUBMIT_JOB_HIGH_BG: (HIGH, True),
    P.SUBMIT_JOB_LOW: (LOW, False),
    P.SUBMIT_JOB_LOW_BG: (LOW, True),
}


#: Requests an ACL may refuse besides the plain submissions, and the permission each needs
#: (the function is the first argument; GET_STATUS's is its job's).
CHECKED = {
    P.SUBMIT_JOB_EPOCH: SUBMIT,
    P.SUBMIT_REDUCE_JOB: SUBMIT,
    P.SUBMIT_REDUCE_JOB_BACKGROUND: SUBMIT,
    P.CAN_DO: REGISTER,
    P.CAN_DO_TIMEOUT: REGISTER,
    P.GET_STATUS: STATUS,
    P.GET_STATUS_UNIQUE: STATUS,
}


@attrs.frozen
class ConnectionBounds:
    """What one connection may hold before it is refused or dropped (0: no bound).

    :ivar max_connections: connections open at once (those still in their TLS handshake
        included); past it a new one is closed as soon as it is accepted.
    :ivar handshake_timeout: seconds a TLS peer may take to finish its handshake.
    :ivar idle_timeout: seconds a peer may stay connected without sending a byte (after its
        first request it may stay idle for ever: a sleeping worker does).
    """

    max_connections: int = 0
    handshake_timeout: float = 0.0
    idle_timeout: float = 0.0


def _identity(transport: Any) -> Identity:
    """The ACL identity of the peer at the other end of ``transport`` (address only)."""
    peer = transport.getPeer()
    if isinstance(peer, (address.IPv4Address, address.IPv6Address)):
        return Identity.from_host(peer.host)
    return Identity(unix=isinstance(peer, address.UNIXAddress))


def _peer_details(transport: Any) -> tuple[bytes, int, bool]:
    """The peer's IP (as ``workers`` prints it), its socket fd, and whether it is local."""
    peer = transport.getPeer() if transport is not None else None
    try:
        fd = int(transport.fileno())
    except Exception:
        fd = -1
    if isinstance(peer, (address.IPv4Address, address.IPv6Address)):
        host = peer.host
        trusted = host == "::1" or host.startswith("127.") or host == "::ffff:127.0.0.1"
        return host.encode("ascii"), fd, trusted
    if isinstance(peer, address.UNIXAddress):
        return b"unix", fd, True
    return b"-", fd, False


def _describe(transport: Any) -> str:
    """The peer's address for a log line: ``host:port``, or the socket path."""
    peer = transport.getPeer()
    if isinstance(peer, address.IPv4Address):
        return f"{peer.host}:{peer.port}"
    if isinstance(peer, address.IPv6Address):
        return f"[{peer.host}]:{peer.port}"
    if isinstance(peer, address.UNIXAddress):
        name: object = peer.name  # (annotated: the compiled build infers None from Twisted)
        return "unix:" + (show(name) if isinstance(name, bytes) else str(name))
    return str(peer)


@implementer(IHandshakeListener)
class ServerProtocol(Protocol):
    """One client, worker or admin connection to the job server."""

    log = Logger()
    #: Set (by :class:`~gearmanpy.server.tls.TLSServerFactory`) while a TLS handshake is due.
    tls_pending = False

    def __init__(
        self,
        core: JobServerCore,
        max_packet_size: int,
        admin: AdminCommands,
        coalescer: TurnCoalescer | None = None,
        limits: OutputLimits | None = None,
        acl: Acl | None = None,
        bounds: ConnectionBounds | None = None,
    ) -> None:
        """
        :param core: the server state all connections share.
        :param max_packet_size: largest packet body accepted from this peer.
        :param admin: the admin command handler.
        :param coalescer: if given, packets for this peer that no connection's input caused
            (store commits, timers) are sent at the end of the reactor turn, in one write.
        :param limits: how much unsent output the peer may make the server hold before it
            is no longer read from, and dropped (:class:`OutputGuard`); None: unbounded.
        :param acl: who may do what; None: anyone may submit, register and ask status.
        :param bounds: the connection's time limits (handshake, idle); None: none.
        """
        self.core = core
        self._acl = acl
        self._bounds = bounds
        #: What this peer may do (None: no ACL, everything but admin; see ``admin.py``).
        self.access: Permissions | None = None
        self._timers: dict[str, IDelayedCall] = {}
        self._coalescer = coalescer
        self._limits = limits
        self._guard: OutputGuard | None = None
        self.admin = admin
        self.decoder = PacketDecoder(max_packet_size=max_packet_size, batched=SUBMITS.keys())
        self.peer: Peer | None = None
        #: The only way out to the peer (made when the connection is).
        self.out: Outbound
        # Handlers in a list indexed by type number: IntEnum members hash through a
        # Python-level __hash__, list indexing does not.
        self._table: list[Callable[[Any], None]] = [self._not_expected] * (max(PacketType) + 1)
        # (difference(), not `-`: frozenset - dict_keys is a set at run time, not the frozenset
        # mypy infers, and the compiled build checks the inferred type.)
        for ptype in HANDLED.difference(SUBMITS):
            self._table[ptype] = getattr(self, "packet_" + ptype.name)

    def connectionMade(self) -> None:
        """Register with the core and turn off Nagle (round trips would stall on it)."""
        set_nodelay(self.transport)
        ip, fd, trusted = _peer_details(self.transport)
        if self._limits is not None:
            self._guard = OutputGuard(
                self._limits, self.core.clock, self._pause, self._resume, self._drop_unread
            )
        self.out = Outbound.for_transport(self.transport, self._coalescer, self._guard)
        self.peer = self.core.connect(self.out, self._close, ip=ip, fd=fd, trusted=trusted)
        # A run of one plain SUBMIT type, (function, unique, payload) per job, goes straight
        # to the core.
        for ptype, (priority, background) in SUBMITS.items():
            self._table[ptype] = partial(self.core.submit_batch, self.peer, priority, background)
        if self._acl is not None:
            self.access = self._acl.for_peer(_identity(self.transport), self._apply_access)
            self.peer.access = self.access
            self._apply_access()
        if self._bounds is not None:
            self._start_timers(self._bounds)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Requeue what the peer was running and detach it from the jobs it waited for."""
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        if self.tls_pending:
            from gearmanpy.server.tls import handshake_failure  # TLS only: needs pyOpenSSL

            why = handshake_failure(reason)
            if why is not None:
                self.log.warn(
                    "TLS handshake with {peer} failed: {why}",
                    peer=_describe(self.transport),
                    why=why,
                )
        if self._guard is not None:
            self._guard.stop()
        if self.access is not None and self._acl is not None:
            self._acl.forget(self.access)  # (and the reference back to this protocol)
        if self.peer is not None:
            self.core.disconnect(self.peer)

    # -- security: permissions, TLS identity, time limits -----------------------------

    def _apply_access(self) -> None:
        """Route each request an ACL may refuse through a check, unless this peer may make
        it on every function (then straight to its handler: no cost per packet)."""
        access = self.access
        assert access is not None and self.peer is not None
        for ptype, (priority, background) in SUBMITS.items():
            direct = partial(self.core.submit_batch, self.peer, priority, background)
            checked = partial(self._submit_checked, direct)
            self._table[ptype] = direct if access.unrestricted(SUBMIT) else checked
        for ptype, permission in CHECKED.items():
            handler = getattr(self, "packet_" + ptype.name)
            if not access.unrestricted(permission):
                handler = partial(self._checked, ptype, permission, handler)
            self._table[ptype] = handler

    def _submit_checked(self, submit: Callable[[Any], None], batch: Sequence[Any]) -> None:
        """A run of plain submissions from a peer that may submit to some functions only:
        the allowed ones go to the core in runs, the others get an ERROR, all in order."""
        access = self.access
        assert access is not None
        run: list[Any] = []
        for job in batch:
            if access.allows(SUBMIT, job[0]):
                run.append(job)
                continue
            if run:
                submit(run)
                run = []
            self._refuse(SUBMIT, job[0])
        if run:
            submit(run)

    def _checked(
        self, ptype: int, permission: str, handler: Callable[[Any], None], args: Sequence[bytes]
    ) -> None:
        """One request from a peer with a restricted ``permission``: handled if granted on
        its function, else refused with an ERROR (the connection stays)."""
        access = self.access
        assert access is not None
        name: bytes | None = args[0]
        if ptype == P.GET_STATUS:
            job = self.core.jobs.get(args[0].split(b"\0", 1)[0])
            if job is None:  # unknown: the reply tells nothing
                handler(args)
                return
            name = job.function.name
        elif ptype == P.GET_STATUS_UNIQUE:
            name = None  # a unique may name a job of any function
        if access.allows(permission, name):
            handler(args)
        elif permission != REGISTER:
            self._refuse(permission, name)
        # A refused CAN_DO is only logged (by ``allows``): CAN_DO has no reply, and workers
        # do not expect one (gear's takes an ERROR it cannot match to a request for a lost
        # connection, and reconnects for ever; gear's own server ignores it too).

    def _refuse(self, permission: str, name: bytes | None) -> None:
        """Answer a refused request with gearmand's ERROR packet, saying why."""
        assert self.access is not None and self.peer is not None
        text = self.access.refusal(permission, name).encode("utf-8", "backslashreplace")
        self.peer.out.send(replies.error(b"PERMISSION_DENIED", text))

    def handshakeCompleted(self) -> None:
        """The TLS handshake is over (the peer's certificate, if any, verified): it is
        known by its certificate's names from now on."""
        self.tls_pending = False
        timer = self._timers.pop("handshake", None)
        if timer is not None and timer.active():
            timer.cancel()
        if self.access is not None:
            from gearmanpy.server.tls import certificate_names  # TLS only: needs pyOpenSSL

            names = certificate_names(self.transport)
            if names:
                self.access.refresh(_identity(self.transport).with_names(names))

    def _start_timers(self, bounds: ConnectionBounds) -> None:
        """Drop the peer if its handshake or its first byte takes too long."""
        clock = self.core.clock
        if self.tls_pending and bounds.handshake_timeout:
            self._timers["handshake"] = clock.callLater(
                bounds.handshake_timeout, self._too_slow, "finish its TLS handshake"
            )
        if bounds.idle_timeout:
            self._timers["idle"] = clock.callLater(
                bounds.idle_timeout, self._too_slow, "send anything"
            )
            # Until the first bytes: reading them cancels the timer, then this goes away.
            self.dataReceived = self._first_data  # type: ignore[method-assign]

    def _first_data(self, data: bytes) -> None:
        """The peer's first bytes: it is no longer idle."""
        del self.dataReceived
        timer = self._timers.pop("idle", None)
        if timer is not None and timer.active():
            timer.cancel()
        self.dataReceived(data)

    def _too_slow(self, what: str) -> None:
        """A time limit passed: drop the peer (what it held is released at once)."""
        self.log.info(
            "dropping {peer}: it did not {what} in time", peer=_describe(self.transport), what=what
        )
        if self.peer is not None:
            self.core.disconnect(self.peer)
        transport: Any = self.transport
        transport.abortConnection()

    def _pause(self) -> None:
        """Stop reading from the peer: it has not read the replies it already caused."""
        transport: Any = self.transport
        if not transport.disconnecting:
            transport.pauseProducing()

    def _resume(self) -> None:
        """Read from the peer again: its replies have drained."""
        transport: Any = self.transport
        if not transport.disconnecting:
            transport.resumeProducing()

    def _drop_unread(self, unsent: int) -> None:
        """Drop a peer that left its replies unread past the hard limit for too long: the
        core lets go of it (its running jobs are requeued) and the connection is reset."""
        peer = self.peer
        assert self._limits is not None and peer is not None
        self.log.warn(
            "dropping {peer} (client id {client_id}): {mib:.1f} MiB of replies unread for "
            "{seconds:g} s",
            peer=_describe(self.transport),
            client_id=show(peer.client_id),
            mib=unsent / 2**20,
            seconds=self._limits.timeout,
        )
        self.decoder.stop()
        self.core.disconnect(peer)
        self.out.abort()

    def _close(self, last: bytes | None = None) -> None:
        """Drop the peer: nothing more is read, the core lets go of it now (its running jobs
        are requeued, nothing more is sent to it), what it is owed is written, then ``last``
        (the ERROR saying why, if any), then close."""
        self.decoder.stop()
        if self.peer is not None:
            self.core.disconnect(self.peer)
        self.out.close(last)

    def dataReceived(self, data: bytes) -> None:
        """Decode what arrived and act on each packet or admin line in order.

        Request packets go straight from the decoder to their handler through the dispatch
        table (a run of plain SUBMITs as one call); admin lines and wrongly-oriented packets
        to :meth:`_other`.
        """
        out = self.out
        out.begin_input()
        try:
            self.decoder.dispatch(data, self._table, self._other)
        except ProtocolError as e:
            self._protocol_error(e)
        except Exception:
            ip = show(self.peer.ip) if self.peer is not None else "-"
            self.log.failure("error handling a request from {ip}", ip=ip)
            self._close()
        finally:
            out.end_input()

    def _other(self, event: Packet | AdminCommand) -> None:
        """An admin line, or a packet with response magic (an error: clients send requests)."""
        if event.__class__ is Packet:
            self._protocol_error(
                ProtocolError("request magic expected"),
                code=b"INVALID_MAGIC",
                text=b"Request magic expected",
            )
        else:
            self.admin.handle(self.peer, event)  # type: ignore[arg-type]

    def _protocol_error(
        self, error: ProtocolError, code: bytes | None = None, text: bytes | None = None
    ) -> None:
        """Send an ERROR packet (or an ERR line for a bad admin line) and drop the peer."""
        if self.peer is None or not self.peer.connected:
            return
        self.log.warn(
            "protocol error from {ip}: {error}",
            ip=show(self.peer.ip),
            error=error,
        )
        message = text if text is not None else str(error).encode("utf-8", "replace")
        if isinstance(error, AdminCommandError):
            self._close(invalid_arguments_line(message))
        else:
            self._close(replies.error(code or error.code, message))

    def _not_expected(self, args: Sequence[bytes]) -> None:
        assert self.peer is not None
        self.peer.out.send(replies.COMMAND_NOT_EXPECTED)

    # -- workers ------------------------------------------------------------------------

    def packet_CAN_DO(self, args: Sequence[bytes]) -> None:
        """Register for a function."""
        self.core.can_do(self.peer, args[0])  # type: ignore[arg-type]

    def packet_CAN_DO_TIMEOUT(self, args: Sequence[bytes]) -> None:
        """Register for a function with a run-time limit per job."""
        self.core.can_do(self.peer, args[0], args[1])  # type: ignore[arg-type]

    def packet_CANT_DO(self, args: Sequence[bytes]) -> None:
        """Unregister a function."""
        self.core.cant_do(self.peer, args[0])  # type: ignore[arg-type]

    def packet_RESET_ABILITIES(self, args: Sequence[bytes]) -> None:
        """Unregister every function."""
        self.core.reset_abilities(self.peer)  # type: ignore[arg-type]

    def packet_PRE_SLEEP(self, args: Sequence[bytes]) -> None:
        """The worker is going to sleep until a NOOP."""
        self.core.pre_sleep(self.peer)  # type: ignore[arg-type]

    def packet_GRAB_JOB(self, args: Sequence[bytes]) -> None:
        """Ask for a job (JOB_ASSIGN)."""
        self.core.grab(self.peer, GRAB_PLAIN)  # type: ignore[arg-type]

    def packet_GRAB_JOB_UNIQ(self, args: Sequence[bytes]) -> None:
        """Ask for a job with its unique (JOB_ASSIGN_UNIQ)."""
        self.core.grab(self.peer, GRAB_UNIQ)  # type: ignore[arg-type]

    def packet_GRAB_JOB_ALL(self, args: Sequence[bytes]) -> None:
        """Ask for a job with unique and reducer (JOB_ASSIGN_ALL or JOB_ASSIGN_UNIQ)."""
        self.core.grab(self.peer, GRAB_ALL)  # type: ignore[arg-type]

    def packet_SET_CLIENT_ID(self, args: Sequence[bytes]) -> None:
        """Name the connection for ``workers`` (cut to 127 bytes, as gearmand does)."""
        self.peer.client_id = args[0][:MAX_CLIENT_ID_SIZE] or b"-"  # type: ignore[union-attr]

    def packet_WORK_STATUS(self, args: Sequence[bytes]) -> None:
        """Progress of a running job."""
        self.core.work_status(self.peer, args[0], args[1], args[2])  # type: ignore[arg-type]

    def packet_WORK_DATA(self, args: Sequence[bytes]) -> None:
        """Partial result of a running job."""
        self.core.work_data(self.peer, _WORK_DATA, args[0], args[1])  # type: ignore[arg-type]

    def packet_WORK_WARNING(self, args: Sequence[bytes]) -> None:
        """Warning from a running job."""
        self.core.work_data(self.peer, _WORK_WARNING, args[0], args[1])  # type: ignore[arg-type]

    def packet_WORK_COMPLETE(self, args: Sequence[bytes]) -> None:
        """A job finished with a result."""
        self.core.work_complete(self.peer, args[0], args[1])  # type: ignore[arg-type]

    def packet_WORK_FAIL(self, args: Sequence[bytes]) -> None:
        """A job failed."""
        self.core.work_fail(self.peer, args[0])  # type: ignore[arg-type]

    def packet_WORK_EXCEPTION(self, args: Sequence[bytes]) -> None:
        """A job raised an exception."""
        self.core.work_exception(self.peer, args[0], args[1])  # type: ignore[arg-type]

    # -- clients --------------------------------------------------------------------------

    def packet_SUBMIT_JOB_EPOCH(self, args: Sequence[bytes]) -> None:
        """Background job held until a Unix time (strtoll rules: junk means now)."""
        name, unique, epoch, data = args
        when = parse_c_int(epoch)
        if when is None:
            assert self.peer is not None
            self.peer.out.send(replies.EPOCH_OUT_OF_RANGE)
            return
        self.core.submit(self.peer, name, unique, data, NORMAL, True, when=max(when, 0))  # type: ignore[arg-type]

    def packet_SUBMIT_REDUCE_JOB(self, args: Sequence[bytes]) -> None:
        """Foreground reduce job (the aggregator argument is ignored, as in gearmand)."""
        name, unique, reducer, _aggregator, data = args
        self.core.submit(self.peer, name, unique, data, NORMAL, False, reducer=reducer)  # type: ignore[arg-type]

    def packet_SUBMIT_REDUCE_JOB_BACKGROUND(self, args: Sequence[bytes]) -> None:
        """Background reduce job."""
        name, unique, reducer, _aggregator, data = args
        self.core.submit(self.peer, name, unique, data, NORMAL, True, reducer=reducer)  # type: ignore[arg-type]

    def packet_GET_STATUS(self, args: Sequence[bytes]) -> None:
        """Status of a job by handle."""
        self.core.get_status(self.peer, args[0])  # type: ignore[arg-type]

    def packet_GET_STATUS_UNIQUE(self, args: Sequence[bytes]) -> None:
        """Status of a job by unique."""
        self.core.get_status_unique(self.peer, args[0])  # type: ignore[arg-type]

    def packet_ECHO_REQ(self, args: Sequence[bytes]) -> None:
        """Echo the body back unchanged."""
        self.peer.out.send(replies.echo_res(args))  # type: ignore[union-attr]

    def packet_OPTION_REQ(self, args: Sequence[bytes]) -> None:
        """``exceptions`` (case-insensitive), and gearmanpy's ``attempts`` (an OPTION_RES
        ``attempt=N`` before each JOB_ASSIGN); anything else is UNKNOWN_OPTION."""
        assert self.peer is not None
        option = args[0].lower()
        if option == b"exceptions" or option == b"attempts":
            if option == b"exceptions":
                self.peer.exceptions = True
            else:
                self.peer.attempts = True
            self.peer.out.send(replies.option_res(args))
        else:
            self.peer.out.send(replies.UNKNOWN_OPTION)


class ServerFactory(Factory):
    """Builds a :class:`ServerProtocol` per connection, all sharing one core."""

    log = Logger()

    def __init__(
        self,
        core: JobServerCore,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        admin: AdminCommands | None = None,
        coalesce_writes: bool = False,
        output_limits: OutputLimits | None = None,
        release_memory: bool = False,
        acl: Acl | None = None,
        bounds: ConnectionBounds | None = None,
    ) -> None:
        """
        :param core: the shared server state.
        :param max_packet_size: largest packet body accepted from a peer.
        :param admin: the admin command handler; one over ``core`` if not given.
        :param coalesce_writes: send packets that no connection's input caused (store
            commits, timers) once per connection per reactor turn (see
            :class:`~gearmanpy.server.outbound.TurnCoalescer`) instead of one by one;
            ``twistd gearman`` turns it on.
        :param output_limits: how much unsent output one peer may make the server hold
            (see :class:`~gearmanpy.server.outbound.OutputLimits`); by default a
            ``max_packet_size`` packet plus 64 KiB before its reading pauses, four times
            that for 30 seconds before it is dropped.
        :param release_memory: while listening, give memory back to the system after a
            large queue drained (:class:`~gearmanpy.server.memory.MemoryReleaser`; it acts
            process-wide, so ``twistd gearman`` turns it on, the library does not).
        :param acl: who may submit, register and ask status on which functions (None:
            anyone, on every function).
        :param bounds: connections at once and per-connection time limits (None: none).
        """
        self.acl = acl
        self.bounds = bounds
        self._refusing = False
        self.core = core
        self.max_packet_size = max_packet_size
        self.output_limits = output_limits or OutputLimits.for_packet_size(max_packet_size)
        self.admin = admin if admin is not None else AdminCommands(core)
        self.coalescer = TurnCoalescer(core.clock) if coalesce_writes else None
        self.releaser = MemoryReleaser(core.clock, core.tables) if release_memory else None

    def startFactory(self) -> None:
        """Listening: watch for drained queues."""
        if self.releaser is not None:
            self.releaser.start()

    def stopFactory(self) -> None:
        """No longer listening anywhere."""
        if self.releaser is not None:
            self.releaser.stop()

    def admits(self) -> bool:
        """Whether a new connection may open now: not past ``bounds.max_connections`` (the
        listeners ask before building its protocol, and close it at once if not)."""
        bounds = self.bounds
        if bounds is None or not bounds.max_connections:
            return True
        if len(self.core.peers) < bounds.max_connections:
            self._refusing = False
            return True
        if not self._refusing:
            self.log.warn(
                "refusing new connections: {n} open (--max-connections)", n=len(self.core.peers)
            )
        self._refusing = True
        return False

    def buildProtocol(self, addr: Any) -> ServerProtocol:
        """A protocol for one new connection."""
        p = ServerProtocol(
            self.core,
            self.max_packet_size,
            self.admin,
            self.coalescer,
            self.output_limits,
            self.acl,
            self.bounds,
        )
        p.factory = self
        return p
