"""Broadcast functions with real third-party peers.

Three workers in three languages (PHP's libgearman, Perl's Gearman::Worker, gearmanpy) are
registered on a function the server's configuration makes a broadcast one: one submission
from a PHP client (and one from libgearman's ``gearman`` tool) runs once on each, and the
client gets the three results and the summary. A background broadcast interrupted by a
SIGKILL loses no delivery after the restart.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gearmanpy.protocol.packets import encode, request
from tests.procs import read_line, stop_process, wait_until

from .conftest import RunningServer, StartServer, require_tool, start_gearmanpy
from .test_durability import P, Wire, admin

pytestmark = pytest.mark.interop

SCRIPTS = Path(__file__).parent / "scripts"
CONFIG = "[functions.invalidate]\nbroadcast = true\n"
PYTHON_WORKER = """
import sys
from twisted.internet import reactor
from gearmanpy import Worker
worker = Worker(["127.0.0.1:%s"], client_id="py", reactor=reactor)
worker.register("invalidate", lambda job: b"py dropped " + job.data)
worker.startService()
print("ready", flush=True)
reactor.run()
"""


def _third_party_worker(lang: str, server: RunningServer, log: Path) -> subprocess.Popen[str]:
    program = require_tool("perl" if lang == "perl" else "php")
    script = SCRIPTS / ("worker.pl" if lang == "perl" else "worker.php")
    proc = subprocess.Popen(
        [program, str(script), "127.0.0.1", str(server.port), "invalidate", "echo", str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert read_line(proc, 30).strip() == "ready"
    return proc


@pytest.fixture
def three_workers(tmp_path: Path) -> Iterator[tuple[RunningServer, list[Path]]]:
    """A gearmanpy server with ``invalidate`` a broadcast function and three workers on it."""
    config = tmp_path / "gearmanpy.toml"
    config.write_text(CONFIG)
    server = start_gearmanpy("--config", str(config), workdir=tmp_path / "server")
    logs = [tmp_path / "php.log", tmp_path / "perl.log"]
    procs = [
        _third_party_worker(lang, server, log)
        for lang, log in zip(("php", "perl"), logs, strict=True)
    ]
    py = subprocess.Popen(
        [sys.executable, "-c", PYTHON_WORKER % server.port],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    procs.append(py)
    assert read_line(py, 30).strip() == "ready"
    wait_until(
        lambda: sum(b"invalidate" in line for line in admin(server.port, "workers")) == 3,
        30,
        "three workers registered",
    )
    yield server, logs
    for proc in procs:
        stop_process(proc)
    server.stop()


def test_php_client_gets_three_results_and_the_summary(
    three_workers: tuple[RunningServer, list[Path]],
) -> None:
    server, logs = three_workers
    php = require_tool("php")
    out = subprocess.run(
        [php, str(SCRIPTS / "client.php"), "127.0.0.1", str(server.port), "tasks",
         "invalidate", "key-K"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    events = json.loads(out.stdout)["events"]
    replies = [e[1].split("\0", 1) for e in events if e[0] == "data"]
    assert sorted(result for _, result in replies) == ["key-K", "key-K", "py dropped key-K"]
    assert len({worker for worker, _ in replies}) == 3, replies  # libgearman's id is random
    assert events[-1] == ["complete", "completed=3 failed=0 lost=0 total=3"], events
    assert [e[1] for e in events if e[0] == "status"][-1] == "3/3"
    assert all(len(log.read_text().splitlines()) == 1 for log in logs)


def test_libgearman_cli_client(three_workers: tuple[RunningServer, list[Path]]) -> None:
    """``gearman -f invalidate`` (libgearman) prints the three results and the summary."""
    server, _ = three_workers
    gearman = require_tool("gearman")
    out = subprocess.run(
        [gearman, "-h", "127.0.0.1", "-p", str(server.port), "-f", "invalidate", "--", "K2"],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    assert out.stdout.count(b"K2") == 3, out.stdout
    assert b"completed=3 failed=0 lost=0 total=3" in out.stdout, out.stdout
    assert b"100% Complete" in out.stdout  # the WORK_STATUS after each delivery


def test_gearmanpy_submit_broadcast(three_workers: tuple[RunningServer, list[Path]]) -> None:
    """``gearmanpy submit --broadcast``: one ``WORKER<TAB>RESULT`` line per worker on stdout,
    the summary on stderr, exit 0."""
    from tests.interop.test_cli import gp

    server, _ = three_workers
    done = gp("submit", "-s", server.address, "--broadcast", "invalidate", "K3")
    assert done.returncode == 0, done.stderr
    replies = sorted(line.split(b"\t") for line in done.stdout.splitlines())
    assert sorted(r for _, r in replies) == [b"K3", b"K3", b"py dropped K3"]
    assert [b"py", b"py dropped K3"] in replies and len({w for w, _ in replies}) == 3
    assert done.stderr == b"broadcast: 3 completed, 0 failed, 0 lost, 3 workers\n"


def test_background_broadcast_survives_sigkill(tmp_path: Path, start_server: StartServer) -> None:
    """Two workers: one finishes its delivery, the server dies while the other runs its own;
    after the restart the deliveries not known to have ended run on the new workers, and
    the broadcast ends."""
    config = tmp_path / "gearmanpy.toml"
    config.write_text(CONFIG)
    options = ("--queue", f"sqlite:{tmp_path}/q.sqlite", "--config", str(config))
    server = start_server(*options)
    workers = [Wire(server.port) for _ in range(2)]
    for w in workers:
        w.send(P.CAN_DO, b"invalidate")
    wait_until(
        lambda: sum(b"invalidate" in line for line in admin(server.port, "workers")) == 2, 30
    )
    client = Wire(server.port)
    created = client.call(P.SUBMIT_JOB_BG, b"invalidate", b"", b"K3")
    assert created.type == P.JOB_CREATED
    parent = created.args[0]
    first = workers[0].call(P.GRAB_JOB_UNIQ)
    workers[0].sock.sendall(encode(request(P.WORK_COMPLETE, first.args[0], b"ok")))
    second = workers[1].call(P.GRAB_JOB_UNIQ)
    assert second.type == P.JOB_ASSIGN_UNIQ
    status = client.call(P.GET_STATUS, parent)
    assert status.args[1:] == (b"1", b"1", b"1", b"2"), status
    server.kill()

    server = start_server(*options)
    new = [Wire(server.port) for _ in range(2)]
    for w in new:
        w.send(P.CAN_DO, b"invalidate")
    wait_until(
        lambda: sum(b"invalidate" in line for line in admin(server.port, "workers")) == 2, 30
    )
    got = [w.call(P.GRAB_JOB_UNIQ) for w in new]
    assigned = [(w, p) for w, p in zip(new, got, strict=True) if p.type == P.JOB_ASSIGN_UNIQ]
    # The running delivery is there; the finished one too if its end was not durable yet
    # (at least once, as for any job whose worker was running it at a crash).
    assert 1 <= len(assigned) <= 2, got
    assert all(p.args[-1] == b"K3" for _, p in assigned)
    for w, p in assigned:
        w.sock.sendall(encode(request(P.WORK_COMPLETE, p.args[0], b"ok")))
    wait_until(lambda: admin(server.port, "status") == [b"invalidate\t0\t0\t2"], 30)
    assert client_status(server, parent) == (b"0", b"0", b"0", b"0")


def client_status(server: RunningServer, handle: bytes) -> tuple[bytes, ...]:
    """GET_STATUS on ``handle``: known, running, numerator, denominator."""
    w = Wire(server.port)
    try:
        return tuple(w.call(P.GET_STATUS, handle).args[1:])
    finally:
        w.close()


def test_worker_dying_mid_delivery_is_counted_lost(tmp_path: Path) -> None:
    """A PHP worker killed while it runs its delivery: the PHP client's summary counts it
    lost at once, and the other worker's result still arrives."""
    config = tmp_path / "gearmanpy.toml"
    config.write_text(CONFIG)
    server = start_gearmanpy("--config", str(config), workdir=tmp_path / "server")
    php = require_tool("php")
    log = tmp_path / "held.log"
    held = subprocess.Popen(
        [php, str(SCRIPTS / "worker.php"), "127.0.0.1", str(server.port), "invalidate",
         "hold", str(log), str(tmp_path / "never")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    healthy = _third_party_worker("perl", server, tmp_path / "perl.log")
    try:
        assert read_line(held, 30).strip() == "ready"
        wait_until(
            lambda: sum(b"invalidate" in line for line in admin(server.port, "workers")) == 2,
            30,
        )
        client = subprocess.Popen(
            [php, str(SCRIPTS / "client.php"), "127.0.0.1", str(server.port), "tasks",
             "invalidate", "key-L"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_until(lambda: log.exists(), 30, "the held worker to start its delivery")
        held.kill()
        out, _ = client.communicate(timeout=60)
        events = json.loads(out)["events"]
        assert events[-1] == ["complete", "completed=1 failed=0 lost=1 total=2"], events
        assert [e[1].split("\0", 1)[1] for e in events if e[0] == "data"] == ["key-L"]
        assert any(e[0] == "warning" and e[1].endswith("\0lost") for e in events), events
    finally:
        stop_process(held)
        stop_process(healthy)
        server.stop()
