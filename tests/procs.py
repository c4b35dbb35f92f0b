"""Helpers for tests that run real processes: free ports, readiness, output lines, shutdown.

A plain module (no fixtures), shared by the interop tests, :mod:`tests.dbservers` and the
endpoint tests. pytest is imported only when a helper fails a test, so that
``benchmarks/store_bench.py`` can start database servers through :mod:`tests.dbservers`
without it.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")


def _fail(message: str) -> NoReturn:
    """Fail the running test (``pytest.fail``)."""
    import pytest

    pytest.fail(message)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: str, size: int = 2000) -> str:
    """The last ``size`` characters of a log file, for error messages."""
    try:
        with open(path, errors="replace") as f:
            return f.read()[-size:]
    except OSError:
        return "(no log)"


def wait_for_port(
    port: int, proc: subprocess.Popen[Any], timeout: float = 20.0, log: str | None = None
) -> None:
    """Block until something accepts connections on ``port``.

    Raises RuntimeError if ``proc`` exits first or nothing listens within ``timeout`` seconds;
    the message ends with the tail of ``log`` when one is given.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            problem = f"server exited early with status {proc.returncode}"
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    else:
        problem = f"nothing listened on port {port} within {timeout}s"
    raise RuntimeError(problem if log is None else f"{problem}: {tail(log)}")


def stop_process(
    proc: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM, timeout: float = 10.0
) -> None:
    """Send ``sig`` to our own child and wait up to ``timeout`` s for it, then SIGKILL it.

    Its output pipes, if any, are drained and closed. Nothing happens if it has exited.
    """
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=10)


def read_line(proc: subprocess.Popen[Any], timeout: float = 15.0) -> str:
    """The next line ``proc`` writes to its stdout pipe, without the line end.

    Fails the test if no whole line arrives within ``timeout`` seconds or the pipe closes
    first. Reads byte by byte below any buffering, so nothing after the line is consumed.
    """
    assert proc.stdout is not None, "read_line needs stdout=subprocess.PIPE"
    fd = proc.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while not seen.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            _fail(f"no line from {proc.args!r} within {timeout}s; got {seen!r}")
        byte = os.read(fd, 1)
        if not byte:
            _fail(f"{proc.args!r} closed stdout (status {proc.poll()}) after {seen!r}")
        seen += byte
    return seen.decode(errors="replace").rstrip("\r\n")


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float = 15.0,
    what: str = "",
    interval: float = 0.02,
) -> T:
    """Call ``predicate`` every ``interval`` s until it returns something true, and return that.

    Fails the test if it is still false after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    _fail(f"timed out after {timeout}s waiting for {what or predicate}")
