"""Tests for gearmanpy.server.memory: drained tables are rebuilt, memory given back."""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gearmanpy.server.core import JobServerCore
from gearmanpy.server.memory import (
    DEFAULT_INTERVAL,
    MemoryReleaser,
    compact,
    glibc_malloc_trim,
    oversized,
)
from gearmanpy.server.protocol import ServerFactory
from tests.serverhelpers import RecordingPeer


def drained(entries: int, left: int = 0) -> dict[bytes, int]:
    """A dict that held ``entries`` entries and keeps only the first ``left``."""
    table = {b"H:%d" % i: i for i in range(entries)}
    for i in range(left, entries):
        del table[b"H:%d" % i]
    return table


class TableTests(SynchronousTestCase):
    """When a table counts as drained, and rebuilding it."""

    def test_drained_table_is_oversized_until_compacted(self) -> None:
        """A dict emptied from 100k entries keeps its size; rebuilt in place it is small,
        the same object with the same entries in the same order."""
        table = drained(100_000, left=3)
        self.assertTrue(oversized(table))
        same = table
        compact(table)
        self.assertIs(table, same)
        self.assertEqual(list(table.items()), [(b"H:0", 0), (b"H:1", 1), (b"H:2", 2)])
        self.assertLess(sys.getsizeof(table), 1024)
        self.assertFalse(oversized(table))

    def test_full_or_small_tables_are_left_alone(self) -> None:
        """A large table in use, or a small drained one, is not worth rebuilding."""
        self.assertFalse(oversized(drained(100_000, left=100_000)))
        self.assertFalse(oversized(drained(100_000, left=60_000)))
        self.assertFalse(oversized(drained(1_000)))

    def test_glibc_trim_here(self) -> None:
        """On this (glibc) Linux machine malloc_trim is found and callable."""
        trim = glibc_malloc_trim()
        if not sys.platform.startswith("linux"):
            return
        assert trim is not None
        self.assertIn(trim(), (0, 1))


class ReleaserTests(SynchronousTestCase):
    """The timer: looks every interval, acts only on a drained table."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.tables: list[dict[Any, Any]] = [{}]
        self.trims = 0
        self.releaser = MemoryReleaser(
            self.clock, lambda: self.tables, interval=5.0, trim=self.count_trim
        )

    def count_trim(self) -> int:
        self.trims += 1
        return 1

    def test_acts_on_a_drained_table_only(self) -> None:
        """Nothing happens while the tables are in use; a drained one is rebuilt and
        memory trimmed once, and not again until another table drains."""
        self.releaser.start()
        self.tables.append(drained(100_000, left=100_000))
        self.clock.advance(5)
        self.assertEqual((self.trims, self.releaser.releases), (0, 0))
        big = drained(100_000, left=10)
        self.tables.append(big)
        self.clock.advance(4.9)
        self.assertEqual(self.trims, 0)
        self.clock.advance(0.1)
        self.assertEqual((self.trims, self.releaser.releases), (1, 1))
        self.assertFalse(oversized(big))
        self.assertEqual(len(big), 10)
        self.clock.advance(50)
        self.assertEqual(self.trims, 1)
        self.releaser.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class FactoryTests(SynchronousTestCase):
    """ServerFactory(release_memory=True) watches the core's tables while it listens."""

    def test_job_table_rebuilt_after_a_drain(self) -> None:
        """40k background jobs queued and run leave the core's job table large; the
        factory's releaser rebuilds it at its next look (only while started)."""
        clock = Clock()
        core = JobServerCore(clock=clock, handle_prefix=b"H:t")
        factory = ServerFactory(core, release_memory=True)
        self.assertIsNone(ServerFactory(core).releaser)
        client, worker = RecordingPeer(core), RecordingPeer(core)
        core.submit_batch(client.peer, 1, True, [(b"f", b"", b"x")] * 40_000)
        worker.can_do(b"f")
        for _ in range(40_000):
            _, (handle, *_) = worker.grab()
            core.work_complete(worker.peer, handle, b"")
        self.assertEqual(core.jobs, {})
        self.assertTrue(oversized(core.jobs))
        factory.doStart()
        clock.advance(DEFAULT_INTERVAL)
        self.assertFalse(oversized(core.jobs))
        factory.doStop()
        self.assertEqual(clock.getDelayedCalls(), [])
