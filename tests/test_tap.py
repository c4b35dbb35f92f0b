"""Tests for gearmanpy.tap, the twistd plugin and the server service (in-process; the real
``twistd`` runs are in tests/test_startup.py)."""

from __future__ import annotations

import errno
import io
import socket
from collections.abc import Generator
from contextlib import redirect_stdout
from typing import Any, cast

from twisted.application.service import IServiceMaker
from twisted.internet import reactor as global_reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, inlineCallbacks
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, Logger, LogLevel, LogPublisher, capturedLogs
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gearmanpy._version import __version__
from gearmanpy.errors import StoreError
from gearmanpy.server.admin import AdminCommands, Verbosity, status_rows
from gearmanpy.server.core import JobServerCore
from gearmanpy.server.handles import MAX_PREFIX_SIZE
from gearmanpy.server.outbound import Outbound, OutputLimits
from gearmanpy.server.protocol import ServerFactory
from gearmanpy.server.service import GearmanServerService, StartupError
from gearmanpy.store.interface import Priority, StoredJob
from gearmanpy.store.memory import MemoryJobStore
from gearmanpy.tap import DEFAULT_QUEUE, LogFilter, Options, _makeService
from tests.procs import free_port
from tests.test_server_protocol import Conn


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
        for argv in (
            ["--job-retries", "-1"],
            ["--worker-wakeup", "x"],
            ["--port", "nope"],
            ["--port", "65536"],
        ):
            self.assertRaises(UsageError, self.parse, *argv)

    def one_line_usage_error(self, *argv: str) -> str:
        """The message of the usage error ``argv`` gives, checked to be one line."""
        with self.assertRaises(UsageError) as e:
            self.parse(*argv)
        message = str(e.exception)
        self.assertNotIn("\n", message)
        return message

    def test_bad_queue_url(self) -> None:
        """A --queue URL of an unknown kind or malformed is a one-line usage error while the
        options are parsed (twistd prints usage errors; it prints a traceback for an error
        raised when the service is built)."""
        for url in (
            "carrier-pigeon://x",
            "mysql://x",
            "sqlite:",
            "sqlite://x",
            "postgresql:x",
            "postgresql://[bad",
            "postgresql://h/db?nosuchparameter=1",
            "postgresql://h:notaport/db",
            "postgres://h:99999/db",
            "redis://host:notaport",
            "redis://h/x",
            "redis://",
        ):
            self.assertTrue(self.one_line_usage_error("--queue", url).startswith("--queue: "))
        self.parse("--queue", "postgresql://u:p@h:5433,h2:5434/db")  # libpq's multi-host form

    def test_bad_endpoint(self) -> None:
        """Every --listen endpoint is parsed with the options: a bad one is a usage error
        naming it, before anything is bound or created."""
        for endpoint in (
            "bogus:1",
            "tcp:abc",
            "tcp:4730:nosuch=1",
            "ssl:4731:privateKey=/no/key.pem",
        ):
            message = self.one_line_usage_error("--listen", endpoint)
            self.assertTrue(message.startswith(f"--listen {endpoint!r}: "), message)
        self.assertIn("Unknown endpoint type", self.one_line_usage_error("--listen", "bogus:1"))

    def test_version(self) -> None:
        """--version prints gearmanpy's version and exits 0."""
        out = io.StringIO()
        with redirect_stdout(out), self.assertRaises(SystemExit) as e:
            self.parse("--version")
        self.assertEqual(e.exception.code, 0)
        self.assertEqual(out.getvalue(), f"gearmanpy {__version__}\n")

    def test_log_level(self) -> None:
        """--log-level takes Twisted's and gearmand's names in any case; the default is INFO."""
        self.assertEqual(self.parse()["verbosity"].name, "INFO")
        for given, name in (
            ("debug", "DEBUG"),
            ("Warn", "WARNING"),
            ("warning", "WARNING"),
            ("critical", "CRITICAL"),
            ("FATAL", "FATAL"),
            ("alert", "ALERT"),
            ("notice", "NOTICE"),
            ("ERROR", "ERROR"),
        ):
            self.assertEqual(self.parse("--log-level", given)["verbosity"].name, name)
        self.assertIn("--log-level", self.one_line_usage_error("--log-level", "loud"))

    def test_handle_prefix(self) -> None:
        """--job-handle-prefix's help shows the handle format; its limit is MAX_PREFIX_SIZE."""
        help_text = str(Options())
        self.assertIn("PREFIX:<boot>-<n>", help_text)
        self.parse("--job-handle-prefix", "p" * MAX_PREFIX_SIZE)
        message = self.one_line_usage_error("--job-handle-prefix", "p" * (MAX_PREFIX_SIZE + 1))
        self.assertIn(f"at most {MAX_PREFIX_SIZE} ", message)

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
            # Refused with the options (a one-line usage error), not when the service is built.
            self.assertRaises(UsageError, self.parse, "--queue", "memory", *bad)

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


#: The address a test connection comes from.
PEER = IPv4Address("TCP", "127.0.0.1", 40000)


@implementer(IPushProducer)
class PausablePort:
    """A listening port that records what is done to it (as tcp.Port, it can pause)."""

    def __init__(self, events: list[str], factory: Any) -> None:
        self.events = events
        self.factory = factory
        events.append("listen")

    def pauseProducing(self) -> None:
        self.events.append("pause")

    def resumeProducing(self) -> None:
        self.events.append("resume")

    def stopProducing(self) -> None:
        pass

    def stopListening(self) -> None:
        self.events.append("stop listening")


class RecordingReactor(MemoryReactorClock):
    """A memory reactor whose TCP ports are :class:`PausablePort`, or fail to listen on the
    ports in ``busy`` with EADDRINUSE."""

    def __init__(self, events: list[str], busy: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.events = events
        self.busy = busy
        self.ports: list[PausablePort] = []

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        if port in self.busy:
            raise CannotListenError(interface, port, OSError(errno.EADDRINUSE, "Address in use"))
        p = PausablePort(self.events, factory)
        self.ports.append(p)
        return p


class WatchedStore(MemoryJobStore):
    """A memory store that records its steps in ``events``; ``fail_open`` makes open fail."""

    def __init__(self, events: list[str], fail_open: bool = False) -> None:
        super().__init__()
        self.events = events
        self.fail_open = fail_open

    def open(self) -> Deferred[None]:
        self.events.append("open")
        if self.fail_open:
            return fail(StoreError("sqlite: unable to open database file\n(second line)"))
        return super().open()

    def replay(self) -> Deferred[list[StoredJob]]:
        self.events.append("replay")
        return super().replay()

    def close(self) -> Deferred[None]:
        self.events.append("close")
        return super().close()


class ServiceTests(SynchronousTestCase):
    """GearmanServerService start-up and shut-down order."""

    def service(
        self, reactor: Any, store: Any = None, listen: tuple[str, ...] = ("tcp:4730",), **kw: Any
    ) -> GearmanServerService:
        core = JobServerCore(clock=reactor, store=store)
        return GearmanServerService(core, ServerFactory(core), list(listen), reactor, **kw)

    def test_bind_then_restore_then_accept(self) -> None:
        """Every endpoint is bound (and paused) before the store opens; connections are
        accepted only once the stored jobs are in the core; stopping closes in reverse."""
        events: list[str] = []
        reactor = RecordingReactor(events)
        store = WatchedStore(events)
        store.add(StoredJob("k", b"f", b"u", Priority.HIGH, b"d"))
        svc = self.service(reactor, store, ("tcp:4730", "tcp:4731"))
        svc.privilegedStartService()
        self.assertEqual(events, ["listen", "pause", "listen", "pause"])
        gate = reactor.ports[0].factory
        self.assertIsNone(gate.buildProtocol(PEER))  # nothing served yet
        svc.startService()
        self.successResultOf(svc.whenReady())
        self.assertEqual(events[4:], ["open", "replay", "resume", "resume"])
        self.assertEqual(status_rows(svc.core), [(b"f", 1, 0, 0)])
        self.assertIsNotNone(gate.buildProtocol(PEER))
        self.successResultOf(svc.stopService())
        self.assertEqual(events[8:], ["stop listening", "stop listening", "close"])

    def test_port_that_cannot_pause_refuses_until_ready(self) -> None:
        """A port that cannot pause (a memory reactor's) gets no protocol before the replay
        is done: the connection is closed rather than served a half-restored queue."""
        reactor = MemoryReactorClock()
        replayed: Deferred[list[StoredJob]] = Deferred()

        class SlowReplay(MemoryJobStore):
            def replay(self) -> Deferred[list[StoredJob]]:
                return replayed

        svc = self.service(reactor, SlowReplay())
        svc.startService()
        gate = reactor.tcpServers[0][1]
        self.assertIsNone(gate.buildProtocol(PEER))
        replayed.callback([StoredJob("k", b"f", b"u", Priority.HIGH, b"d")])
        self.successResultOf(svc.whenReady())
        self.assertIsNotNone(gate.buildProtocol(PEER))

    def test_store_open_failure_stops(self) -> None:
        """If the store cannot be opened: one line says why (no traceback), the ports close,
        on_failure hears the reason, the reactor stops and the store is closed on stop."""
        events: list[str] = []
        reactor = RecordingReactor(events)
        reactor.running = True
        reasons: list[str] = []
        svc = self.service(reactor, WatchedStore(events, fail_open=True), on_failure=reasons.append)
        ready = svc.whenReady()
        with capturedLogs() as logged:
            svc.privilegedStartService()
            svc.startService()
        self.failureResultOf(ready, StartupError)
        reason = "sqlite: unable to open database file (second line)"
        self.assertEqual(reasons, [reason])
        self.assertEqual(
            [(e["log_level"], e["reason"]) for e in logged if "reason" in e],
            [(LogLevel.critical, reason)],
        )
        self.assertFalse([e for e in logged if "log_failure" in e])
        self.assertEqual(events, ["listen", "pause", "open", "stop listening"])
        self.assertTrue(reactor.hasStopped)
        self.successResultOf(svc.stopService())
        self.assertEqual(events[-1], "close")

    def test_bind_failure_opens_no_store(self) -> None:
        """A port in use: the reason names the endpoint and the system's error, the ports
        already bound close, the store is never opened, and a reactor not yet running is
        stopped once it runs (it would otherwise run forever)."""
        events: list[str] = []
        reactor = RecordingReactor(events, busy=(4731,))
        reasons: list[str] = []
        svc = self.service(
            reactor, WatchedStore(events), ("tcp:4730", "tcp:4731"), on_failure=reasons.append
        )
        svc.privilegedStartService()
        svc.startService()
        self.assertEqual(reasons, ["cannot listen on tcp:4731: address in use"])
        self.assertEqual(events, ["listen", "pause", "stop listening"])
        self.assertFalse(reactor.hasStopped)
        self.assertEqual([hook for hook, _, _ in reactor.whenRunningHooks], [reactor.stop])

    def test_raise_early(self) -> None:
        """With raise_early (twistd's daemon mode), a failure found while starting is raised
        from privilegedStartService (twistd tells the waiting parent), nothing else is done."""
        events: list[str] = []
        reactor = RecordingReactor(events, busy=(4730,))
        reasons: list[str] = []
        svc = self.service(
            reactor, WatchedStore(events), raise_early=True, on_failure=reasons.append
        )
        with self.assertRaises(StartupError) as e:
            svc.privilegedStartService()
        self.assertEqual(str(e.exception), "cannot listen on tcp:4730: address in use")
        self.assertEqual((events, reasons, reactor.whenRunningHooks), ([], [], []))

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


class LogLevelTests(SynchronousTestCase):
    """--log-level and ``verbose``: what gearmanpy logs under twistd."""

    def test_filter_in_front_of_every_observer(self) -> None:
        """LogFilter drops gearmanpy's messages below the level for every observer twistd has
        set up, passes other namespaces', follows ``verbose LEVEL``, and is taken away on stop."""
        seen: list[tuple[str, str]] = []
        observer = cast(ILogObserver, lambda e: seen.append((e["log_namespace"], e["log_format"])))
        publisher = LogPublisher(observer)
        verbosity = Verbosity("warn")
        log_filter = LogFilter(verbosity, publisher)
        ours = Logger(namespace="gearmanpy.server.service", observer=publisher)
        theirs = Logger(namespace="twisted.internet.base", observer=publisher)
        log_filter.privilegedStartService()
        ours.info("hidden")
        ours.warn("shown")
        theirs.info("theirs")
        verbosity.set("DEBUG")
        ours.debug("now shown")
        log_filter.stopService()
        verbosity.set("critical")
        ours.info("unfiltered again")
        self.assertEqual([f for _, f in seen], ["shown", "theirs", "now shown", "unfiltered again"])

    def verbose(self, conn: Conn, line: bytes) -> bytes:
        conn.send(line)
        return conn.text()

    def test_verbose_reports_and_sets(self) -> None:
        """``verbose`` says the level in gearmand's names; a loopback or unix peer may set it
        with ``verbose LEVEL``; others, bad levels and extra words get ERR lines."""
        core = JobServerCore(clock=MemoryReactorClock())
        verbosity = Verbosity("notice")
        admin = AdminCommands(core, verbosity)
        factory = ServerFactory(core, admin=admin)
        local, remote = Conn(factory), Conn(factory, host="10.1.2.3")
        self.assertEqual(self.verbose(local, b"verbose\n"), b"OK NOTICE\n")
        self.assertEqual(self.verbose(local, b"verbose warn\r\n"), b"OK WARNING\n")
        self.assertEqual(self.verbose(remote, b"verbose\n"), b"OK WARNING\n")
        self.assertEqual(
            self.verbose(remote, b"verbose debug\n"),
            b"ERR PERMISSION_DENIED admin+is+only+for+loopback+or+unix+peers\r\n",
        )
        self.assertEqual(
            self.verbose(local, b"verbose loud\n"),
            b"ERR UNKNOWN_VERBOSE_LEVEL verbose+takes+FATAL,ALERT,CRITICAL,ERROR,WARNING,NOTICE,"
            b"INFO,DEBUG\r\n",
        )
        self.assertEqual(
            self.verbose(local, b"verbose info debug\n"),
            b"ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+verbose\r\n",
        )
        self.assertEqual(self.verbose(Conn(factory, unix=True), b"verbose Debug\n"), b"OK DEBUG\n")
        self.assertEqual(verbosity.name, "DEBUG")
        remote_allowed = AdminCommands(core, verbosity, allow_remote_shutdown=True)
        remote = Conn(ServerFactory(core, admin=remote_allowed), host="10.1.2.3")
        self.assertEqual(self.verbose(remote, b"verbose error\n"), b"OK ERROR\n")

    def test_make_service_shares_the_level(self) -> None:
        """The admin commands and the log filter of ``twistd gearman`` share --log-level's
        Verbosity, so ``verbose LEVEL`` changes what is logged."""
        o = Options()
        o.parseOptions(["--queue", "memory", "--log-level", "error"])
        svc = _makeService(o, MemoryReactorClock())
        self.assertIs(svc.factory.admin.verbosity, o["verbosity"])
        self.assertEqual(o["verbosity"].name, "ERROR")


class BacklogTests(TestCase):
    """Real sockets: a peer that connects while the store replays waits, then sees it all."""

    timeout = 10

    @inlineCallbacks
    def test_early_peer_waits_for_the_replay(self) -> Generator[Deferred[Any], Any, None]:
        """A client connected (and its ``status`` sent) before the replay is done gets no
        answer until it is, and then an answer that counts the replayed job."""
        replayed: Deferred[list[StoredJob]] = Deferred()

        class SlowReplay(MemoryJobStore):
            def replay(self) -> Deferred[list[StoredJob]]:
                return replayed

        port = free_port()
        core = JobServerCore(clock=global_reactor, store=SlowReplay())
        svc = GearmanServerService(
            core, ServerFactory(core), [f"tcp:{port}:interface=127.0.0.1"], global_reactor
        )
        svc.privilegedStartService()
        svc.startService()
        self.addCleanup(svc.stopService)
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.addCleanup(sock.close)
        sock.sendall(b"status\n")
        sock.setblocking(False)
        yield deferLater(global_reactor, 0.2, lambda: None)
        with self.assertRaises(BlockingIOError):
            sock.recv(100)  # connected (in the backlog), but not served
        replayed.callback([StoredJob("k", b"f", b"u", Priority.HIGH, b"d")])
        yield svc.whenReady()
        answer = b""
        for _ in range(50):
            yield deferLater(global_reactor, 0.02, lambda: None)
            try:
                answer += sock.recv(100)
            except BlockingIOError:
                continue
            if answer.endswith(b".\n"):
                break
        self.assertEqual(answer, b"f\t1\t0\t0\n.\n")
