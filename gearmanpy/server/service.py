# -*- test-case-name: tests.test_tap -*-
"""The server's lifecycle: bind every endpoint, open and replay the store, then accept
connections; close in reverse order. A start that fails says why in one line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    FirstError,
    fail,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IListeningPort,
    ILoggingContext,
    IProtocolFactory,
    IPushProducer,
)
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from gearmanpy._compiled import build_name
from gearmanpy._version import __version__
from gearmanpy.errors import GearmanError, StoreError
from gearmanpy.server.acl import Acl
from gearmanpy.server.core import JobServerCore
from gearmanpy.server.handles import clock_boot
from gearmanpy.server.protocol import ServerFactory
from gearmanpy.server.recurring import RecurringJobs

#: Server endpoint types ``--ssl`` puts TLS on.
_TCP = ("tcp:", "tcp6:")


def tls_listener(description: str, everywhere: bool) -> tuple[str, bool]:
    """The endpoint to listen on for ``--listen description``, and whether it speaks TLS:
    ``tls:REST`` is ``tcp:REST`` with TLS; with ``everywhere`` (``--ssl``), so is every
    ``tcp:`` and ``tcp6:`` listener. Others (``unix:``, Twisted's ``ssl:``) are as given."""
    if description.startswith("tls:"):
        return "tcp:" + description[len("tls:") :], True
    return description, everywhere and description.startswith(_TCP)


class StartupError(GearmanError):
    """The server could not start; the message says why in one line."""


def one_line(error: BaseException | None) -> str:
    """``error``'s message on one line (a database's may span several)."""
    return " ".join(str(error).split()) or type(error).__name__


def _first_error(failure: Failure) -> Failure:
    """The failure inside a ``gatherResults`` FirstError."""
    if failure.check(FirstError):
        return failure.value.subFailure  # type: ignore[union-attr,no-any-return]
    return failure


def _listen_reason(error: BaseException | None) -> str:
    """Why an endpoint could not listen, as the system says it: ``address already in use``."""
    if isinstance(error, CannotListenError) and isinstance(error.socketError, OSError):
        error = error.socketError
    if isinstance(error, OSError) and error.strerror:
        return error.strerror[:1].lower() + error.strerror[1:]
    return one_line(error)


@implementer(IProtocolFactory, ILoggingContext)
class _Gate:
    """The factory every endpoint listens with: it hands connections to the server's factory
    once the service is ready, and refuses them before (only a port that cannot pause accepts
    any then: the others wait, unaccepted, in the kernel's backlog)."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.open = False
        #: The server factory's ``--max-connections`` check (the HTTP site has none).
        self._admits: Callable[[], bool] | None = getattr(factory, "admits", None)

    def buildProtocol(self, addr: Any) -> Protocol | None:
        """The server's protocol once open; before, or past ``--max-connections``, None
        (the connection is closed)."""
        if self.open and (self._admits is None or self._admits()):
            return self.factory.buildProtocol(addr)
        return None

    def doStart(self) -> None:
        """A port starts listening with the server's factory."""
        self.factory.doStart()

    def doStop(self) -> None:
        """A port stops listening with the server's factory."""
        self.factory.doStop()

    def logPrefix(self) -> str:
        """The name ports log their factory by."""
        return self.factory.__class__.__name__


class GearmanServerService(Service):
    """Owns a job server: its listening endpoints, its store and its core.

    Starting binds every endpoint (in ``privilegedStartService``, so a port below 1024 can be
    bound before twistd drops root), then opens the store, numbers this boot and replays the
    stored jobs into the core, and only then accepts connections: a peer that connects
    earlier waits in the backlog and never sees a half-restored queue. If any step fails,
    nothing is served: the reason is logged as one line, everything opened is closed, and the
    reactor stops.
    """

    log = Logger()

    def __init__(
        self,
        core: JobServerCore,
        factory: ServerFactory,
        listen: list[str],
        reactor: Any,
        *,
        queue: str = "the store",
        on_failure: Callable[[str], None] | None = None,
        raise_early: bool = False,
        recurring: RecurringJobs | None = None,
        http: list[tuple[str, IProtocolFactory]] | None = None,
        tls: Any = None,
        tls_everywhere: bool = False,
        acl: Acl | None = None,
    ) -> None:
        """
        :param core: the server state; its ``store`` (if any) is opened, replayed and closed.
        :param factory: builds the protocol for each accepted connection.
        :param listen: server endpoint strings (``tcp:4730``, ``unix:/run/g.sock``...).
        :param reactor: the reactor to listen with and stop on ``shutdown``.
        :param queue: the store's name in messages (``--queue`` without its password).
        :param on_failure: called with the reason when start-up fails, before the reactor is
            stopped (``twistd gearman`` makes the process exit non-zero).
        :param raise_early: raise :class:`StartupError` out of ``privilegedStartService`` or
            ``startService`` when start-up fails within them, instead of stopping the reactor
            (twistd in daemon mode reports it to the waiting parent, which exits non-zero).
        :param recurring: the recurring jobs, started once the store is replayed.
        :param http: more endpoints, each with its own factory (``--http``'s site): bound,
            opened and closed with the others.
        :param tls: the TLS context ``tls:`` listeners use (and, with ``tls_everywhere``
            (``--ssl``), every ``tcp:``/``tcp6:`` one): a ``gearmanpy.server.tls.ServerTLS``
            (that module needs pyOpenSSL, so it is imported only when TLS is used).
        :param acl: the permissions :meth:`reload` reads again (with ``tls``'s files).
        """
        super().__init__()
        self.tls = tls
        self.tls_everywhere = tls_everywhere
        self.acl = acl
        self.core = core
        self.factory = factory
        self.listen = listen
        self.reactor = reactor
        self.queue = queue
        self.on_failure = on_failure
        self.raise_early = raise_early
        self.recurring = recurring
        self._gate = _Gate(factory)
        self.http = list(http or [])
        self._http_gates = [_Gate(f) for _, f in self.http]
        self._ports: list[IListeningPort] = []
        #: Fires when ``startService`` has been called (the store opens only after it).
        self._resumed: Deferred[None] | None = None
        #: Inside privilegedStartService or startService (a failure there may be raised).
        self._in_start = False
        self._stopping = False
        #: None while starting, then True, or the Failure that stopped start-up.
        self._outcome: bool | Failure | None = None
        self._waiters: list[Deferred[None]] = []
        core.on_shutdown = self._shutdown_requested

    def privilegedStartService(self) -> None:
        """Bind every endpoint (before twistd gives up root)."""
        super().privilegedStartService()
        self._in_start = True
        try:
            self._begin()
            self._raise_if_failed()
        finally:
            self._in_start = False

    def startService(self) -> None:
        """Open and replay the store, then accept connections."""
        super().startService()
        self._in_start = True
        try:
            self._begin()  # for a caller that did not call privilegedStartService
            assert self._resumed is not None
            if not self._resumed.called:
                self._resumed.callback(None)
            self._raise_if_failed()
        finally:
            self._in_start = False

    def _begin(self) -> None:
        """Build the start-up chain once: bind, (wait for startService,) restore, accept."""
        if self._resumed is not None:
            return
        self._resumed = Deferred()
        resumed = self._resumed
        d = self._bind()
        d.addCallback(lambda _: resumed)
        d.addCallback(lambda _: self._restore())
        d.addCallback(lambda _: self._accept())
        d.addCallbacks(self._started, self._failed)

    def _raise_if_failed(self) -> None:
        """In ``raise_early`` mode, raise the failure start-up has already met."""
        if self.raise_early and isinstance(self._outcome, Failure):
            raise StartupError(self._reason(self._outcome))

    # -- the steps --------------------------------------------------------------------

    def _bind(self) -> Deferred[Any]:
        """Listen on every endpoint, each port paused until the service is ready."""

        def bind(description: str, gate: _Gate, everywhere: bool) -> Deferred[None]:
            try:
                endpoint, secure = tls_listener(description, everywhere)
                factory: Any = gate
                if secure:
                    if self.tls is None:
                        raise StartupError("a tls: listener needs --ssl-certificate and --ssl-key")
                    from gearmanpy.server.tls import TLSServerFactory

                    factory = TLSServerFactory(self.tls, gate, self.reactor)
                d = serverFromString(self.reactor, endpoint).listen(factory)
            except Exception as e:
                d = fail(e)

            def cannot(failure: Failure) -> None:
                raise StartupError(
                    f"cannot listen on {description}: {_listen_reason(failure.value)}"
                )

            return d.addCallbacks(self._bound, cannot)

        # --ssl makes the Gearman listeners TLS; an HTTP one is TLS only if it says tls:.
        binding = [bind(d, self._gate, self.tls_everywhere) for d in self.listen]
        binding += [
            bind(d, g, False) for (d, _), g in zip(self.http, self._http_gates, strict=True)
        ]
        bound: Deferred[Any] = gatherResults(binding, consumeErrors=True)
        return bound.addErrback(_first_error)

    def _bound(self, port: IListeningPort) -> None:
        """Keep a port that now listens; it accepts nothing until the service is ready."""
        if self._stopping or isinstance(self._outcome, Failure):
            port.stopListening()  # start-up already failed (or stopped) meanwhile
            return
        if IPushProducer.providedBy(port):
            port.pauseProducing()
        self._ports.append(port)

    def _restore(self) -> Deferred[Any]:
        """Open the store, number this boot and replay the store into the core; without a
        store, number the boot after the clock."""
        store = self.core.store
        if store is None:
            return self._boot_from_clock()

        def cannot(failure: Failure) -> None:
            if failure.check(StoreError):  # says which store, and why
                raise StartupError(one_line(failure.value))
            raise StartupError(f"cannot open the queue {self.queue}: {one_line(failure.value)}")

        d: Deferred[Any] = maybeDeferred(store.open)
        d.addCallback(lambda _: store.next_boot())
        d.addCallback(self.core.set_boot)
        d.addCallback(lambda _: store.replay())
        d.addCallback(self._replayed)
        d.addCallback(lambda _: store.dead())
        d.addCallback(self._replayed_dead)
        d.addCallback(lambda _: store.results())
        d.addCallbacks(self.core.replay_results, cannot)
        return d

    def _boot_from_clock(self) -> Deferred[None]:
        """With no store to count boots, number this one after the wall clock, once the tenth of
        a second it names has begun: a later start then gets a larger number."""
        boot = clock_boot(self.reactor.seconds()) + 1
        wait = max(0.0, (boot + 0.01) / 10 - self.reactor.seconds())  # (float rounding)
        return deferLater(self.reactor, wait, self.core.set_boot, boot)

    def _replayed(self, jobs: list[Any]) -> None:
        self.core.replay(jobs)
        self.log.info("replayed {n} background jobs from the store", n=len(jobs))

    def _replayed_dead(self, dead: list[Any]) -> None:
        self.core.replay_dead(dead)
        if dead:
            self.log.info("{n} jobs in the dead set", n=len(self.core.dead))

    def _accept(self) -> None:
        """Serve every connection from now on, those waiting in the backlog first."""
        if self._stopping:
            raise StartupError("stopped while starting")
        self._gate.open = True
        if self.recurring is not None:
            self.recurring.start()
        for gate in self._http_gates:
            gate.open = True
        for port in self._ports:
            if IPushProducer.providedBy(port):
                port.resumeProducing()
        # Which build runs (gearmanpy/_compiled.py): a speed figure means little without it.
        self.log.info("gearmanpy {version}, {build} build", version=__version__, build=build_name())
        for description in self.listen:
            self.log.info("gearmanpy listening on {endpoint}", endpoint=description)
        for description, _ in self.http:
            self.log.info("dashboard and /metrics on {endpoint}", endpoint=description)

    # -- the outcome ------------------------------------------------------------------

    def _started(self, _: object) -> None:
        self._outcome = True
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            w.callback(None)

    def _reason(self, failure: Failure) -> str:
        """What went wrong, in one line."""
        if failure.check(StartupError, StoreError):
            return one_line(failure.value)
        return f"{type(failure.value).__name__}: {one_line(failure.value)}"

    def _failed(self, failure: Failure) -> None:
        """Log why in one line, close what listens, and stop (or let the caller raise)."""
        self._outcome = failure
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            w.errback(failure)
        if self._stopping:
            return  # stopped on purpose while starting: nothing to report
        reason = self._reason(failure)
        self.log.critical("gearmanpy: could not start: {reason}", reason=reason)
        if not failure.check(StartupError, StoreError):
            self.log.failure("start-up failed", failure, LogLevel.debug)
        closed = self._stop_listening()
        if self._in_start and self.raise_early:
            return  # raised to the caller
        if self.on_failure is not None:
            self.on_failure(reason)
        closed.addCallback(lambda _: self.reactor.callWhenRunning(self.reactor.stop))

    def whenReady(self) -> Deferred[None]:
        """Fire once every endpoint accepts connections (or fail as start-up did)."""
        if self._outcome is True:
            return succeed(None)
        if isinstance(self._outcome, Failure):
            return fail(self._outcome)
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        return d

    # -- stopping ---------------------------------------------------------------------

    def _stop_listening(self) -> Deferred[Any]:
        """Close every listening port (once each)."""
        ports, self._ports = self._ports, []
        self._gate.open = False
        for gate in self._http_gates:
            gate.open = False
        return DeferredList([maybeDeferred(p.stopListening) for p in ports])

    def stopService(self) -> Deferred[None]:
        """Stop listening, cancel timers, then close the store."""
        super().stopService()
        self._stopping = True
        d = self._stop_listening()

        def close(_: object) -> Deferred[None] | None:
            self.core.stop_timers()
            if self.recurring is not None:
                self.recurring.stop()
            if self.core.store is not None:
                return self.core.store.close()
            return None

        d.addBoth(close)
        return d  # type: ignore[return-value]

    def reload(self) -> None:
        """Read the permissions file and the TLS files again (``twistd gearman`` does on
        SIGHUP). Open connections stay; what cannot be read is logged and left as it was."""
        steps: list[tuple[str, Callable[[], None]]] = []
        if self.acl is not None:
            steps.append(("permissions", self.acl.reload))
        if self.tls is not None:
            steps.append(("TLS certificates", self.tls.reload))
        for what, step in steps:
            try:
                step()
            except ValueError as e:  # AclError, TLSConfigError: the message says why
                self.log.error("reload: {what} kept as they were: {reason}", what=what, reason=e)
            else:
                self.log.info("reloaded the {what}", what=what)

    def _shutdown_requested(self, graceful: bool) -> None:
        """Stop at once, or (graceful) stop listening and stop once no job is left."""
        if not graceful:
            self.log.info("shutting down on admin request")
            self.reactor.stop()
            return
        self.log.info("graceful shutdown: no new connections; stopping when jobs are done")
        d = self._stop_listening()
        d.addCallback(lambda _: self.core.when_drained())
        d.addCallback(lambda _: self.reactor.stop())


class ReloadOnHangup(Service):
    """SIGHUP re-reads the permissions file and the TLS files (``server.reload``), without
    dropping a connection; the handler that was there before comes back when stopped."""

    def __init__(self, server: GearmanServerService, reactor: Any) -> None:
        self.server = server
        self.reactor = reactor
        self._previous: Any = None

    def startService(self) -> None:
        """Install the handler (the reload itself runs in the reactor thread)."""
        import signal

        super().startService()
        self._previous = signal.signal(signal.SIGHUP, self._hangup)

    def _hangup(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.server.reload)

    def stopService(self) -> None:
        """Put the previous handler back."""
        import signal

        super().stopService()
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None
