"""Real-socket interop tests for gearmanpy's Client and Worker.

Our client and worker run in child processes (this module doubles as their entry point:
``python -m tests.interop.test_library MODE ADDRESS``), so each test is a blocking pytest
function that owns its processes, gives each a timeout and never touches a reactor itself.
They run against a real gearmand 1.1.20 and against our own server (``any_server``), and
against third-party peers: the libgearman ``gearman`` CLI as a client of our worker, and a
Perl ``Gearman::Worker`` serving our client. The word-count and other examples in
``examples/`` are also run here, against both servers and a real memcached.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.procs import free_port, read_line, stop_process, wait_for_port, wait_until
from tests.readme import example_commands

from .conftest import RunningServer, require_tool, start_gearmand

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).parent / "scripts"
EXAMPLES = REPO / "examples"
TIMEOUT = 60


# -- child-process side ----------------------------------------------------------------------


def _run_worker(reactor: Any, addresses: list[str], concurrency: int) -> Any:
    """Child: serve the test functions until killed."""
    from twisted.internet.defer import Deferred
    from twisted.internet.task import deferLater

    from gearmanpy import JobFailed, Worker, WorkerJob

    worker = Worker(addresses, concurrency=concurrency, client_id="gearmanpy-interop")

    @worker.register("reverse")
    def reverse(job: WorkerJob) -> bytes:
        return job.data[::-1]

    @worker.register("progress")
    async def progress(job: WorkerJob) -> bytes:
        for i in range(1, 4):
            job.send_status(i, 3)
            job.send_data(b"part%d" % i)
            await deferLater(reactor, 0.01, lambda: None)
        job.send_warning(b"almost")
        return b"all:" + job.data

    @worker.register("boom")
    def boom(job: WorkerJob) -> bytes:
        raise ValueError("bad " + job.data.decode())

    @worker.register("fail")
    def fail(job: WorkerJob) -> bytes:
        raise JobFailed()

    @worker.register("sleep")
    def sleep(job: WorkerJob) -> Deferred[bytes]:
        return deferLater(reactor, float(job.data or b"0.2"), lambda: b"slept")

    @worker.register("blocking", thread=True)
    def blocking(job: WorkerJob) -> str:
        time.sleep(0.05)
        job.send_data(b"from-thread")
        return "blocked:" + job.data.decode()

    worker.startService()
    print("worker started", flush=True)
    return Deferred()  # run until killed


async def _client_suite(reactor: Any, address: str) -> dict[str, Any]:
    """Child: run the client checks and return what was seen."""
    from gearmanpy import Client, JobException, JobFailed, JobTimeout, Priority

    client = Client([address], timeout=20)
    out: dict[str, Any] = {}
    out["echo"] = (await client.echo(b"hi\0there")).hex()
    out["reverse"] = (await client.submit("reverse", b"hello")).decode()
    job = client.submit("progress", b"x", priority=Priority.HIGH)
    events = [repr(e) async for e in job]
    out["progress_events"] = events
    out["progress"] = (await job).decode()
    try:
        await client.submit("boom", b"input")
    except JobException as e:
        out["boom"] = e.payload.decode()
    try:
        await client.submit("fail")
    except JobFailed:
        out["fail"] = "JobFailed"
    try:
        await client.submit("sleep", b"5", timeout=0.3)
    except JobTimeout:
        out["timeout"] = "JobTimeout"
    out["blocking"] = (await client.submit("blocking", b"b")).decode()
    handle = await client.submit_background("sleep", b"0.5", unique="bg-unique-1")
    status = await client.get_status(handle)
    out["bg_status_known"] = status.known
    ustatus = await client.get_status_unique("bg-unique-1")
    out["bg_unique_known"] = ustatus.known
    jobs = [client.submit("reverse", b"%d" % i) for i in range(20)]
    out["many"] = [(await j).decode() for j in jobs]
    at = await client.submit_at(time.time() - 10, "reverse", b"epoch")
    out["submit_at"] = bool(at)
    await client.stop()
    return out


async def _perl_suite(reactor: Any, address: str) -> dict[str, Any]:
    """Child: submit jobs to the Perl workers started by the test."""
    from gearmanpy import Client, JobException, JobFailed

    client = Client([address], timeout=20)
    out: dict[str, Any] = {}
    out["echo"] = (await client.submit("perl_echo", b"a\0b")).hex()
    job = client.submit("perl_events", b"w")
    out["events"] = [repr(e) async for e in job]
    out["events_result"] = (await job).decode()
    try:
        await client.submit("perl_fail", b"")
    except JobFailed:
        out["fail"] = "JobFailed"
    try:
        await client.submit("perl_exception", b"e")
    except JobException as e:
        out["exception"] = e.payload.decode()
    await client.stop()
    return out


async def _multi_suite(reactor: Any, addresses: str) -> dict[str, Any]:
    """Child: jobs over several servers (comma-separated), one of which is dead."""
    from gearmanpy import Client

    client = Client(addresses.split(","), timeout=20)
    plain = [client.submit("reverse", b"p%d" % i) for i in range(12)]
    keyed = [client.submit("reverse", b"k%d" % i, unique=f"key-{i}") for i in range(12)]
    out = {
        "plain": [(await j).decode() for j in plain],
        "keyed": [(await j).decode() for j in keyed],
    }
    await client.stop()
    return out


async def _lost_suite(reactor: Any, address: str) -> dict[str, Any]:
    """Child: submit a long job, report how it ends when the test kills the server."""
    from gearmanpy import Client

    client = Client([address])
    job = client.submit("sleep", b"30")
    await job.when_created()
    print("created", flush=True)
    try:
        await job
        outcome = "completed"
    except Exception as e:
        outcome = type(e).__name__
    try:
        await client.submit("reverse", b"x")
        after = "ok"
    except Exception as e:
        after = type(e).__name__
    await client.stop()
    return {"outcome": outcome, "after": after}


async def _restart_suite(reactor: Any, address: str) -> dict[str, Any]:
    """Child: one job, then wait for a line on stdin (server restarted), then another."""
    from twisted.internet.threads import deferToThread

    from gearmanpy import Client

    client = Client([address], timeout=30)
    first = (await client.submit("reverse", b"one")).decode()
    print("first done", flush=True)
    await deferToThread(sys.stdin.readline)
    # The old connection is gone; retry until the client has reconnected.
    second = None
    for _ in range(60):
        try:
            second = (await client.submit("reverse", b"two")).decode()
            break
        except Exception:
            from twisted.internet.task import deferLater

            await deferLater(reactor, 0.25, lambda: None)
    await client.stop()
    return {"first": first, "second": second}


def main(argv: list[str]) -> None:
    """Entry point of the child processes: ``MODE ADDRESS [ARG]``."""
    from twisted.internet.defer import Deferred
    from twisted.internet.task import react

    mode, address = argv[0], argv[1]
    suites = {
        "client": _client_suite,
        "perl-client": _perl_suite,
        "lost": _lost_suite,
        "multi": _multi_suite,
        "restart": _restart_suite,
    }

    def run(reactor: Any) -> Any:
        if mode == "worker":
            concurrency = int(argv[2]) if len(argv) > 2 else 4
            return _run_worker(reactor, address.split(","), concurrency)

        async def go() -> None:
            result = await suites[mode](reactor, address)
            print("RESULT " + json.dumps(result), flush=True)

        return Deferred.fromCoroutine(go())

    react(run)


# -- test side -------------------------------------------------------------------------------


def _child(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    """Start a child process of this module."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.interop.test_library", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _result(proc: subprocess.Popen[str], timeout: float = TIMEOUT) -> dict[str, Any]:
    """Wait for a child and return its RESULT line."""
    out, err = proc.communicate(timeout=timeout)
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise AssertionError(f"no result (rc={proc.returncode})\nstdout:\n{out}\nstderr:\n{err}")


@pytest.fixture
def our_worker(any_server: RunningServer) -> Iterator[RunningServer]:
    """Our worker (concurrency 4) connected to ``any_server``."""
    proc = _child("worker", any_server.address, "4")
    yield any_server
    stop_process(proc)


def test_client_and_worker(our_worker: RunningServer) -> None:
    """Our client and our worker cover the whole job life cycle through a real server."""
    result = _result(_child("client", our_worker.address))
    assert result["echo"] == b"hi\0there".hex()
    assert result["reverse"] == "olleh"
    assert result["progress"] == "all:x"
    assert result["progress_events"] == [
        "WorkStatus(numerator=1, denominator=3)",
        "WorkData(data=b'part1')",
        "WorkStatus(numerator=2, denominator=3)",
        "WorkData(data=b'part2')",
        "WorkStatus(numerator=3, denominator=3)",
        "WorkData(data=b'part3')",
        "WorkWarning(data=b'almost')",
    ]
    assert result["boom"] == "ValueError: bad input"
    assert result["fail"] == "JobFailed"
    assert result["timeout"] == "JobTimeout"
    assert result["blocking"] == "blocked:b"
    assert result["bg_status_known"] is True
    assert result["bg_unique_known"] is True
    assert result["many"] == [str(i)[::-1] for i in range(20)]
    assert result["submit_at"] is True


def test_worker_serves_gearman_cli(our_worker: RunningServer) -> None:
    """The libgearman ``gearman`` CLI gets results from our worker."""
    gearman = require_tool("gearman")
    host, port = "127.0.0.1", str(our_worker.port)
    out = subprocess.run(
        [gearman, "-h", host, "-p", port, "-f", "reverse", "-s", "--", "hello world"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    assert out.stdout.strip() == "dlrow olleh"
    out = subprocess.run(
        [gearman, "-h", host, "-p", port, "-f", "progress", "-s", "--", "cli"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    assert "part1part2part3all:cli" in out.stdout  # WORK_DATA chunks, then the result
    assert "100% Complete" in out.stdout  # WORK_STATUS 3/3
    assert "almost" in out.stderr  # WORK_WARNING
    out = subprocess.run(
        [gearman, "-h", host, "-p", port, "-f", "fail", "-s", "--", "x"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert out.returncode == 1
    assert "Job failed" in out.stderr


def test_client_served_by_perl_worker(any_server: RunningServer) -> None:
    """Our client gets results, events, failures and exceptions from Perl Gearman::Worker."""
    require_tool("perl")
    workers = []
    try:
        for function, mode in [
            ("perl_echo", "echo"),
            ("perl_events", "events"),
            ("perl_fail", "fail"),
            ("perl_exception", "exception"),
        ]:
            proc = subprocess.Popen(
                [
                    "perl",
                    str(SCRIPTS / "worker.pl"),
                    "127.0.0.1",
                    str(any_server.port),
                    function,
                    mode,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            workers.append(proc)
            assert read_line(proc, TIMEOUT).strip() == "ready"
        result = _result(_child("perl-client", any_server.address))
    finally:
        for proc in workers:
            stop_process(proc)
    assert result["echo"] == b"a\0b".hex()
    assert result["events"] == [
        "WorkData(data=b'data1')",
        "WorkWarning(data=b'warn1')",
        "WorkStatus(numerator=1, denominator=2)",
        "WorkData(data=b'data2')",
    ]
    assert result["events_result"] == "done:w"
    assert result["fail"] == "JobFailed"
    assert result["exception"] == "boom:e"


def test_several_servers(tmp_path: Path) -> None:
    """Client and worker spread over two gearmand servers and skip a dead third address.

    Plain jobs go round-robin (so each server gets some: they only complete if the worker
    takes work from both); keyed jobs go to their hashed server.
    """
    servers = [start_gearmand(workdir=tmp_path / "a"), start_gearmand(workdir=tmp_path / "b")]
    addresses = ",".join([s.address for s in servers] + [f"127.0.0.1:{free_port()}"])
    worker = _child("worker", addresses, "2")
    try:
        result = _result(_child("multi", addresses))
    finally:
        stop_process(worker)
        for server in servers:
            server.stop()
    assert result["plain"] == [f"p{i}"[::-1] for i in range(12)]
    assert result["keyed"] == [f"k{i}"[::-1] for i in range(12)]


def test_server_lost_mid_job(any_server: RunningServer) -> None:
    """Killing the server after it accepted a job fails the job with JobLost, promptly."""
    worker = _child("worker", any_server.address, "1")
    client = _child("lost", any_server.address)
    try:
        assert read_line(client, TIMEOUT) == "created"
        any_server.kill()
        started = time.monotonic()
        result = _result(client, timeout=20)
        assert time.monotonic() - started < 10
    finally:
        stop_process(client)
        stop_process(worker)
    assert result == {"outcome": "JobLost", "after": "NoServersAvailable"}


def test_worker_reregisters_after_restart(tmp_path: Path) -> None:
    """After gearmand restarts on the same port, worker and client reconnect and work."""
    server = start_gearmand(workdir=tmp_path)
    worker = _child("worker", server.address, "2")
    client = _child("restart", server.address, stdin=subprocess.PIPE)
    try:
        assert client.stdin is not None
        assert read_line(client, TIMEOUT) == "first done"
        server.kill()
        server = start_gearmand(workdir=tmp_path, port=server.port)
        client.stdin.write("go\n")
        client.stdin.flush()
        result = _result(client)
    finally:
        stop_process(client)
        stop_process(worker)
        server.kill()
    assert result == {"first": "eno", "second": "owt"}


# -- examples --------------------------------------------------------------------------------


@pytest.fixture
def memcached() -> Iterator[int]:
    """A memcached on a free loopback port."""
    binary = require_tool("memcached")
    port = free_port()
    user = ["-u", "root"] if os.geteuid() == 0 else []  # memcached refuses root otherwise
    proc = subprocess.Popen(
        [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "16", *user],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        yield port
    finally:
        stop_process(proc, signal.SIGKILL)


def _example(name: str, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    """Start one example script."""
    return subprocess.Popen(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        **kwargs,
    )


def _documented(
    name: str, server: RunningServer, memcached: int | None = None, **overrides: str
) -> subprocess.Popen[str]:
    """Start an example as README.rst's *Examples* section runs it, plus ``--gearman`` (and
    ``--memcached``), which it says every script takes; ``overrides`` replace option values
    (``http_port="8081"`` for ``--http-port``)."""
    args = example_commands()[name]
    for option, value in overrides.items():
        flag = "--" + option.replace("_", "-")
        args[args.index(flag) + 1] = value
    args += ["--gearman", server.address]
    if memcached is not None:
        args += ["--memcached", f"127.0.0.1:{memcached}"]
    return _example(name, *args)


def _finish(proc: subprocess.Popen[str]) -> str:
    """Wait for an example to exit successfully; return its stdout."""
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    return out


def test_example_wordcount(any_server: RunningServer, memcached: int) -> None:
    """The word-count example as documented: submit, not ready (queued), the worker counts,
    the result is read back."""
    out = _finish(_documented("wordcount_client.py", any_server, memcached))
    assert "doc-42" in out
    out = _finish(_documented("wordcount_result.py", any_server, memcached))
    assert "doc-42: not ready (queued)" in out
    worker = _documented("wordcount_worker.py", any_server, memcached)

    def counted() -> str | None:
        out = _finish(_documented("wordcount_result.py", any_server, memcached))
        return None if "not ready" in out else out

    try:
        out = wait_until(counted, 20, "the worker to store the word count", interval=0.2)
    finally:
        stop_process(worker)
    assert "Complete" in out
    assert "the: 1" in out
    assert "words: 3" in out


def test_example_progress(any_server: RunningServer) -> None:
    """The progress example streams WORK_STATUS and WORK_DATA and ends with the result."""
    worker = _documented("progress_worker.py", any_server)
    try:
        out = _finish(_documented("progress_client.py", any_server))
    finally:
        stop_process(worker)
    assert "progress 5/5" in out
    assert "chunk 1" in out
    assert "result:" in out


def test_example_web(any_server: RunningServer) -> None:
    """The twisted.web example runs a worker pool and an HTTP front-end in one process."""
    from urllib.request import urlopen

    http_port = free_port()
    app = _documented("web_worker.py", any_server, http_port=str(http_port))

    def reversed_text() -> str | None:
        with urlopen(f"http://127.0.0.1:{http_port}/reverse?text=gearman", timeout=20) as r:
            body: str = r.read().decode()
        return body if "namraeg" in body else None

    try:
        wait_for_port(http_port, app)
        body = wait_until(reversed_text, 20, "a reversed text from the web example", interval=0.2)
        with urlopen(f"http://127.0.0.1:{http_port}/status", timeout=20) as r:
            status = r.read().decode()
    finally:
        stop_process(app)
    assert "namraeg" in body
    assert "concurrency" in status


if __name__ == "__main__":
    main(sys.argv[1:])
