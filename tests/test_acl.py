"""Permissions: identities, grants by glob, the --acl file, and how the protocol and the admin
commands apply them (in memory: a Peer may have any address here)."""

from __future__ import annotations

import os
import shutil
import tempfile
from functools import partial
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from gearmanpy.protocol.packets import PacketType, request
from gearmanpy.server.acl import (
    ADMIN,
    REGISTER,
    STATUS,
    SUBMIT,
    Acl,
    AclError,
    Grant,
    Identity,
    check_pattern,
    default_grants,
    matches,
    parse_acl,
)
from gearmanpy.server.admin import AdminCommands
from gearmanpy.server.core import JobServerCore
from gearmanpy.server.protocol import ConnectionBounds, ServerFactory
from gearmanpy.server.service import GearmanServerService, ReloadOnHangup, _Gate
from gearmanpy.tap import Options, _makeService
from tests.test_server_protocol import Conn

P = PacketType


class IdentityTests(SynchronousTestCase):
    """Identity patterns and what they match."""

    def test_patterns(self) -> None:
        """anyone, loopback, unix, CIDRs (v4, v6, v4-mapped v6) and cert: globs."""
        local = Identity.from_host("127.0.0.1")
        mapped = Identity.from_host("::ffff:10.1.2.3")
        v6 = Identity.from_host("2001:db8::5")
        unix = Identity(unix=True)
        alice = Identity.from_host("10.9.9.9", names=["alice", "alice.clients.test"])
        self.assertTrue(matches("anyone", unix))
        self.assertTrue(matches("loopback", local))
        self.assertTrue(matches("loopback", Identity.from_host("::1")))
        self.assertFalse(matches("loopback", mapped))
        self.assertTrue(matches("unix", unix))
        self.assertFalse(matches("unix", local))
        self.assertTrue(matches("10.0.0.0/8", mapped))
        self.assertFalse(matches("10.0.0.0/8", v6))
        self.assertTrue(matches("2001:db8::/32", v6))
        self.assertTrue(matches("10.1.2.3", mapped))
        self.assertFalse(matches("10.0.0.0/8", unix))
        self.assertTrue(matches("cert:*.CLIENTS.test", alice))
        self.assertTrue(matches("cert:alice", alice))
        self.assertFalse(matches("cert:bob", alice))
        self.assertFalse(matches("cert:*", local))
        self.assertEqual(str(alice), "cert:alice at 10.9.9.9")
        self.assertEqual(str(unix), "unix socket")

    def test_bad_patterns(self) -> None:
        """Anything else is an error that says what a pattern looks like."""
        for bad in ("everyone", "cert:", "10.0.0.0/33", ""):
            error = self.assertRaises(AclError, check_pattern, bad)
            self.assertIn("expected anyone, loopback, unix, cert:NAME-GLOB", str(error))
        self.assertRaises(AclError, Grant, "anyone", "delete")


class FileTests(SynchronousTestCase):
    """The TOML permissions file."""

    def test_grants(self) -> None:
        """Each [[grant]] gives every identity in ``to`` every glob of each permission."""
        grants = parse_acl(
            '[[grant]]\nto = ["cert:billing-*", "10.1.0.0/16"]\nsubmit = ["billing.*"]\n'
            'status = "*"\n\n[[grant]]\nto = "loopback"\nadmin = ["*"]\n'
        )
        self.assertEqual(
            grants,
            [
                Grant("cert:billing-*", SUBMIT, "billing.*"),
                Grant("cert:billing-*", STATUS, "*"),
                Grant("10.1.0.0/16", SUBMIT, "billing.*"),
                Grant("10.1.0.0/16", STATUS, "*"),
                Grant("loopback", ADMIN, "*"),
            ],
        )

    def test_errors(self) -> None:
        """Every mistake is one line naming the file and the grant."""
        cases = {
            "[[grant]]\nsubmit = ['x']\n": "f.toml: grant #1: says whom it is for",
            "[[grant]]\nto = 'anyone'\ndelete = ['x']\n": "f.toml: grant #1: unknown key 'delete'",
            "[[grant]]\nto = 'everyone'\nsubmit = ['x']\n": "f.toml: grant #1: unknown identity",
            "[[grant]]\nto = 'anyone'\nsubmit = [1]\n": "f.toml: grant #1: submit must be",
            "[grants]\n": "f.toml: unknown table 'grants'",
            "[[grant]\n": "f.toml: ",
        }
        for text, message in cases.items():
            error = str(self.assertRaises(AclError, parse_acl, text, "f.toml"))
            self.assertTrue(error.startswith(message), (text, error))
            self.assertNotIn("\n", error)

    def test_unreadable_file_is_a_usage_error(self) -> None:
        """``--acl`` with a missing file stops start-up with one line naming it."""
        error = self.assertRaises(
            usage.UsageError, Options().parseOptions, ["--acl", "/nonexistent/acl.toml"]
        )
        self.assertEqual(
            str(error), "--acl: cannot read /nonexistent/acl.toml: No such file or directory"
        )


class PermissionsTests(SynchronousTestCase):
    """Per-connection answers: cached, refreshed when the grants change, refusals logged once."""

    def test_cached_and_logged_once(self) -> None:
        acl = Acl([Grant("anyone", SUBMIT, "resize_*")])
        perms = acl.for_peer(Identity.from_host("10.0.0.1"))
        with capturedLogs() as events:
            self.assertTrue(perms.allows(SUBMIT, b"resize_png"))
            self.assertFalse(perms.allows(SUBMIT, b"delete"))
            self.assertFalse(perms.allows(SUBMIT, b"delete"))
            self.assertFalse(perms.allows(REGISTER, b"resize_png"))
        lines = [formatEvent(e) for e in events]
        self.assertEqual(
            lines,
            [
                "refused submit on function 'delete' to 10.0.0.1 (no grant; further refusals "
                "of the same are not logged)",
                "refused register on function 'resize_png' to 10.0.0.1 (no grant; further "
                "refusals of the same are not logged)",
            ],
        )
        self.assertEqual(perms._cache[SUBMIT], {b"resize_png": True, b"delete": False})

    def test_changes_reach_live_connections(self) -> None:
        acl = Acl([])
        changed: list[int] = []
        perms = acl.for_peer(Identity.from_host("10.0.0.1"), lambda: changed.append(1))
        self.assertFalse(perms.allows(SUBMIT, b"f"))
        self.assertTrue(acl.grant(Grant("10.0.0.0/8", SUBMIT, "f")))
        self.assertFalse(acl.grant(Grant("10.0.0.0/8", SUBMIT, "f")))
        self.assertTrue(perms.allows(SUBMIT, b"f"))
        self.assertTrue(acl.revoke(Grant("10.0.0.0/8", SUBMIT, "f")))
        self.assertFalse(perms.allows(SUBMIT, b"f"))
        self.assertEqual(changed, [1, 1])

    def test_defaults(self) -> None:
        """Anyone submits, registers, reads status; admin is loopback's and unix's."""
        acl = Acl()
        remote = acl.for_peer(Identity.from_host("192.0.2.7"))
        for permission in (SUBMIT, REGISTER, STATUS):
            self.assertTrue(remote.unrestricted(permission))
        self.assertFalse(remote.allows(ADMIN, None))
        self.assertTrue(acl.for_peer(Identity(unix=True)).allows(ADMIN, None))
        self.assertTrue(acl.for_peer(Identity.from_host("::1")).allows(ADMIN, None))
        self.assertEqual(default_grants(["192.0.2.0/24"])[-1], Grant("192.0.2.0/24", ADMIN))


class ProtocolTests(SynchronousTestCase):
    """What a restricted peer gets on the wire; unrestricted ones are not checked at all."""

    def setUp(self) -> None:
        self.core = JobServerCore(clock=Clock(), handle_prefix=b"H:t")
        self.acl = Acl(
            [
                Grant("10.0.0.1", SUBMIT, "img.*"),
                Grant("10.0.0.1", STATUS, "img.*"),
                Grant("10.0.0.2", REGISTER, "img.resize"),
                Grant("anyone", ADMIN, "img.*"),
                Grant("loopback", SUBMIT, "*"),
                Grant("loopback", REGISTER, "*"),
                Grant("loopback", STATUS, "*"),
                Grant("loopback", ADMIN, "*"),
            ]
        )
        self.factory = ServerFactory(
            self.core, admin=AdminCommands(self.core, acl=self.acl), acl=self.acl
        )

    def test_unrestricted_peers_go_straight_to_the_core(self) -> None:
        """A peer granted everything has the core's own handlers in its dispatch table."""
        c = Conn(self.factory)
        submit = c.proto._table[P.SUBMIT_JOB]
        assert isinstance(submit, partial)
        self.assertEqual(submit.func, self.core.submit_batch)
        self.assertEqual(c.proto._table[P.CAN_DO], c.proto.packet_CAN_DO)
        restricted = Conn(self.factory, host="10.0.0.1")
        self.assertNotEqual(restricted.proto._table[P.CAN_DO], restricted.proto.packet_CAN_DO)

    def test_refused_submissions_get_error_in_order(self) -> None:
        """In a pipelined run, each refused job gets an ERROR in its place; the connection
        stays usable for the rest."""
        c = Conn(self.factory, host="10.0.0.1")
        c.send(
            request(P.SUBMIT_JOB_BG, b"img.resize", b"", b"1"),
            request(P.SUBMIT_JOB_BG, b"secret", b"", b"2"),
            request(P.SUBMIT_JOB_BG, b"img.crop", b"", b"3"),
            request(P.SUBMIT_JOB_EPOCH, b"secret", b"", b"0", b"4"),
            request(P.ECHO_REQ, b"still here"),
        )
        got = c.packets()
        self.assertEqual(
            [t for t, _ in got],
            [P.JOB_CREATED, P.ERROR, P.JOB_CREATED, P.ERROR, P.ECHO_RES],
        )
        self.assertEqual(
            got[1][1],
            (b"PERMISSION_DENIED", b"submit on function 'secret' is not granted to 10.0.0.1"),
        )
        self.assertNotIn(b"secret", self.core.functions)
        self.assertFalse(c.transport.disconnecting)

    def test_worker_refused_one_function_keeps_the_others(self) -> None:
        """A worker without ``register`` on a function is not registered for it (the refusal
        is logged with its identity; CAN_DO has no reply, so none is sent) and still gets
        the jobs of the functions it may register."""
        client = Conn(self.factory)
        client.send(
            request(P.SUBMIT_JOB_BG, b"img.crop", b"", b"c"),
            request(P.SUBMIT_JOB_BG, b"img.resize", b"", b"r"),
        )
        client.packets()
        w = Conn(self.factory, host="10.0.0.2")
        with capturedLogs() as events:
            w.send(request(P.CAN_DO, b"img.crop"), request(P.CAN_DO_TIMEOUT, b"img.resize", b"5"))
        self.assertEqual(w.packets(), [])
        self.assertIn(
            "refused register on function 'img.crop' to 10.0.0.2 (no grant; further refusals "
            "of the same are not logged)",
            [formatEvent(e) for e in events],
        )
        w.send(request(P.GRAB_JOB), request(P.GRAB_JOB))
        got = w.packets()
        self.assertEqual([t for t, _ in got], [P.JOB_ASSIGN, P.NO_JOB])
        self.assertEqual(got[0][1][1:], (b"img.resize", b"r"))
        self.assertEqual(len(self.core.functions[b"img.crop"].workers), 0)

    def test_status_of_another_functions_job(self) -> None:
        """GET_STATUS of a job the peer may not see is refused; of an unknown handle it gets
        the usual unknown answer; GET_STATUS_UNIQUE needs status on every function."""
        Conn(self.factory).send(request(P.SUBMIT_JOB_BG, b"secret", b"u", b"x"))
        c = Conn(self.factory, host="10.0.0.1")
        c.send(
            request(P.GET_STATUS, b"H:t:1"),
            request(P.GET_STATUS, b"H:t:99"),
            request(P.GET_STATUS_UNIQUE, b"u"),
        )
        got = c.packets()
        self.assertEqual([t for t, _ in got], [P.ERROR, P.STATUS_RES, P.ERROR])
        self.assertEqual(got[1][1], (b"H:t:99", b"0", b"0", b"0", b"0"))

    def test_runtime_grant_applies_to_open_connections(self) -> None:
        """``acl grant`` from an admin reaches a peer already connected."""
        c = Conn(self.factory, host="10.0.0.1")
        c.send(request(P.SUBMIT_JOB_BG, b"reports", b"", b"x"))
        self.assertEqual([t for t, _ in c.packets()], [P.ERROR])
        admin = Conn(self.factory)
        admin.send(b"acl grant 10.0.0.0/8 submit *\n")
        self.assertEqual(admin.text(), b"OK\r\n")
        c.send(request(P.SUBMIT_JOB_BG, b"reports", b"", b"x"))
        self.assertEqual([t for t, _ in c.packets()], [P.JOB_CREATED])
        self.assertEqual(c.proto._table[P.SUBMIT_JOB].func, self.core.submit_batch)  # type: ignore[attr-defined]

    def test_acl_commands(self) -> None:
        """acl list/grant/revoke for admins; clear errors; refused to non-admins."""
        admin = Conn(self.factory)
        admin.send(b"acl grant cert:ops-* admin *\n")
        self.assertEqual(admin.text(), b"OK\r\n")
        admin.send(b"acl list\n")
        listing = admin.text()
        self.assertTrue(listing.startswith(b"10.0.0.1\tsubmit\timg.*\n"))
        self.assertTrue(listing.endswith(b"cert:ops-*\tadmin\t*\n.\n"))
        admin.send(b"acl revoke cert:ops-* admin *\n")
        self.assertEqual(admin.text(), b"OK\r\n")
        admin.send(b"acl revoke cert:ops-* admin *\n")
        self.assertEqual(
            admin.text(), b"ERR ACL_UNCHANGED admin+on+*+to+cert:ops-*+not+granted\r\n"
        )
        admin.send(b"acl grant everyone submit *\n")
        self.assertTrue(admin.text().startswith(b"ERR ACL_ERROR unknown+identity+'everyone'"))
        admin.send(b"acl grant\n")
        self.assertTrue(admin.text().startswith(b"ERR INVALID_ARGUMENTS"))
        admin.send(b"acl reload\n")
        self.assertEqual(admin.text(), b"OK\r\n")  # no file: back to the defaults
        self.assertEqual(self.acl.grants, default_grants())
        other = Conn(self.factory, host="10.0.0.1")
        other.send(b"acl list\n")
        self.assertEqual(
            other.text(),
            b"ERR PERMISSION_DENIED admin+on+every+function+is+not+granted+to+10.0.0.1\r\n",
        )

    def test_admin_per_function(self) -> None:
        """admin on ``img.*`` allows create/drop/maxqueue/cancel on those functions only,
        and not shutdown; status shows only the functions the peer may see."""
        requested: list[bool] = []
        self.core.on_shutdown = requested.append
        loopback = Conn(self.factory)
        loopback.send(request(P.SUBMIT_JOB_BG, b"secret", b"", b"x"))
        loopback.packets()
        c = Conn(self.factory, host="10.0.0.1")
        for line, reply in [
            (b"create function img.new\n", b"OK\r\n"),
            (b"maxqueue img.new 5\n", b"OK\r\n"),
            (b"drop function img.new\n", b"OK\r\n"),
            (b"create function secret2\n", b"ERR PERMISSION_DENIED admin+on+function+'secret2'"),
            (b"cancel job H:t:1\n", b"ERR PERMISSION_DENIED admin+on+function+'secret'"),
            (b"shutdown\n", b"ERR PERMISSION_DENIED admin+on+every+function"),
            (b"verbose debug\n", b"ERR PERMISSION_DENIED admin+on+every+function"),
            (b"workers\n", b"ERR PERMISSION_DENIED status+on+every+function"),
            (b"status\n", b".\n"),
        ]:
            c.send(line)
            self.assertTrue(c.text().startswith(reply), line)
        self.assertEqual(requested, [])
        self.assertIn(b"secret", self.core.functions)
        loopback.send(b"status\n")
        self.assertEqual(loopback.text(), b"secret\t1\t0\t0\n.\n")


class DefaultAdminTests(SynchronousTestCase):
    """``twistd gearman`` without --acl: existing clients work, mutating admin is local."""

    def factory(self, *args: str) -> ServerFactory:
        options = Options()
        options.parseOptions(["--queue=memory", *args])
        service = _makeService(options, Clock())
        return service.factory

    def test_mutating_admin_from_remote_peers_refused(self) -> None:
        factory = self.factory()
        remote, local = Conn(factory, host="192.0.2.9"), Conn(factory)
        remote.send(request(P.SUBMIT_JOB_BG, b"f", b"", b"x"), request(P.CAN_DO, b"f"))
        self.assertEqual([t for t, _ in remote.packets()], [P.JOB_CREATED])
        for line in (
            b"cancel job H:x:1\n",
            b"drop function f\n",
            b"create function g\n",
            b"maxqueue f 1\n",
            b"shutdown\n",
            b"verbose debug\n",
        ):
            remote.send(line)
            self.assertTrue(remote.text().startswith(b"ERR PERMISSION_DENIED"), line)
        for line in (b"status\n", b"workers\n", b"show jobs\n", b"version\n"):
            remote.send(line)
            self.assertFalse(remote.text().startswith(b"ERR"), line)
        local.send(b"create function g\n")
        self.assertEqual(local.text(), b"OK\r\n")
        unix = Conn(factory, unix=True)
        unix.send(b"maxqueue f 3\n")
        self.assertEqual(unix.text(), b"OK\r\n")

    def test_admin_from(self) -> None:
        """``--admin-from CIDR`` (or --allow-remote-shutdown: anyone) opens admin to more."""
        factory = self.factory("--admin-from=192.0.2.0/24")
        Conn(factory, host="192.0.2.9").send(b"create function g\n")
        self.assertIn(b"g", factory.core.functions)
        other = Conn(factory, host="198.51.100.1")
        other.send(b"create function h\n")
        self.assertTrue(other.text().startswith(b"ERR PERMISSION_DENIED"))
        factory = self.factory("--allow-remote-shutdown")
        anyone = Conn(factory, host="198.51.100.1")
        anyone.send(b"create function h\n")
        self.assertEqual(anyone.text(), b"OK\r\n")
        self.assertRaises(usage.UsageError, self.factory, "--admin-from=somewhere")


class BoundsTests(SynchronousTestCase):
    """--max-connections, --handshake-timeout and --idle-timeout, on a Clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.core = JobServerCore(clock=self.clock, handle_prefix=b"H:t")

    def test_idle_peer_dropped_active_peer_kept(self) -> None:
        factory = ServerFactory(self.core, bounds=ConnectionBounds(idle_timeout=5))
        silent, talker = Conn(factory), Conn(factory)
        talker.send(request(P.ECHO_REQ, b"hi"))
        self.clock.advance(4.9)
        self.assertFalse(silent.transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(silent.transport.disconnecting)
        self.assertFalse(talker.transport.disconnecting)
        self.assertEqual(len(self.core.peers), 1)
        self.assertNotIn("dataReceived", vars(talker.proto))  # back to the class's method

    def test_handshake_timeout(self) -> None:
        """A TLS peer that does not finish its handshake in time is dropped."""
        factory = ServerFactory(self.core, bounds=ConnectionBounds(handshake_timeout=3))
        peer = IPv4Address("TCP", "10.0.0.5", 1234)
        slow, quick = factory.buildProtocol(peer), factory.buildProtocol(peer)
        slow_t, quick_t = StringTransport(peerAddress=peer), StringTransport(peerAddress=peer)
        for proto, transport in ((slow, slow_t), (quick, quick_t)):
            proto.tls_pending = True
            proto.makeConnection(transport)
        quick.handshakeCompleted()
        with capturedLogs() as events:
            self.clock.advance(3)
        self.assertTrue(slow_t.disconnecting)
        self.assertFalse(quick_t.disconnecting)
        self.assertIn(
            "dropping 10.0.0.5:1234: it did not finish its TLS handshake in time",
            [formatEvent(e) for e in events],
        )

    def test_max_connections(self) -> None:
        """Past the bound, the gate builds no protocol (the port closes the socket)."""
        factory = ServerFactory(self.core, bounds=ConnectionBounds(max_connections=2))
        gate = _Gate(factory)
        gate.open = True
        addr = IPv4Address("TCP", "10.0.0.5", 1234)
        first, second = gate.buildProtocol(addr), gate.buildProtocol(addr)
        assert first is not None and second is not None
        first.makeConnection(StringTransport(peerAddress=addr))
        second.makeConnection(StringTransport(peerAddress=addr))
        with capturedLogs() as events:
            self.assertIsNone(gate.buildProtocol(addr))
            self.assertIsNone(gate.buildProtocol(addr))
        self.assertEqual(len(events), 1)
        first.connectionLost()
        self.assertIsNotNone(gate.buildProtocol(addr))

    def test_options(self) -> None:
        options = Options()
        options.parseOptions(
            ["--max-connections=100", "--handshake-timeout=2.5", "--idle-timeout=60"]
        )
        self.assertEqual(options["bounds"], ConnectionBounds(100, 2.5, 60))
        for bad in (["--idle-timeout=soon"], ["--handshake-timeout=-1"], ["--max-connections=x"]):
            self.assertRaises(usage.UsageError, Options().parseOptions, bad)


class ClosedConnectionTests(SynchronousTestCase):
    """A closed connection's permissions are let go: no longer refreshed, nor referring back."""

    def test_forgotten_on_close(self) -> None:
        acl = Acl()
        core = JobServerCore(clock=Clock(), handle_prefix=b"H:t")
        c = Conn(ServerFactory(core, acl=acl), host="10.0.0.1")
        access = c.proto.access
        assert access is not None
        self.assertIn(access, set(acl._live))
        c.lose()
        self.assertNotIn(access, set(acl._live))
        self.assertIsNone(access._on_change)


class HangupTests(SynchronousTestCase):
    """SIGHUP asks the reactor thread to reload; stopping puts the old handler back."""

    def test_sighup(self) -> None:
        import signal

        reloads: list[str] = []

        class Server:
            def reload(self) -> None:
                reloads.append("reload")

        class Reactor:
            def callFromThread(self, f: Any) -> None:
                f()

        previous = signal.getsignal(signal.SIGHUP)
        service = ReloadOnHangup(Server(), Reactor())  # type: ignore[arg-type]
        service.startService()
        try:
            os.kill(os.getpid(), signal.SIGHUP)
            self.assertEqual(reloads, ["reload"])
        finally:
            service.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), previous)


class ReloadTests(SynchronousTestCase):
    """SIGHUP (``service.reload``) re-reads the permissions file; a broken one is refused."""

    def test_reload(self) -> None:
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "acl.toml")
        with open(path, "w") as f:
            f.write('[[grant]]\nto = "anyone"\nsubmit = ["a"]\n')
        options = Options()
        options.parseOptions(["--queue=memory", f"--acl={path}"])
        service: GearmanServerService = _makeService(options, Clock())
        c = Conn(service.factory, host="10.0.0.1")
        c.send(request(P.SUBMIT_JOB_BG, b"b", b"", b"x"))
        self.assertEqual([t for t, _ in c.packets()], [P.ERROR])
        with open(path, "w") as f:
            f.write('[[grant]]\nto = "anyone"\nsubmit = ["a", "b"]\n')
        service.reload()
        c.send(request(P.SUBMIT_JOB_BG, b"b", b"", b"x"))
        self.assertEqual([t for t, _ in c.packets()], [P.JOB_CREATED])
        with open(path, "w") as f:
            f.write("[[grant]\n")
        with capturedLogs() as events:
            service.reload()
        self.assertTrue(
            any("reload: permissions kept as they were" in formatEvent(e) for e in events)
        )
        c.send(request(P.SUBMIT_JOB_BG, b"b", b"", b"x"))
        self.assertEqual([t for t, _ in c.packets()], [P.JOB_CREATED])
