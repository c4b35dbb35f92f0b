"""``gearmanpy admin``'s commands for gearmanpy's own admin protocol (dead set, scheduled,
recurring, results, policy, stats) against a real server, and gearmand's one-line refusal."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.conftest import RunningServer, start_gearmand, start_gearmanpy
from tests.interop.test_cli import GEARMANPY, env, gp
from tests.procs import wait_until

pytestmark = pytest.mark.interop

CONFIG = """\
[functions.doomed]
attempts = 1

[functions.kept]
keep_results = 600

[functions."later*"]
attempts = 3
backoff = 3600
"""

#: The worker's functions (run by ``gearmanpy worker``): ``doomed`` and ``later`` fail with
#: an exception text, ``kept`` answers its data reversed.
WORKER = """\
def doomed(job):
    raise RuntimeError("disk full")

def kept(job):
    return job.data[::-1]
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    """gearmanpy with a policy file, and a Python worker for its three functions."""
    config = tmp_path / "gearmanpy.toml"
    config.write_text(CONFIG)
    running = start_gearmanpy("--config", str(config), workdir=tmp_path / "server")
    (tmp_path / "policy_jobs.py").write_text(WORKER)
    functions = ["doomed=policy_jobs:doomed", "later=policy_jobs:doomed", "kept=policy_jobs:kept"]
    worker = subprocess.Popen(
        [*GEARMANPY, "worker", "-s", running.address, *functions],
        cwd=tmp_path,
        env=dict(env(), PYTHONPATH=f"{tmp_path}{os.pathsep}{env()['PYTHONPATH']}"),
    )
    yield running
    worker.kill()
    worker.wait()
    running.stop()


def lines(done: subprocess.CompletedProcess[bytes]) -> list[list[str]]:
    """A table's rows, split on runs of spaces (the tests use names without spaces)."""
    assert done.returncode == 0, done.stderr
    return [line.split() for line in done.stdout.decode().splitlines()]


def test_dead_set_and_results_from_the_command_line(server: RunningServer) -> None:
    """A failed job is listed, retried (and dies again), dropped; a kept result is shown;
    the policy is read and changed; the stats count what happened."""
    s = ["-s", server.address]
    handle = gp("submit", *s, "-b", "--unique", "u1", "doomed", "x").stdout.decode().strip()
    wait_until(lambda: len(lines(gp("admin", *s, "dead"))) == 2, timeout=20)
    header, row = lines(gp("admin", *s, "dead"))
    assert header == ["HANDLE", "FUNCTION", "UNIQUE", "ATTEMPTS", "FAILED", "ERROR"]
    assert (
        row[:4] == [handle, "doomed", "u1", "1"] and " ".join(row[5:]) == "RuntimeError: disk full"
    )
    (dead,) = json.loads(gp("admin", *s, "--json", "dead", "doomed").stdout)
    assert (dead["handle"], dead["error"]) == (handle, "RuntimeError: disk full")
    assert dead["failed_at"].endswith("+00:00")
    raw = gp("admin", *s, "--raw", "dead").stdout.decode().splitlines()
    assert raw[0].split("\t")[:3] == [handle, "doomed", "u1"] and raw[1] == "."

    assert lines(gp("admin", *s, "retry-dead", handle)) == [["OK"]]
    wait_until(lambda: len(lines(gp("admin", *s, "dead"))) == 2, timeout=20)
    assert lines(gp("admin", *s, "drop-dead", "all")) == [["OK"]]
    assert lines(gp("admin", *s, "dead")) == [header]
    missing = gp("admin", *s, "drop-dead", "all")
    assert missing.returncode == 1 and missing.stderr.startswith(b"gearmanpy: error: NO_DEAD_JOB")

    kept = gp("submit", *s, "-b", "kept", "abc").stdout.decode().strip()
    wait_until(lambda: gp("admin", *s, "result", kept).returncode == 0, timeout=20)
    assert gp("admin", *s, "result", "--data-only", kept).stdout == b"cba"
    fields = json.loads(gp("admin", *s, "--json", "result", kept).stdout)
    assert (fields["outcome"], fields["function"], fields["data"]) == ("complete", "kept", "cba")
    assert ["outcome", "complete"] in lines(gp("admin", *s, "result", kept))
    none = gp("admin", *s, "result", "H:nope:1")
    assert (none.returncode, none.stderr) == (
        1,
        b"gearmanpy: error: no result is kept for that job\n",
    )

    gp("submit", *s, "-b", "--unique", "w1", "later", "y")
    wait_until(lambda: len(lines(gp("admin", *s, "scheduled"))) == 2, timeout=20)
    (waiting,) = json.loads(gp("admin", *s, "--json", "scheduled").stdout)
    assert (waiting["function"], waiting["attempts"], waiting["error"]) == (
        "later",
        1,
        "RuntimeError: disk full",
    )
    assert lines(gp("admin", *s, "cancel-unique", "later", "w1")) == [["OK"]]
    assert lines(gp("admin", *s, "scheduled"))[1:] == []

    assert ["attempts", "3"] in lines(gp("admin", *s, "policy", "later"))
    assert lines(gp("admin", *s, "policy-set", "later*", "attempts=7", "max_running=2")) == [["OK"]]
    assert ["max_running", "2"] in lines(gp("admin", *s, "policy", "later"))
    bad = gp("admin", *s, "policy-set", "later", "attempts=0")
    assert bad.returncode == 1 and bad.stderr.startswith(b"gearmanpy: error: BAD_POLICY")
    assert lines(gp("admin", *s, "policy-reset", "later*")) == [["OK"]]
    assert ["attempts", "3"] in lines(gp("admin", *s, "policy", "later"))

    stats = dict(r for r in lines(gp("admin", *s, "stats"))[1:])
    assert int(stats["function.doomed.dead"]) == 2 and stats["function.kept.completed"] == "1"
    assert lines(gp("admin", *s, "recurring")) == [
        ["NAME", "CRON", "FUNCTION", "UNIQUE", "NEXT", "RUN"]
    ]


def test_gearmand_refuses_in_one_line(tmp_path: Path) -> None:
    """gearmand has no dead set: its ERR is one line and exit status 1, no traceback."""
    gearmand = start_gearmand(workdir=tmp_path / "gearmand")
    try:
        done = gp("admin", "-s", gearmand.address, "dead")
        assert done.returncode == 1
        assert done.stderr.startswith(b"gearmanpy: error: ") and b"Traceback" not in done.stderr
        assert done.stderr.count(b"\n") == 1
    finally:
        gearmand.stop()
