"""The cluster store learns the offset between PostgreSQL's clock and the node's (at open and
at every lease tick, gearmanpy/store/pg_cluster.py), against a real PostgreSQL on loopback:
a node whose clock is 100 s behind reads the database's clock through a DatabaseClock."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from twisted.internet.defer import inlineCallbacks

from gearmanpy.server.cluster_clock import DatabaseClock
from gearmanpy.store.pg_cluster import ClusterStore
from tests.test_pg_cluster import _OnPostgres, _reactor

#: How far the node's clock is behind the database's in these tests.
BEHIND = 100.0


class _Behind:
    """The real reactor, with a clock ``BEHIND`` seconds slow (a node whose clock is off)."""

    def __init__(self) -> None:
        self._reactor = _reactor()

    def seconds(self) -> float:
        return float(self._reactor.seconds()) - BEHIND

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


@pytest.mark.realdb
class ClusterClockTests(_OnPostgres):
    """The offset read from PostgreSQL, on a node whose clock is slow."""

    def near(self, got: float | None, expected: float) -> None:
        """``got`` is within a quarter second of ``expected`` (a reading's round trip)."""
        assert got is not None
        self.assertLess(abs(got - expected), 0.25, f"{got} is not about {expected}")

    def database_offset(self) -> float:
        """PostgreSQL's ``now()`` minus this machine's clock, read directly."""
        with psycopg.connect(self.server.url, autocommit=True) as conn:
            before = time.time()
            row = conn.execute("SELECT extract(epoch FROM now())::float8").fetchone()
            after = time.time()
        assert row is not None
        return float(row[0]) - (before + after) / 2

    @inlineCallbacks
    def test_offset_learned_at_open_and_each_tick(self) -> Any:
        """Opening reads the offset (the database's now() minus the node's slow clock), each
        lease tick reads it again, including the tick that must take a new lease, and a
        DatabaseClock fed by the store reads the database's time."""
        readings: list[float | None] = []
        store = ClusterStore(
            self.server.url,
            _Behind(),
            table=self.table,
            node_name="slow",
            on_clock=readings.append,
        )
        self.assertIsNone(store.clock_offset)
        yield store.open()
        self.addCleanup(store.close)
        expected = self.database_offset() + BEHIND
        self.assertEqual(len(readings), 1)
        self.near(readings[0], expected)
        tick = yield store.tick(10.0)
        self.assertTrue(tick.alive)
        self.near(tick.offset, expected)
        self.assertEqual((readings[-1], store.clock_offset), (tick.offset, tick.offset))
        with psycopg.connect(self.server.url, autocommit=True) as conn:
            conn.execute(f"DELETE FROM {self.table}_nodes")  # the lease lapsed
        tick = yield store.tick(10.0)
        self.assertFalse(tick.alive)
        self.near(tick.offset, expected)
        clock = DatabaseClock(store.reactor)
        clock.learn(store.clock_offset)
        with psycopg.connect(self.server.url, autocommit=True) as conn:
            row = conn.execute("SELECT extract(epoch FROM now())::float8").fetchone()
        assert row is not None
        self.near(clock.seconds(), float(row[0]))
        self.near(store.reactor.seconds(), float(row[0]) - BEHIND)
