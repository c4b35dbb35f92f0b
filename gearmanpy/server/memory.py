# -*- test-case-name: tests.test_memory -*-
"""Giving memory back to the system once a large queue has drained.

The jobs of a drained queue are freed when they end, but the process does not shrink by
itself. Measured with ``benchmarks/run.py --scenarios S6`` (1M background jobs queued, then
drained; see benchmarks/README.rst), two things hold on to it:

* a dict never shrinks when its entries are deleted: the core's ``jobs`` table keeps the
  40 MiB it grew to for a million jobs, empty, until about as many new jobs arrive;
* glibc's ``malloc`` keeps freed memory inside its heap (the holes between blocks still in
  use, and what the dynamic mmap threshold moved from ``mmap`` into the heap) until
  ``malloc_trim`` returns the free pages.

:class:`MemoryReleaser` looks every ``interval`` seconds (a timer, off the hot path) at the
tables it is given; once one is at least four times larger than its entries need (a queue
that drained to a quarter of its peak, or to nothing), it rebuilds those tables, runs a
collection, and on glibc calls ``malloc_trim(0)``. So it acts a few times per drain (each
time the queue fell by another factor of four), never while a queue grows or holds steady.
"""

from __future__ import annotations

import ctypes
import gc
import mmap
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

#: Seconds between two looks at the tables.
DEFAULT_INTERVAL = 10.0
#: A table smaller than this is never worth rebuilding.
MIN_TABLE_BYTES = 1 << 20
#: Bytes a dict needs per entry at most, right after it grew (its index and entry arrays).
ENTRY_BYTES = 96
#: A table this many times larger than its entries need is rebuilt.
SLACK = 4


def glibc_malloc_trim() -> Callable[[], int] | None:
    """``malloc_trim(0)`` of the C library this process runs on, if that is glibc."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:  # no C library to load (not a Unix)
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "malloc_trim"):
        return None  # musl, macOS, ...: no malloc_trim, or not glibc's
    trim = libc.malloc_trim
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: int(trim(0))


def oversized(table: dict[Any, Any]) -> bool:
    """Whether ``table`` is at least :data:`SLACK` times larger than its entries need."""
    size = sys.getsizeof(table)
    return size >= MIN_TABLE_BYTES and size > SLACK * ENTRY_BYTES * len(table)


def compact(table: dict[Any, Any]) -> None:
    """Rebuild ``table`` in place (same object, same entries, same order) at the size its
    entries need: ``clear`` frees the old arrays, ``update`` sizes the new ones."""
    entries = dict(table)
    table.clear()
    table.update(entries)


def rss_bytes() -> int | None:
    """This process's resident set size, on Linux (``/proc/self/statm``); else None."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * mmap.PAGESIZE


class MemoryReleaser:
    """Every ``interval`` seconds: if a watched table has drained far below its size,
    rebuild the oversized tables, collect, and give free ``malloc`` pages back."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        tables: Callable[[], Iterable[dict[Any, Any]]],
        interval: float = DEFAULT_INTERVAL,
        trim: Callable[[], int] | None = None,
    ) -> None:
        """
        :param clock: runs the timer.
        :param tables: returns the dicts to watch, looked up anew each time (the core's
            job table and each function's uniques).
        :param interval: seconds between two looks.
        :param trim: gives free ``malloc`` memory back; by default glibc's
            ``malloc_trim(0)``, and nothing on another C library.
        """
        self._tables = tables
        self._trim = trim if trim is not None else glibc_malloc_trim()
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock
        self._interval = interval
        #: How many times memory was released (for tests and curiosity).
        self.releases = 0

    def start(self) -> None:
        """Look every ``interval`` seconds from now on."""
        if not self._loop.running:
            self._loop.start(self._interval, now=False)

    def stop(self) -> None:
        """Look no more."""
        if self._loop.running:
            self._loop.stop()

    def check(self) -> bool:
        """Release memory if a watched table has drained; return whether it did."""
        big = [table for table in self._tables() if oversized(table)]
        if not big:
            return False
        before, started = rss_bytes(), time.perf_counter()
        for table in big:
            compact(table)
        gc.collect()
        if self._trim is not None:
            self._trim()
        self.releases += 1
        after = rss_bytes()
        if before is not None and after is not None:
            self.log.info(
                "queue drained: memory given back in {ms:.0f} ms, resident {before:.1f} -> "
                "{after:.1f} MiB",
                ms=1000 * (time.perf_counter() - started),
                before=before / 2**20,
                after=after / 2**20,
            )
        return True


__all__ = ["MemoryReleaser", "compact", "glibc_malloc_trim", "oversized"]
