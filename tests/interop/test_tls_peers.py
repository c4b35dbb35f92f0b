"""Third-party TLS peers against a real ``twistd -n gearman --ssl --ssl-ca-file ...``.

``openssl s_client`` proves the handshake cases (a verified client is answered; no
certificate, another CA's, an expired one, TLS 1.1 are not), Python ``gear`` (OpenStack's
client and worker, with its ``ssl_key``/``ssl_cert``/``ssl_ca``) runs jobs through it under
per-certificate permissions, and hostile peers (slow handshakes, a flood of half-open
connections, garbage before the handshake) are dropped within their bounds while verified
peers are still served.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.certs import CertFiles
from tests.procs import wait_until

from .conftest import RunningServer, require_tool, start_gearmanpy

pytestmark = pytest.mark.interop

ACL = """
[[grant]]
to = ["cert:alice", "cert:worker-*"]
submit = ["reverse", "forbidden"]
register = ["reverse"]
status = ["*"]

[[grant]]
to = ["unix", "loopback"]
admin = ["*"]
status = ["*"]
"""


@attrs.define
class TLSServer:
    """A TLS server, its certificates, and a plain unix socket for admin lines."""

    server: RunningServer
    certs: CertFiles
    admin_socket: str

    def admin(self, line: bytes) -> bytes:
        """Send one admin line over the unix socket; the reply up to its end."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(self.admin_socket)
            sock.sendall(line)
            got = b""
            while not (got.endswith(b".\n") or got.endswith(b"\r\n")):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                got += chunk
        return got

    def log(self) -> str:
        with open(os.path.join(self.server.workdir, "twistd.log"), errors="replace") as f:
            return f.read()


def start_tls(tmp_path: Path, *extra: str) -> TLSServer:
    certs_dir = tmp_path / "certs"
    certs_dir.mkdir()
    certs = CertFiles(str(certs_dir))
    acl = tmp_path / "acl.toml"
    acl.write_text(ACL)
    admin_socket = str(tmp_path / "admin.sock")
    server = start_gearmanpy(
        "--ssl",
        f"--ssl-certificate={certs.path('server.pem')}",
        f"--ssl-key={certs.path('server.key')}",
        f"--ssl-ca-file={certs.path('ca.pem')}",
        f"--acl={acl}",
        f"--listen=unix:{admin_socket}",
        *extra,
        workdir=tmp_path / "server",
    )
    return TLSServer(server, certs, admin_socket)


@pytest.fixture
def tls_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[TLSServer]:
    """A TLS server with the options a test passes indirectly."""
    running = start_tls(tmp_path, *getattr(request, "param", []))
    yield running
    running.server.stop()


def s_client(tls: TLSServer, cert: str | None, *extra: str, line: bytes = b"version\n") -> str:
    """Run ``openssl s_client`` (verifying the server), send ``line``, return its output."""
    openssl = require_tool("openssl")
    argv = [
        openssl,
        "s_client",
        "-connect",
        tls.server.address,
        "-servername",
        "localhost",
        "-CAfile",
        tls.certs.path("ca.pem"),
        "-verify_return_error",
        "-quiet",
        *extra,
    ]
    if cert is not None:
        argv += ["-cert", tls.certs.path(f"{cert}.pem"), "-key", tls.certs.path(f"{cert}.key")]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdin is not None
    proc.stdin.write(line)
    proc.stdin.flush()
    time.sleep(0.5)  # the reply, or the server's alert
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    return out.decode(errors="replace")


VERSION_REPLY = "OK 1.1.20-gearmanpy-"


def test_s_client_handshakes(tls_server: TLSServer) -> None:
    """A certificate from the CA gets answers (TLS 1.3 and 1.2); no certificate, another
    CA's, an expired one, and TLS 1.1 get none, and the server logs why."""
    assert VERSION_REPLY in s_client(tls_server, "alice")
    assert VERSION_REPLY in s_client(tls_server, "alice", "-tls1_2")
    for cert in (None, "other", "expired"):
        out = s_client(tls_server, cert)
        assert VERSION_REPLY not in out, (cert, out)
    out = s_client(tls_server, "alice", "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert VERSION_REPLY not in out
    log = tls_server.log()
    assert "peer did not return a certificate" in log
    assert log.count("certificate verify failed") >= 2


def gear_client(tls: TLSServer, cert: str) -> object:
    import gear

    client = gear.Client(client_id=f"gear-{cert}")
    client.addServer(
        "127.0.0.1",
        tls.server.port,
        ssl_key=tls.certs.path(f"{cert}.key"),
        ssl_cert=tls.certs.path(f"{cert}.pem"),
        ssl_ca=tls.certs.path("ca.pem"),
    )
    return client


def test_gear_client_and_worker(tls_server: TLSServer) -> None:
    """gear's worker registers ``reverse`` and ``forbidden`` with its certificate; the
    server takes the one it may register and refuses the other (logged with the identity,
    no reply: as gear's own server, since gear's worker would take an ERROR it cannot match
    for a lost connection); the worker stays, and gear's client runs a ``reverse`` job."""
    import gear

    worker = gear.Worker("gear-worker")
    worker.addServer(
        "127.0.0.1",
        tls_server.server.port,
        ssl_key=tls_server.certs.path("worker.key"),
        ssl_cert=tls_server.certs.path("worker.pem"),
        ssl_ca=tls_server.certs.path("ca.pem"),
    )
    client: gear.Client = gear_client(tls_server, "alice")  # type: ignore[assignment]
    try:
        worker.waitForServer(timeout=10)
        worker.registerFunction("reverse")
        worker.registerFunction("forbidden")
        client.waitForServer(timeout=10)
        deadline = time.monotonic() + 5
        while b"reverse\t0\t0\t1" not in tls_server.admin(b"status\n"):
            assert time.monotonic() < deadline, tls_server.admin(b"status\n")
            time.sleep(0.05)

        def work() -> None:
            job = worker.getJob()
            job.sendWorkComplete(job.arguments[::-1])

        runner = threading.Thread(target=work, daemon=True)
        runner.start()
        job = gear.TextJob("reverse", "over gear TLS")
        client.submitJob(job, timeout=10)
        deadline = time.monotonic() + 10
        while not job.complete:
            assert time.monotonic() < deadline, "the job did not complete"
            time.sleep(0.02)
        assert job.data == ["SLT raeg revo"]
        runner.join(5)
        status = tls_server.admin(b"status\n")
        assert b"forbidden" not in status or b"forbidden\t0\t0\t0" in status, status
        log = tls_server.log()
        assert "refused register on function 'forbidden' to cert:worker-1 at 127.0.0.1" in log
    finally:
        client.shutdown()
        worker.shutdown()


def test_gear_client_from_another_ca_cannot_connect(tls_server: TLSServer) -> None:
    """gear with a certificate the server's CA did not sign never gets a usable connection."""
    import gear

    client: gear.Client = gear_client(tls_server, "other")  # type: ignore[assignment]
    try:
        with pytest.raises(gear.TimeoutError):
            client.waitForServer(timeout=2)
    finally:
        client.shutdown()
    assert "certificate verify failed" in tls_server.log()


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


@pytest.mark.parametrize(
    "tls_server", [["--handshake-timeout=1", "--max-connections=40"]], indirect=True
)
def test_hostile_tls_peers(tls_server: TLSServer) -> None:
    """Slow handshakes, a flood of half-open connections past --max-connections, and garbage
    before the handshake: each is dropped within its bound, verified peers are served
    meanwhile and after."""
    address = ("127.0.0.1", tls_server.server.port)
    slow = [socket.create_connection(address) for _ in range(10)]
    # Half a ClientHello, then nothing: the handshake never ends.
    for sock in slow:
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    garbage = socket.create_connection(address)
    garbage.sendall(b"GET / HTTP/1.0\r\n\r\n" + os.urandom(2048))
    assert _closed_by_server(garbage, 3), "garbage before the handshake was kept"
    flood = [socket.create_connection(address) for _ in range(60)]
    try:
        # Past 40 connections the server closes new ones at once.
        refused = sum(_closed_by_server(s, 0.2) for s in flood)
        assert refused >= 15, f"only {refused} of the flood refused"
        assert all(_closed_by_server(s, 2) for s in slow), "a slow handshake outlived its bound"
        assert all(_closed_by_server(s, 2) for s in flood), "a half-open peer outlived its bound"
        assert VERSION_REPLY in s_client(tls_server, "alice")
    finally:
        for sock in slow + flood + [garbage]:
            sock.close()
    log = tls_server.log()
    assert "did not finish its TLS handshake in time" in log
    assert "refusing new connections" in log
    assert "TLS handshake with 127.0.0.1:" in log


def test_silent_flood_on_the_plain_listener(tmp_path: Path) -> None:
    """Without TLS too: past --max-connections new connections are closed at once, peers
    that never send a byte go after --idle-timeout, and a client is answered after."""
    from .test_hostile_peers import answered

    server = start_gearmanpy(
        "--idle-timeout=1", "--max-connections=30", workdir=tmp_path / "server"
    )
    try:
        address = ("127.0.0.1", server.port)
        flood = [socket.create_connection(address) for _ in range(50)]
        try:
            refused = sum(_closed_by_server(s, 0.2) for s in flood)
            assert refused >= 15, f"only {refused} of the flood refused"
            assert all(_closed_by_server(s, 2) for s in flood), "a silent peer outlived its bound"
        finally:
            for sock in flood:
                sock.close()
        assert answered(server)
    finally:
        server.stop()


def test_gearmanpy_command_line_over_tls(tls_server: TLSServer, tmp_path: Path) -> None:
    """``gearmanpy worker``, ``submit`` and ``admin`` with ``--ssl-*``: a job runs through
    verified TLS with client certificates; no certificate, or a server that another CA signed,
    is one line on stderr saying why, and exit status 1."""
    from tests.interop.test_cli import GEARMANPY, env, gp

    certs = tls_server.certs
    s = ["-s", f"localhost:{tls_server.server.port}", "--ssl-ca-file", certs.path("ca.pem")]

    def as_(name: str) -> list[str]:
        return [*s, "--ssl-certificate", certs.path(f"{name}.pem"),
                "--ssl-key", certs.path(f"{name}.key")]  # fmt: skip

    worker = subprocess.Popen(
        [*GEARMANPY, "worker", *as_("worker"), "-f", "reverse", "--", "rev"],
        env=env(), stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_until(
            lambda: b"reverse" in tls_server.admin(b"status\n"), 30, "the TLS worker registered"
        )
        done = gp("submit", *as_("alice"), "reverse", "hello")
        assert (done.returncode, done.stdout) == (0, b"olleh"), done.stderr
        version = gp("admin", *as_("alice"), "version")
        assert version.stdout.decode().startswith("1.1.20-gearmanpy-"), version.stderr
        stranger = [*s[:2], "--ssl-ca-file", certs.path("other-ca.pem")]
        for command, args, why in [
            (["submit", "--timeout", "5"], s, b"tlsv13 alert certificate required"),
            (["admin"], s, b"tlsv13 alert certificate required"),
            (["submit", "--timeout", "5"], stranger, b"failed: certificate verify failed"),
            (["admin"], stranger, b"failed: certificate verify failed"),
        ]:
            refused = gp(
                command[0],
                *args,
                *command[1:],
                *(["reverse", "x"] if command[0] == "submit" else ["version"]),
            )
            assert refused.returncode == 1 and refused.stdout == b"", refused
            assert refused.stderr.count(b"\n") == 1 and why in refused.stderr, refused
        # The permissions, from the trusted unix socket: list, grant, revoke.
        unix = ["-s", f"unix:path={tls_server.admin_socket}"]
        grants = [r.split() for r in gp("admin", *unix, "acl", "list").stdout.decode().splitlines()]
        assert ["cert:alice", "submit", "reverse"] in grants
        assert gp("admin", *unix, "acl", "grant", "cert:alice", "submit", "extra").returncode == 0
        assert gp("admin", *unix, "--raw", "acl", "list").stdout.count(b"cert:alice\tsubmit\t") == 3
        assert gp("admin", *unix, "acl", "revoke", "cert:alice", "submit", "extra").returncode == 0
        again = gp("admin", *unix, "acl", "revoke", "cert:alice", "submit", "extra")
        assert again.returncode == 1 and again.stderr.startswith(b"gearmanpy: error: ACL_UNCHANGED")
    finally:
        worker.terminate()
        worker.wait(timeout=40)
