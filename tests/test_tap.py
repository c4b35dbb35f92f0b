"""Tests for gearmanpy.tap, the twistd plugin and the server service."""

from __future__ import annotations

from twisted.application.service import IServiceMaker
from twisted.internet.defer import Deferred, fail
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gearmanpy.errors import StoreError
from gearmanpy.server.admin import status_rows
from gearmanpy.server.core import JobServerCore
from gearmanpy.server.outbound import Outbound, OutputLimits
from gearmanpy.server.protocol import ServerFactory
from gearmanpy.server.service import GearmanServerService
from gearmanpy.store.interface import Priority, StoredJob
from gearmanpy.store.memory import MemoryJobStore
from gearmanpy.tap import DEFAULT_QUEUE, Options, _makeService


class OptionsTests(SynchronousTestCase):
    """Parsing of ``twistd gearman`` options."""

    def parse(self, *argv: str) -> Options:
        o = Options()
        o.parseOptions(list(argv))
        return o

    def test_defaults(self) -> None:
        """No options: listen on tcp:4730, durable SQLite queue in the working directory."""
        o = self.parse()
        self.assertEqual(o["listen"], ["tcp:4730"])
        self.assertEqual(o["queue"], DEFAULT_QUEUE)
        self.assertIsNone(o["job-retries"])

    def test_listen_repeatable_and_port(self) -> None:
        """--listen repeats and --port adds a tcp endpoint."""
        o = self.parse("--listen", "unix:/tmp/g.sock", "--listen", "tcp:1", "--port", "4731")
        self.assertEqual(o["listen"], ["unix:/tmp/g.sock", "tcp:1", "tcp:4731"])

    def test_numbers_validated(self) -> None:
        """Negative or non-numeric values are usage errors."""
        for argv in (["--job-retries", "-1"], ["--worker-wakeup", "x"], ["--port", "nope"]):
            self.assertRaises(UsageError, self.parse, *argv)

    def test_bad_queue_url(self) -> None:
        """An unknown --queue scheme is a usage error when the service is built."""
        o = self.parse("--queue", "carrier-pigeon://x")
        self.assertRaises(UsageError, _makeService, o, MemoryReactorClock())

    def test_output_limits(self) -> None:
        """--output-* reach the server factory, derived from --max-packet-size by default;
        nonsense is a usage error."""
        reactor = MemoryReactorClock()
        limits = _makeService(self.parse("--queue", "memory"), reactor).factory.output_limits
        self.assertEqual(limits, OutputLimits())
        o = self.parse("--queue", "memory", "--max-packet-size", "1000", "--output-timeout", "5")
        limits = _makeService(o, reactor).factory.output_limits
        self.assertEqual(limits, OutputLimits(1000 + 65536, 4 * (1000 + 65536), 5.0))
        argv = ["--queue", "memory", "--output-soft-limit", "10", "--output-hard-limit", "20"]
        self.assertEqual(_makeService(self.parse(*argv), reactor).factory.output_limits.hard, 20)
        self.assertRaises(UsageError, self.parse, "--output-soft-limit", "ten")
        for bad in (["--output-soft-limit", "0"], ["--output-hard-limit", "1"]):
            o = self.parse("--queue", "memory", *bad)
            self.assertRaises(UsageError, _makeService, o, reactor)

    def test_make_service_memory(self) -> None:
        """The options reach the core; nothing listens until the service starts."""
        reactor = MemoryReactorClock()
        o = self.parse(
            "--queue",
            "memory",
            "--job-retries",
            "0",
            "--job-handle-prefix",
            "P",
            "--round-robin",
            "--exceptions",
            "-w",
            "2",
            "--listen",
            "tcp:0",
        )
        svc = _makeService(o, reactor)
        core = svc.core
        self.assertEqual(
            (
                core.job_retries,
                core.handle_prefix,
                core.round_robin,
                core.exceptions,
                core.worker_wakeup,
            ),
            (0, b"P", True, True, 2),
        )
        self.assertIsNone(core.store)
        self.assertEqual(reactor.tcpServers, [])


class PluginTests(SynchronousTestCase):
    """The twistd plugin is found and well-formed."""

    def test_plugin_found(self) -> None:
        """getPlugins finds a service maker with tapname gearman."""
        makers = [p for p in getPlugins(IServiceMaker) if p.tapname == "gearman"]
        self.assertEqual(len(makers), 1)
        verifyObject(IServiceMaker, makers[0])
        self.assertIsInstance(makers[0].options(), Options)


class ServiceTests(SynchronousTestCase):
    """GearmanServerService start-up and shut-down order."""

    def test_replay_before_listening(self) -> None:
        """Stored jobs are in the core before the first endpoint listens; close on stop."""
        reactor = MemoryReactorClock()
        seen: list[int] = []

        class WatchedStore(MemoryJobStore):
            def replay(self) -> Deferred[list[StoredJob]]:
                seen.append(len(reactor.tcpServers))
                return super().replay()

        store = WatchedStore()
        store.add(StoredJob("k", b"f", b"u", Priority.HIGH, b"d"))
        core = JobServerCore(clock=reactor, store=store)
        svc = GearmanServerService(core, ServerFactory(core), ["tcp:4730"], reactor)
        svc.startService()
        self.successResultOf(svc.whenReady())
        self.assertEqual(seen, [0])
        self.assertEqual(len(reactor.tcpServers), 1)
        self.assertEqual(status_rows(core), [(b"f", 1, 0, 0)])
        self.successResultOf(svc.stopService())
        self.assertTrue(store.closed)

    def test_store_open_failure_stops(self) -> None:
        """If the store cannot be opened nothing listens and the reactor stops."""
        reactor = MemoryReactorClock()
        reactor.running = True

        class BrokenStore(MemoryJobStore):
            def open(self) -> Deferred[None]:
                return fail(StoreError("no such database"))

        store = BrokenStore()
        core = JobServerCore(clock=reactor, store=store)
        svc = GearmanServerService(core, ServerFactory(core), ["tcp:4730"], reactor)
        ready = svc.whenReady()
        svc.startService()
        self.failureResultOf(ready, StoreError)
        self.assertEqual(reactor.tcpServers, [])
        self.assertTrue(reactor.hasStopped)
        self.flushLoggedErrors(StoreError)

    def test_graceful_shutdown_waits_for_jobs(self) -> None:
        """shutdown graceful stops listening, then stops the reactor once jobs are done."""
        reactor = MemoryReactorClock()
        reactor.running = True
        core = JobServerCore(clock=reactor)
        svc = GearmanServerService(core, ServerFactory(core), ["tcp:4730"], reactor)
        svc.startService()
        peer = core.connect(Outbound(lambda b: None), lambda: None)
        core.submit(peer, b"f", b"", b"x", background=True)
        core.shutdown(True)
        self.assertFalse(reactor.hasStopped)
        handle = next(iter(core.jobs))
        core.cancel(handle)
        w = core.connect(Outbound(lambda b: None), lambda: None)
        core.can_do(w, b"f")
        core.grab(w)
        self.assertTrue(reactor.hasStopped)
