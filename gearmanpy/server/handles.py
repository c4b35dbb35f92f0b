# -*- test-case-name: tests.test_handles -*-
"""Job handles ``<prefix>:<boot>-<n>`` (or ``<prefix>:<n>``) and their JOB_CREATED replies.

A server run by :class:`~gearmanpy.server.service.GearmanServerService` gives every start a
*boot component*: the store's :meth:`~gearmanpy.store.interface.IJobStore.next_boot`, or,
without a store, :func:`clock_boot`: the wall clock in tenths of a second, plus one, taken
when the service starts, which then waits for that tenth to begin before it listens (so a
later start always has a larger number, unless the clock goes back). Its handles are
``<prefix>:<boot>-<n>`` with ``n`` counting from 1 in each boot, so a handle never names two
jobs across restarts (gearmand starts again at ``<prefix>:1``). A core on its own (tests,
:class:`gearmanpy.testing.MemoryGearman`) has none and hands out ``<prefix>:1``,
``<prefix>:2``...

Sizes: every handle fits in :data:`~gearmanpy.protocol.limits.MAX_HANDLE_SIZE` (63) bytes. A
prefix has at most :data:`MAX_PREFIX_SIZE` (40) bytes, a boot component at most
:data:`BOOT_DIGITS` (11) digits, which leaves ``n`` at least 10 digits. Should ``n`` run out of
the digits left to it (10**10 jobs in one boot, with the longest prefix and a wall-clock
boot), the handles go on under a new boot component, :func:`clock_boot` of that moment but
never less than the last one plus one; a later start still has a larger one.

A handle is made for every accepted submission, so making them is on the hottest path of a
pipelined submitter (S1). Built one by one (``prefix + b":" + str(n).encode()``, then framed)
a handle and its reply cost several times what they cost made a few thousand at a time in
C-level loops and handed out by ``itertools.chain`` (``python benchmarks/inprocess_bench.py
S1`` shows the per-job total this is part of).
"""

from __future__ import annotations

import itertools
import platform
from collections.abc import Callable, Iterator

from gearmanpy.protocol.limits import MAX_HANDLE_SIZE
from gearmanpy.protocol.replies import job_created_all

#: Handles made at a time.
BATCH = 4096

#: Most digits of a boot component: :func:`clock_boot` fits until the year 2286.
BOOT_DIGITS = 11

#: Fewest digits ``n`` has within a boot, whatever the prefix and boot component.
COUNTER_DIGITS = 10

#: Longest handle prefix: with a ``:``, the longest boot component, a ``-`` and ``n`` of
#: :data:`COUNTER_DIGITS` digits, a handle is :data:`MAX_HANDLE_SIZE` bytes at most.
MAX_PREFIX_SIZE = MAX_HANDLE_SIZE - 1 - BOOT_DIGITS - 1 - COUNTER_DIGITS


def default_handle_prefix() -> bytes:
    """``H:<hostname>``, as gearmand builds its handles, cut to :data:`MAX_PREFIX_SIZE`."""
    return (b"H:" + platform.node().encode("ascii", "replace"))[:MAX_PREFIX_SIZE]


def clock_boot(seconds: float) -> int:
    """The wall clock ``seconds`` as a boot component: whole tenths of a second."""
    return int(seconds * 10)


def usable_handle(handle: bytes) -> bool:
    """Whether a stored handle can name a job again: not empty, no NUL, not too long."""
    return 0 < len(handle) <= MAX_HANDLE_SIZE and b"\0" not in handle


def handles(
    prefix: bytes, boot: int | None, now: Callable[[], float]
) -> Iterator[tuple[bytes, bytes]]:
    """Yield ``(handle, JOB_CREATED reply)`` for ``<prefix>:<boot>-1``, ``-2``... for ever.

    :param boot: the boot component, or None for ``<prefix>:1``, ``<prefix>:2``...
    :param now: the wall clock (seconds), read only for a new boot component when ``n`` has
        used up its digits.
    :raises ValueError: if ``prefix`` contains NUL (it would end the handle on the wire) or
        is longer than :data:`MAX_PREFIX_SIZE`, or ``boot`` is negative or has more than
        :data:`BOOT_DIGITS` digits.
    """
    if b"\0" in prefix:
        raise ValueError("a job handle prefix cannot contain NUL")
    if len(prefix) > MAX_PREFIX_SIZE:
        raise ValueError(f"a job handle prefix has at most {MAX_PREFIX_SIZE} bytes")
    _check_boot(boot)
    return itertools.chain.from_iterable(_batches(prefix.decode("latin-1") + ":", boot, now))


def _check_boot(boot: int | None) -> None:
    """Refuse a boot component that would not leave ``n`` its digits."""
    if boot is not None and not 0 <= boot < 10**BOOT_DIGITS:
        raise ValueError(f"a boot component is a number of at most {BOOT_DIGITS} digits")


def _batches(
    prefix: str, boot: int | None, now: Callable[[], float]
) -> Iterator[zip[tuple[bytes, bytes]]]:
    """Yield the handles and their replies, at most :data:`BATCH` at a time, boot after boot."""
    while True:
        head = prefix if boot is None else f"{prefix}{boot}-"
        room = MAX_HANDLE_SIZE - len(head)  # n has the bytes the head leaves
        if room < 1:  # (not within MAX_PREFIX_SIZE and BOOT_DIGITS)
            raise ValueError(f"job handle {head!r}<n> leaves no room for n")
        limit = 10**room
        start = 1
        while start < limit:
            stop = min(start + BATCH, limit)
            text = head + ("\0" + head).join(map(str, range(start, stop)))
            batch = text.encode("latin-1").split(b"\0")
            yield zip(batch, job_created_all(batch), strict=True)
            start = stop
        boot = clock_boot(now()) if boot is None else max(boot + 1, clock_boot(now()))
        _check_boot(boot)


__all__ = [
    "BATCH",
    "BOOT_DIGITS",
    "COUNTER_DIGITS",
    "MAX_PREFIX_SIZE",
    "clock_boot",
    "default_handle_prefix",
    "handles",
    "usable_handle",
]
