# -*- test-case-name: tests.test_core -*-
"""Job handles ``<prefix>:1``, ``<prefix>:2``... and their JOB_CREATED replies.

A handle is made for every accepted submission, so making them is on the hottest path of a
pipelined submitter (S1). Built one by one (``prefix + b":" + str(n).encode()``, then framed)
a handle and its reply cost several times what they cost made a few thousand at a time in
C-level loops and handed out by ``itertools.chain`` (``python benchmarks/inprocess_bench.py
S1`` shows the per-job total this is part of).
"""

from __future__ import annotations

import itertools
import platform
from collections.abc import Iterator

from gearmanpy.protocol.replies import job_created_all

#: Handles made at a time.
BATCH = 4096


def default_handle_prefix() -> bytes:
    """``H:<hostname>``, as gearmand builds its handles."""
    return b"H:" + platform.node().encode("ascii", "replace")


def handles(prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yield ``(handle, JOB_CREATED reply)`` for ``<prefix>:1``, ``<prefix>:2``... for ever.

    :raises ValueError: if ``prefix`` contains NUL (it would end the handle on the wire).
    """
    if b"\0" in prefix:
        raise ValueError("a job handle prefix cannot contain NUL")
    return itertools.chain.from_iterable(_batches(prefix.decode("latin-1") + ":"))


def _batches(prefix: str) -> Iterator[zip[tuple[bytes, bytes]]]:
    """Yield the handles and their replies, :data:`BATCH` at a time."""
    start = 1
    while True:
        stop = start + BATCH
        text = prefix + ("\0" + prefix).join(map(str, range(start, stop)))
        batch = text.encode("latin-1").split(b"\0")
        yield zip(batch, job_created_all(batch), strict=True)
        start = stop


__all__ = ["BATCH", "default_handle_prefix", "handles"]
