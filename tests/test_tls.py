"""TLS with verified peers, on real sockets with certificates made here (tests/certs.py).

The server (``twistd gearman``'s service, built from its options) refuses every peer without a
valid client certificate in the handshake; gearmanpy's client and worker verify the server's
certificate and host name, present theirs, and say why a handshake failed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Generator
from typing import Any

from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.logger import capturedLogs, formatEvent
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gearmanpy import Client, ClientTLS, RequestLost, TLSHandshakeError, Worker
from gearmanpy.protocol.packets import PacketDecoder, PacketType, encode, request
from gearmanpy.server.service import GearmanServerService, tls_listener
from gearmanpy.server.tls import ServerTLS, TLSConfigError, TLSFiles
from gearmanpy.tap import Options, _makeService
from tests.certs import CertFiles
from tests.procs import free_port

P = PacketType


def _files() -> tuple[CertFiles, str]:
    directory = tempfile.mkdtemp(prefix="gearmanpy-tls-")
    return CertFiles(directory), directory


class Echo(Protocol):
    """Sends ECHO_REQ once connected; records the reply and why the connection closed."""

    def __init__(self) -> None:
        self.replies: list[Any] = []
        self.closed: Deferred[BaseException] = Deferred()
        self.decoder = PacketDecoder(allow_admin=False)

    def connectionMade(self) -> None:
        self.transport.write(encode(request(P.ECHO_REQ, b"ping")))  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.replies.extend(self.decoder.feed(data))
        if self.replies:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(reason.value or Exception("closed"))


class VerifiedPeerTests(TestCase):
    """A server with ``--ssl --ssl-ca-file``: verified peers work, all others are refused."""

    timeout = 30

    def setUp(self) -> None:
        self.certs, directory = _files()
        self.addCleanup(shutil.rmtree, directory, True)

    @inlineCallbacks
    def serve(self, *extra: str, cert: str = "server") -> Generator[Deferred[Any], Any, None]:
        """Start a TLS server on a free port (self.port) with ``extra`` options."""
        self.port = free_port()
        options = Options()
        options.parseOptions(
            [
                "--queue=memory",
                f"--listen=tcp:{self.port}:interface=127.0.0.1",
                "--ssl",
                f"--ssl-certificate={self.certs.path(cert + '.pem')}",
                f"--ssl-key={self.certs.path(cert + '.key')}",
                f"--ssl-ca-file={self.certs.path('ca.pem')}",
                *extra,
            ]
        )
        self.service: GearmanServerService = _makeService(options, reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        yield self.service.whenReady()

    @inlineCallbacks
    def settle(self, worker: Worker) -> Generator[Deferred[Any], Any, None]:
        """Stop ``worker`` and drop the server's side of any attempt still in its handshake
        (the worker retries every 50 ms, so one may be in flight when the test ends)."""
        yield worker.stopService()
        # A HostnameEndpoint attempt cancelled by the stop ends its address loop (0.3 s).
        yield deferLater(reactor, 0.4, lambda: None)
        for _ in range(100):
            peers = list(self.service.core.peers)
            if not peers:
                return
            for peer in peers:
                peer.close()
            yield deferLater(reactor, 0.05, lambda: None)

    def tls(self, name: str | None = "alice", ca: str = "ca.pem", **kw: Any) -> ClientTLS:
        """ClientTLS with the client certificate ``name`` (None: none)."""
        if name is None:
            return ClientTLS(ca=self.certs.path(ca), **kw)
        return ClientTLS(
            ca=self.certs.path(ca),
            certificate=self.certs.path(f"{name}.pem"),
            key=self.certs.path(f"{name}.key"),
            **kw,
        )

    def worker_and_client(self) -> Client:
        """Start a ``reverse`` worker (certificate ``worker``); a client (``alice``)."""
        server = f"127.0.0.1:{self.port}"
        worker = Worker([server], reactor=reactor, tls=self.tls("worker"))
        worker.register("reverse", lambda job: job.data[::-1])
        worker.startService()
        self.addCleanup(worker.stopService)
        client = Client([server], reactor=reactor, timeout=20, tls=self.tls("alice"))
        self.addCleanup(client.stop)
        return client

    @inlineCallbacks
    def echo(self, client_cert: str | None) -> Generator[Deferred[Any], Any, tuple[list[Any], Any]]:
        """Connect with Twisted's own TLS client (verifying the server), send ECHO_REQ."""
        trust = ssl.Certificate.loadPEM(open(self.certs.path("ca.pem"), "rb").read())
        client = None
        if client_cert is not None:
            pem = open(self.certs.path(f"{client_cert}.pem"), "rb").read()
            pem += open(self.certs.path(f"{client_cert}.key"), "rb").read()
            client = ssl.PrivateCertificate.loadPEM(pem)
        options = ssl.optionsForClientTLS("localhost", trustRoot=trust, clientCertificate=client)
        endpoint = wrapClientTLS(options, HostnameEndpoint(reactor, "127.0.0.1", self.port))
        proto = Echo()
        yield endpoint.connect(Factory.forProtocol(lambda: proto))
        reason = yield proto.closed
        return proto.replies, reason

    @inlineCallbacks
    def test_verified_client_and_worker_work(self) -> Generator[Deferred[Any], Any, None]:
        """A client and a worker with certificates from the CA run a job over TLS."""
        yield self.serve()
        client = self.worker_and_client()
        result = yield client.submit("reverse", b"over verified TLS").result
        self.assertEqual(result, b"SLT deifirev revo")

    @inlineCallbacks
    def test_unverified_peers_are_refused(self) -> Generator[Deferred[Any], Any, None]:
        """No certificate, another CA's and an expired one each fail the handshake: the
        peer never gets an answer, and the server logs why."""
        yield self.serve()
        replies, _ = yield self.echo("alice")
        self.assertEqual([p.type for p in replies], [P.ECHO_RES])
        for cert, why in [
            (None, "peer did not return a certificate"),
            ("other", "certificate verify failed"),
            ("expired", "certificate verify failed"),
        ]:
            with capturedLogs() as events:
                replies, reason = yield self.echo(cert)
                yield self.flush_server()
            self.assertEqual(replies, [], cert)
            lines = [formatEvent(e) for e in events]
            self.assertTrue(
                any("TLS handshake with 127.0.0.1:" in line and why in line for line in lines),
                (cert, lines),
            )
        self.assertEqual(self.service.core.peers, [])

    def flush_server(self) -> Deferred[None]:
        """Let the server's side of a closed connection finish closing."""
        d: Deferred[None] = Deferred()
        reactor.callLater(0.05, d.callback, None)
        return d

    @inlineCallbacks
    def test_optional_client_certificate(self) -> Generator[Deferred[Any], Any, None]:
        """``--ssl-client-cert optional``: no certificate is accepted, a bad one is not."""
        yield self.serve("--ssl-client-cert=optional")
        replies, _ = yield self.echo(None)
        self.assertEqual([p.type for p in replies], [P.ECHO_RES])
        replies, _ = yield self.echo("other")
        self.assertEqual(replies, [])

    @inlineCallbacks
    def test_client_checks_the_server_name(self) -> Generator[Deferred[Any], Any, None]:
        """A server whose certificate names another host fails the client's handshake
        with a TLSHandshakeError that says so."""
        yield self.serve(cert="wrong-host")
        endpoint = self.tls().endpoint(reactor, "127.0.0.1", self.port, 5)
        error = yield self.assertFailure(
            endpoint.connect(Factory.forProtocol(Protocol)), TLSHandshakeError
        )
        self.assertEqual(
            str(error),
            f"TLS handshake with 127.0.0.1:{self.port} failed: the server's certificate is not "
            "for 127.0.0.1",
        )

    @inlineCallbacks
    def test_client_without_certificate_is_told_why(
        self,
    ) -> Generator[Deferred[Any], Any, None]:
        """A gearmanpy client without a certificate, refused by the server after its own
        side of a TLS 1.3 handshake, fails its request with OpenSSL's reason."""
        yield self.serve()
        client = Client([f"127.0.0.1:{self.port}"], reactor=reactor, timeout=10, tls=self.tls(None))
        self.addCleanup(client.stop)
        error = yield self.assertFailure(client.submit("reverse", b"x").result, RequestLost)
        self.assertIn("alert certificate required", str(error))

    @inlineCallbacks
    def test_worker_says_why_once(self) -> Generator[Deferred[Any], Any, None]:
        """A worker that cannot verify the server logs why on its first failed attempt, not
        on each retry."""
        yield self.serve()
        with capturedLogs() as events:
            worker = Worker(
                [f"127.0.0.1:{self.port}"],
                reactor=reactor,
                tls=self.tls("worker", ca="other-ca.pem"),
                retry_policy=lambda attempt: 0.05,
            )
            worker.register("reverse", lambda job: job.data[::-1])
            worker.startService()
            self.addCleanup(self.settle, worker)
            d: Deferred[None] = Deferred()
            reactor.callLater(0.5, d.callback, None)
            yield d
        lines = [formatEvent(e) for e in events]
        why = f"TLS handshake with 127.0.0.1:{self.port} failed: certificate verify failed"
        self.assertEqual(lines.count(why), 1, lines)
        self.assertGreater(sum("Scheduling retry" in line for line in lines), 2)

    @inlineCallbacks
    def test_client_checks_the_server_ca(self) -> Generator[Deferred[Any], Any, None]:
        """A server certificate from a CA the client does not trust fails its handshake."""
        yield self.serve()
        endpoint = self.tls(ca="other-ca.pem").endpoint(reactor, "127.0.0.1", self.port, 5)
        error = yield self.assertFailure(
            endpoint.connect(Factory.forProtocol(Protocol)), TLSHandshakeError
        )
        self.assertIn("certificate verify failed", str(error))

    @inlineCallbacks
    def test_certificate_identity_and_permissions(self) -> Generator[Deferred[Any], Any, None]:
        """With ``--acl``, a certificate's CN or SAN is the identity grants name."""
        acl = os.path.join(self.certs.directory, "acl.toml")
        with open(acl, "w") as f:
            f.write(
                '[[grant]]\nto = "cert:alice.clients.test"\nsubmit = ["rev*"]\n\n'
                '[[grant]]\nto = "cert:worker-*"\nregister = ["reverse"]\n'
            )
        yield self.serve(f"--acl={acl}")
        client = self.worker_and_client()
        result = yield client.submit("reverse", b"abc").result
        self.assertEqual(result, b"cba")
        refused = yield self.assertFailure(client.submit("other", b"x").result, Exception)
        self.assertIn("PERMISSION_DENIED", str(refused))
        self.assertIn("cert:alice at 127.0.0.1", str(refused))

    @inlineCallbacks
    def test_reload_keeps_connections(self) -> Generator[Deferred[Any], Any, None]:
        """A reload (SIGHUP) builds a new context from the files: new peers use the new
        certificate, a peer connected before keeps working."""
        yield self.serve()
        client = self.worker_and_client()
        self.assertEqual((yield client.submit("reverse", b"ab").result), b"ba")
        tls = self.service.tls
        assert tls is not None
        old = tls.context
        shutil.copy(self.certs.path("wrong-host.pem"), self.certs.path("server.pem"))
        shutil.copy(self.certs.path("wrong-host.key"), self.certs.path("server.key"))
        self.service.reload()
        self.assertIsNot(tls.context, old)
        self.assertEqual((yield client.submit("reverse", b"cd").result), b"dc")
        endpoint = self.tls().endpoint(reactor, "127.0.0.1", self.port, 5)
        error = yield self.assertFailure(
            endpoint.connect(Factory.forProtocol(Protocol)), TLSHandshakeError
        )
        self.assertIn("failed", str(error))


class ConfigurationTests(SynchronousTestCase):
    """TLS options: clear one-line errors, TLS 1.2 at least, no compression."""

    def setUp(self) -> None:
        self.certs, directory = _files()
        self.addCleanup(shutil.rmtree, directory, True)

    def parse(self, *args: str) -> Options:
        options = Options()
        options.parseOptions(["--queue=memory", *args])
        return options

    def error(self, *args: str) -> str:
        return str(self.assertRaises(usage.UsageError, self.parse, *args))

    def test_option_errors(self) -> None:
        """Missing, unreadable and mismatched files are usage errors naming the file."""
        cert, key = self.certs.path("server.pem"), self.certs.path("server.key")
        self.assertIn("needs --ssl-certificate and --ssl-key", self.error("--ssl"))
        self.assertIn(
            "needs --ssl-certificate", self.error("--listen=tls:4731", f"--ssl-certificate={cert}")
        )
        missing = self.error("--ssl", f"--ssl-certificate={cert}", "--ssl-key=/nonexistent")
        self.assertIn("--ssl-key /nonexistent", missing)
        other = self.certs.path("alice.key")
        mismatch = self.error("--ssl", f"--ssl-certificate={cert}", f"--ssl-key={other}")
        self.assertIn("is not the key of --ssl-certificate", mismatch)
        self.assertIn(
            "no listener speaks TLS", self.error(f"--ssl-certificate={cert}", f"--ssl-key={key}")
        )
        self.assertIn(
            "required or optional",
            self.error("--ssl", f"--ssl-certificate={cert}", f"--ssl-key={key}",
                       f"--ssl-ca-file={self.certs.path('ca.pem')}", "--ssl-client-cert=maybe"),
        )  # fmt: skip
        for message in (missing, mismatch):
            self.assertNotIn("\n", message)

    def test_context(self) -> None:
        """The context asks for TLS 1.2 or later and no compression, and verifies clients
        (required by default) against the CA file."""
        from OpenSSL import SSL

        files = TLSFiles(
            self.certs.path("server.pem"), self.certs.path("server.key"), self.certs.path("ca.pem")
        )
        context = ServerTLS(files).context
        self.assertTrue(context.set_options(0) & SSL.OP_NO_COMPRESSION)  # returns them
        self.assertEqual(
            context.get_verify_mode(), SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        )
        optional = ServerTLS(attrs_evolve(files, client_cert="optional")).context
        self.assertEqual(optional.get_verify_mode(), SSL.VERIFY_PEER)
        plain = ServerTLS(attrs_evolve(files, ca=None)).context
        self.assertEqual(plain.get_verify_mode(), SSL.VERIFY_NONE)
        self.assertRaises(TLSConfigError, ServerTLS, attrs_evolve(files, certificate="/nope"))

    def test_listeners(self) -> None:
        """``tls:`` names a TLS listener; ``--ssl`` makes every tcp one TLS, not unix ones."""
        self.assertEqual(
            tls_listener("tls:4731:interface=::", False), ("tcp:4731:interface=::", True)
        )
        self.assertEqual(tls_listener("tcp:4730", False), ("tcp:4730", False))
        self.assertEqual(tls_listener("tcp:4730", True), ("tcp:4730", True))
        self.assertEqual(tls_listener("tcp6:4730", True), ("tcp6:4730", True))
        self.assertEqual(tls_listener("unix:/run/g.sock", True), ("unix:/run/g.sock", False))

    def test_client_tls_errors(self) -> None:
        """ClientTLS reads its files at once: a missing one is a ValueError naming it."""
        error = self.assertRaises(ValueError, ClientTLS, ca="/nonexistent/ca.pem")
        self.assertIn("/nonexistent/ca.pem", str(error))
        self.assertRaises(ValueError, ClientTLS, key=self.certs.path("alice.key"))
        error = self.assertRaises(
            ValueError,
            ClientTLS,
            certificate=self.certs.path("alice.pem"),
            key=self.certs.path("worker.key"),
        )
        self.assertIn("alice.pem", str(error))


def attrs_evolve(files: TLSFiles, **changes: Any) -> TLSFiles:
    import attrs

    return attrs.evolve(files, **changes)


def test_no_pyopenssl_needed_without_tls() -> None:
    """A base install (no pyOpenSSL) runs the server and its ACL; only TLS needs the extra,
    and asking for it without says so."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['OpenSSL'] = None\n"
        "from gearmanpy.tap import Options, _makeService\n"
        "from twisted.internet.task import Clock\n"
        "o = Options(); o.parseOptions(['--queue=memory', '--idle-timeout=5']); "
        "_makeService(o, Clock())\n"
        "try:\n"
        "    Options().parseOptions(['--queue=memory', '--ssl', '--ssl-certificate=c', "
        "'--ssl-key=k'])\n"
        "except Exception as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "TLS needs pyOpenSSL" in out and "pip install 'gearmanpy[tls]'" in out, out
