"""Log lines and messages from the client and the worker show wire bytes as text, never as
``b'...'`` reprs (issue 11)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from gearmanpy import JobFailed, JobLost, JobTimeout, WorkerJob
from gearmanpy.protocol.packets import PacketType
from tests.test_client import make_client
from tests.test_worker import assign, make_worker

P = PacketType


@contextmanager
def logged() -> Iterator[list[str]]:
    """Collect every log line (debug included) emitted meanwhile, formatted."""
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_level", LogLevel.info) >= LogLevel.debug:
            lines.append(formatEvent(event))

    observer = cast(ILogObserver, observe)
    globalLogPublisher.addObserver(observer)
    try:
        yield lines
    finally:
        globalLogPublisher.removeObserver(observer)


class LogTextTests(SynchronousTestCase):
    """Every line a scenario logs is free of bytes reprs, and names what it is about."""

    def assertText(self, lines: list[str], *expected: str) -> None:
        """No ``b'`` or ``b"`` in any line; each expected piece appears in some line."""
        for line in lines:
            self.assertNotIn("b'", line)
            self.assertNotIn('b"', line)
        for piece in expected:
            self.assertTrue(any(piece in line for line in lines), (piece, lines))

    def test_worker_logs(self) -> None:
        """ERROR packets, unregistered functions, raised errors, time limits, late sends."""
        worker, (endpoint,), clock = make_worker(concurrency=1)
        jobs: list[WorkerJob] = []

        def f(job: WorkerJob) -> Deferred[bytes]:
            jobs.append(job)
            if job.data == b"raise":
                raise ValueError("bad")
            return Deferred()

        worker.register("f", f, timeout=1)
        worker.startService()
        with logged() as lines:
            server = endpoint.next().accept()
            server.send(P.ERROR, b"JOB_NOT_FOUND", b"Job given in work result not found")
            assign(server, b"H:x:1", function=b"other")
            assign(server, b"H:x:2", data=b"raise")
            assign(server, b"H:x:3")
            clock.advance(1)
            jobs[-1].send_data(b"late")
            worker.stopService()
            assign(server, b"H:x:4")
        self.assertText(
            lines,
            "ERROR JOB_NOT_FOUND: Job given in work result not found",
            "Job H:x:1 for unregistered function other",
            "<WorkerJob f handle=H:x:2> raised ValueError: bad",
            "<WorkerJob f handle=H:x:3> ran past",
            "Job H:x:4 assigned while stopping",
        )

    def test_client_logs_and_messages(self) -> None:
        """A refused option, unknown handles, and the messages of failed jobs."""
        client, (endpoint,), clock = make_client()
        failed = client.submit("f")
        lost = client.submit("f")
        late = client.submit("f", timeout=1)
        with logged() as lines:
            server = endpoint.next().accept()
            server.received()
            server.send(P.ERROR, b"UNKNOWN_OPTION", b"Server does not recognize given option")
            server.send(P.JOB_CREATED, b"H:x:1")
            server.send(P.JOB_CREATED, b"H:x:2")
            server.send(P.JOB_CREATED, b"H:x:3")
            server.send(P.WORK_FAIL, b"H:x:1")
            server.send(P.WORK_COMPLETE, b"H:x:9", b"")
            clock.advance(1)
            server.lose()
        self.assertText(lines, "UNKNOWN_OPTION Server does not recognize", "handle H:x:9")
        messages = [
            str(self.failureResultOf(failed.result, JobFailed).value),
            str(self.failureResultOf(lost.result, JobLost).value),
            str(self.failureResultOf(late.result, JobTimeout).value),
            repr(lost),
        ]
        self.assertText(messages, "job H:x:1", "job H:x:2", "job f did", "<Job f handle=H:x:2")
