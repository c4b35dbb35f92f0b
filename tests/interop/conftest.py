"""Fixtures that start real Gearman servers on loopback for the interop tests.

``start_gearmand`` starts Debian's gearmand 1.1.20, ``start_gearmanpy`` starts ours with
``twistd -n gearman``; the ``gearmanpy_server`` fixture gives a test our server and
``any_server`` runs a test against each in turn. A missing tool is a failure, not a skip: CI
installs all of them, and a silently skipped interop suite proves nothing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.dbservers import PostgresServer, RedisServer, start_postgres, start_redis
from tests.procs import free_port, stop_process, wait_for_port

GEARMAND = "/usr/sbin/gearmand"
#: The twistd of the Python running the tests (``python -m twisted`` is ``twist``, not twistd).
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


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
        """Stop the process (SIGTERM) and wait for it."""
        stop_process(self.process)

    def kill(self) -> None:
        """SIGKILL the process, as a crash would."""
        stop_process(self.process, signal.SIGKILL)


def _start(
    kind: str, port: int, workdir: str, argv: list[str], log: str, cwd: str | None = None
) -> RunningServer:
    """Run ``argv`` and wait until it listens on ``port``; kill it if it never does."""
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RunningServer(kind, port, proc, workdir)
    try:
        wait_for_port(port, proc, log=log)
    except BaseException:
        server.kill()
        raise
    return server


def _workdir(path: str | Path) -> str:
    """``path`` as a string, the directory created if it does not exist yet."""
    os.makedirs(path, exist_ok=True)
    return str(path)


def start_gearmand(*extra: str, workdir: str | Path, port: int | None = None) -> RunningServer:
    """Start Debian's gearmand on ``port`` (default: a free one) on loopback.

    Its log and pid file go to ``workdir`` (created if missing; a test's ``tmp_path``).
    """
    require_tool(GEARMAND)
    port = port or free_port()
    workdir = _workdir(workdir)
    log = os.path.join(workdir, "gearmand.log")
    pidfile = os.path.join(workdir, "gearmand.pid")
    argv = [GEARMAND, "-L", "127.0.0.1", "-p", str(port), "-t", "1", "-l", log, "-P", pidfile]
    return _start("gearmand", port, workdir, [*argv, *extra], log)


def start_gearmanpy(
    *extra: str,
    workdir: str | Path,
    port: int | None = None,
    default_queue: bool = False,
) -> RunningServer:
    """Start our server with ``twistd -n gearman`` on ``port`` (default: a free one) on loopback.

    It runs in ``workdir`` (created if missing; a test's ``tmp_path``), which holds its log.
    Unless ``extra`` names a ``--queue`` or ``default_queue`` is set (then no ``--queue`` is
    given at all, as a newcomer runs it), it runs with ``--queue memory``.
    """
    require_tool(TWISTD)
    port = port or free_port()
    workdir = _workdir(workdir)
    log = os.path.join(workdir, "twistd.log")
    args = list(extra)
    if not default_queue and not any(a.startswith("--queue") for a in args):
        args += ["--queue", "memory"]
    argv = [TWISTD, "--nodaemon", "--pidfile=", "--logfile", log, "gearman"]
    argv += ["--listen", f"tcp:{port}:interface=127.0.0.1", *args]
    return _start("gearmanpy", port, workdir, argv, log, cwd=workdir)


@pytest.fixture
def gearmanpy_server(tmp_path: Path) -> Iterator[RunningServer]:
    """A fresh gearmanpy server (memory queue) for one test, in ``tmp_path/server``."""
    server = start_gearmanpy(workdir=tmp_path / "server")
    yield server
    server.stop()


@pytest.fixture(params=["gearmand", "gearmanpy"])
def any_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningServer]:
    """Each test using this runs once against gearmand and once against gearmanpy.

    The server's files go to ``tmp_path/server``.
    """
    workdir = tmp_path / "server"
    if request.param == "gearmand":
        server = start_gearmand(workdir=workdir)
    else:
        server = start_gearmanpy(workdir=workdir)
    yield server
    server.stop()


# -- durable-store fixtures (the crash and restart tests) -----------------------------------


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server (AOF, appendfsync always) shared by the tests of this module."""
    server = start_redis()
    yield server
    server.destroy()


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster (fsync on) shared by the tests of this module."""
    server = start_postgres()
    yield server
    server.destroy()


@pytest.fixture
def workdir(tmp_path: Path) -> str:
    """A scratch directory for one test's server(s) (pytest keeps the last few, logs included)."""
    return str(tmp_path)


#: ``start_server(*extra, **kw)``: :func:`start_gearmanpy` in the test's ``workdir``.
StartServer = Callable[..., RunningServer]


@pytest.fixture
def start_server(workdir: str) -> Iterator[StartServer]:
    """Start gearmanpy servers in ``workdir``; whatever is still running at the end is killed."""
    started: list[RunningServer] = []

    def start(*extra: str, **kwargs: Any) -> RunningServer:
        server = start_gearmanpy(*extra, workdir=workdir, **kwargs)
        started.append(server)
        return server

    yield start
    for s in started:
        s.kill()
