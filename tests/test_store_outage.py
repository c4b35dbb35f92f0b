"""A store outage in the log: one line when writes start failing, one when they succeed again,
never a traceback per job."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from gearmanpy.errors import StoreError
from gearmanpy.protocol.packets import PacketType as P
from gearmanpy.server.core import NORMAL
from gearmanpy.store.interface import IJobStore, StoredJob
from tests.serverhelpers import RecordingPeer, SlowStore, make_core


@implementer(IJobStore)
class FlakyStore(SlowStore):
    """A store whose writes fail while ``down`` is set (as a database that went away)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def _write(self) -> Deferred[None]:
        if self.down:
            return fail(StoreError("database is locked\nfor a while"))
        return succeed(None)

    def add(self, job: StoredJob) -> Deferred[None]:
        return self._write()

    def done(self, key: str) -> Deferred[None]:
        return self._write()

    def set_retries(self, key: str, retries: int) -> Deferred[None]:
        return self._write()


class StoreOutageTests(SynchronousTestCase):
    """The core's durability rules report an outage once, at its start and at its end."""

    def setUp(self) -> None:
        self.store = FlakyStore()
        self.core, self.clock = make_core(store=self.store)
        self.client = RecordingPeer(self.core)
        self.now = 100.0
        self.core._durable.outage.now = lambda: self.now  # type: ignore[union-attr]

    def submit(self, n: int) -> list[Any]:
        for i in range(n):
            self.core.submit(self.client.peer, b"f", b"", b"%d" % i, NORMAL, True)
        return self.client.take()

    def lines(self, logged: Sequence[dict[str, Any]]) -> list[tuple[LogLevel, str]]:
        return [
            (e["log_level"], formatEvent(e)) for e in logged if "gearmanpy" in e["log_namespace"]
        ]

    def test_one_line_each_way(self) -> None:
        """100 refused jobs make two log lines (with the reason on one line, the length of the
        outage and the count), no failure with a traceback; the jobs get QUEUE_ERROR."""
        with capturedLogs() as logged:
            self.assertEqual([p for p, _ in self.submit(1)], [P.JOB_CREATED])
            self.store.down = True
            replies = self.submit(100)
            self.now += 12.5
            self.store.down = False
            self.assertEqual([p for p, _ in self.submit(1)], [P.JOB_CREATED])
            self.store.down = True
            self.submit(1)
        self.assertEqual(replies, [(P.ERROR, (b"QUEUE_ERROR", b"QUEUE_ERROR"))] * 100)
        unavailable = (
            LogLevel.error,
            "store unavailable, refusing background jobs until it recovers: "
            "database is locked for a while",
        )
        self.assertEqual(
            self.lines(logged),
            [
                unavailable,
                (LogLevel.error, "store available again after 12.5 s; 100 jobs refused"),
                unavailable,
            ],
        )
        self.assertFalse([e for e in logged if "log_failure" in e])
        self.assertNotIn("b'", "".join(line for _, line in self.lines(logged)))

    def test_lost_deletes_counted(self) -> None:
        """A finished job's delete that fails is part of the outage, and the end line says how
        many such writes were lost; a successful delete ends the outage too."""
        self.submit(2)
        worker = RecordingPeer(self.core)
        worker.can_do(b"f")
        first = worker.grab()[1][0]
        second = worker.grab()[1][0]
        with capturedLogs() as logged:
            self.store.down = True
            self.core.work_complete(worker.peer, first, b"")
            self.store.down = False
            self.now += 2
            self.core.work_complete(worker.peer, second, b"")
        self.assertEqual(
            [line for _, line in self.lines(logged)][1:],
            [
                "store available again after 2.0 s; 0 jobs refused; 1 deletes or retry counts not recorded"
            ],
        )
