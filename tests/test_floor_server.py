"""benchmarks/floor_server.py does the jobs it is measured on (a floor that lost jobs would
flatter every figure beside it): over real loopback sockets, as run.py drives it."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.procs import free_port, wait_for_port

FLOOR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks", "floor_server.py")


def req(ptype: int, *args: bytes) -> bytes:
    body = b"\0".join(args)
    return b"\0REQ" + struct.pack(">II", ptype, len(body)) + body


def read_packet(s: socket.socket) -> tuple[int, bytes]:
    """One response packet: (type, body)."""
    head = b""
    while len(head) < 12:
        head += s.recv(12 - len(head))
    magic, ptype, size = struct.unpack(">4sII", head)
    assert magic == b"\0RES"
    body = b""
    while len(body) < size:
        body += s.recv(size - len(body))
    return ptype, body


@pytest.fixture
def port() -> Iterator[int]:
    """A running floor server's port."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, FLOOR, str(port)], stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        yield port
    finally:
        proc.kill()
        proc.wait()


def test_foreground_and_background_jobs(port: int) -> None:
    """Echo, a background and a foreground job, a sleeping worker woken by NOOP."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as client,
        socket.create_connection(("127.0.0.1", port), timeout=10) as worker,
    ):
        client.sendall(req(16, b"hi"))
        assert read_packet(client) == (17, b"hi")
        worker.sendall(req(1, b"bench") + req(9))
        assert read_packet(worker) == (10, b"")  # NO_JOB
        worker.sendall(req(4))  # PRE_SLEEP
        client.sendall(req(18, b"bench", b"", b"bg") + req(7, b"bench", b"", b"fg"))
        (_, bg), (_, fg) = read_packet(client), read_packet(client)
        assert read_packet(worker) == (6, b"")  # NOOP
        worker.sendall(req(9) + req(9))
        assert read_packet(worker) == (11, bg + b"\0bench\0bg")
        assert read_packet(worker) == (11, fg + b"\0bench\0fg")
        worker.sendall(req(13, fg, b"done"))
        assert read_packet(client) == (13, fg + b"\0done")
