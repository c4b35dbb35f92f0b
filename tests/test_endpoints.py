"""Real-socket round trips through endpoints that fakes cannot prove: TLS and unix sockets."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Generator
from typing import Any

import twisted.test
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from gearmanpy import Client, Worker
from gearmanpy.server.core import JobServerCore
from gearmanpy.server.protocol import ServerFactory
from gearmanpy.server.service import GearmanServerService
from tests.procs import free_port

#: Twisted's own test certificate and key (one PEM file), valid until 2123.
SERVER_PEM = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")


class EndpointRoundTripTests(TestCase):
    """A job goes client -> server -> worker -> client over each kind of endpoint."""

    timeout = 30

    @inlineCallbacks
    def round_trip(self, listen: str, connect: str) -> Generator[Deferred[Any], Any, None]:
        """Serve ``listen``, run a worker and a client on ``connect``, check one job."""
        core = JobServerCore(clock=reactor)
        service = GearmanServerService(
            core, ServerFactory(core, coalesce_writes=True), [listen], reactor
        )
        service.startService()
        self.addCleanup(service.stopService)
        yield service.whenReady()
        worker = Worker([connect], reactor=reactor)
        worker.register("reverse", lambda job: job.data[::-1])
        worker.startService()
        self.addCleanup(worker.stopService)
        client = Client([connect], reactor=reactor, timeout=20)
        self.addCleanup(client.stop)
        result = yield client.submit("reverse", b"secure payload\0with NUL").result
        self.assertEqual(result, b"LUN htiw\0daolyap eruces")

    def test_tls(self) -> Deferred[None]:
        """``--listen ssl:...`` serves a client and a worker that connect over TLS."""
        port = free_port()
        return self.round_trip(
            f"ssl:{port}:privateKey={SERVER_PEM}:interface=127.0.0.1",
            f"ssl:host=127.0.0.1:port={port}",
        )

    def test_unix_socket(self) -> Deferred[None]:
        """``--listen unix:PATH`` serves a client and a worker on a unix socket."""
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "gearmanpy.sock")
        return self.round_trip(f"unix:{path}", f"unix:path={path}")
