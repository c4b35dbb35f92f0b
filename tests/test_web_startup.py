"""``twistd gearman --http``, ``--http-token-file`` and ``--log-format`` in real processes:
bad values are one-line errors with exit 1, the listener serves once the server does."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import free_port, wait_for_port, wait_until
from tests.test_startup import TIMEOUT, TWISTD, env, lines, twistd


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something else listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--http", "bogus:1"], "--http 'bogus:1': Unknown endpoint type: 'bogus'"),
        (["--http-token-file", "t"], "--http-token-file needs --http"),
        (["--http", "tcp:0", "--http-token-file", "nope"], "--http-token-file: cannot read nope"),
        (["--log-format", "xml"], "--log-format takes text or json, not 'xml'"),
    ],
)
def test_usage_errors(tmp_path: Path, argv: list[str], message: str) -> None:
    """Bad values are usage errors: exit 1, one line naming the option, nothing created."""
    run = twistd(tmp_path, "-n", "--pidfile=", "gearman", "--queue", "memory", *argv)
    assert run.returncode == 1, run
    assert message in lines(run.stdout)[-1]
    assert "Traceback" not in run.stdout + run.stderr
    assert os.listdir(tmp_path) == []


def test_http_port_in_use(tmp_path: Path, busy_port: int) -> None:
    """The HTTP endpoint cannot listen: exit 1 with one line, as for --listen."""
    endpoint = f"tcp:{busy_port}:interface=127.0.0.1"
    port = free_port()
    run = twistd(
        tmp_path,
        *("-n", "--pidfile=", "gearman", "--queue", "memory"),
        *("--listen", f"tcp:{port}:interface=127.0.0.1", "--http", endpoint),
    )
    assert run.returncode == 1, run
    reason = f"gearmanpy: could not start: cannot listen on {endpoint}: address already in use"
    assert lines(run.stderr) == [reason]
    assert "Traceback" not in run.stdout + run.stderr


def serve(tmp_path: Path, *options: str) -> tuple[subprocess.Popen[str], int, int]:
    """Start a server with --http; return it, its Gearman port and its HTTP port."""
    port, http = free_port(), free_port()
    proc = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "gearman", "--queue", "memory"]
        + ["--listen", f"tcp:{port}:interface=127.0.0.1"]
        + ["--http", f"tcp:{http}:interface=127.0.0.1", *options],
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_for_port(port, proc, timeout=TIMEOUT)
    wait_until(lambda: overview(http), TIMEOUT, "the API to answer")  # once the server serves
    return proc, port, http


def overview(http: int) -> dict[str, object] | None:
    """``/api/overview``, or None if it does not answer (yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/api/overview", timeout=2) as r:
            return json.load(r)  # type: ignore[no-any-return]
    except OSError:
        return None


def stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM the server; return its output."""
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return out


def test_http_serves_and_stops_with_the_server(tmp_path: Path) -> None:
    """The API answers while the server runs; the port closes when it stops."""
    proc, port, http = serve(tmp_path)
    try:
        body = overview(http)
        assert body is not None and body["connections"] == 0
    finally:
        out = stop(proc)
    assert f"dashboard and /metrics on tcp:{http}:interface=127.0.0.1" in out
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", http), timeout=1).close()


def test_json_log(tmp_path: Path) -> None:
    """--log-format json: from the service's start on, every line is one JSON object."""
    proc, port, http = serve(tmp_path, "--log-format", "json")
    out = stop(proc)
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    texts = [line for line in out.splitlines() if not line.startswith("{")]
    # twistd's own start-up lines precede the service (and so the JSON observer).
    assert len(texts) <= 2 and all("twistd" in t or "reactor class" in t for t in texts), texts
    listening = [e for e in events if e.get("log_format", "").startswith("gearmanpy listening")]
    assert listening and listening[0]["endpoint"] == f"tcp:{port}:interface=127.0.0.1"
    assert listening[0]["log_namespace"] == "gearmanpy.server.service.GearmanServerService"
