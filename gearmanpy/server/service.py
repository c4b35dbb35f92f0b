# -*- test-case-name: tests.test_tap -*-
"""The server's lifecycle: open the store, replay it, then listen; close in reverse order."""

from __future__ import annotations

from typing import Any

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from gearmanpy.server.core import JobServerCore
from gearmanpy.server.handles import clock_boot
from gearmanpy.server.protocol import ServerFactory


class GearmanServerService(MultiService):
    """Owns a job server: its store, its core and its listening endpoints.

    Listeners are added only after the store has been replayed into the core, so no peer
    ever sees a half-restored queue.
    """

    log = Logger()

    def __init__(
        self,
        core: JobServerCore,
        factory: ServerFactory,
        listen: list[str],
        reactor: Any,
    ) -> None:
        """
        :param core: the server state; its ``store`` (if any) is opened, replayed and closed.
        :param factory: builds the protocol for each accepted connection.
        :param listen: server endpoint strings (``tcp:4730``, ``unix:/run/g.sock``...).
        :param reactor: the reactor to listen with and stop on ``shutdown``.
        """
        super().__init__()
        self.core = core
        self.factory = factory
        self.listen = listen
        self.reactor = reactor
        #: None while starting, then True, or the Failure that stopped start-up.
        self._outcome: bool | Failure | None = None
        self._waiters: list[Deferred[None]] = []
        core.on_shutdown = self._shutdown_requested

    def startService(self) -> None:
        """Open and replay the store, then start listening."""
        super().startService()
        d: Deferred[Any] = succeed(None)
        store = self.core.store
        if store is not None:
            d.addCallback(lambda _: store.open())
            d.addCallback(lambda _: store.next_boot())
            d.addCallback(self.core.set_boot)
            d.addCallback(lambda _: store.replay())
            d.addCallback(self._replayed)
        else:
            d.addCallback(lambda _: self._boot_from_clock())
        d.addCallback(lambda _: self._start_listening())
        d.addCallbacks(self._started, self._failed)

    def _boot_from_clock(self) -> Deferred[None]:
        """With no store to count boots, number this one after the wall clock, once the tenth of
        a second it names has begun: a later start then gets a larger number."""
        boot = clock_boot(self.reactor.seconds()) + 1
        wait = max(0.0, (boot + 0.01) / 10 - self.reactor.seconds())  # (float rounding)
        return deferLater(self.reactor, wait, self.core.set_boot, boot)

    def _replayed(self, jobs: list[Any]) -> None:
        self.core.replay(jobs)
        self.log.info("replayed {n} background jobs from the store", n=len(jobs))

    def _start_listening(self) -> None:
        for description in self.listen:
            svc = strports.service(description, self.factory, reactor=self.reactor)
            svc._raiseSynchronously = True  # a port that cannot be bound stops start-up
            svc.setServiceParent(self)  # the only children: every child is a listener
            self.log.info("gearmanpy listening on {endpoint}", endpoint=description)

    def _started(self, _: object) -> None:
        self._outcome = True
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            w.callback(None)

    def _failed(self, failure: Failure) -> None:
        self.log.failure("gearmanpy could not start", failure)
        self._outcome = failure
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            w.errback(failure)
        if self.reactor.running:
            self.reactor.stop()

    def whenReady(self) -> Deferred[None]:
        """Fire once the store is replayed and every endpoint listens (or fail as start-up did)."""
        if self._outcome is True:
            return succeed(None)
        if isinstance(self._outcome, Failure):
            return fail(self._outcome)
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        return d

    def stopService(self) -> Deferred[None]:
        """Stop listening, cancel timers, then close the store."""
        d = maybeDeferred(super().stopService)

        def close(_: object) -> Deferred[None] | None:
            self.core.stop_timers()
            if self.core.store is not None:
                return self.core.store.close()
            return None

        d.addBoth(close)
        return d  # type: ignore[return-value]

    def _shutdown_requested(self, graceful: bool) -> None:
        """Stop at once, or (graceful) stop listening and stop once no job is left."""
        if not graceful:
            self.log.info("shutting down on admin request")
            self.reactor.stop()
            return
        self.log.info("graceful shutdown: no new connections; stopping when jobs are done")
        stops = [maybeDeferred(svc.stopService) for svc in self if svc.running]
        d = DeferredList(stops)
        d.addCallback(lambda _: self.core.when_drained())
        d.addCallback(lambda _: self.reactor.stop())
