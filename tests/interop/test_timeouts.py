"""CAN_DO_TIMEOUT with real Perl (Gearman::Worker) and PHP (libgearman) workers.

A worker that overruns its CAN_DO_TIMEOUT keeps running the job: the server requeues it
(protocol.md §3.11) and, when the worker finally sends its result, gearmand answers
``ERROR JOB_NOT_FOUND``, on which Perl's Gearman::Worker dies. gearmanpy never hands the job
back to the connection still running it and drops that late result without an ERROR, and
``--job-retries 2`` fails the job after its second run, as gearmand 1.1.20 does. The jobs
sleep for fractions of a second over a 1 s limit, so each test takes a few seconds.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import read_line, stop_process

from .conftest import RunningServer, require_tool, start_gearmand, start_gearmanpy

SCRIPTS = Path(__file__).parent / "scripts"
TIMEOUT = 30


def _worker(lang: str, server: RunningServer, log: Path) -> subprocess.Popen[str]:
    """A ``sleep``-mode worker for ``slow`` with a 1000 ms CAN_DO_TIMEOUT, once registered."""
    program = require_tool("perl" if lang == "perl" else "php")
    script = SCRIPTS / ("worker.pl" if lang == "perl" else "worker.php")
    proc = subprocess.Popen(
        [
            program,
            str(script),
            "127.0.0.1",
            str(server.port),
            "slow",
            "sleep",
            str(log),
            "",
            "1000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert read_line(proc, TIMEOUT).strip() == "ready"
    return proc


def _submit(server: RunningServer, data: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run one foreground job with libgearman's ``gearman`` CLI; its outcome and duration."""
    gearman = require_tool("gearman")
    started = time.monotonic()
    out = subprocess.run(
        [gearman, "-h", "127.0.0.1", "-p", str(server.port), "-f", "slow", "-s", "--", data],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    return out, time.monotonic() - started


def _runs(log: Path) -> list[str]:
    """The pid of each run the workers logged, in order."""
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def retrying_server(tmp_path: Path) -> Iterator[RunningServer]:
    """gearmanpy with ``--job-retries 2``."""
    server = start_gearmanpy("--job-retries", "2", workdir=tmp_path / "server")
    yield server
    server.stop()


@pytest.mark.parametrize("lang", ["perl", "php"])
def test_lone_worker_overruns(lang: str, retrying_server: RunningServer, tmp_path: Path) -> None:
    """One worker, a job of 1.5 s, a 1 s limit: run 1 times out at 1 s; the worker's late
    result (1.5 s) is dropped quietly and it takes the job again (run 2), which times out at
    2.5 s: the client gets WORK_FAIL. The worker survives and serves the next job."""
    log = tmp_path / "runs.log"
    worker = _worker(lang, retrying_server, log)
    try:
        out, took = _submit(retrying_server, "1.5")
        assert out.returncode == 1 and "Job failed" in out.stderr, out
        assert 2.3 < took < 4.5, took
        assert len(_runs(log)) == 2
        out, _ = _submit(retrying_server, "0")
        assert out.returncode == 0 and out.stdout.strip() == "slept:0", out
        assert worker.poll() is None
    finally:
        stop_process(worker)
    _, err = worker.communicate(timeout=TIMEOUT)
    assert "JOB_NOT_FOUND" not in err and "failed" not in err, err


@pytest.mark.parametrize("lang", ["perl", "php"])
def test_two_workers_never_run_one_job_twice_at_once(
    lang: str, retrying_server: RunningServer, tmp_path: Path
) -> None:
    """Two workers, a job of 2.2 s: at 1 s it goes to the other worker (never back to the
    one still running it); at 2 s the second timeout fails it (two runs, about 2 s, as
    gearmand 1.1.20 with --job-retries=2). Both late results are dropped quietly."""
    log = tmp_path / "runs.log"
    workers = [_worker(lang, retrying_server, log) for _ in range(2)]
    try:
        out, took = _submit(retrying_server, "2.2")
        assert out.returncode == 1 and "Job failed" in out.stderr, out
        assert 1.8 < took < 3.5, took
        runs = _runs(log)
        assert len(runs) == 2 and runs[0] != runs[1], runs
        time.sleep(1.5)  # both stale attempts finish and send their results
        for _ in range(2):
            out, _ = _submit(retrying_server, "0")
            assert out.returncode == 0 and out.stdout.strip() == "slept:0", out
        assert all(w.poll() is None for w in workers)
    finally:
        for w in workers:
            stop_process(w)
    for w in workers:
        _, err = w.communicate(timeout=TIMEOUT)
        assert "JOB_NOT_FOUND" not in err and "failed" not in err, err


def test_gearmand_kills_the_perl_worker(tmp_path: Path) -> None:
    """What gearmanpy does better: gearmand answers the late result with ERROR
    JOB_NOT_FOUND, and Perl's Gearman::Worker dies of it."""
    server = start_gearmand("--job-retries=2", workdir=tmp_path / "server")
    log = tmp_path / "runs.log"
    worker = _worker("perl", server, log)
    try:
        _submit(server, "1.5")
        deadline = time.monotonic() + 10
        while worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert worker.poll() is not None, "the Perl worker survived gearmand's ERROR"
        _, err = worker.communicate(timeout=TIMEOUT)
        assert "JOB_NOT_FOUND" in err, err
    finally:
        stop_process(worker)
        server.stop()
