"""Peers that send and never read, against a real ``twistd -n gearman`` on loopback.

The in-memory tests (``tests/test_server_protocol.py``, ``BackPressureTests``) pin the rules;
these prove on real sockets that the server stops reading from such a peer, so its memory
(the RSS of the twistd process) stays bounded while another client on the same server is
still answered. Each hostile peer shrinks its receive buffer and sends without blocking
until the server has taken nothing for half a second.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gearmanpy.protocol.packets import PacketType, encode, request, response

from .conftest import RunningServer, start_gearmanpy

pytestmark = pytest.mark.interop

P = PacketType
MIB = 1 << 20


def rss_mib(server: RunningServer) -> float:
    """The server process's resident set size, in MiB."""
    with open(f"/proc/{server.process.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


def flood(
    server: RunningServer, data: bytes, quiet: float = 0.5, small_send_buffer: bool = False
) -> tuple[socket.socket, int]:
    """Send ``data`` to the server without ever reading, until it is all sent or the server
    took nothing for ``quiet`` seconds; return the socket (still open) and the bytes sent
    (with ``small_send_buffer``, little of that waits in this end's kernel buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    if small_send_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.setblocking(False)
    view = memoryview(data)
    sent = 0
    last = time.monotonic()
    while sent < len(data) and time.monotonic() - last < quiet:
        try:
            sent += sock.send(view[sent : sent + MIB])
            last = time.monotonic()
        except BlockingIOError:
            time.sleep(0.005)
    return sock, sent


def answered(server: RunningServer) -> bool:
    """Another client's ECHO_REQ is answered within 5 s."""
    want = encode(response(P.ECHO_RES, b"still there?"))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(encode(request(P.ECHO_REQ, b"still there?")))
        got = b""
        while len(got) < len(want):
            chunk = sock.recv(4096)
            if not chunk:
                return False
            got += chunk
        return got == want


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """A fresh twistd gearman (memory queue), with the options a test passes indirectly."""
    extra: list[str] = getattr(request, "param", [])
    running = start_gearmanpy(*extra, workdir=tmp_path / "server")
    yield running
    running.stop()


def test_echo_flood_never_read(server: RunningServer) -> None:
    """Ninety-six 1 MiB ECHO_REQs, replies never read: the server stops reading at about
    its 16 MiB soft limit, so it grows by far less than 96 MiB and keeps answering others;
    when the peer leaves, the memory is given back."""
    before = rss_mib(server)
    echo = encode(request(P.ECHO_REQ, b"x" * MIB))
    sock, sent = flood(server, echo * 96)
    try:
        grown = rss_mib(server) - before
        assert sent < 48 * MIB, f"the server read {sent / MIB:.0f} MiB it could not answer"
        assert grown < 48, f"the server grew by {grown:.0f} MiB"
        assert answered(server)
    finally:
        sock.close()
    deadline = time.monotonic() + 5
    while rss_mib(server) - before > 12 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rss_mib(server) - before <= 12, "memory kept after the slow reader left"
    assert answered(server)


@pytest.mark.parametrize(
    "server", [["--output-soft-limit", "65536", "--output-hard-limit", "1048576"]], indirect=True
)
def test_pipelined_submissions_never_read(server: RunningServer) -> None:
    """A client pipelining a million SUBMIT_JOB_BGs without reading a JOB_CREATED is no
    longer read from once its replies pass the (here 64 KiB) soft limit plus what the
    kernel buffers: the queue stops growing, and other clients are answered."""
    job = encode(request(P.SUBMIT_JOB_BG, b"f", b"", b"x"))
    sock, sent = flood(server, job * 1_000_000, small_send_buffer=True)
    try:
        assert sent < 1_000_000 * len(job), "the server read every job"
        assert answered(server)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as admin:
            admin.sendall(b"status\n")
            status = b""
            while not status.endswith(b".\n"):
                status += admin.recv(4096)
        queued = int(status.split(b"\t")[1])
        assert queued < 300_000, f"{queued} jobs read from a client that reads nothing"
    finally:
        sock.close()


def _status(server: RunningServer) -> bytes:
    """The admin ``status`` reply."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as admin:
        admin.sendall(b"status\n")
        status = b""
        while not status.endswith(b".\n"):
            status += admin.recv(4096)
    return status


@pytest.mark.parametrize(
    "server", [["--max-queued-jobs", "1000", "--max-queued-bytes", "64K"]], indirect=True
)
def test_submission_flood_past_the_server_bounds(server: RunningServer) -> None:
    """A client that floods the server with jobs no worker takes gets QUEUE_ERROR past
    --max-queued-jobs (and past --max-queued-bytes for big payloads) instead of growing the
    server until it is killed; every submission is answered, in order, and others still are."""
    small = encode(request(P.SUBMIT_JOB_BG, b"f", b"", b"x"))
    big = encode(request(P.SUBMIT_JOB_BG, b"g", b"", b"y" * 40_000))
    queue_error = encode(response(P.ERROR, b"QUEUE_ERROR", b"Job queue is full"))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(big * 3 + small * 5000)
        got = b""
        while got.count(queue_error) < 2 + 5000 - 999:
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection"
            got += chunk
    assert got[:8] == b"\0RES" + int(P.JOB_CREATED).to_bytes(4, "big")  # the big job fits
    assert got.count(queue_error) == 2 + 4001  # one big job fits in 64 KiB; 1000 jobs in all
    lines = dict(line.split(b"\t", 1) for line in _status(server).splitlines()[:-1])
    assert lines[b"f"].split(b"\t")[0] == b"999" and lines[b"g"].split(b"\t")[0] == b"1"
    assert answered(server)
