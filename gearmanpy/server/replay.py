# -*- test-case-name: tests.test_core -*-
"""Replay: the stored background jobs back into the core at start-up (mixed into the core).

Each row becomes a job again, queued or scheduled as it was, with its handle (once the start
is numbered), its unique (so coalescing goes on), its retries and its times. A broadcast's
parent and its deliveries' rows become a broadcast again (server/broadcast.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from gearmanpy.server.handles import usable_handle
from gearmanpy.server.jobs import Function, Holdings, Job, coalesce_key
from gearmanpy.store.interface import StoredJob


class Replay:
    """The core's replay of stored jobs (mixed into the core)."""

    __slots__ = ()

    jobs: dict[bytes, Job]
    held: Holdings
    boot: int | None
    _handles: Iterator[tuple[bytes, bytes]]

    if TYPE_CHECKING:

        def function(self, name: bytes) -> Function:
            """The function record for ``name`` (the core's)."""

        def _admit(self, job: Job) -> None:
            """Queue or schedule an acknowledged job (the core's)."""

        def _restore_delivery(self, child: Job) -> bool:
            """Attach a replayed delivery to its broadcast (server/broadcast.py)."""

        def _restore_parent(self, parent: Job) -> None:
            """Restore a replayed broadcast (server/broadcast.py)."""

        def _restored_broadcasts(self) -> None:
            """Finish restoring broadcasts (server/broadcast.py)."""

    def replay(self, stored: list[StoredJob]) -> None:
        """Restore jobs from the store at start-up, in their stored order.

        With a boot component set, a job keeps the handle it was stored with, so GET_STATUS on
        it answers after a restart; rows stored without one (before gearmanpy kept handles), a
        core on its own, and a handle that cannot be valid get a new handle.
        """
        reuse = self.boot is not None
        broadcasts = False
        for s in stored:
            f = self.function(s.function)
            handle = s.handle
            if not reuse or not usable_handle(handle) or handle in self.jobs:
                handle, _ = next(self._handles)
            key = coalesce_key(s.unique, s.data)
            job = Job(
                handle,
                f,
                s.unique,
                s.data,
                int(s.priority),
                True,
                s.when,
                s.reducer,
                key if key is not None and key not in f.uniques else None,
                retries=s.retries,
                store_key=s.key,
                persisted=True,
                submitted_at=s.submitted_at,
                error=s.error,
            )
            self.jobs[handle] = job
            self.held.payload_bytes += len(s.data)  # never refused: the store already holds it
            if job.key is not None:
                f.uniques[job.key] = job
            if s.reducer[:1] == b"\0" and self._restore_delivery(job):
                continue
            if f.broadcast and not job.when:
                self._restore_parent(job)
                broadcasts = True
                continue
            self._admit(job)
        if broadcasts:
            self._restored_broadcasts()


__all__ = ["Replay"]
