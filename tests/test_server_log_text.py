"""What the server logs reads as text: no ``b'...'`` reprs of handles, addresses or names."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from gearmanpy.protocol.packets import PacketType, request
from gearmanpy.server.core import JobServerCore
from gearmanpy.server.protocol import ServerFactory
from tests.test_server_protocol import Conn

P = PacketType


class LogTextTests(SynchronousTestCase):
    def test_server_messages_have_no_bytes_reprs(self) -> None:
        """Timeouts, failed retries, refusals, admin shutdown, a handler bug and a protocol
        error: every message names things as text."""
        clock = Clock()
        core = JobServerCore(clock=clock, handle_prefix=b"H:t", job_retries=1, max_queued_jobs=1)
        core.on_shutdown = lambda graceful: None
        factory = ServerFactory(core, max_packet_size=1024)
        with capturedLogs() as events:
            client, worker, admin = Conn(factory), Conn(factory), Conn(factory)
            worker.send(request(P.CAN_DO_TIMEOUT, b"f", b"1000"), request(P.GRAB_JOB))
            client.send(request(P.SUBMIT_JOB, b"f", b"", b"x"))
            worker.send(request(P.GRAB_JOB))
            clock.advance(1.5)  # timed out, and failed: it may run once
            client.send(
                request(P.SUBMIT_JOB, b"f", b"", b"y"), request(P.SUBMIT_JOB, b"f", b"", b"z")
            )
            admin.send(b"shutdown\n")

            def broken(args: object) -> None:
                raise RuntimeError("bug")

            worker.proto._table[P.GRAB_JOB] = broken
            worker.send(request(P.GRAB_JOB))
            Conn(factory).send(b"\0BAD" + b"\0" * 8)
        self.flushLoggedErrors(RuntimeError)
        texts = [formatEvent(e) for e in events]
        for needle in ("CAN_DO_TIMEOUT", "ran 1 times", "refusing submissions", "shutdown"):
            self.assertTrue(any(needle in t for t in texts), (needle, texts))
        self.assertTrue(any("error handling a request from 127.0.0.1" in t for t in texts), texts)
        for text in texts:
            self.assertNotIn("b'", text)
            self.assertNotIn('b"', text)
