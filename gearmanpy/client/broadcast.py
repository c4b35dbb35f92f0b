# -*- test-case-name: tests.test_broadcast_client -*-
"""A submission to a broadcast function, as the client sees it: :class:`BroadcastJob`.

A gearmanpy server configured with ``broadcast = true`` for a function delivers one
submission to every worker of it (server/broadcast.py). The client's job then gets each
worker's result as WORK_DATA (the worker's client id, a NUL, the result), each failure as
WORK_WARNING (the same, with ``failed``, the exception text or ``lost``) and finally
WORK_COMPLETE with ``completed=N failed=N lost=N total=N``. :class:`BroadcastJob` reads
those back: ``async for reply in job`` gives a :class:`Reply` per worker, ``await job`` the
:class:`Summary`.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from gearmanpy._connection import AsyncDeferred, awaitable
from gearmanpy.client.events import Job, WorkData, WorkStatus
from gearmanpy.errors import GearmanError


@attrs.frozen
class Reply:
    """One worker's answer to a broadcast.

    :ivar worker: the worker connection's client id (``-`` if it set none).
    :ivar data: its result, or (not ``ok``) ``failed``, its exception text or ``lost``.
    :ivar ok: it completed (WORK_COMPLETE); False if it failed or was lost.
    """

    worker: bytes
    data: bytes
    ok: bool


@attrs.frozen
class Summary:
    """How a broadcast's deliveries ended."""

    completed: int
    failed: int
    lost: int
    total: int

    @classmethod
    def parse(cls, text: bytes) -> Summary:
        """``completed=2 failed=1 lost=0 total=3`` as a Summary.

        :raises GearmanError: for anything else (the function is not a broadcast one).
        """
        try:
            fields = dict(word.split(b"=", 1) for word in text.split())
            return cls(*(int(fields[k]) for k in (b"completed", b"failed", b"lost", b"total")))
        except (KeyError, ValueError):
            raise GearmanError(
                f"not a broadcast summary: {text[:80]!r} (is the function a broadcast one?)"
            ) from None


class BroadcastJob:
    """A foreground submission to a broadcast function: the replies, then the summary."""

    def __init__(self, job: Job) -> None:
        """:param job: the foreground job the submission made."""
        self.job = job
        #: Fires with the :class:`Summary` once every delivery has ended.
        self.summary: AsyncDeferred[Summary] = awaitable(job.result.addCallback(Summary.parse))

    @property
    def handle(self) -> bytes | None:
        """The broadcast's handle, once the server accepted it."""
        return self.job.handle

    def __await__(self) -> Generator[Any, None, Summary]:
        """``await job``: the summary."""
        return self.summary.__await__()

    def __aiter__(self) -> BroadcastJob:
        """``async for reply in job``."""
        return self

    def __anext__(self) -> Deferred[Reply]:
        """The next worker's reply (progress reports are skipped)."""
        return awaitable(self.job.__anext__().addCallback(self._reply))

    def _reply(self, event: Any) -> Reply | Deferred[Reply]:
        """A WORK_DATA or WORK_WARNING as a Reply; a WORK_STATUS: on to the next event."""
        if isinstance(event, WorkStatus):
            return self.job.__anext__().addCallback(self._reply)
        worker, _, data = event.data.partition(b"\0")
        return Reply(worker, data, isinstance(event, WorkData))


__all__ = ["BroadcastJob", "Reply", "Summary"]
