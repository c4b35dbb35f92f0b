"""Job handles across restarts (issue 11): the boot component, its limits, and kept handles.

Unit tests run on a Clock. The restart test runs the real service on one SQLite file twice,
on a MemoryReactorClock whose only real part is the hand-off from the store's writer thread
to the real reactor (which trial runs); peers are ServerProtocols on StringTransports.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Generator
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gearmanpy.protocol import replies
from gearmanpy.protocol.limits import MAX_HANDLE_SIZE
from gearmanpy.protocol.packets import PacketType, request
from gearmanpy.server import handles as handles_module
from gearmanpy.server.core import JobServerCore
from gearmanpy.server.handles import (
    BOOT_DIGITS,
    COUNTER_DIGITS,
    MAX_PREFIX_SIZE,
    default_handle_prefix,
    handles,
)
from gearmanpy.server.protocol import ServerFactory
from gearmanpy.server.service import GearmanServerService
from gearmanpy.store.interface import IJobStore, Priority, StoredJob
from gearmanpy.store.memory import MemoryJobStore
from gearmanpy.store.sqlite import SQLiteJobStore
from gearmanpy.tap import Options, _makeService
from tests.serverhelpers import RecordingPeer, make_core
from tests.test_server_protocol import Conn

P = PacketType


def take(prefix: bytes, boot: int | None, n: int, now: Callable[[], float] = time.time) -> list:
    """The first ``n`` (handle, JOB_CREATED) pairs of :func:`handles`."""
    return list(itertools.islice(handles(prefix, boot, now), n))


class HandlesTests(SynchronousTestCase):
    """:func:`gearmanpy.server.handles.handles` and its size rules."""

    def test_without_boot(self) -> None:
        """No boot component: ``<prefix>:1``, ``<prefix>:2``..., each with its JOB_CREATED."""
        got = take(b"H:x", None, 3)
        self.assertEqual(
            got, [(b"H:x:%d" % n, replies.job_created(b"H:x:%d" % n)) for n in (1, 2, 3)]
        )

    def test_with_boot(self) -> None:
        """A boot component: ``<prefix>:<boot>-<n>``, numbered on across batches."""
        got = take(b"H:x", 42, 9000)
        self.assertEqual([h for h, _ in got], [b"H:x:42-%d" % n for n in range(1, 9001)])
        self.assertEqual([c for _, c in got], [replies.job_created(h) for h, _ in got])

    def test_size_budget(self) -> None:
        """The longest prefix, the longest boot component and ``n`` of 10 digits make a handle
        of exactly MAX_HANDLE_SIZE bytes."""
        self.assertEqual((MAX_PREFIX_SIZE, BOOT_DIGITS, COUNTER_DIGITS), (40, 11, 10))
        longest = b"p" * MAX_PREFIX_SIZE + b":%d-%d" % (10**BOOT_DIGITS - 1, 10**COUNTER_DIGITS - 1)
        self.assertEqual(len(longest), MAX_HANDLE_SIZE)
        ((handle, _),) = take(b"p" * MAX_PREFIX_SIZE, 10**BOOT_DIGITS - 1, 1)
        self.assertEqual(handle, longest[:-COUNTER_DIGITS] + b"1")

    def test_refused(self) -> None:
        """A NUL or a prefix past 40 bytes, or a boot component that is negative or has more
        than 11 digits, is a ValueError saying so."""
        for prefix, boot in (
            (b"H:a\0b", None),
            (b"p" * (MAX_PREFIX_SIZE + 1), None),
            (b"p" * (MAX_PREFIX_SIZE + 1), 1),
            (b"H:x", -1),
            (b"H:x", 10**BOOT_DIGITS),
        ):
            with self.assertRaises(ValueError, msg=(prefix, boot)):
                handles(prefix, boot, time.time)
        take(b"p" * MAX_PREFIX_SIZE, 10**BOOT_DIGITS - 1, 1)  # the largest allowed

    def test_counter_runs_out(self) -> None:
        """When ``n`` has used up the bytes the handle leaves it, the handles go on under the
        wall clock (tenths of a second) as boot component, never less than the last plus one,
        from 1 again: no handle is longer than the limit, none repeats."""
        self.patch(handles_module, "MAX_HANDLE_SIZE", 12)
        clock = Clock()
        clock.advance(100.07)
        made = [h for h, _ in take(b"H:abc", 7, 10_030, clock.seconds)]
        # "H:abc:7-" leaves 4 digits: 9999 handles; "H:abc:1000-" leaves 1: 9; then 1001.
        self.assertEqual(made[9998:10000], [b"H:abc:7-9999", b"H:abc:1000-1"])
        self.assertEqual(made[10007:10010], [b"H:abc:1000-9", b"H:abc:1001-1", b"H:abc:1001-2"])
        self.assertEqual(max(map(len, made)), 12)
        self.assertEqual(len(set(made)), len(made))

    def test_counter_runs_out_without_boot(self) -> None:
        """A core on its own (``<prefix>:<n>``) also moves to a wall-clock boot component."""
        self.patch(handles_module, "MAX_HANDLE_SIZE", 7)
        clock = Clock()
        clock.advance(0.5)
        made = [h for h, _ in take(b"H:x", None, 1010, clock.seconds)]
        self.assertEqual(made[998:1001], [b"H:x:999", b"H:x:5-1", b"H:x:5-2"])
        self.assertEqual(made[1007:1009], [b"H:x:5-9", b"H:x:6-1"])
        self.assertEqual(len(set(made)), len(made))

    def test_no_room_is_an_error(self) -> None:
        """A boot component that leaves ``n`` no digit is a ValueError, not an endless loop
        (unreachable within the real limits; shown with a smaller one)."""
        self.patch(handles_module, "MAX_HANDLE_SIZE", 6)
        with self.assertRaises(ValueError):
            take(b"H:x", 5, 1)

    def test_default_prefix_is_cut(self) -> None:
        """A host name too long for the prefix is cut to 40 bytes; a short one is kept."""
        self.patch(handles_module.platform, "node", lambda: "h" * 64)
        self.assertEqual(default_handle_prefix(), b"H:" + b"h" * (MAX_PREFIX_SIZE - 2))
        self.patch(handles_module.platform, "node", lambda: "box")
        self.assertEqual(default_handle_prefix(), b"H:box")

    def test_tap_prefix_limit(self) -> None:
        """``--job-handle-prefix`` of 40 characters builds a server; 41 is a usage error."""
        o = Options()
        o.parseOptions(["--queue", "memory", "--job-handle-prefix", "p" * MAX_PREFIX_SIZE])
        self.assertEqual(_makeService(o, MemoryReactorClock()).core.handle_prefix, b"p" * 40)
        with self.assertRaises(UsageError):
            Options().parseOptions(["--job-handle-prefix", "p" * (MAX_PREFIX_SIZE + 1)])


class CoreBootTests(SynchronousTestCase):
    """The core's boot component and replay with kept handles."""

    def test_set_boot(self) -> None:
        """After set_boot, handles are ``<prefix>:<boot>-<n>`` from 1; stored rows carry them."""
        store = MemoryJobStore()
        core, _ = make_core(store=store)
        client = RecordingPeer(core)
        self.assertEqual(client.submit(b"f"), b"H:test:1")
        core.set_boot(12)
        self.assertEqual(core.boot, 12)
        self.assertEqual(client.submit(b"f"), b"H:test:12-1")
        self.assertEqual(client.submit(b"f", background=True), b"H:test:12-2")
        (row,) = self.successResultOf(store.replay())
        self.assertEqual(row.handle, b"H:test:12-2")
        with self.assertRaises(ValueError):
            core.set_boot(-1)

    def test_replay_keeps_handles(self) -> None:
        """With a boot component, a replayed job keeps its stored handle: GET_STATUS and
        workers see it. Rows with no handle, or one that cannot be valid or is taken, get a
        new one."""
        core, _ = make_core(store=MemoryJobStore())
        core.set_boot(3)
        core.replay(
            [
                StoredJob("k1", b"f", b"", Priority.NORMAL, b"a", handle=b"H:test:2-7"),
                StoredJob("k2", b"f", b"", Priority.NORMAL, b"b"),
                StoredJob("k3", b"f", b"", Priority.NORMAL, b"c", handle=b"H:test:2-7"),
                StoredJob("k4", b"f", b"", Priority.NORMAL, b"d", handle=b"x\0y"),
                StoredJob("k5", b"f", b"", Priority.NORMAL, b"e", handle=b"h" * 64),
            ]
        )
        by_data = {j.data: h for h, j in core.jobs.items()}
        self.assertEqual(
            by_data,
            {
                b"a": b"H:test:2-7",
                b"b": b"H:test:3-1",
                b"c": b"H:test:3-2",
                b"d": b"H:test:3-3",
                b"e": b"H:test:3-4",
            },
        )
        client = RecordingPeer(core)
        core.get_status(client.peer, b"H:test:2-7")
        self.assertEqual(client.take(), [(P.STATUS_RES, (b"H:test:2-7", b"1", b"0", b"0", b"0"))])
        worker = RecordingPeer(core)
        worker.can_do(b"f")
        self.assertEqual(worker.grab(), (P.JOB_ASSIGN_UNIQ, (b"H:test:2-7", b"f", b"", b"a")))

    def test_replay_without_boot_gives_new_handles(self) -> None:
        """A core on its own gives replayed jobs new handles: its own ``<prefix>:<n>`` would
        otherwise meet stored ones again."""
        core, _ = make_core(store=MemoryJobStore())
        core.replay([StoredJob("k1", b"f", b"", Priority.NORMAL, b"a", handle=b"H:test:2")])
        self.assertEqual(list(core.jobs), [b"H:test:1"])


class _ThreadedReactor(MemoryReactorClock):
    """A MemoryReactorClock that hands the store's writer-thread results to the real reactor."""

    def callFromThread(self, f: Any, *args: Any, **kw: Any) -> None:
        """Run ``f`` on the real reactor's thread."""
        from twisted.internet import reactor

        real: Any = reactor
        real.callFromThread(f, *args, **kw)


@inlineCallbacks
def _until(done: Callable[[], bool]) -> Generator[Deferred[Any], Any, None]:
    """Let the real reactor run until ``done()`` (the store's thread answers), 10 s at most."""
    from twisted.internet import reactor

    deadline = time.monotonic() + 10
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError("the store never answered")
        yield deferLater(reactor, 0.002, lambda: None)


class RestartTests(TestCase):
    """Handles and status across a restart of the service on one SQLite file."""

    timeout = 30

    def setUp(self) -> None:
        """A fresh database path."""
        self.path = os.path.abspath(self.mktemp()) + ".db"
        os.makedirs(os.path.dirname(self.path), exist_ok=True)

    @inlineCallbacks
    def start(self, store: IJobStore | None = None) -> Generator[Deferred[Any], Any, Any]:
        """Start a server with prefix ``H:t`` on ``store`` (default: the SQLite file)."""
        reactor = _ThreadedReactor()
        if store is None:
            store = SQLiteJobStore(self.path, reactor)
        core = JobServerCore(clock=reactor, store=store, handle_prefix=b"H:t")
        factory = ServerFactory(core)
        service = GearmanServerService(core, factory, ["tcp:4730"], reactor)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        yield service.whenReady()
        return service, factory

    @inlineCallbacks
    def submit(self, conn: Conn, data: bytes) -> Generator[Deferred[Any], Any, bytes]:
        """Submit a background job and return its handle once the store has it."""
        conn.send(request(P.SUBMIT_JOB_BG, b"f", b"", data))
        got: list[Any] = []

        def answered() -> bool:
            got.extend(conn.packets())
            return bool(got)

        yield _until(answered)
        ((ptype, (handle,)),) = got
        self.assertEqual(ptype, P.JOB_CREATED)
        return handle

    @staticmethod
    def status(conn: Conn, handle: bytes) -> tuple[bytes, ...]:
        """GET_STATUS ``handle``: known, running, numerator, denominator."""
        conn.send(request(P.GET_STATUS, handle))
        ((ptype, args),) = conn.packets()
        assert ptype == P.STATUS_RES and args[0] == handle, (ptype, args)
        return args[1:]

    @inlineCallbacks
    def test_restart(self) -> Generator[Deferred[Any], Any, None]:
        """A background job keeps its handle across the restart and GET_STATUS answers for it;
        a finished job's handle answers unknown; a new job's handle was never given before."""
        service, factory = yield self.start()
        client, worker = Conn(factory), Conn(factory)
        finished = yield self.submit(client, b"finished")
        kept = yield self.submit(client, b"kept")
        self.assertEqual((finished, kept), (b"H:t:1-1", b"H:t:1-2"))
        worker.send(request(P.CAN_DO, b"f"), request(P.GRAB_JOB))
        self.assertEqual(worker.packets(), [(P.JOB_ASSIGN, (finished, b"f", b"finished"))])
        worker.send(request(P.WORK_COMPLETE, finished, b""))
        self.assertEqual(self.status(client, kept), (b"1", b"0", b"0", b"0"))
        yield service.stopService()

        service, factory = yield self.start()
        client, worker = Conn(factory), Conn(factory)
        self.assertEqual(self.status(client, kept), (b"1", b"0", b"0", b"0"))
        self.assertEqual(self.status(client, finished), (b"0", b"0", b"0", b"0"))
        new = yield self.submit(client, b"new")
        self.assertEqual(new, b"H:t:2-1")
        worker.send(request(P.CAN_DO, b"f"), request(P.GRAB_JOB))
        worker.send(request(P.WORK_STATUS, kept, b"1", b"2"))
        self.assertEqual(worker.packets(), [(P.JOB_ASSIGN, (kept, b"f", b"kept"))])
        self.assertEqual(self.status(client, kept), (b"1", b"1", b"1", b"2"))
        self.assertEqual(self.status(client, new), (b"1", b"0", b"0", b"0"))
        yield service.stopService()

    @inlineCallbacks
    def test_memory_store_boot(self) -> Generator[Deferred[Any], Any, None]:
        """The service takes its boot component from the store it is given."""
        store = MemoryJobStore(now=lambda: 1234.5)
        _, factory = yield self.start(store)
        client = Conn(factory)
        client.send(request(P.SUBMIT_JOB, b"f", b"", b"x"))
        self.assertEqual(client.packets(), [(P.JOB_CREATED, (b"H:t:12345-1",))])

    def test_no_store_takes_the_clock(self) -> None:
        """Without a store the boot component is the clock's next tenth of a second at start,
        and the service serves once that tenth has begun; a restart within the same tenth
        gets the next one."""
        reactor = MemoryReactorClock()
        reactor.advance(1_700_000_000.95)
        handles_given: list[bytes] = []
        for expected in (b"H:t:17000000010-1", b"H:t:17000000011-1"):
            core = JobServerCore(clock=reactor, handle_prefix=b"H:t")
            factory = ServerFactory(core)
            service = GearmanServerService(core, factory, ["tcp:4730"], reactor)
            service.startService()
            ready = service.whenReady()
            reactor.advance(0.04)
            self.assertNoResult(ready)
            self.assertIsNone(
                reactor.tcpServers[-1][1].buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
            )  # not serving yet
            reactor.advance(0.06)
            self.successResultOf(ready)
            client = Conn(factory)
            client.send(request(P.SUBMIT_JOB_BG, b"f", b"", b"x"))
            self.assertEqual(client.packets(), [(P.JOB_CREATED, (expected,))])
            handles_given.append(expected)
            self.successResultOf(service.stopService())
