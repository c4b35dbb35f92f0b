"""``twistd gearman --cluster``: real nodes on one real PostgreSQL, with real PHP and Perl
clients and workers (issue 17).

A background job submitted on node A runs on a worker connected only to node B; when the node
running a job is SIGKILLed, a surviving node requeues the job once the dead node's lease has
expired and a worker on the survivor runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.dbservers import PostgresServer
from tests.interop.conftest import TWISTD, RunningServer, StartServer, require_tool
from tests.interop.test_durability import status
from tests.procs import read_line, stop_process, wait_until

SCRIPTS = Path(__file__).parent / "scripts"
TIMEOUT = 30.0
#: Short leases and polls, so a dead node's jobs come back within seconds.
FAST = ("--cluster-lease", "2", "--cluster-poll", "0.3")

pytestmark = pytest.mark.realdb


@pytest.fixture
def cluster_url(pg_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A fresh database for one test, as a --queue URL."""
    name = "cl_" + request.node.name.lower().replace("[", "_").replace("]", "")[:40]
    with psycopg.connect(pg_server.url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return f"postgresql://postgres@127.0.0.1:{pg_server.port}/{name}"


def start_node(start_server: StartServer, url: str, name: str, *extra: str) -> RunningServer:
    """A cluster node named ``name`` on ``url``."""
    return start_server("--queue", url, "--cluster", "--node-name", name, *FAST, *extra)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Client and worker processes, killed at the end."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        stop_process(proc)


def worker(
    procs: list[subprocess.Popen[str]],
    lang: str,
    node: RunningServer,
    function: str,
    mode: str,
    log: Path,
    gate: str = "",
) -> subprocess.Popen[str]:
    """Start a PHP or Perl worker (tests/interop/scripts) on ``node`` and wait until it has
    registered."""
    tool = require_tool(lang)
    script = SCRIPTS / ("worker.php" if lang == "php" else "worker.pl")
    argv = [tool, str(script), "127.0.0.1", str(node.port), function, mode, str(log)]
    if gate:
        argv.append(gate)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(proc)
    assert read_line(proc, TIMEOUT).strip() == "ready"
    return proc


def client(lang: str, node: RunningServer, *args: str) -> Any:
    """Run the PHP or Perl client script once on ``node``; its JSON answer."""
    tool = require_tool(lang)
    script = SCRIPTS / ("client.php" if lang == "php" else "client.pl")
    out = subprocess.run(
        [tool, str(script), "127.0.0.1", str(node.port), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def ran(log: Path) -> list[str]:
    """The workloads (decoded) a worker log says ran, in order."""
    if not log.exists():
        return []
    return [bytes.fromhex(line.split()[2]).decode() for line in log.read_text().splitlines()]


@pytest.mark.parametrize(("submitter", "runner"), [("php", "perl"), ("perl", "php")])
def test_job_submitted_on_one_node_runs_on_another(
    start_server: StartServer,
    cluster_url: str,
    procs: list[Any],
    tmp_path: Path,
    submitter: str,
    runner: str,
) -> None:
    """A PHP (Perl) client's background jobs on node A run on a Perl (PHP) worker connected
    only to node B, each once, woken within a bounded time; a unique submitted on A and on B
    is one job."""
    a = start_node(start_server, cluster_url, "a")
    b = start_node(start_server, cluster_url, "b")
    log = tmp_path / "worker.log"
    worker(procs, runner, b, "shared", "count", log)
    time.sleep(0.5)  # the worker sleeps on B
    started = time.monotonic()
    handles = [client(submitter, a, "bg", "shared", f"job-{i}")["handle"] for i in range(5)]
    assert len(set(handles)) == 5
    wait_until(lambda: len(ran(log)) >= 5, TIMEOUT, "the five jobs on B's worker")
    assert time.monotonic() - started < 10
    first = client(submitter, a, "bg", "held", "x", "same-unique")["handle"]
    second = client(submitter, b, "bg", "held", "x", "same-unique")["handle"]
    assert first.rsplit("//", 1)[-1] == second.rsplit("//", 1)[-1]  # Perl prefixes host:port//
    held_log = tmp_path / "held.log"
    worker(procs, runner, b, "held", "count", held_log)
    wait_until(lambda: ran(held_log), TIMEOUT, "the coalesced job")
    time.sleep(1.0)
    assert sorted(ran(log)) == [f"job-{i}" for i in range(5)]
    assert ran(held_log) == ["x"]
    with psycopg.connect(cluster_url) as conn:
        assert conn.execute("SELECT count(*) FROM gearmanpy_queue").fetchone() == (0,)


def test_killed_node_jobs_run_on_a_survivor(
    start_server: StartServer, cluster_url: str, procs: list[Any], tmp_path: Path
) -> None:
    """Node B is SIGKILLed while its worker holds a job: after B's lease expires, node A
    requeues the job (one retry counted) and A's worker runs it."""
    a = start_node(start_server, cluster_url, "a")
    b = start_node(start_server, cluster_url, "b")
    held = tmp_path / "held.log"
    worker(procs, "perl", b, "slow", "hold", held, str(tmp_path / "never"))
    client("php", a, "bg", "slow", "payload")
    wait_until(lambda: ran(held), TIMEOUT, "B's worker to start the job")
    b.kill()
    log = tmp_path / "survivor.log"
    worker(procs, "php", a, "slow", "count", log)
    wait_until(lambda: ran(log), TIMEOUT, "A's worker to run the requeued job")
    assert ran(log) == ["payload"]
    wait_until(lambda: _rows(cluster_url) == [], TIMEOUT, "the row to be deleted")


def _rows(url: str) -> list[Any]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT job_key, retries FROM gearmanpy_queue").fetchall()


def test_cluster_needs_postgresql(tmp_path: Path) -> None:
    """--cluster with another queue is a one-line usage error, and so is --node-name alone."""
    for args, message in [
        (["--queue", "memory", "--cluster"], "--cluster needs --queue postgresql://..."),
        (["--node-name", "x"], "--node-name is for a --cluster node"),
    ]:
        out = subprocess.run(
            [TWISTD, "--nodaemon", "--pidfile=", "gearman", *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            cwd=tmp_path,
            env={**os.environ},
        )
        assert out.returncode != 0
        assert message in out.stderr + out.stdout
        assert "Traceback" not in out.stderr + out.stdout


def test_foreground_job_runs_on_another_node(
    start_server: StartServer, cluster_url: str, procs: list[Any], tmp_path: Path
) -> None:
    """A PHP client's foreground job on node A runs on a Perl worker connected only to node
    B: WORK_DATA, WARNING, STATUS and COMPLETE reach the client in order; a Perl client's
    job on A run by a PHP worker on B that sends WORK_EXCEPTION gets it as an exception."""
    a = start_node(start_server, cluster_url, "a")
    b = start_node(start_server, cluster_url, "b")
    worker(procs, "perl", b, "events", "events", tmp_path / "events.log")
    worker(procs, "php", b, "boom", "exception", tmp_path / "boom.log")
    time.sleep(0.5)
    got = client("php", a, "tasks", "events", "w")
    assert got["events"] == [
        ["data", "data1"],
        ["warning", "warn1"],
        ["status", "1/2"],
        ["data", "data2"],
        ["complete", "done:w"],
    ]
    out = subprocess.run(
        [require_tool("perl"), str(SCRIPTS / "client.pl"), "127.0.0.1", str(a.port), "do",
         "boom", "e", "", "exc"],
        capture_output=True, text=True, timeout=TIMEOUT, check=True,
    )  # fmt: skip
    assert json.loads(out.stdout.splitlines()[-1])["events"] == [["exception", "boom:e"]]


def test_get_status_on_every_node(
    start_server: StartServer, cluster_url: str, procs: list[Any], tmp_path: Path
) -> None:
    """GET_STATUS of a background job submitted on A and running on B's worker (which sent
    WORK_STATUS 1/4) answers the same from a Perl client on A, on B and on a third node C;
    the admin ``status`` on C counts it (with C's workers: none)."""
    a = start_node(start_server, cluster_url, "a")
    b = start_node(start_server, cluster_url, "b")
    c = start_node(start_server, cluster_url, "c")
    gate = tmp_path / "gate"
    worker(procs, "php", b, "held", "hold", tmp_path / "held.log", str(gate))
    handle = client("php", a, "bg", "held", "x")["handle"]
    wait_until(lambda: ran(tmp_path / "held.log"), TIMEOUT, "B's worker to start")
    want = {"known": 1, "running": 1, "numerator": 1, "denominator": 4}
    for node in (a, b, c):
        wait_until(
            lambda node=node: perl_status(node, handle) == want,  # type: ignore[misc]
            10, f"GET_STATUS on {node.port}",
        )  # fmt: skip
    assert status(c.port)[b"held"] == (1, 1, 0)  # admin status on C: the cluster's queue
    assert status(b.port)[b"held"] == (1, 1, 1)
    gate.touch()
    gone = {"known": 0, "running": 0, "numerator": 0, "denominator": 0}
    for node in (a, b, c):
        wait_until(lambda node=node: perl_status(node, handle) == gone, 10)  # type: ignore[misc]


def perl_status(node: RunningServer, handle: str) -> Any:
    """GET_STATUS of ``handle`` on ``node`` by the Perl client (which names the server)."""
    return client("perl", node, "status", f"{node.address}//{handle}")


def test_foreground_joins_a_background_job_on_another_node(
    start_server: StartServer, cluster_url: str, procs: list[Any], tmp_path: Path
) -> None:
    """A Perl client's foreground job on node A with the unique of a PHP client's background
    job that a PHP worker on B is running joins it (one handle, one run) and gets its result
    when the worker ends."""
    a = start_node(start_server, cluster_url, "a")
    b = start_node(start_server, cluster_url, "b")
    gate = tmp_path / "gate"
    log = tmp_path / "held.log"
    worker(procs, "php", b, "held", "hold", log, str(gate))
    handle = client("php", b, "bg", "held", "x", "one-unique")["handle"]
    wait_until(lambda: ran(log), TIMEOUT, "B's worker to start")
    joiner = subprocess.Popen(
        [require_tool("perl"), str(SCRIPTS / "client.pl"), "127.0.0.1", str(a.port), "do",
         "held", "x", "one-unique"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    procs.append(joiner)  # type: ignore[arg-type]
    created = read_line(joiner, TIMEOUT).split()
    assert created[0] == "created" and created[1].rsplit("//", 1)[-1] == handle
    gate.touch()
    out, _ = joiner.communicate(timeout=TIMEOUT)
    assert json.loads(out.strip().splitlines()[-1])["result"] == "held:x"
    assert ran(log) == ["x"]
    wait_until(lambda: _rows(cluster_url) == [], TIMEOUT, "the row to be deleted")
