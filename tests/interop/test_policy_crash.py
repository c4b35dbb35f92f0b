"""The failure policy survives crashes: SIGKILL while background jobs fail and retry.

A real ``twistd gearman --config`` on each durable store (SQLite, PostgreSQL, Redis) gets a
few hundred background jobs, half of which always fail. A raw worker fails those and
completes the others while the server is SIGKILLed mid-stream, twice; after the last
restart the worker runs until nothing is queued or waiting for a retry. Then every
acknowledged job has either completed or is in the dead set, no job that can succeed is
dead, every job that always fails is dead exactly once, and the dead set lists no job twice.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from pathlib import Path

import pytest

from gearmanpy.protocol.packets import encode, request

from .conftest import StartServer
from .test_durability import POSTGRESQL, REDIS, P, Wire, admin, queue_url

pytestmark = pytest.mark.interop

FUNCTION = b"flaky"
JOBS = 120
CONFIG = """
[functions.flaky]
attempts = 3
backoff = 0.2
backoff_factor = 1.5
jitter = 0.2
"""


def submit_all(port: int) -> set[bytes]:
    """Submit the jobs (pipelined); return the uniques acknowledged with JOB_CREATED."""
    w = Wire(port)
    try:
        for i in range(JOBS):
            kind = b"fail" if i % 2 else b"ok"
            tag = b"%s-%d" % (kind, i)
            w.send(P.SUBMIT_JOB_BG, FUNCTION, tag, tag)
        acked = set()
        for i in range(JOBS):
            p = w.recv(15.0)
            assert p.type == P.JOB_CREATED, p
            acked.add(b"%s-%d" % (b"fail" if i % 2 else b"ok", i))
        return acked
    finally:
        w.close()


def work(port: int, seconds: float, completed: Counter[bytes], quiet: float = 0.0) -> None:
    """Fail ``fail-*`` jobs and complete ``ok-*`` ones, one at a time, for ``seconds`` (or,
    with ``quiet``, until no job has come for that long). A server that goes away ends it."""
    try:
        w = Wire(port)
    except OSError:
        return
    deadline = time.monotonic() + seconds
    last_job = time.monotonic()
    try:
        w.send(P.CAN_DO, FUNCTION)
        while time.monotonic() < deadline:
            if quiet and time.monotonic() - last_job > quiet:
                return
            p = w.call(P.GRAB_JOB_UNIQ)
            if p.type == P.JOB_ASSIGN_UNIQ:
                last_job = time.monotonic()
                handle, _, unique, _ = p.args
                if unique.startswith(b"fail"):
                    w.sock.sendall(encode(request(P.WORK_FAIL, handle)))
                else:
                    w.sock.sendall(encode(request(P.WORK_COMPLETE, handle, b"done")))
                    completed[unique] += 1
            elif p.type == P.NO_JOB:
                w.send(P.PRE_SLEEP)
                try:
                    assert w.recv(0.5).type == P.NOOP
                except TimeoutError:
                    pass
    except (ConnectionError, OSError):
        return  # the server was killed under the worker
    finally:
        w.close()


@pytest.mark.parametrize("backend", ["sqlite", POSTGRESQL, REDIS])
def test_sigkill_while_failing_and_retrying_loses_nothing(
    request: pytest.FixtureRequest, backend: str, workdir: str, start_server: StartServer
) -> None:
    """Every acknowledged job ends completed or dead (the failing ones dead exactly once)."""
    url = queue_url(request, backend, "crash", workdir)
    config = Path(workdir) / "gearmanpy.toml"
    config.write_text(CONFIG)
    options = ("--queue", url, "--config", str(config))
    completed: Counter[bytes] = Counter()

    server = start_server(*options)
    acked = submit_all(server.port)
    for run_for in (0.6, 0.4):
        work(server.port, run_for, completed)
        server.kill()
        server = start_server(*options)
    work(server.port, 60.0, completed, quiet=1.5)

    left = [line for line in admin(server.port, "show jobs")]
    waiting = admin(server.port, "show scheduled")
    dead_rows = [line.split(b"\t") for line in admin(server.port, "show dead")]
    dead = Counter(row[2] for row in dead_rows)
    server.stop()

    failing = {u for u in acked if u.startswith(b"fail")}
    succeeding = acked - failing
    summary = (
        f"{backend}: {len(acked)} acked, {len(completed)} completed, {len(dead)} dead, "
        f"{len(left)} left, {len(waiting)} waiting"
    )
    assert not left and not waiting, summary
    assert set(dead) == failing, summary
    assert all(n == 1 for n in dead.values()), f"{summary}; dead twice: {dead.most_common(3)}"
    assert len({row[0] for row in dead_rows}) == len(dead_rows), "two dead rows share a handle"
    assert set(completed) == succeeding, (
        f"{summary}; lost {sorted(succeeding - set(completed))[:5]}"
    )
    assert all(row[3] == b"3" and row[5] == b"failed" for row in dead_rows), dead_rows[:3]


def test_dead_set_and_waiting_retries_survive_a_clean_restart(
    workdir: str, start_server: StartServer
) -> None:
    """On SQLite, a clean restart keeps the dead set and a retry waiting for its time."""
    config = Path(workdir) / "gearmanpy.toml"
    config.write_text('[functions.slow]\nattempts = 2\nbackoff = "1h"\n')
    options = ("--queue", f"sqlite:{workdir}/q.sqlite", "--config", str(config))
    server = start_server(*options)
    w = Wire(server.port)
    w.call(P.SUBMIT_JOB_BG, b"dies", b"d1", b"x")
    w.call(P.SUBMIT_JOB_BG, b"slow", b"s1", b"y")
    w.send(P.CAN_DO, b"dies")
    w.send(P.CAN_DO, b"slow")
    for _ in range(2):
        p = w.call(P.GRAB_JOB_UNIQ)
        w.sock.sendall(encode(request(P.WORK_EXCEPTION, p.args[0], b"it broke")))
    time.sleep(0.2)
    w.close()
    server.stop()

    server = start_server(*options)
    (dead,) = [line.split(b"\t") for line in admin(server.port, "show dead")]
    assert (dead[1], dead[2], dead[5]) == (b"dies", b"d1", b"it broke")
    (waiting,) = [line.split(b"\t") for line in admin(server.port, "show scheduled")]
    assert (waiting[1], waiting[2], waiting[5], waiting[6]) == (b"slow", b"s1", b"1", b"it broke")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"retry dead " + dead[0] + b"\n")
        assert s.recv(100) == b"OK\r\n"
    w = Wire(server.port)
    w.send(P.CAN_DO, b"dies")
    p = w.call(P.GRAB_JOB_UNIQ)
    assert p.type == P.JOB_ASSIGN_UNIQ and p.args[2] == b"d1"
    w.close()
    server.stop()
