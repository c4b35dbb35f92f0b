"""The failure policy with real third-party workers (PHP's libgearman, Perl's Gearman::Worker).

A background job that a real worker fails is retried as the configuration says (three
attempts, 0.5 s then 1 s apart), then lands in the dead set with the worker's exception
text; ``retry dead`` brings it back and a healthy worker completes it. The workers see
nothing but ordinary JOB_ASSIGNs: the policy is the server's.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.procs import read_line, stop_process, wait_until

from .conftest import RunningServer, require_tool, start_gearmanpy

pytestmark = pytest.mark.interop

SCRIPTS = Path(__file__).parent / "scripts"
CONFIG = """
[functions.flaky]
attempts = 3
backoff = 0.5
backoff_factor = 2
jitter = 0
"""


def _worker(lang: str, server: RunningServer, mode: str, log: Path) -> subprocess.Popen[str]:
    """A real worker for ``flaky`` in ``mode`` (see the scripts), once registered."""
    program = require_tool("perl" if lang == "perl" else "php")
    script = SCRIPTS / ("worker.pl" if lang == "perl" else "worker.php")
    proc = subprocess.Popen(
        [program, str(script), "127.0.0.1", str(server.port), "flaky", mode, str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert read_line(proc, 30).strip() == "ready"
    return proc


def _admin(server: RunningServer, line: str) -> bytes:
    """One admin command's whole reply (a list ends with ``.``, others are one line)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(line.encode() + b"\n")
        reply = b""
        while not (
            reply.endswith(b"\n.\n") or reply == b".\n" or reply.startswith((b"OK", b"ERR"))
        ):
            chunk = s.recv(65536)
            assert chunk, f"{line!r}: connection closed after {reply!r}"
            reply += chunk
    return reply


def _dead(server: RunningServer) -> list[list[bytes]]:
    reply = _admin(server, "show dead")
    return [row.split(b"\t") for row in reply[:-2].splitlines()]


@pytest.mark.parametrize("lang", ["php", "perl"])
def test_failing_job_is_retried_with_backoff_then_dead_then_retried(
    lang: str, tmp_path: Path
) -> None:
    """Three runs 0.5 s and 1 s apart, then dead; retry dead and a healthy worker completes it."""
    config = tmp_path / "gearmanpy.toml"
    config.write_text(CONFIG)
    server = start_gearmanpy("--config", str(config), workdir=tmp_path / "server")
    failing_log, healthy_log = tmp_path / "failing.log", tmp_path / "healthy.log"
    worker = _worker(lang, server, "exception", failing_log)
    try:
        gearman = require_tool("gearman")
        subprocess.run(
            [gearman, "-h", "127.0.0.1", "-p", str(server.port), "-f", "flaky", "-b", "--", "p1"],
            check=True,
            timeout=30,
        )
        seen: list[float] = []

        def runs() -> int:
            n = len(failing_log.read_text().splitlines()) if failing_log.exists() else 0
            while len(seen) < n:
                seen.append(time.monotonic())
            return n

        wait_until(lambda: runs() >= 3 and _dead(server), 30, "the job to be dead")
        time.sleep(1.5)  # no fourth run comes
        assert runs() == 3
        assert seen[1] - seen[0] >= 0.45 and seen[2] - seen[1] >= 0.95, seen
        ((handle, function, _, attempts, _, error),) = _dead(server)
        assert (function, attempts, error) == (b"flaky", b"3", b"boom:p1")
    finally:
        stop_process(worker)

    healthy = _worker(lang, server, "echo", healthy_log)
    try:
        assert _admin(server, "retry dead " + handle.decode()) == b"OK\r\n"
        wait_until(lambda: healthy_log.exists(), 30, "the healthy worker to run the job")
        wait_until(lambda: _admin(server, "status") == b"flaky\t0\t0\t1\n.\n", 30, "the job to end")
        assert _dead(server) == []
    finally:
        stop_process(healthy)
        server.stop()
