"""``twistd gearman`` start-up as a supervisor sees it: real ``twistd`` processes.

A start that fails exits non-zero within seconds with one line saying why (on stderr in the
foreground, in the log and through twistd's parent in daemon mode) and leaves no store file
behind; usage errors are one line, not a traceback; --version and --log-level work. Every run
has a timeout of a few seconds, so a hang fails the test instead of stalling the suite.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import gearmanpy
from gearmanpy._version import __version__
from tests.procs import free_port, wait_for_port

#: The twistd of the Python running the tests.
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")

#: The checkout under test, first on the twistd processes' path (for gearmanpy and its plugin).
ROOT = Path(__file__).resolve().parent.parent

#: Seconds a failing start may take before the test counts it as a hang.
TIMEOUT = 8


def env() -> dict[str, str]:
    """The environment of a twistd run: this checkout first on the path."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


def twistd(cwd: Path, *argv: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run ``twistd ARGV`` in ``cwd`` to its end (failing the test if it takes too long)."""
    try:
        return subprocess.run(
            [TWISTD, *argv],
            cwd=cwd,
            env=env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"twistd {' '.join(argv)} still running after {timeout}s: {e.stdout!r}")


def lines(text: str) -> list[str]:
    """The non-empty lines of ``text``."""
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something else listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_port_in_use_foreground(tmp_path: Path, busy_port: int) -> None:
    """A port in use: exit 1 at once, one line on stderr, and no queue file created (the
    endpoints are bound before the store is opened)."""
    endpoint = f"tcp:{busy_port}:interface=127.0.0.1"
    run = twistd(tmp_path, "-n", "--pidfile=", "gearman", "--listen", endpoint)
    assert run.returncode == 1, run
    reason = f"gearmanpy: could not start: cannot listen on {endpoint}: address already in use"
    assert lines(run.stderr) == [reason]
    assert reason in run.stdout  # the log (stdout in the foreground) has the same line
    assert "Traceback" not in run.stdout + run.stderr
    assert os.listdir(tmp_path) == []  # no gearmanpy.sqlite


def test_bad_store_foreground(tmp_path: Path) -> None:
    """An SQLite path that cannot be opened: exit 1 with one line saying so, no listener left."""
    port = free_port()
    run = twistd(
        tmp_path,
        "-n",
        "--pidfile=",
        "gearman",
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--queue",
        f"sqlite:{tmp_path}/no/such/dir/q.db",
    )
    assert run.returncode == 1, run
    assert lines(run.stderr) == [
        f"gearmanpy: could not start: cannot open SQLite queue '{tmp_path}/no/such/dir/q.db':"
        " unable to open database file"
    ]
    assert "Traceback" not in run.stdout
    assert "gearmanpy listening" not in run.stdout
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--listen", "bogus:1"], "--listen 'bogus:1': Unknown endpoint type: 'bogus'"),
        (["--queue", "redis://host:notaport"], "--queue: bad port in Redis queue URL"),
        (["--queue", "mysql://x"], "--queue: unknown queue 'mysql://x'"),
        (["--log-level", "loud"], "--log-level: unknown log level 'loud'"),
    ],
)
def test_usage_errors(tmp_path: Path, argv: list[str], message: str) -> None:
    """Bad options are twistd usage errors (exit 1, one line naming the option), never a
    traceback, and nothing is created."""
    run = twistd(tmp_path, "-n", "--pidfile=", "gearman", *argv)
    assert run.returncode == 1, run
    assert message in lines(run.stdout)[-1]
    assert "Traceback" not in run.stdout + run.stderr
    assert os.listdir(tmp_path) == []


def test_version(tmp_path: Path) -> None:
    """``twistd gearman --version`` prints gearmanpy's version and exits 0."""
    run = twistd(tmp_path, "gearman", "--version")
    assert (run.returncode, run.stdout) == (0, f"gearmanpy {__version__}\n"), run


def test_daemon_port_in_use(tmp_path: Path, busy_port: int) -> None:
    """Daemon mode: the failure reaches twistd's waiting parent, which exits 1 saying why; the
    log has the one line and no traceback; no pid file or queue file is left."""
    endpoint = f"tcp:{busy_port}:interface=127.0.0.1"
    run = twistd(tmp_path, "--logfile=g.log", "--pidfile=g.pid", "gearman", "--listen", endpoint)
    assert run.returncode == 1, run
    # twistd's parent prints the first 100 bytes it was sent.
    assert f"StartupError: cannot listen on tcp:{busy_port}" in run.stderr
    log = (tmp_path / "g.log").read_text()
    assert f"gearmanpy: could not start: cannot listen on {endpoint}" in log
    assert "Traceback" not in log
    assert os.listdir(tmp_path) == ["g.log"]


#: Runs twistd (argv[1:]) as a child subreaper, so that the daemon it forks is reparented to
#: this process, and prints the parent's exit status and then the daemon's.
REAPER = """
import ctypes, os, subprocess, sys
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
print(subprocess.run(sys.argv[1:]).returncode, flush=True)
statuses = []
while True:
    try:
        statuses.append(os.waitstatus_to_exitcode(os.wait()[1]))
    except ChildProcessError:
        break
print(max(statuses), flush=True)  # the first fork exits 0 at once; the daemon's is the other
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_CHILD_SUBREAPER")
def test_daemon_store_failure(tmp_path: Path) -> None:
    """Daemon mode, a store that fails after twistd's parent has left: the daemon logs the
    one line and exits 1 (its pid file removed)."""
    port = free_port()
    argv = [
        TWISTD,
        "--logfile=g.log",
        "--pidfile=g.pid",
        "gearman",
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--queue",
        "sqlite:no/such/dir/q.db",
    ]
    run = subprocess.run(
        [sys.executable, "-c", REAPER, *argv],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert lines(run.stdout) == ["0", "1"], run
    log = (tmp_path / "g.log").read_text()
    assert "gearmanpy: could not start: cannot open SQLite queue" in log
    assert "Traceback" not in log
    assert os.listdir(tmp_path) == ["g.log"]


def serve_and_stop(tmp_path: Path, *options: str) -> tuple[bytes, str]:
    """Start a server, ask it ``verbose`` (answered once it serves), stop it with SIGTERM;
    return the answer and the server's log."""
    port = free_port()
    proc = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "gearman", "--queue", "memory"]
        + ["--listen", f"tcp:{port}:interface=127.0.0.1", *options],
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port(port, proc, timeout=TIMEOUT)
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
            s.sendall(b"verbose\n")
            answer = s.recv(100)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGTERM, out  # twistd ends with the signal it got
    return answer, out


def test_log_level(tmp_path: Path) -> None:
    """--log-level warn drops gearmanpy's info lines (``listening on``) and keeps Twisted's;
    ``verbose`` reports the level; the default keeps them."""
    answer, log = serve_and_stop(tmp_path)
    assert (answer, "gearmanpy listening on tcp:" in log) == (b"OK INFO\n", True), log
    # The start-up names the build that runs: the compiled one in a compiled install.
    build = "compiled (mypyc)" if gearmanpy.compiled else "pure Python"
    assert f"gearmanpy {__version__}, {build} build" in log, log
    answer, quiet = serve_and_stop(tmp_path, "--log-level", "warn")
    assert answer == b"OK WARNING\n"
    # No line from a gearmanpy logger (the paths in Twisted's own lines may name gearmanpy).
    assert "[gearmanpy." not in quiet and "listening on" not in quiet, quiet
    assert "Received SIGTERM, shutting down." in quiet
