"""Conformance tests for the failure policy's state in every IJobStore backend (issue 12):
retries waiting in the queue, the dead set, kept results and recurring ticks, plus a SIGKILL
crash test per durable backend.

The mixin :class:`_PolicyTestsMixin` runs on the backings of :mod:`tests.test_store` (memory,
SQLite on a temporary file, a real PostgreSQL and a real redis-server), like the queue's own
conformance suite there.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial.unittest import SkipTest, TestCase

from gearmanpy.errors import StoreError
from gearmanpy.store._redis_lua import WRITE, pack
from gearmanpy.store._writer import BURY
from gearmanpy.store.interface import DeadJob, KeptResult, Priority, StoredJob
from tests.test_store import (
    REPO,
    MemoryBacking,
    PostgresBacking,
    RedisBacking,
    SQLiteBacking,
    StoreFixture,
    job,
)


def dead(key: str, failed_at: float, why: bytes = b"worker lost", **kw: Any) -> DeadJob:
    """A dead job ``key`` that failed with ``why`` (a job as :func:`tests.test_store.job`
    makes it, with ``kw``)."""
    return DeadJob(job=job(key, **kw), error=why, failed_at=failed_at)


def result(handle: bytes, **kw: Any) -> KeptResult:
    """A complete job's result kept for ``handle``, overridden by ``kw``."""
    values: dict[str, Any] = {
        "function": b"f",
        "unique": b"",
        "outcome": "complete",
        "data": b"done",
        "numerator": 0,
        "denominator": 0,
        "attempts": 1,
        "submitted_at": 1_700_000_000.25,
        "started_at": 1_700_000_001.5,
        "finished_at": 1_700_000_002.125,
        "expires_at": 1_700_086_402.125,
    }
    values.update(kw)
    return KeptResult(handle=handle, **values)


class _PolicyTestsMixin(StoreFixture):
    """The failure policy's state, on the backing of the class it is mixed into.

    A backing whose inserts can be made to fail defines :meth:`fail_inserts`, so the tests
    can show that a move between tables is one transaction.
    """

    def fail_inserts(self, table: str) -> Callable[[], None]:
        """Make inserts into ``table`` (``queue``, ``dead`` or ``results``) of this test's
        store fail until the returned function is called."""
        raise SkipTest(f"{type(self).__name__} cannot make its inserts fail")

    @inlineCallbacks
    def test_new_job_fields_kept(self) -> Any:
        """A job's submission time and last error come back exactly, across a reopen."""
        jobs = [
            job("k1", submitted_at=1_700_000_000.123456, error=b"worker lost"),
            job("k2", submitted_at=0.1, error=b"\0\xff bytes"),
            job("k3"),
        ]
        self.assertEqual((yield self.roundtrip(jobs)), jobs)  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_reschedule(self) -> Any:
        """reschedule records the retry time, attempts and error of a queued job, keeps its
        place in the order, survives a reopen, and stores nothing for an unknown key."""
        store = yield self.opened(self.make_store())
        yield gatherResults([store.add(job("a", data=b"1")), store.add(job("b"))])
        yield store.reschedule("a", 1_900_000_000, 2, b"timeout")
        yield store.reschedule("nope", 5, 1, b"x")
        yield store.done("b")
        yield store.reschedule("b", 5, 1, b"x")
        store = yield self.reopened(store)
        self.assertEqual(  # type: ignore[attr-defined]
            (yield store.replay()),
            [job("a", data=b"1", when=1_900_000_000, retries=2, error=b"timeout")],
        )

    @inlineCallbacks
    def test_dead_set_round_trip_and_order(self) -> Any:
        """Buried jobs leave the queue and come back with every field, oldest failure first
        (ties in the order they were buried); burying a key again replaces its dead row."""
        store = yield self.opened(self.make_store())
        full = {"function": b"g", "unique": b"u", "priority": Priority.HIGH, "data": b"\0p"}
        more = {"reducer": b"sum", "handle": b"H:h:1-9", "submitted_at": 17.5, "error": b"e"}
        rows = [
            dead("a", 300.5, b"failed", retries=3, **full, **more),
            dead("b", 100.0, b"timeout", when=2**40),
            dead("c", 200.25, b"exception text \0 with a NUL"),
            dead("d", 100.0),
        ]
        yield gatherResults([store.add(row.job) for row in rows] + [store.add(job("q"))])
        yield gatherResults([store.bury(row) for row in rows])
        store = yield self.reopened(store)
        a, b, c, d = rows
        self.assertEqual((yield store.dead()), [b, d, c, a])  # type: ignore[attr-defined]
        self.assertEqual([j.key for j in (yield store.replay())], ["q"])  # type: ignore
        again = dead("b", 400.0, b"failed")
        yield store.bury(again)
        self.assertEqual((yield store.dead()), [d, c, a, again])  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_unbury_and_drop(self) -> Any:
        """unbury forgets the dead row and queues the job under its new key; drop_dead
        forgets dead rows, and unknown keys are not an error; both survive a reopen."""
        store = yield self.opened(self.make_store())
        rows = [dead(key, float(i)) for i, key in enumerate("abcd")]
        yield gatherResults([store.add(row.job) for row in rows])
        yield gatherResults([store.bury(row) for row in rows])
        back = job("a2", data=b"again", retries=0)
        yield store.unbury("a", back)
        yield store.drop_dead(["b", "d", "never"])
        yield store.drop_dead([])
        store = yield self.reopened(store)
        self.assertEqual((yield store.dead()), [rows[2]])  # type: ignore[attr-defined]
        self.assertEqual((yield store.replay()), [back])  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_results_replace_by_handle(self) -> Any:
        """Kept results come back in the order they were kept, with every field; a second
        result for a handle replaces the first (and goes last); keep_result forgets the
        queued row it names, and None forgets none."""
        store = yield self.opened(self.make_store())
        yield gatherResults([store.add(job("k1")), store.add(job("k2"))])
        first = result(b"H:h:1-1", outcome="fail", data=b"")
        other = result(b"H:h:1-2", numerator=2**40, denominator=2**41, attempts=3)
        last = result(b"H:h:1-1", outcome="exception", data=b"boom\0", unique=b"u")
        yield store.keep_result("k1", first)
        yield store.keep_result(None, other)
        yield store.keep_result("k1", last)
        store = yield self.reopened(store)
        self.assertEqual((yield store.results()), [other, last])  # type: ignore[attr-defined]
        self.assertEqual([j.key for j in (yield store.replay())], ["k2"])  # type: ignore

    @inlineCallbacks
    def test_drop_results(self) -> Any:
        """drop_results forgets the results of the handles given; unknown ones are fine."""
        store = yield self.opened(self.make_store())
        kept = [result(b"H:h:1-%d" % i) for i in range(4)]
        yield gatherResults([store.keep_result(None, r) for r in kept])
        yield store.drop_results([b"H:h:1-0", b"H:h:1-2", b"H:h:9-9"])
        yield store.drop_results([])
        store = yield self.reopened(store)
        self.assertEqual((yield store.results()), [kept[1], kept[3]])  # type: ignore

    @inlineCallbacks
    def test_claim_tick_once_per_tick(self) -> Any:
        """A tick is claimed once: a second claim of it, or of an earlier tick, is refused
        and queues nothing, also after a reopen; a later tick and other names are free."""
        store = yield self.opened(self.make_store())
        claims = [
            store.claim_tick("nightly", 1000, job("n1")),
            store.claim_tick("nightly", 1000, job("n2")),
            store.claim_tick("nightly", 940, job("n3")),
            store.claim_tick("hourly", 1000, job("h1")),
        ]
        self.assertEqual((yield gatherResults(claims)), [True, False, False, True])  # type: ignore
        store = yield self.reopened(store)
        claims = [
            store.claim_tick("nightly", 1000, job("n4")),
            store.claim_tick("nightly", 1060, job("n5")),
        ]
        self.assertEqual((yield gatherResults(claims)), [False, True])  # type: ignore
        self.assertEqual(  # type: ignore[attr-defined]
            [j.key for j in (yield store.replay())], ["n1", "h1", "n5"]
        )

    @inlineCallbacks
    def test_claim_tick_same_key(self) -> Any:
        """A claim repeated with the same job key (the server names a run's job after its
        tick, so every server and every start sends the same one) is refused all the same,
        and the job stays as the first claim queued it."""
        store = yield self.opened(self.make_store())
        self.assertTrue((yield store.claim_tick("t", 60, job("t-60"))))  # type: ignore
        store = yield self.reopened(store)
        second = self.reopen_store() if self.durable else store
        if self.durable:
            yield self.opened(second)
        claims = [
            store.claim_tick("t", 60, job("t-60", data=b"again")),
            second.claim_tick("t", 60, job("t-60", data=b"again")),
        ]
        self.assertEqual((yield gatherResults(claims)), [False, False])  # type: ignore
        self.assertEqual((yield store.replay()), [job("t-60")])  # type: ignore

    @inlineCallbacks
    def test_claim_tick_shared(self) -> Any:
        """Two stores on one backing (two servers), claiming the same ticks at once, claim
        each tick exactly once between them, and exactly the winners' jobs are queued."""
        first = yield self.opened(self.make_store())
        second = yield self.opened(self.reopen_store())
        ticks = range(60, 60 * 31, 60)
        asked = []
        for tick in ticks:
            for name, store in (("a", first), ("b", second)):
                asked.append(store.claim_tick("cron", tick, job(f"{name}{tick}")))
        answers = yield gatherResults(asked)
        winners = [
            f"{name}{tick}"
            for (tick, name), won in zip(
                [(t, n) for t in ticks for n in "ab"], answers, strict=True
            )
            if won
        ]
        self.assertEqual(sorted(int(w[1:]) for w in winners), list(ticks))  # type: ignore
        replayed = {j.key for j in (yield first.replay())}
        self.assertEqual(replayed, set(winners))  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_policy_writes_in_one_batch(self) -> Any:
        """Every kind of write queued together applies in the order it was made."""
        store = yield self.opened(self.make_store())
        ds = [
            store.add(job("a")),
            store.reschedule("a", 50, 1, b"failed"),
            store.add(job("b")),
            store.bury(dead("a", 10.0, retries=1)),
            store.claim_tick("r", 60, job("c")),
            store.unbury("a", job("a2")),
            store.keep_result("b", result(b"H:1")),
            store.add(job("d")),
            store.bury(dead("d", 11.0)),
            store.drop_dead(["d"]),
            store.claim_tick("r", 60, job("e")),
            store.keep_result(None, result(b"H:2")),
            store.drop_results([b"H:1"]),
        ]
        answers = yield gatherResults(ds)
        self.assertEqual(answers[4], True)  # type: ignore[attr-defined]
        self.assertEqual(answers[10], False)  # type: ignore[attr-defined]
        self.assertEqual([j.key for j in (yield store.replay())], ["c", "a2"])  # type: ignore
        self.assertEqual((yield store.dead()), [])  # type: ignore[attr-defined]
        self.assertEqual((yield store.results()), [result(b"H:2")])  # type: ignore

    @inlineCallbacks
    def test_repeated_in_one_batch(self) -> Any:
        """A key buried, a job rescheduled, or a handle's result kept twice in one batch keeps
        the last of each (one statement may not write a row twice)."""
        store = yield self.opened(self.make_store())
        yield gatherResults([store.add(job("a")), store.add(job("b"))])
        ds = [
            store.reschedule("b", 10, 1, b"one"),
            store.reschedule("b", 20, 2, b"two"),
            store.bury(dead("a", 1.0, b"first")),
            store.bury(dead("a", 2.0, b"second")),
            store.keep_result(None, result(b"H", data=b"first")),
            store.keep_result(None, result(b"H", data=b"second")),
        ]
        yield gatherResults(ds)
        store = yield self.reopened(store)
        self.assertEqual(  # type: ignore[attr-defined]
            (yield store.replay()), [job("b", when=20, retries=2, error=b"two")]
        )
        self.assertEqual((yield store.dead()), [dead("a", 2.0, b"second")])  # type: ignore
        self.assertEqual((yield store.results()), [result(b"H", data=b"second")])  # type: ignore

    @inlineCallbacks
    def test_closed(self) -> Any:
        """After close, every policy method fails with StoreError."""
        store = yield self.opened(self.make_store())
        yield store.close()
        for refused in (
            store.reschedule("k", 1, 1, b""),
            store.bury(dead("k", 1.0)),
            store.unbury("k", job("k2")),
            store.drop_dead(["k"]),
            store.dead(),
            store.keep_result("k", result(b"H")),
            store.drop_results([b"H"]),
            store.results(),
            store.claim_tick("t", 60, job("k")),
        ):
            yield self.assertFailure(refused, StoreError)  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_bury_is_one_transaction(self) -> Any:
        """A bury whose dead row cannot be written leaves the queued row where it was."""
        store = yield self.opened(self.make_store())
        yield store.add(job("k"))
        self.fail_inserts("dead")
        yield self.assertFailure(store.bury(dead("k", 1.0)), StoreError)  # type: ignore
        self.assertEqual([j.key for j in (yield store.replay())], ["k"])  # type: ignore
        self.assertEqual((yield store.dead()), [])  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_unbury_is_one_transaction(self) -> Any:
        """An unbury whose job cannot be queued keeps the dead row."""
        store = yield self.opened(self.make_store())
        yield store.add(job("k"))
        yield store.bury(dead("k", 1.0))
        self.fail_inserts("queue")
        yield self.assertFailure(store.unbury("k", job("k2")), StoreError)  # type: ignore
        self.assertEqual((yield store.dead()), [dead("k", 1.0)])  # type: ignore[attr-defined]
        self.assertEqual((yield store.replay()), [])  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_keep_result_is_one_transaction(self) -> Any:
        """A result that cannot be kept leaves the queued row where it was."""
        store = yield self.opened(self.make_store())
        yield store.add(job("k"))
        self.fail_inserts("results")
        yield self.assertFailure(store.keep_result("k", result(b"H")), StoreError)  # type: ignore
        self.assertEqual([j.key for j in (yield store.replay())], ["k"])  # type: ignore

    @inlineCallbacks
    def test_claim_is_one_transaction(self) -> Any:
        """A claim whose job cannot be queued records no tick: once the queue takes jobs
        again, the same tick is claimed."""
        store = yield self.opened(self.make_store())
        allow = self.fail_inserts("queue")
        yield self.assertFailure(store.claim_tick("t", 60, job("k1")), StoreError)  # type: ignore
        allow()
        self.assertTrue((yield store.claim_tick("t", 60, job("k2"))))  # type: ignore
        self.assertEqual([j.key for j in (yield store.replay())], ["k2"])  # type: ignore

    @inlineCallbacks
    def check_policy_upgrade(self, old: StoredJob) -> Any:
        """Open a backing that holds ``old`` as gearmanpy stored it before the failure policy:
        ``old`` replays with no submission time or error, and the policy's state works and
        survives a reopen."""
        store = yield self.opened(self.make_store())
        self.assertEqual((yield store.replay()), [old])  # type: ignore[attr-defined]
        self.assertEqual((yield store.dead()), [])  # type: ignore[attr-defined]
        self.assertEqual((yield store.results()), [])  # type: ignore[attr-defined]
        new = job("new", submitted_at=5.5, error=b"timeout")
        yield store.add(new)
        buried = DeadJob(job=old, error=b"failed", failed_at=9.0)
        yield store.bury(buried)
        yield store.keep_result("new", result(b"H:h:1-1"))
        self.assertTrue((yield store.claim_tick("r", 60, job("tick"))))  # type: ignore
        store = yield self.reopened(store)
        self.assertEqual([j.key for j in (yield store.replay())], ["tick"])  # type: ignore
        self.assertEqual((yield store.dead()), [buried])  # type: ignore[attr-defined]
        self.assertEqual((yield store.results()), [result(b"H:h:1-1")])  # type: ignore
        self.assertFalse((yield store.claim_tick("r", 60, job("tick2"))))  # type: ignore


class MemoryPolicyTests(_PolicyTestsMixin, MemoryBacking, TestCase):
    """The policy's state in MemoryJobStore."""


class _CrashTestsMixin(StoreFixture):
    """A SIGKILL test for a durable backing: :meth:`crash` runs :data:`_CRASH_CHILD` on it,
    kills it at a random moment, and checks what was stored against what it acknowledged."""

    def kill_database(self) -> None:
        """Crash the database too, right after the child (nothing to do for a file)."""

    #: Kills per test, each on what the ones before left: a kill between the steps of a
    #: write that is not one transaction is likelier to be caught in one of several.
    rounds = 3

    @inlineCallbacks
    def crash(self, argv: list[str]) -> Any:
        """Run the child with ``argv`` (backend, where, table or prefix) until it has
        acknowledged a random number of writes, SIGKILL it (and the database), and check
        what is stored; :attr:`rounds` times, each child numbering its jobs on from the last."""
        seed = random.randrange(2**32)
        rng = random.Random(seed)
        acked: dict[int, int] = {}
        for round in range(self.rounds):
            lines = self._run_child([*argv, str(round * 1_000_000)], rng.randrange(1500, 4000))
            self.kill_database()
            for line in lines:
                fields = line.split()
                if len(fields) == 2:  # the last line may have been cut by the kill
                    i, stage = int(fields[0]), int(fields[1])
                    acked[i] = max(acked.get(i, -1), stage)
            yield self.check_crashed(acked, f"seed {seed}, round {round}")
        self.assertGreater(len(acked), 300)  # type: ignore[attr-defined]

    @inlineCallbacks
    def check_crashed(self, acked: dict[int, int], report: str) -> Any:
        """Every job in ``acked`` (its number: the last stage acknowledged) is stored in
        exactly one place, at least as far along as that stage; no job is in two places."""
        store = yield self.opened(self.reopen_store())
        queued = {j.key: j for j in (yield store.replay())}
        buried = {d.job.key: d for d in (yield store.dead())}
        places: dict[int, list[int]] = {}
        for key, j in queued.items():
            i = int(key[1:].rstrip("r"))
            stage = 3 if key.endswith("r") else (1 if j.retries else 0)
            if stage == 1:
                self.assertEqual((j.when, j.error), (1_900_000_000 + i, b"boom"))  # type: ignore
            places.setdefault(i, []).append(stage)
        for key in buried:
            places.setdefault(int(key[1:].rstrip("r")), []).append(4 if key.endswith("r") else 2)
        doubled = {i: p for i, p in places.items() if len(p) > 1}
        lost = [i for i in acked if i not in places]
        behind = {i: (s, places[i]) for i, s in acked.items() if i in places and places[i][0] < s}
        self.assertEqual((doubled, lost, behind), ({}, [], {}), report)  # type: ignore
        yield store.close()

    def _run_child(self, argv: list[str], target: int) -> list[str]:
        """Run the child until it printed ``target`` lines, SIGKILL it, return all it printed."""
        child = subprocess.Popen(
            [sys.executable, "-u", "-c", _CRASH_CHILD, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": REPO},
        )
        lines: list[str] = []
        assert child.stdout is not None and child.stderr is not None
        try:
            while len(lines) < target:
                line = child.stdout.readline()
                if not line:
                    self.fail(f"child died: {child.stderr.read()!r}")  # type: ignore
                lines.append(line.decode())
            child.send_signal(signal.SIGKILL)
            lines.extend(child.stdout.read().decode().splitlines())
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()
            child.stdout.close()
            child.stderr.close()
        self.assertEqual(child.returncode, -signal.SIGKILL)  # type: ignore[attr-defined]
        return lines


#: Keeps 300 jobs moving at once, each through add ``k<i>`` (stage 0), reschedule (1), bury
#: (2), unbury as ``k<i>r`` (3) and bury again (4), each write issued when the one before was
#: acknowledged; prints "i stage" for every acknowledged write. argv: the backend (sqlite,
#: postgresql or redis), its path, URL or host:port, the table or key prefix, and the first i.
_CRASH_CHILD = """
import sys
from twisted.internet import reactor
from gearmanpy.store.interface import DeadJob, Priority, StoredJob

kind, where, extra, first = sys.argv[1:5]
if kind == "sqlite":
    from gearmanpy.store.sqlite import SQLiteJobStore
    store = SQLiteJobStore(where, reactor)
elif kind == "postgresql":
    from gearmanpy.store.postgres import PostgresJobStore
    store = PostgresJobStore(where, reactor, table=extra)
else:
    from gearmanpy.store.redis import RedisJobStore
    host, port = where.rsplit(":", 1)
    store = RedisJobStore(host, int(port), reactor, prefix=extra.encode())

def job(key, i, **kw):
    return StoredJob(key, b"f", b"u%d" % i, Priority.NORMAL, b"x" * 100, submitted_at=i, **kw)

def step(i, stage):
    k = "k%d" % i
    if stage == 0:
        d = store.add(job(k, i))
    elif stage == 1:
        d = store.reschedule(k, 1_900_000_000 + i, 1, b"boom")
    elif stage == 2:
        d = store.bury(DeadJob(job(k, i, retries=1, error=b"boom"), b"boom", float(i)))
    elif stage == 3:
        d = store.unbury(k, job(k + "r", i))
    else:
        d = store.bury(DeadJob(job(k + "r", i), b"again", float(i)))
    d.addCallbacks(acked, failed, (i, stage))

def acked(_, i, stage):
    sys.stdout.write("%d %d\\n" % (i, stage))
    if stage < 4:
        step(i, stage + 1)
    else:
        start()

state = {"next": int(first)}

def start():
    state["next"] += 1
    step(state["next"] - 1, 0)

def failed(failure):
    sys.stderr.write(failure.getTraceback())
    reactor.stop()

store.open().addCallbacks(lambda _: [start() for _ in range(300)], failed)
reactor.run()
"""


class SQLitePolicyTests(_PolicyTestsMixin, _CrashTestsMixin, SQLiteBacking, TestCase):
    """The policy's state in SQLiteJobStore."""

    def fail_inserts(self, table: str) -> Callable[[], None]:
        """A trigger that aborts every insert into ``table``."""
        name = {"queue": "gearmanpy_queue"}.get(table, f"gearmanpy_queue_{table}")
        with sqlite3.connect(self.path) as conn:
            conn.execute(
                f"CREATE TRIGGER refuse BEFORE INSERT ON {name}"
                " BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )

        def allow() -> None:
            with sqlite3.connect(self.path) as conn:
                conn.execute("DROP TRIGGER refuse")

        return allow

    @inlineCallbacks
    def test_old_schema(self) -> Any:
        """A database of the release before the failure policy (handles and boots, no times,
        errors, dead set, results or ticks) gains them at open and keeps its rows."""
        with sqlite3.connect(self.path) as conn:
            conn.executescript(_PREVIOUS_SQLITE_SCHEMA)
            conn.execute(
                "INSERT INTO gearmanpy_queue (job_key, function, unique_id, priority, data,"
                " when_to_run, retries, reducer, handle)"
                " VALUES ('old', x'66', x'75', 1, x'00', 7, 2, x'', x'483a313a31')"
            )
        yield self.check_policy_upgrade(
            job("old", unique=b"u", data=b"\0", when=7, retries=2, handle=b"H:1:1")
        )
        with sqlite3.connect(self.path) as conn:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(gearmanpy_queue)")}
        self.assertLessEqual({"handle", "submitted_at", "error"}, columns)

    def test_acknowledged_policy_writes_survive_sigkill(self) -> Any:
        """SIGKILL while jobs are added, rescheduled, buried and unburied loses none and
        doubles none."""
        return self.crash(["sqlite", self.path, ""])


#: The queue as gearmanpy wrote it before the failure policy (it kept handles, counted boots).
_PREVIOUS_SQLITE_SCHEMA = """
CREATE TABLE gearmanpy_queue (
    seq INTEGER PRIMARY KEY,
    job_key TEXT NOT NULL UNIQUE,
    function BLOB NOT NULL,
    unique_id BLOB NOT NULL,
    priority INTEGER NOT NULL,
    data BLOB NOT NULL,
    when_to_run INTEGER NOT NULL,
    retries INTEGER NOT NULL,
    reducer BLOB NOT NULL,
    handle BLOB NOT NULL DEFAULT x''
);
CREATE TABLE gearmanpy_queue_boot (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    boot INTEGER NOT NULL
);
"""


@pytest.mark.realdb
class PostgresPolicyTests(_PolicyTestsMixin, _CrashTestsMixin, PostgresBacking, TestCase):
    """The policy's state in PostgresJobStore, on a real PostgreSQL."""

    def _sql(self, *statements: str) -> None:
        """Run ``statements`` on the server in one committed transaction."""
        import psycopg

        with psycopg.connect(self.server.url) as conn:
            for statement in statements:
                conn.execute(statement)  # type: ignore[arg-type]

    def fail_inserts(self, table: str) -> Callable[[], None]:
        """A trigger that raises on every insert into ``table``."""
        name = self.table if table == "queue" else f"{self.table}_{table}"
        self._sql(
            "CREATE OR REPLACE FUNCTION gearmanpy_refuse() RETURNS trigger LANGUAGE plpgsql"
            " AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$",
            f"CREATE TRIGGER refuse BEFORE INSERT ON {name}"
            " FOR EACH ROW EXECUTE FUNCTION gearmanpy_refuse()",
        )
        return lambda: self._sql(f"DROP TRIGGER refuse ON {name}")

    def kill_database(self) -> None:
        """An immediate shutdown (SIGQUIT: no checkpoint, crash recovery at the restart)."""
        process = self.server.process
        assert process is not None
        process.send_signal(signal.SIGQUIT)
        process.wait(30)
        self.server.start()

    @inlineCallbacks
    def test_old_schema(self) -> Any:
        """A table of the release before the failure policy gains its columns and tables at
        connect and keeps its rows."""
        self._sql(
            _PREVIOUS_POSTGRES_SCHEMA.format(table=self.table),
            f"INSERT INTO {self.table} (job_key, function, unique_id, priority, data,"
            " when_to_run, retries, reducer, handle)"
            " VALUES ('old', 'f', 'u', 1, '\\x00', 7, 2, '', 'H:1:1')",
        )
        yield self.check_policy_upgrade(
            job("old", unique=b"u", data=b"\0", when=7, retries=2, handle=b"H:1:1")
        )

    def test_acknowledged_policy_writes_survive_sigkill(self) -> Any:
        """SIGKILL of the writer and an immediate shutdown of PostgreSQL while jobs are
        added, rescheduled, buried and unburied lose none and double none."""
        return self.crash(["postgresql", self.server.url, self.table])


#: The queue as gearmanpy wrote it before the failure policy (it kept handles, counted boots).
_PREVIOUS_POSTGRES_SCHEMA = """
CREATE TABLE {table} (
    job_key TEXT PRIMARY KEY,
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    function BYTEA NOT NULL,
    unique_id BYTEA NOT NULL,
    priority SMALLINT NOT NULL,
    data BYTEA NOT NULL,
    when_to_run BIGINT NOT NULL,
    retries INTEGER NOT NULL,
    reducer BYTEA NOT NULL,
    handle BYTEA NOT NULL DEFAULT ''::bytea
);
CREATE TABLE {table}_boot (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    boot BIGINT NOT NULL
)
"""


@pytest.mark.realdb
class RedisPolicyTests(_PolicyTestsMixin, _CrashTestsMixin, RedisBacking, TestCase):
    """The policy's state in RedisJobStore, on a real redis-server."""

    def kill_database(self) -> None:
        """SIGKILL redis-server too; it replays its AOF at the restart."""
        process = self.server.process
        assert process is not None
        process.kill()
        process.wait(30)
        self.server.start()

    @inlineCallbacks
    def test_malformed_batch_changes_nothing(self) -> Any:
        """Redis does not roll a failed script back, so the write script parses the whole
        batch first: a bury followed by garbage is refused and the job stays queued."""
        store = yield self.opened(self.make_store())
        yield store.add(job("k"))
        blob = pack([(BURY, (dead("k", 1.0),))]) + b"z"
        command = store._conn.execute_command("EVAL", WRITE, 0, self.prefix, blob)
        yield self.assertFailure(command, Exception)
        self.assertEqual([j.key for j in (yield store.replay())], ["k"])
        self.assertEqual((yield store.dead()), [])

    @inlineCallbacks
    def test_old_layout(self) -> Any:
        """Job hashes without a submission time or error (written before the failure
        policy) replay with none, and the policy's keys are made as they are needed."""
        store = yield self.opened(self.make_store())
        yield store.add(job("old", handle=b"H:1:1", submitted_at=3.0, error=b"x"))
        yield store._conn.execute_command("HDEL", self.prefix + b"job:old", b"submitted", b"error")
        yield store.close()
        yield self.check_policy_upgrade(job("old", handle=b"H:1:1"))

    def test_acknowledged_policy_writes_survive_sigkill(self) -> Any:
        """SIGKILL of the writer and of redis-server while jobs are added, rescheduled,
        buried and unburied lose none and double none."""
        return self.crash(["redis", f"127.0.0.1:{self.server.port}", self.prefix.decode()])
