"""Recurring jobs in a cluster tick by the database's clock (gearmanpy/server/cluster_clock.py):
a node whose clock is off fires each tick when the database's clock reaches it, re-times its
timers when a lease tick moves the offset, and ``twistd gearman --cluster`` wires it so."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gearmanpy.server.cluster_clock import DatabaseClock
from gearmanpy.server.cluster_workers import WorkerBoard
from gearmanpy.server.recurring import RecurringJob, RecurringJobs
from tests.serverhelpers import make_core

#: A whole minute, UTC, by the database's clock.
MINUTE = 1_800_000_000


class DatabaseClockTests(SynchronousTestCase):
    """Ticks by the reactor's clock plus the learned offset; timers stay the reactor's."""

    def setUp(self) -> None:
        self.core, self.reactor = make_core()
        self.job = RecurringJob.make("r", "* * * * *", "f", payload="p")

    def at(self, local: float) -> None:
        """Move the node's (reactor's) clock to ``local``."""
        self.reactor.advance(local - self.reactor.seconds())

    def queued(self) -> int:
        """How many runs of the recurring job are queued."""
        f = self.core.functions.get(b"f")
        return 0 if f is None else f.queued()

    def recurring(self, clock: Any) -> RecurringJobs:
        """The recurring job on ``clock``, started (stopped at the end)."""
        recurring = RecurringJobs(self.core, clock, (self.job,))
        if isinstance(clock, DatabaseClock):
            clock.subscribe(recurring.retime)
        recurring.start()
        self.addCleanup(recurring.stop)
        return recurring

    def test_node_behind_fires_on_the_database_minute(self) -> None:
        """A node 100 s behind the database fires when the database's minute begins, 100 s
        before its own clock says so, and records the database's minute as the tick."""
        self.at(MINUTE + 10 - 100)
        clock = DatabaseClock(self.reactor)
        clock.learn(100.0)
        self.assertEqual(clock.seconds(), MINUTE + 10)
        recurring = self.recurring(clock)
        self.assertEqual(recurring.rows()[0][1], MINUTE + 60)
        self.at(MINUTE + 60 - 100 - 0.01)
        self.assertEqual(self.queued(), 0)
        self.at(MINUTE + 60 - 100)
        self.assertEqual(self.queued(), 1)
        self.assertEqual(recurring.last_tick["r"], MINUTE + 60)
        self.assertEqual(recurring.rows()[0][1], MINUTE + 120)

    def test_reactor_clock_fires_on_its_own_minute(self) -> None:
        """The same node on its reactor's clock fires by that clock (what the cluster must
        not do): the check above can fail."""
        self.at(MINUTE + 10 - 100)
        recurring = self.recurring(self.reactor)
        self.assertEqual(recurring.rows()[0][1], MINUTE - 60)

    def test_a_new_offset_retimes_the_timers(self) -> None:
        """A lease tick that finds the database 30 s ahead brings the pending tick 30 s
        closer; one that finds it 30 s behind pushes it back; the tick is the same."""
        self.at(MINUTE + 10)
        clock = DatabaseClock(self.reactor)
        clock.learn(0.0)
        recurring = self.recurring(clock)
        clock.learn(30.0)
        self.at(MINUTE + 60 - 30 - 0.01)
        self.assertEqual(self.queued(), 0)
        self.at(MINUTE + 60 - 30)
        self.assertEqual(self.queued(), 1)
        self.assertEqual(recurring.rows()[0][1], MINUTE + 120)
        clock.learn(-30.0)  # the next tick, MINUTE + 120, is now 60 s further
        self.at(MINUTE + 120 + 30 - 0.01)
        self.assertEqual(recurring.last_tick["r"], MINUTE + 60)
        self.at(MINUTE + 120 + 30)
        self.assertEqual(recurring.last_tick["r"], MINUTE + 120)

    def test_small_moves_keep_the_timers_and_ticks(self) -> None:
        """A move under the threshold leaves the timer as it was, and a timer that fires
        while the clock reads just short of its tick still goes on to the next minute."""
        self.at(MINUTE + 10)
        clock = DatabaseClock(self.reactor)
        clock.learn(0.0)
        recurring = self.recurring(clock)
        clock.learn(-0.05)
        self.at(MINUTE + 60)  # the database's clock reads MINUTE + 59.95
        self.assertEqual(recurring.last_tick["r"], MINUTE + 60)
        self.assertEqual(recurring.rows()[0][1], MINUTE + 120)
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)

    def test_no_reading_changes_nothing(self) -> None:
        """A tick that could not read the database's clock keeps the last offset."""
        clock = DatabaseClock(Clock())
        clock.learn(5.0)
        clock.learn(None)
        self.assertEqual((clock.offset, clock.learned), (5.0, True))


class TapWiringTests(SynchronousTestCase):
    """``twistd gearman --cluster`` times recurring jobs by the database's clock (and
    publishes its workers)."""

    def test_cluster_service_puts_recurring_on_the_database_clock(self) -> None:
        from gearmanpy.tap import Options, _cluster_service, _makeService

        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        config = Path(folder) / "gearmanpy.toml"
        config.write_text('[[recurring]]\nname = "r"\ncron = "* * * * *"\nfunction = "f"\n')
        options = Options()
        options.parseOptions(
            ["--queue", "postgresql://nobody@127.0.0.1:1/none", "--cluster"]
            + ["--node-name", "n1", "--config", str(config)]
        )
        reactor = Clock()
        server = _makeService(options, reactor)
        cluster = _cluster_service(options, server, reactor)
        recurring = server.recurring
        assert recurring is not None
        clock = recurring.clock
        self.assertIsInstance(clock, DatabaseClock)
        store: Any = server.core.store
        store.on_clock(42.0)  # what the store does with each reading
        self.assertEqual(clock.seconds(), reactor.seconds() + 42.0)
        # Its runs go into the shared queue (tests/test_pg_cluster_ticks.py).
        self.assertEqual(recurring.shared, cluster.node.claim_tick)
        # The node's workers are published too, under its name (tests/test_pg_cluster_workers).
        (board,) = [h for h in cluster._helpers if isinstance(h, WorkerBoard)]
        self.assertEqual((board.name, board.store), ("n1", store))
