"""Conformance tests that every IJobStore backend passes, plus backend-specific durability tests.

One mixin, :class:`_StoreTestsMixin` (txacme's ``test_store.py`` shape), is run against the
memory store, SQLite on a temporary file, a real PostgreSQL and a real redis-server (with
``appendonly yes`` / ``appendfsync always``) started on loopback by :mod:`tests.dbservers`.
Each of gearmand's persistent-queue replay bugs (protocol.md §5.4, §6.1 #16) is pinned by a
test here. These tests use the real reactor, threads and sockets, so they are
``twisted.trial.unittest.TestCase``; they are kept few and fast.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from gearmanpy.errors import StoreError
from gearmanpy.store._writer import ADD, Deadlines, ThreadedBatchWriter
from gearmanpy.store.interface import DeadJob, IJobStore, KeptResult, Priority, StoredJob
from gearmanpy.store.memory import MemoryJobStore
from gearmanpy.store.postgres import PostgresJobStore
from gearmanpy.store.redis import RedisJobStore
from gearmanpy.store.sqlite import SQLiteJobStore
from gearmanpy.store.url import store_from_url
from tests import dbservers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _reactor() -> Any:
    """The real reactor, resolved lazily (these are integration tests)."""
    from twisted.internet import reactor

    return reactor


def job(key: str, **kw: Any) -> StoredJob:
    """A NORMAL job of function ``f`` with empty unique and payload, overridden by ``kw``."""
    values: dict[str, Any] = {
        "function": b"f",
        "unique": b"",
        "priority": Priority.NORMAL,
        "data": b"",
    }
    values.update(kw)
    return StoredJob(key=key, **values)


class StoreFixture:
    """A backing for stores, shared by the conformance suites (this module's and
    :mod:`tests.test_store_policy`'s). A backing class defines :meth:`make_store`; it comes
    after the suite's mixin in a test class's bases, so nothing here may be a test.

    ``make_store()`` returns an unopened store on a backing that starts empty for each test;
    ``reopen_store()`` returns an unopened store on the same backing (for durable stores a new
    instance, so replay reads what is really stored).
    """

    durable: ClassVar[bool] = True

    def make_store(self) -> IJobStore:
        raise NotImplementedError()

    def reopen_store(self) -> IJobStore:
        """A new store on the same backing: another ``make_store()``."""
        return self.make_store()

    @inlineCallbacks
    def opened(self, store: IJobStore) -> Any:
        """Open ``store`` and close it at the end of the test."""
        yield store.open()
        self.addCleanup(store.close)  # type: ignore[attr-defined]
        return store

    @inlineCallbacks
    def reopened(self, store: IJobStore) -> Any:
        """Close ``store`` and open a new one on the same backing (if durable; a memory store
        is returned as it is)."""
        if not self.durable:
            return store
        yield store.close()
        store = yield self.opened(self.reopen_store())
        return store

    @inlineCallbacks
    def roundtrip(self, jobs: list[StoredJob]) -> Any:
        """Add ``jobs`` concurrently, then replay them from a reopened store."""
        store = yield self.opened(self.make_store())
        yield gatherResults([store.add(j) for j in jobs])
        store = yield self.reopened(store)
        replayed = yield store.replay()
        return replayed


class _StoreTestsMixin(StoreFixture):
    """Behaviour every IJobStore must show, on the backing of the class it is mixed into."""

    def test_interface(self) -> None:
        """The store provides IJobStore."""
        self.assertTrue(verifyObject(IJobStore, self.make_store()))  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_empty(self) -> Any:
        """A new store replays nothing."""
        store = yield self.opened(self.make_store())
        self.assertEqual((yield store.replay()), [])  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_every_field_kept_in_order(self) -> Any:
        """Every field of every job, of every priority, comes back in insertion order."""
        jobs = [
            job("k1", function=b"reverse", unique=b"u1", priority=Priority.LOW, data=b"abc"),
            job("k2", unique=b"u2", priority=Priority.HIGH, data=b"x" * 70_000, handle=b"H:h:7-2"),
            job("k3", priority=Priority.NORMAL, when=2**62 + 5, retries=3),
            job("k4", function=b"count", unique=b"u4", reducer=b"sum", data=b"1 2 3"),
            job("k0", when=1_900_000_000),
        ]
        self.assertEqual((yield self.roundtrip(jobs)), jobs)  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_empty_payload(self) -> Any:
        """An empty payload is stored and replayed (gearmand's sqlite stored NULL, then failed)."""
        jobs = [job("k1", data=b""), job("k2", data=b"after")]
        self.assertEqual((yield self.roundtrip(jobs)), jobs)  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_binary_payload(self) -> Any:
        """NULs and every byte value survive in the payload (gearmand's redis cut at NUL)."""
        jobs = [job("k1", data=b"a\0b\0\0"), job("k2", data=bytes(range(256)) * 3)]
        self.assertEqual((yield self.roundtrip(jobs)), jobs)  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_empty_uniques_do_not_collide(self) -> Any:
        """Two background jobs of one function with empty uniques both survive; done of one
        keeps the other (gearmand keyed rows by (unique, function))."""
        store = yield self.opened(self.make_store())
        a, b, c = job("k1", data=b"a"), job("k2", data=b"b"), job("k3", data=b"c")
        yield gatherResults([store.add(a), store.add(b), store.add(c)])
        yield store.done("k2")
        if self.durable:
            yield store.close()
            store = yield self.opened(self.reopen_store())
        self.assertEqual((yield store.replay()), [a, c])  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_repeated_unique(self) -> Any:
        """Several jobs with one unique (a re-submission after the first finished, or under
        other functions) are each kept."""
        jobs = [
            job("k1", unique=b"same", data=b"1"),
            job("k2", unique=b"same", data=b"2"),
            job("k3", function=b"g", unique=b"same", data=b"3"),
        ]
        self.assertEqual((yield self.roundtrip(jobs)), jobs)  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_quoting(self) -> Any:
        """Quotes, semicolons, backslashes, NULs, dashes, spaces and non-UTF-8 bytes in
        function names and uniques round-trip exactly (gearmand broke on each)."""
        nasty = [b"'", b'"', b";", b"\\", b"a\0b", b"my-func", b"a-b-c", b"x y", b"\xff\xfe\x80"]
        jobs = []
        for i, text in enumerate(nasty):
            jobs.append(job(f"f{i}", function=text, unique=b"u", data=text))
            jobs.append(job(f"u{i}", function=b"f", unique=text, data=text))
        jobs.append(job("q", function=b"'; DROP TABLE x; --", unique=b"'); --\\"))
        self.assertEqual((yield self.roundtrip(jobs)), jobs)  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_done(self) -> Any:
        """Done removes a job; done of an unknown key is not an error."""
        store = yield self.opened(self.make_store())
        yield gatherResults([store.add(job("k1")), store.add(job("k2"))])
        yield store.done("k1")
        yield store.done("k1")
        yield store.done("never-added")
        self.assertEqual([j.key for j in (yield store.replay())], ["k2"])  # type: ignore

    @inlineCallbacks
    def test_set_retries(self) -> Any:
        """set_retries is kept; for an unknown or finished key it stores nothing."""
        store = yield self.opened(self.make_store())
        yield store.add(job("k1"))
        yield store.set_retries("k1", 2)
        yield store.done("k1")
        yield store.set_retries("k1", 3)
        yield store.set_retries("nope", 1)
        yield store.add(job("k2", unique=b"u"))
        yield store.set_retries("k2", 7)
        self.assertEqual(  # type: ignore[attr-defined]
            (yield store.replay()), [job("k2", unique=b"u", retries=7)]
        )

    @inlineCallbacks
    def test_interleaved_in_one_batch(self) -> Any:
        """Adds, dones and retry counts queued together apply in the order they were made."""
        store = yield self.opened(self.make_store())
        ds = [
            store.add(job("a")),
            store.add(job("b")),
            store.done("a"),
            store.set_retries("b", 1),
            store.add(job("a", data=b"again")),
            store.add(job("c")),
            store.done("c"),
        ]
        yield gatherResults(ds)
        self.assertEqual(  # type: ignore[attr-defined]
            (yield store.replay()), [job("b", retries=1), job("a", data=b"again")]
        )

    @inlineCallbacks
    def test_repeated_key_in_one_batch(self) -> Any:
        """A key added or given a retry count twice in a row keeps the last value; the other
        keys of the same run keep theirs."""
        store = yield self.opened(self.make_store())
        ds = [
            store.add(job("a")),
            store.add(job("b", data=b"first")),
            store.add(job("b", data=b"second")),
            store.set_retries("a", 1),
            store.set_retries("b", 1),
            store.set_retries("b", 2),
        ]
        yield gatherResults(ds)
        self.assertEqual(  # type: ignore[attr-defined]
            (yield store.replay()), [job("a", retries=1), job("b", data=b"second", retries=2)]
        )

    @inlineCallbacks
    def test_many_concurrent_adds(self) -> Any:
        """Thousands of adds in flight at once are all acknowledged and replayed in order."""
        jobs = [job(f"k{i:05}", unique=str(i % 7).encode(), data=b"%d" % i) for i in range(3000)]
        self.assertEqual((yield self.roundtrip(jobs)), jobs)  # type: ignore[attr-defined]

    @inlineCallbacks
    def check_upgrade(self, old: StoredJob) -> Any:
        """Open a backing that holds ``old`` as gearmanpy stored it before it kept handles and
        counted boots: ``old`` replays with no handle, boots count from 1, and a new job keeps
        its handle."""
        store = yield self.opened(self.make_store())
        self.assertEqual((yield store.replay()), [old])  # type: ignore[attr-defined]
        self.assertEqual((yield store.next_boot()), 1)  # type: ignore[attr-defined]
        new = job("new", handle=b"H:h:1-1")
        yield store.add(new)
        yield store.close()
        store = yield self.opened(self.reopen_store())
        self.assertEqual((yield store.replay()), [old, new])  # type: ignore[attr-defined]
        self.assertEqual((yield store.next_boot()), 2)  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_handle_kept(self) -> Any:
        """The handle a job was stored with comes back, also after an update of its row; a
        job stored without one comes back with an empty handle."""
        store = yield self.opened(self.make_store())
        yield store.add(job("a", handle=b"H:host:3-1"))
        yield store.add(job("b"))
        yield store.add(job("a", data=b"again", handle=b"H:host:3-9"))
        yield store.set_retries("a", 2)
        if self.durable:
            yield store.close()
            store = yield self.opened(self.reopen_store())
        self.assertEqual(  # type: ignore[attr-defined]
            (yield store.replay()),
            [job("a", data=b"again", handle=b"H:host:3-9", retries=2), job("b")],
        )

    @inlineCallbacks
    def test_next_boot_grows(self) -> Any:
        """Each boot number is larger than every one before, also after the store is closed
        and opened again, and also with jobs written in between."""
        store = yield self.opened(self.make_store())
        boots = [(yield store.next_boot()), (yield store.next_boot())]
        yield store.add(job("k"))
        boots.append((yield store.next_boot()))
        if self.durable:
            yield store.close()
            store = yield self.opened(self.reopen_store())
        boots.append((yield store.next_boot()))
        for boot in boots:
            self.assertIsInstance(boot, int)  # type: ignore[attr-defined]
        self.assertEqual(boots, sorted(set(boots)))  # type: ignore[attr-defined]
        self.assertEqual([j.key for j in (yield store.replay())], ["k"])  # type: ignore

    @inlineCallbacks
    def test_next_boot_shared(self) -> Any:
        """Two stores on one backing (two servers sharing a database), asking at once, never
        get the same boot number."""
        first = yield self.opened(self.make_store())
        second = yield self.opened(self.reopen_store())
        asked = [store.next_boot() for _ in range(10) for store in (first, second)]
        boots = yield gatherResults(asked)
        self.assertEqual(len(set(boots)), len(boots))  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_closed(self) -> Any:
        """After close, add, done, set_retries and replay fail with StoreError instead of
        pretending to work; closing again is harmless."""
        store = yield self.opened(self.make_store())
        yield store.add(job("k"))
        yield store.close()
        for refused in (
            store.add(job("k2")),
            store.done("k"),
            store.set_retries("k", 1),
            store.replay(),
            store.next_boot(),
        ):
            yield self.assertFailure(refused, StoreError)  # type: ignore[attr-defined]
        yield store.close()


class ServerBacking(StoreFixture):
    """A backing in a database server, one per class from :mod:`tests.dbservers` (each test
    has its own table or key prefix). Subclasses set :attr:`start_server` and define
    :meth:`store_at`.
    """

    start_server: ClassVar[Callable[[], dbservers.PostgresServer | dbservers.RedisServer]]
    server: ClassVar[dbservers.PostgresServer | dbservers.RedisServer]

    @classmethod
    def setUpClass(cls) -> None:
        """Start one server for the class."""
        cls.server = cls.start_server()

    @classmethod
    def tearDownClass(cls) -> None:
        """Stop it and delete its files."""
        cls.server.destroy()

    def setUp(self) -> None:
        """Name this test's table or key prefix after the test."""
        super().setUp()  # type: ignore[misc]
        self.test_name = self.id().rsplit(".", 1)[-1]  # type: ignore[attr-defined]

    def store_at(self, port: int, **kw: Any) -> IJobStore:
        """An unopened store on this test's table or prefix, in the server on ``port``."""
        raise NotImplementedError()

    def make_store(self, **kw: Any) -> IJobStore:
        """A store on this class's server."""
        return self.store_at(self.server.port, **kw)


class _ServerTestsMixin(_StoreTestsMixin, ServerBacking):
    """The conformance suite for stores backed by a database server, plus outages: the store
    fails fast while the server is down or unreachable, then recovers."""

    @inlineCallbacks
    def test_database_restart(self) -> Any:
        """While the database is down, add fails with StoreError within the store's timeout;
        after it is back, adds work again and earlier jobs are still there."""
        store = yield self.opened(self.make_store(timeout=3.0))  # type: ignore
        yield store.add(job("before"))
        self.server.stop()
        try:
            started = time.monotonic()
            yield self.assertFailure(store.add(job("during")), StoreError)  # type: ignore
            self.assertLess(time.monotonic() - started, 6)  # type: ignore[attr-defined]
        finally:
            self.server.start()
        yield store.add(job("after"))
        self.assertEqual(  # type: ignore[attr-defined]
            [j.key for j in (yield store.replay())], ["before", "after"]
        )

    @inlineCallbacks
    def test_unreachable_at_open(self) -> Any:
        """open fails with StoreError when nothing listens."""
        store = self.store_at(dbservers.free_port(), timeout=2.0)
        yield self.assertFailure(store.open(), StoreError)  # type: ignore[attr-defined]
        yield store.close()


class MemoryBacking(StoreFixture):
    """One MemoryJobStore per test."""

    durable = False

    def make_store(self) -> IJobStore:
        """A fresh memory store."""
        self._store = MemoryJobStore()
        return self._store

    def reopen_store(self) -> IJobStore:
        """The same store: memory keeps nothing across instances."""
        return self._store


class MemoryStoreTests(_StoreTestsMixin, MemoryBacking, TestCase):
    """The conformance suite against MemoryJobStore."""


class SQLiteBacking(StoreFixture):
    """An SQLite file per test."""

    def setUp(self) -> None:
        """A fresh database path per test."""
        super().setUp()  # type: ignore[misc]
        self.path = os.path.abspath(self.mktemp()) + ".db"  # type: ignore[attr-defined]
        os.makedirs(os.path.dirname(self.path), exist_ok=True)

    def make_store(self, **kw: Any) -> IJobStore:
        """A store on this test's file."""
        return SQLiteJobStore(self.path, _reactor(), **kw)


class SQLiteStoreTests(_StoreTestsMixin, SQLiteBacking, TestCase):
    """The conformance suite against SQLiteJobStore on a temporary file."""

    @inlineCallbacks
    def test_wal_and_full_sync(self) -> Any:
        """The file is in WAL mode, the store's connection syncs fully, and the table holds the
        jobs (visible to another reader)."""
        import sqlite3

        store = yield self.opened(self.make_store())
        yield store.add(job("k1", data=b"\0"))
        # synchronous is per connection, so ask the store's own (its writer thread is idle).
        own = store._writer._backend._conn
        self.assertEqual(own.execute("PRAGMA synchronous").fetchone()[0], 2)  # FULL
        conn = sqlite3.connect(self.path)
        try:
            self.assertEqual(conn.execute("PRAGMA journal_mode").fetchone()[0], "wal")
            rows = conn.execute("SELECT job_key, data FROM gearmanpy_queue").fetchall()
        finally:
            conn.close()
        self.assertEqual(rows, [("k1", b"\0")])

    @inlineCallbacks
    def test_old_schema(self) -> Any:
        """A database made before handles were kept opens: its rows replay with no handle,
        it gains the handle column and a boot counter starting at 1, and new rows keep their
        handle."""
        import sqlite3

        conn = sqlite3.connect(self.path)
        try:
            conn.execute(_OLD_SQLITE_SCHEMA)
            conn.execute(
                "INSERT INTO gearmanpy_queue (job_key, function, unique_id, priority, data,"
                " when_to_run, retries, reducer) VALUES ('old', x'66', x'75', 1, x'00', 0, 2, x'')"
            )
            conn.commit()
        finally:
            conn.close()
        yield self.check_upgrade(job("old", unique=b"u", data=b"\0", retries=2))

    @inlineCallbacks
    def test_unopenable_file(self) -> Any:
        """open fails with StoreError when the file cannot be created."""
        store = SQLiteJobStore(os.path.join(self.path, "no", "such", "dir.db"), _reactor())
        yield self.assertFailure(store.open(), StoreError)
        yield store.close()

    @inlineCallbacks
    def test_acknowledged_adds_survive_sigkill(self) -> Any:
        """Every add whose Deferred fired is in the file after the process is SIGKILLed."""
        child = subprocess.Popen(
            [sys.executable, "-u", "-c", _KILL_CHILD, self.path],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": REPO},
        )
        acked = 0
        try:
            assert child.stdout is not None
            while acked < 5000:
                line = child.stdout.readline()
                if not line:
                    self.fail(f"child died: {child.stderr.read()!r}")  # type: ignore[union-attr]
                acked = int(line)
            child.send_signal(signal.SIGKILL)
            rest = child.stdout.read()
            for line in rest.splitlines():
                acked = max(acked, int(line))
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()
            child.stdout.close()  # type: ignore[union-attr]
            child.stderr.close()  # type: ignore[union-attr]
        self.assertEqual(child.returncode, -signal.SIGKILL)
        store = yield self.opened(self.reopen_store())
        keys = {j.key for j in (yield store.replay())}
        missing = [i for i in range(acked) if f"k{i}" not in keys]
        self.assertEqual(missing, [])


#: The table as gearmanpy wrote it before it kept handles and counted boots.
_OLD_SQLITE_SCHEMA = """
CREATE TABLE gearmanpy_queue (
    seq INTEGER PRIMARY KEY,
    job_key TEXT NOT NULL UNIQUE,
    function BLOB NOT NULL,
    unique_id BLOB NOT NULL,
    priority INTEGER NOT NULL,
    data BLOB NOT NULL,
    when_to_run INTEGER NOT NULL,
    retries INTEGER NOT NULL,
    reducer BLOB NOT NULL
)
"""

#: Adds jobs k0, k1, ... forever with up to 2000 in flight, printing how many were acknowledged
#: (acknowledgements arrive in order, so "N" means k0..k(N-1) are acknowledged).
_KILL_CHILD = """
import sys
from twisted.internet import reactor
from gearmanpy.store.interface import Priority, StoredJob
from gearmanpy.store.sqlite import SQLiteJobStore

store = SQLiteJobStore(sys.argv[1], reactor)
state = {"next": 0, "acked": 0}

def acked(_):
    state["acked"] += 1
    sys.stdout.write("%d\\n" % state["acked"])
    refill()

def refill():
    while state["next"] - state["acked"] < 2000:
        i = state["next"]
        state["next"] += 1
        store.add(StoredJob("k%d" % i, b"f", b"", Priority.NORMAL, b"x" * 100)).addCallback(acked)

store.open().addCallback(lambda _: refill())
reactor.run()
"""


class PostgresBacking(ServerBacking):
    """A table per test in a real PostgreSQL started on loopback."""

    start_server = staticmethod(dbservers.start_postgres)

    @property
    def table(self) -> str:
        """This test's table."""
        return f"q_{self.test_name}"[:50]  # room for "_boot" in PostgreSQL's 63

    def store_at(self, port: int, **kw: Any) -> IJobStore:
        """A store on this test's table, in database ``postgres`` of the server on ``port``."""
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        return PostgresJobStore(url, _reactor(), table=self.table, **kw)


@pytest.mark.realdb
class PostgresStoreTests(_ServerTestsMixin, PostgresBacking, TestCase):
    """The conformance suite against a real PostgreSQL started on loopback."""

    @inlineCallbacks
    def test_column_types(self) -> Any:
        """Binary columns are BYTEA, the time is BIGINT, order comes from an identity column."""
        import psycopg

        store = yield self.opened(self.make_store())
        yield store.add(job("k"))
        with psycopg.connect(self.server.url) as conn:
            rows = conn.execute(
                "SELECT column_name, data_type, is_identity FROM information_schema.columns"
                " WHERE table_name = %s",
                (self.table,),
            ).fetchall()
        types = {name: (data_type, ident) for name, data_type, ident in rows}
        self.assertEqual(types["data"][0], "bytea")
        self.assertEqual(types["function"][0], "bytea")
        self.assertEqual(types["unique_id"][0], "bytea")
        self.assertEqual(types["when_to_run"][0], "bigint")
        self.assertEqual(types["seq"], ("bigint", "YES"))
        self.assertEqual(types["handle"][0], "bytea")

    @inlineCallbacks
    def test_old_schema(self) -> Any:
        """A table made before handles were kept is used as it is: its rows replay with no
        handle, it gains the handle column and a boot counter starting at 1, and new rows keep
        their handle."""
        import psycopg

        with psycopg.connect(self.server.url) as conn:
            conn.execute(_OLD_POSTGRES_SCHEMA.format(table=self.table))
            conn.execute(
                f"INSERT INTO {self.table} (job_key, function, unique_id, priority, data,"
                " when_to_run, retries, reducer) VALUES ('old', 'f', 'u', 1, '\\x00', 0, 2, '')"
            )
        yield self.check_upgrade(job("old", unique=b"u", data=b"\0", retries=2))


#: The table as gearmanpy wrote it before it kept handles and counted boots.
_OLD_POSTGRES_SCHEMA = """
CREATE TABLE {table} (
    job_key TEXT PRIMARY KEY,
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    function BYTEA NOT NULL,
    unique_id BYTEA NOT NULL,
    priority SMALLINT NOT NULL,
    data BYTEA NOT NULL,
    when_to_run BIGINT NOT NULL,
    retries INTEGER NOT NULL,
    reducer BYTEA NOT NULL
)
"""


class RedisBacking(ServerBacking):
    """A key prefix per test in a real redis-server (appendonly yes, appendfsync always)."""

    start_server = staticmethod(dbservers.start_redis)

    @property
    def prefix(self) -> bytes:
        """This test's key prefix."""
        return f"t:{self.test_name}:".encode()

    def store_at(self, port: int, **kw: Any) -> IJobStore:
        """A store under this test's key prefix, in the redis-server on ``port``."""
        return RedisJobStore("127.0.0.1", port, _reactor(), prefix=self.prefix, **kw)


@pytest.mark.realdb
class RedisStoreTests(_ServerTestsMixin, RedisBacking, TestCase):
    """The conformance suite against a real redis-server (appendonly yes, appendfsync always)."""

    @inlineCallbacks
    def test_survives_redis_restart(self) -> Any:
        """Acknowledged jobs are in the AOF: they survive a redis-server restart."""
        store = yield self.opened(self.make_store())
        jobs = [job(f"k{i}", data=b"\0%d" % i) for i in range(100)]
        yield gatherResults([store.add(j) for j in jobs])
        yield store.close()
        self.server.stop()
        self.server.start()
        store = yield self.opened(self.reopen_store())
        self.assertEqual((yield store.replay()), jobs)

    @inlineCallbacks
    def test_old_layout(self) -> Any:
        """A job hash without a handle field (written before gearmanpy kept handles) replays
        with no handle; the boot counter starts at 1 where there is none."""
        store = yield self.opened(self.make_store())
        yield store.add(job("old", handle=b"H:h:1-1"))
        yield store._conn.execute_command("HDEL", self.prefix + b"job:old", b"handle")
        yield store.close()
        yield self.check_upgrade(job("old"))


class StoreFromUrlTests(SynchronousTestCase):
    """``--queue URL`` parsing."""

    def test_memory(self) -> None:
        """``memory`` is the memory store."""
        self.assertIsInstance(store_from_url("memory", object()), MemoryJobStore)

    def test_sqlite_relative(self) -> None:
        """``sqlite:PATH`` is relative to the working directory."""
        store = store_from_url("sqlite:q/jobs.db", object())
        assert isinstance(store, SQLiteJobStore)
        self.assertEqual(store.path, os.path.join(os.getcwd(), "q", "jobs.db"))

    def test_sqlite_absolute(self) -> None:
        """An absolute path is kept."""
        store = store_from_url("sqlite:/var/lib/gearmanpy/q.db", object())
        assert isinstance(store, SQLiteJobStore)
        self.assertEqual(store.path, "/var/lib/gearmanpy/q.db")

    def test_postgres(self) -> None:
        """Both PostgreSQL schemes give a PostgreSQL store with the URL as conninfo."""
        for url in ("postgresql://u:p@db:5433/jobs", "postgres://u@db/jobs"):
            store = store_from_url(url, object())
            assert isinstance(store, PostgresJobStore)
            self.assertEqual(store.conninfo, url)

    def test_redis(self) -> None:
        """``redis://host:port/db`` sets host, port, database and password."""
        store = store_from_url("redis://:s%40cret@cache:6380/3", object())
        assert isinstance(store, RedisJobStore)
        self.assertEqual(
            (store.host, store.port, store.db, store.password), ("cache", 6380, 3, "s@cret")
        )
        store = store_from_url("redis://cache", object())
        assert isinstance(store, RedisJobStore)
        self.assertEqual((store.port, store.db, store.password), (6379, 0, None))

    def test_rejected(self) -> None:
        """Anything else is a ValueError that says what is accepted."""
        for url in (
            "",
            "mysql://x/y",
            "sqlite:",
            "sqlite://x",
            "postgresql:x",
            "redis://",
            "redis://h/x",
            "redis://h:port/0",
            "Memory2",
        ):
            with self.assertRaises(ValueError, msg=url):
                store_from_url(url, object())


class DeadlinesTests(SynchronousTestCase):
    """The watchdog that bounds how long a store operation may take."""

    def test_fails_late_deferreds(self) -> None:
        """A Deferred that has not fired by its deadline fails with StoreError; one that
        fired in time is left alone, and later ones wait for their own deadline."""
        clock = Clock()
        deadlines = Deadlines(clock, 4.0, "test store")
        deadlines.start()
        early: Deferred[None] = deadlines.track(Deferred())
        clock.advance(2)
        late: Deferred[None] = deadlines.track(Deferred())
        early.callback(None)
        clock.advance(2)
        self.assertIsNone(self.successResultOf(early))
        self.assertNoResult(late)
        clock.advance(2)
        self.failureResultOf(late, StoreError)
        deadlines.stop()
        self.assertEqual(clock.getDelayedCalls(), [])


class _HungBackend:
    """A backend whose writes block until the test releases them."""

    def __init__(self) -> None:
        self.writing = threading.Event()
        self.release = threading.Event()
        self.written: list[Any] = []

    def open(self) -> None:
        """Nothing to open."""

    def write(self, ops: list[Any]) -> list[Any]:
        """Say so, block, then record the operations."""
        self.writing.set()
        self.release.wait(30)
        self.written.extend(ops)
        return [None] * len(ops)

    def replay(self) -> list[StoredJob]:
        """Nothing stored."""
        return []

    def dead(self) -> list[DeadJob]:
        """No dead jobs."""
        return []

    def results(self) -> list[KeptResult]:
        """No results."""
        return []

    def next_boot(self) -> int:
        """Always the first."""
        return 1

    def close(self) -> None:
        """Nothing to close."""


class _ThreadedClock(Clock):
    """A Clock whose time only the test moves, handing the writer thread's results to the real
    reactor (which trial runs)."""

    def callFromThread(self, f: Any, *args: Any, **kw: Any) -> None:
        """Run ``f`` on the real reactor's thread."""
        _reactor().callFromThread(f, *args, **kw)


class ThreadedBatchWriterTests(TestCase):
    """The writer thread shared by the SQLite and PostgreSQL stores."""

    @inlineCallbacks
    def test_hung_database(self) -> Any:
        """An add stuck in a hung database fails with StoreError once the timeout has passed,
        not before, instead of waiting forever; the late answer is dropped."""
        backend = _HungBackend()
        clock = _ThreadedClock()
        writer = ThreadedBatchWriter(clock, backend, "hung", timeout=0.4)
        yield writer.submit("open")
        added = writer.submit(ADD, job("k"))
        self.assertTrue(backend.writing.wait(10), "the write never started")
        clock.advance(0.3)
        self.assertNoResult(added)
        clock.advance(0.2)
        self.failureResultOf(added, StoreError)
        backend.release.set()
        yield writer.close()
        self.assertEqual(backend.written, [(ADD, (job("k"),))])
        self.assertEqual(clock.getDelayedCalls(), [])
