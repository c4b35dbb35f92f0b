"""``twistd gearman --cluster``: the dead set and kept results of the whole cluster, with real
nodes, PHP clients and Perl workers, and the ``gearmanpy admin`` commands (issue 17).

A job that fails on node A's worker is dead on every node: ``gearmanpy admin dead`` on node B
lists it, ``retry-dead`` on B runs it on a worker connected only to B; a result kept on A is
read from B (``gearmanpy admin result``, which is ``Client.result()``'s ``show result``).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from tests.interop.conftest import StartServer
from tests.interop.test_cli import gp
from tests.interop.test_cluster import (  # noqa: F401 (fixtures)
    TIMEOUT,
    client,
    cluster_url,
    procs,
    ran,
    start_node,
    worker,
)
from tests.procs import stop_process, wait_until


def one_line(port: int, line: str) -> bytes:
    """Send one admin ``line`` that answers one line (``OK``, ``ERR ...``); that line."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(line.encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.strip()


def dead_rows(address: str) -> list[list[str]]:
    """``gearmanpy admin dead`` on ``address``: its rows, without the header."""
    out = gp("admin", "-s", address, "dead").stdout.decode().splitlines()
    return [line.split() for line in out[1:]]


def test_dead_and_kept_results_across_nodes(
    start_server: StartServer,
    cluster_url: str,  # noqa: F811 (the fixtures of test_cluster)
    procs: list[Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    """A job failed by A's Perl worker is listed dead on B, retried from B and run by B's
    worker, and then dead nowhere; a result kept on A is read on B."""
    a = start_node(start_server, cluster_url, "a")
    b = start_node(start_server, cluster_url, "b")
    failing = worker(procs, "perl", a, "doomed", "fail", tmp_path / "fail.log")
    handle = client("php", a, "bg", "doomed", "x", "u1")["handle"]
    wait_until(lambda: len(dead_rows(b.address)) == 1, TIMEOUT, "the dead job on B")
    assert dead_rows(b.address)[0][:3] == [handle, "doomed", "u1"]
    assert dead_rows(a.address) == dead_rows(b.address)
    stop_process(failing)
    fixed = tmp_path / "fixed.log"
    worker(procs, "perl", b, "doomed", "count", fixed)
    assert gp("admin", "-s", b.address, "retry-dead", handle).stdout.split() == [b"OK"]
    wait_until(lambda: ran(fixed) == ["x"], TIMEOUT, "the retried job on B's worker")
    assert dead_rows(a.address) == []

    assert one_line(a.port, "policy set keeper keep_results=3600") == b"OK"
    worker(procs, "perl", a, "keeper", "count", tmp_path / "keeper.log")
    kept = client("php", a, "bg", "keeper", "abc")["handle"]
    wait_until(
        lambda: gp("admin", "-s", b.address, "result", kept).returncode == 0,
        TIMEOUT, "the result kept on A, read on B",
    )  # fmt: skip
    data = gp("admin", "-s", b.address, "result", kept, "--data-only").stdout
    assert data == b"ok:abc"
