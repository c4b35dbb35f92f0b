"""Fixtures that start real Gearman servers on loopback for the interop tests.

``gearmand`` starts Debian's gearmand 1.1.20, ``gearmanpy_server`` starts ours with
``twistd -n gearman``, and ``any_server`` runs a test against each in turn. A missing tool is
a failure, not a skip: CI installs all of them, and a silently skipped interop suite proves
nothing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import attrs
import pytest

GEARMAND = "/usr/sbin/gearmand"
#: The twistd of the Python running the tests (``python -m twisted`` is ``twist``, not twistd).
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Block until something accepts connections on ``port``, or fail the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listened on port {port} within {timeout}s")


def require_tool(path: str) -> str:
    """Return the full path of a third-party tool, failing (not skipping) if it is absent."""
    found = shutil.which(path) or (path if os.path.exists(path) else None)
    if found is None:
        pytest.fail(f"{path} is not installed; .ci/run installs it")
    return found


@attrs.define
class RunningServer:
    """A server process started for a test.

    :ivar kind: ``"gearmand"`` or ``"gearmanpy"``, for tests that pin where they differ.
    """

    kind: str
    port: int
    process: subprocess.Popen[bytes]
    workdir: str

    @property
    def address(self) -> str:
        """``host:port`` as the command-line tools take it."""
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop the process and wait for it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def kill(self) -> None:
        """SIGKILL the process, as a crash would."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def start_gearmand(*extra: str) -> RunningServer:
    """Start Debian's gearmand on a free loopback port."""
    require_tool(GEARMAND)
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="gearmand-")
    proc = subprocess.Popen(
        [
            GEARMAND,
            "-L",
            "127.0.0.1",
            "-p",
            str(port),
            "-t",
            "1",
            "-l",
            os.path.join(workdir, "gearmand.log"),
            "-P",
            os.path.join(workdir, "gearmand.pid"),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, proc)
    return RunningServer("gearmand", port, proc, workdir)


def start_gearmanpy(
    *extra: str,
    workdir: str | None = None,
    port: int | None = None,
    default_queue: bool = False,
) -> RunningServer:
    """Start our server with ``twistd -n gearman`` on a free loopback port.

    Unless ``extra`` names a ``--queue`` or ``default_queue`` is set (then no ``--queue`` is
    given at all, as a newcomer runs it), it runs with ``--queue memory``.
    """
    require_tool(TWISTD)
    port = port or free_port()
    workdir = workdir or tempfile.mkdtemp(prefix="gearmanpy-")
    args = list(extra)
    if not default_queue and not any(a.startswith("--queue") for a in args):
        args += ["--queue", "memory"]
    proc = subprocess.Popen(
        [
            TWISTD,
            "--nodaemon",
            "--pidfile=",
            "--logfile",
            os.path.join(workdir, "twistd.log"),
            "gearman",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            *args,
        ],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = RunningServer("gearmanpy", port, proc, workdir)
    try:
        wait_for_port(port, proc)
    except BaseException:
        server.kill()
        raise
    return server


@pytest.fixture
def gearmand() -> Iterator[RunningServer]:
    """A fresh gearmand 1.1.20 for one test."""
    server = start_gearmand()
    yield server
    server.stop()


@pytest.fixture
def gearmanpy_server() -> Iterator[RunningServer]:
    """A fresh gearmanpy server (memory queue) for one test."""
    server = start_gearmanpy()
    yield server
    server.stop()


@pytest.fixture(params=["gearmand", "gearmanpy"])
def any_server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """Each test using this runs once against gearmand and once against gearmanpy."""
    server = start_gearmand() if request.param == "gearmand" else start_gearmanpy()
    yield server
    server.stop()
