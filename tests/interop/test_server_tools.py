"""Drive a running job server with the real third-party Gearman tools.

Every test runs twice through ``any_server``: against Debian's gearmand 1.1.20, which defines the
expected behaviour, and against gearmanpy, which must match it byte for byte. The tools are the
libgearman command-line programs ``gearman`` and ``gearadmin`` (gearman-tools), the Perl
``Gearman::Client``/``Gearman::Worker`` (libgearman-client-perl) and PHP's ``GearmanClient``/
``GearmanWorker`` (php-gearman on libgearman). The Perl and PHP programs live in ``scripts/``.

Where gearmanpy deliberately improves on gearmand (protocol.md §6.1, the "Fix" rows), a test
branches on ``server.kind`` and pins both behaviours. A missing tool fails the test, and every
subprocess has a timeout, so nothing can hang the suite.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import socket
import struct
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.procs import read_line, wait_until

from .conftest import RunningServer, require_tool

pytestmark = pytest.mark.interop

SCRIPTS = Path(__file__).parent / "scripts"

# Packet types (protocol.md §2) used by the raw-socket helpers.
CAN_DO = 1
SUBMIT_JOB = 7
JOB_CREATED = 8
GRAB_JOB = 9
NO_JOB = 10
JOB_ASSIGN = 11
WORK_COMPLETE = 13
WORK_FAIL = 14
GET_STATUS = 15
ECHO_REQ = 16
ECHO_RES = 17
SUBMIT_JOB_BG = 18
ERROR = 19
STATUS_RES = 20
SET_CLIENT_ID = 22
SUBMIT_JOB_HIGH_BG = 32
SUBMIT_JOB_LOW_BG = 34
GET_STATUS_UNIQUE = 41
STATUS_RES_UNIQUE = 42

VERBOSE_LEVELS = {"FATAL", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE", "INFO", "DEBUG"}


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


class Conn:
    """A raw TCP connection to the server speaking binary packets and admin text lines.

    Every connection is closed at the end of the test by the autouse ``close_connections``.
    """

    opened: list[Conn] = []

    def __init__(self, server: RunningServer, timeout: float = 10.0) -> None:
        """Connect to ``server`` on loopback."""
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
        self.buf = b""
        Conn.opened.append(self)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def send(self, ptype: int, *args: bytes) -> None:
        """Send one request packet (``\\0REQ``) with NUL-joined ``args``."""
        body = b"\0".join(args)
        self.sock.sendall(b"\0REQ" + struct.pack(">II", ptype, len(body)) + body)

    def _fill(self) -> None:
        """Read more bytes into the buffer; fail on EOF."""
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed; unconsumed {self.buf!r}")
        self.buf += chunk

    def _take(self, n: int) -> bytes:
        """Return exactly ``n`` bytes from the stream."""
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_packet(self, timeout: float = 10.0) -> tuple[int, bytes]:
        """Read one ``\\0RES`` packet and return ``(type, body)``."""
        self.sock.settimeout(timeout)
        header = self._take(12)
        assert header[:4] == b"\0RES", header
        ptype, size = struct.unpack(">II", header[4:])
        return ptype, self._take(size)

    def echo(self, payload: bytes) -> None:
        """ECHO round trip: the server has handled every packet sent on this connection before.

        Fails if any other packet arrives first.
        """
        self.send(ECHO_REQ, payload)
        assert self.read_packet() == (ECHO_RES, payload)

    def submit(
        self, function: bytes, payload: bytes, unique: bytes = b"", ptype: int = SUBMIT_JOB
    ) -> bytes:
        """Submit a job and return its handle (fails on anything but JOB_CREATED)."""
        self.send(ptype, function, unique, payload)
        reply = self.read_packet()
        assert reply[0] == JOB_CREATED, reply
        return reply[1]

    def admin_raw(self, line: bytes, done: Callable[[bytes], bool], timeout: float = 10.0) -> bytes:
        """Send an admin ``line`` and read until ``done(reply)`` is true."""
        self.sock.settimeout(timeout)
        self.sock.sendall(line)
        while not done(self.buf):
            self._fill()
        reply, self.buf = self.buf, b""
        return reply

    def admin_list(self, line: bytes) -> bytes:
        """Send a list command and return the reply through its ``.\\n`` terminator."""
        return self.admin_raw(line, lambda b: b == b".\n" or b.endswith(b"\n.\n"))

    def admin_line(self, line: bytes) -> bytes:
        """Send a one-line command and return its reply line."""
        return self.admin_raw(line, lambda b: b.endswith(b"\n"))


@pytest.fixture(autouse=True, scope="module")
def third_party_tools() -> None:
    """Fail (never skip) at once if a tool or the Perl/PHP Gearman libraries are missing."""
    for tool in ("gearman", "gearadmin", "perl", "php"):
        require_tool(tool)
    checks = {
        "libgearman-client-perl": ["perl", "-MGearman::Client", "-MGearman::Worker", "-e", "1"],
        "php-gearman": ["php", "-r", 'exit(class_exists("GearmanWorker") ? 0 : 1);'],
    }
    for package, args in checks.items():
        result = subprocess.run(args, capture_output=True, timeout=30, check=False)
        if result.returncode != 0:
            pytest.fail(f"{package} is not installed; .ci/run installs it: {result.stderr!r}")


@pytest.fixture(autouse=True)
def close_connections() -> Iterator[None]:
    """Close every raw connection a test opened."""
    yield
    while Conn.opened:
        Conn.opened.pop().close()


def admin_list(server: RunningServer, line: bytes) -> bytes:
    """Run one list admin command on a fresh connection."""
    conn = Conn(server)
    try:
        return conn.admin_list(line)
    finally:
        conn.close()


def status_unique(server: RunningServer, unique: bytes) -> bytes:
    """Send GET_STATUS_UNIQUE on a fresh connection and return the STATUS_RES_UNIQUE body."""
    conn = Conn(server)
    try:
        conn.send(GET_STATUS_UNIQUE, unique)
        reply = conn.read_packet()
    finally:
        conn.close()
    assert reply[0] == STATUS_RES_UNIQUE, reply
    return reply[1]


def status_table(server: RunningServer) -> dict[str, tuple[int, int, int]]:
    """Parse ``status`` into ``{function: (total, running, workers)}``."""
    table = {}
    for line in admin_list(server, b"status\n").decode().splitlines()[:-1]:
        name, total, running, workers = line.split("\t")
        table[name] = (int(total), int(running), int(workers))
    return table


def function_status(server: RunningServer, function: str) -> tuple[int, int, int]:
    """``(total, running, workers)`` of one function, zeros if it is not listed."""
    return status_table(server).get(function, (0, 0, 0))


def wait_for_workers(
    server: RunningServer, function: str, count: int = 1, timeout: float = 20.0
) -> None:
    """Wait until ``count`` workers have registered ``function``."""
    wait_until(
        lambda: function_status(server, function)[2] >= count,
        timeout,
        f"{count} worker(s) for {function!r}; status {status_table(server)}",
    )


def wait_for_total(server: RunningServer, function: str, total: int, timeout: float = 15.0) -> None:
    """Wait until ``status`` shows ``total`` jobs (queued + running) for ``function``."""
    wait_until(
        lambda: function_status(server, function)[0] == total,
        timeout,
        f"{total} job(s) for {function!r}; status {status_table(server)}",
    )


def run(
    args: list[str], timeout: float = 30.0, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run a tool to completion with a timeout, capturing its output."""
    require_tool(args[0])
    return subprocess.run(args, input=input, capture_output=True, timeout=timeout, check=False)


def gearman(server: RunningServer, *args: str) -> list[str]:
    """The ``gearman`` command line pointed at ``server``."""
    return [require_tool("gearman"), "-h", "127.0.0.1", "-p", str(server.port), *args]


def gearadmin(
    server: RunningServer, *args: str, timeout: float = 15.0
) -> subprocess.CompletedProcess[bytes]:
    """Run ``gearadmin`` against ``server``."""
    return run(
        [require_tool("gearadmin"), "-h", "127.0.0.1", "-p", str(server.port), *args], timeout
    )


def perl(script: str, server: RunningServer, *args: str) -> list[str]:
    """Command line for one of our Perl scripts against ``server``."""
    return [require_tool("perl"), str(SCRIPTS / script), "127.0.0.1", str(server.port), *args]


def php(script: str, server: RunningServer, *args: str) -> list[str]:
    """Command line for one of our PHP scripts against ``server``."""
    return [require_tool("php"), str(SCRIPTS / script), "127.0.0.1", str(server.port), *args]


def run_json(args: list[str], timeout: float = 30.0) -> Any:
    """Run a Perl/PHP client script and decode the JSON line it prints."""
    result = run(args, timeout)
    assert result.returncode == 0, (args, result.returncode, result.stdout, result.stderr)
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


class Processes:
    """Background processes started by one test, all killed at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        """Keep output files under ``tmp_path``."""
        self.tmp_path = tmp_path
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], stdin: bytes | None = None) -> subprocess.Popen[bytes]:
        """Start ``args`` in the background with stdout and stderr to a pipe."""
        require_tool(args[0])
        proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.started.append(proc)
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            proc.stdin.close()
        return proc

    def start_quiet(self, args: list[str]) -> subprocess.Popen[bytes]:
        """Start a long-running process (a worker) whose output goes to a file."""
        require_tool(args[0])
        out = open(self.tmp_path / f"proc-{len(self.started)}.out", "wb")
        try:
            proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        finally:
            out.close()
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        """Kill every process this test started that is still running, and print their output.

        pytest shows the printout ("Captured stdout teardown") only when the test failed.
        """
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
        for index, proc in enumerate(self.started):
            try:
                out, err = proc.communicate(timeout=10)
            except (subprocess.TimeoutExpired, ValueError):
                out, err = b"", b""
            logfile = self.tmp_path / f"proc-{index}.out"
            if logfile.exists():
                out = logfile.read_bytes()
            output = (getattr(proc, "early_output", b"") + (out or b"") + (err or b""))[-2000:]
            print(f"[{proc.pid}] {proc.args!r} -> {proc.returncode}: {output!r}")


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """Start background tool processes that are killed when the test ends."""
    processes = Processes(tmp_path)
    yield processes
    processes.stop_all()


def wait_created(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> str:
    """Read a Perl ``do`` client's ``created HANDLE`` line: the server has accepted the job.

    The line is kept as ``proc.early_output`` for :func:`finish` and the teardown printout.
    """
    line = read_line(proc, timeout)
    proc.early_output = line.encode() + b"\n"  # type: ignore[attr-defined]
    assert line.startswith("created H:") or line.startswith("created 127.0.0.1"), line
    return line.split(" ", 1)[1]


def finish(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> tuple[int, bytes, bytes]:
    """Wait for a background process and return ``(returncode, stdout, stderr)``."""
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, getattr(proc, "early_output", b"") + out, err


def last_json(out: bytes) -> Any:
    """Decode the JSON line a client script prints last."""
    return json.loads(out.decode().strip().splitlines()[-1])


def expect_hang(proc: subprocess.Popen[bytes], seconds: float) -> None:
    """Assert that ``proc`` is still running after ``seconds``, then kill it."""
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=10)
        return
    out, err = proc.communicate(timeout=10)
    pytest.fail(f"expected a hang, but it exited {proc.returncode}: {out!r} {err!r}")


def log_lines(path: Path) -> list[tuple[str, str, bytes]]:
    """Parse a worker log of ``pid function hex`` lines into ``(pid, function, workload)``."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        pid, function, hexdata = (line.split(" ") + [""])[:3]
        rows.append((pid, function, bytes.fromhex(hexdata)))
    return rows


# ---------------------------------------------------------------------------------------------
# The gearman command line: foreground, background, priorities
# ---------------------------------------------------------------------------------------------


def test_cli_foreground_reverse(any_server: RunningServer, procs: Processes) -> None:
    """`gearman -w -f reverse -- rev` serves `echo hello | gearman -f reverse` and argument jobs."""
    procs.start_quiet(gearman(any_server, "-w", "-f", "reverse", "--", "rev"))
    wait_for_workers(any_server, "reverse")
    result = run(gearman(any_server, "-f", "reverse"), timeout=20, input=b"hello\n")
    assert (result.returncode, result.stdout) == (0, b"olleh\n"), result
    result = run(gearman(any_server, "-f", "reverse", "--", "abc", "def"), timeout=20)
    assert (result.returncode, result.stdout) == (0, b"cbafed"), result
    assert function_status(any_server, "reverse") == (0, 0, 1)


def test_cli_background_job(any_server: RunningServer, procs: Processes, tmp_path: Path) -> None:
    """`gearman -b` queues a job that a later `gearman -w` worker runs; the submitter returns at once."""
    out = tmp_path / "bg.out"
    result = run(gearman(any_server, "-b", "-f", "bgjob", "--", "payload-1"), timeout=10)
    assert result.returncode == 0, result
    assert result.stdout == b""
    assert function_status(any_server, "bgjob") == (1, 0, 0)
    jobs = admin_list(any_server, b"show jobs\n").decode().splitlines()
    assert len(jobs) == 2 and jobs[-1] == "."
    # The PERSISTED column is pinned by test_raw_show_jobs_bytes.
    assert re.fullmatch(r"H:[^\t]+\t0\t0\t[01]", jobs[0]), jobs
    worker = procs.start(
        gearman(any_server, "-w", "-c", "1", "-f", "bgjob", "--", "sh", "-c", f"cat > {out}")
    )
    code, _, err = finish(worker, 20)
    assert code == 0, err
    assert out.read_bytes() == b"payload-1"
    wait_for_total(any_server, "bgjob", 0)


def test_cli_background_priorities(
    any_server: RunningServer, procs: Processes, tmp_path: Path
) -> None:
    """Background `-I`/`-L`/normal jobs run HIGH, then NORMAL, then LOW, FIFO within each level."""
    order = tmp_path / "order"
    for flag, data in [
        ("-L", "low1"),
        ("", "norm1"),
        ("-I", "high1"),
        ("-L", "low2"),
        ("", "norm2"),
        ("-I", "high2"),
    ]:
        args = ["-b", "-f", "prio"] + ([flag] if flag else []) + ["--", data]
        result = run(gearman(any_server, *args), timeout=10)
        assert result.returncode == 0, result
    assert admin_list(any_server, b"prioritystatus\n") == b"prio\t2\t2\t2\t0\n.\n"
    prio = gearadmin(any_server, "--priority-status")
    assert prio.stdout == b"prio\t2\t2\t2\t0\n.\n", prio
    script = f"cat >> {order}; echo >> {order}"
    worker = procs.start(
        gearman(any_server, "-w", "-c", "6", "-f", "prio", "--", "sh", "-c", script)
    )
    code, _, err = finish(worker, 30)
    assert code == 0, err
    assert order.read_text().split() == ["high1", "high2", "norm1", "norm2", "low1", "low2"]
    wait_for_total(any_server, "prio", 0)


def test_cli_foreground_priorities(
    any_server: RunningServer, procs: Processes, tmp_path: Path
) -> None:
    """Waiting foreground clients submitted with `-L`, none and `-I` are served high, normal, low."""
    order = tmp_path / "order"
    clients = {}
    for count, (flag, data) in enumerate([("-L", "low"), ("", "normal"), ("-I", "high")], start=1):
        args = ["-f", "fgprio"] + ([flag] if flag else []) + ["--", data]
        clients[data] = procs.start(gearman(any_server, *args))
        wait_for_total(any_server, "fgprio", count)
    assert admin_list(any_server, b"prioritystatus\n") == b"fgprio\t1\t1\t1\t0\n.\n"
    script = f"cat >> {order}; echo >> {order}; echo done"
    worker = procs.start(
        gearman(any_server, "-w", "-c", "3", "-f", "fgprio", "--", "sh", "-c", script)
    )
    assert finish(worker, 30)[0] == 0
    for data, client in clients.items():
        assert finish(client, 20)[:2] == (0, b"done\n"), data
    assert order.read_text().split() == ["high", "normal", "low"]


# ---------------------------------------------------------------------------------------------
# Status polling, coalescing
# ---------------------------------------------------------------------------------------------


def test_status_polling_perl_and_php(
    any_server: RunningServer, procs: Processes, tmp_path: Path
) -> None:
    """Perl `get_status` and PHP `jobStatus` see a background job queued, running at 1/4, then gone."""
    gate = tmp_path / "gate"
    handle = run_json(perl("client.pl", any_server, "bg", "held", "work-1", "uniq-1"))["handle"]
    js, _, raw_handle = handle.partition("//")
    assert js == f"127.0.0.1:{any_server.port}" and raw_handle.startswith("H:"), handle
    perl_status = run_json(perl("client.pl", any_server, "status", handle))
    assert perl_status == {"known": 1, "running": 0, "numerator": 0, "denominator": 0}
    assert run_json(php("client.php", any_server, "status", raw_handle)) == [True, False, 0, 0]

    procs.start_quiet(
        php("worker.php", any_server, "held", "hold", str(tmp_path / "log"), str(gate))
    )
    wait_until(
        lambda: run_json(perl("client.pl", any_server, "status", handle))["numerator"] == 1,
        what="the worker's WORK_STATUS 1/4",
    )
    perl_status = run_json(perl("client.pl", any_server, "status", handle))
    assert perl_status == {"known": 1, "running": 1, "numerator": 1, "denominator": 4}
    assert run_json(php("client.php", any_server, "status", raw_handle)) == [True, True, 1, 4]
    assert function_status(any_server, "held") == (1, 1, 1)

    # A second job, submitted by PHP doBackground, waits behind the running one.
    second = run_json(php("client.php", any_server, "bg", "held", "work-2", "uniq-2"))
    assert second["code"] == 0 and second["handle"].startswith("H:"), second
    assert second["handle"] != raw_handle
    assert run_json(php("client.php", any_server, "status", second["handle"])) == [
        True,
        False,
        0,
        0,
    ]
    assert function_status(any_server, "held") == (2, 1, 1)

    gate.touch()
    wait_for_total(any_server, "held", 0)
    assert run_json(php("client.php", any_server, "status", raw_handle)) == [False, False, 0, 0]
    assert [row[2] for row in log_lines(tmp_path / "log")] == [b"work-1", b"work-2"]
    # Gearman::Client::get_status returns a JobStatus whose known flag is false.
    assert run_json(perl("client.pl", any_server, "status", handle))["known"] == 0


def test_coalescing_same_unique(
    any_server: RunningServer, procs: Processes, tmp_path: Path
) -> None:
    """A Perl and a PHP client submitting the same unique share one job, which runs once."""
    log = tmp_path / "log"
    first = procs.start(perl("client.pl", any_server, "do", "coal", "payload-a", "same-unique"))
    wait_created(first)
    second = procs.start(php("client.php", any_server, "do", "coal", "payload-b", "same-unique"))
    wait_until(
        lambda: (
            status_unique(any_server, b"same-unique") == b"same-unique\x001\x000\x000\x000\x002"
        ),
        what="two clients on the coalesced job",
    )
    assert function_status(any_server, "coal") == (1, 0, 0)
    assert admin_list(any_server, b"show unique jobs\n") == b"same-unique\n.\n"

    procs.start_quiet(php("worker.php", any_server, "coal", "count", str(log)))
    code, out, err = finish(first, 30)
    assert code == 0, err
    assert last_json(out)["result"] == "ok:payload-a"
    code, out, err = finish(second, 30)
    assert code == 0, err
    reply = last_json(out)
    assert reply["code"] == 0 and bytes.fromhex(reply["result_hex"]) == b"ok:payload-a"
    assert [row[2] for row in log_lines(log)] == [b"payload-a"]


def test_coalescing_dash_unique_by_payload(
    any_server: RunningServer, procs: Processes, tmp_path: Path
) -> None:
    """Perl uniq `-` coalesces by payload: equal payloads share one job, a different one does not."""
    log = tmp_path / "log"
    first = procs.start(perl("client.pl", any_server, "do", "dash", "same", "-"))
    handle = wait_created(first)
    second = procs.start(perl("client.pl", any_server, "do", "dash", "same", "-"))
    assert wait_created(second) == handle
    third = procs.start(perl("client.pl", any_server, "do", "dash", "other", "-"))
    assert wait_created(third) != handle
    assert function_status(any_server, "dash") == (2, 0, 0)
    procs.start_quiet(perl("worker.pl", any_server, "dash", "count", str(log)))
    results = [last_json(finish(p, 30)[1])["result"] for p in (first, second, third)]
    assert results == ["ok:same", "ok:same", "ok:other"]
    assert sorted(row[2] for row in log_lines(log)) == [b"other", b"same"]


def test_coalescing_64_byte_unique(
    any_server: RunningServer, procs: Processes, tmp_path: Path
) -> None:
    """A 64-byte unique: gearmand truncates it to 63 and never coalesces; gearmanpy coalesces it."""
    unique = "u" * 64
    log = tmp_path / "log"
    first = procs.start(perl("client.pl", any_server, "do", "long", "p1", unique))
    handle = wait_created(first)
    second = procs.start(perl("client.pl", any_server, "do", "long", "p2", unique))
    second_handle = wait_created(second)
    if any_server.kind == "gearmand":
        assert second_handle != handle
        assert function_status(any_server, "long") == (2, 0, 0)
        assert (
            admin_list(any_server, b"show unique jobs\n") == ("u" * 63 + "\n").encode() * 2 + b".\n"
        )
    else:
        assert second_handle == handle
        assert function_status(any_server, "long") == (1, 0, 0)
        assert admin_list(any_server, b"show unique jobs\n") == (unique + "\n.\n").encode()
        assert (
            status_unique(any_server, unique.encode())
            == unique.encode() + b"\x001\x000\x000\x000\x002"
        )
    procs.start_quiet(perl("worker.pl", any_server, "long", "count", str(log)))
    results = [last_json(finish(p, 30)[1])["result"] for p in (first, second)]
    ran = [row[2] for row in log_lines(log)]
    if any_server.kind == "gearmand":
        assert results == ["ok:p1", "ok:p2"] and sorted(ran) == [b"p1", b"p2"]
    else:
        assert results == ["ok:p1", "ok:p1"] and ran == [b"p1"]


# ---------------------------------------------------------------------------------------------
# WORK_DATA / WARNING / STATUS / FAIL / EXCEPTION through Perl and PHP
# ---------------------------------------------------------------------------------------------

EVENTS = [
    ["data", "data1"],
    ["warning", "warn1"],
    ["status", "1/2"],
    ["data", "data2"],
    ["complete", "done:hi"],
]


def start_event_workers(server: RunningServer, procs: Processes, script: str, prefix: str) -> None:
    """Start one worker per mode (events, fail, exception) with functions ``<prefix>-<mode>``."""
    for mode in ("events", "fail", "exception"):
        runner = perl if script.endswith(".pl") else php
        procs.start_quiet(runner(script, server, f"{prefix}-{mode}", mode))
    for mode in ("events", "fail", "exception"):
        wait_for_workers(server, f"{prefix}-{mode}")


def test_work_packets_php_worker_perl_client(any_server: RunningServer, procs: Processes) -> None:
    """A Perl client (exceptions on) sees a PHP worker's DATA/WARNING/STATUS/COMPLETE/FAIL/EXCEPTION."""
    start_event_workers(any_server, procs, "worker.php", "php")
    reply = run_json(perl("client.pl", any_server, "do", "php-events", "hi", "exc"))
    assert reply == {"events": EVENTS, "result": "done:hi"}
    reply = run_json(perl("client.pl", any_server, "do", "php-fail", "hi", "exc"))
    assert reply == {"events": [["fail", "jshandle fail"]], "result": None}
    reply = run_json(perl("client.pl", any_server, "do", "php-exception", "hi", "exc"))
    assert reply == {"events": [["exception", "boom:hi"]], "result": None}


def test_work_packets_perl_worker_php_client(any_server: RunningServer, procs: Processes) -> None:
    """PHP client callbacks see a Perl worker's WORK_DATA/WARNING/STATUS/COMPLETE/FAIL/EXCEPTION."""
    start_event_workers(any_server, procs, "worker.pl", "perl")
    reply = run_json(php("client.php", any_server, "tasks", "perl-events", "hi"))
    assert reply == {"ok": True, "code": 0, "events": EVENTS}
    reply = run_json(php("client.php", any_server, "tasks", "perl-fail", "hi"))
    assert reply == {"ok": True, "code": 0, "events": [["fail", ""]]}
    reply = run_json(php("client.php", any_server, "tasks", "perl-exception", "hi"))
    assert reply == {"ok": True, "code": 0, "events": [["exception", "boom:hi"]]}


def test_php_do_normal_return_codes(any_server: RunningServer, procs: Processes) -> None:
    """PHP `doNormal` returns data+result with SUCCESS, and WORK_FAIL / WORK_EXCEPTION codes."""
    start_event_workers(any_server, procs, "worker.php", "php")
    reply = run_json(php("client.php", any_server, "do", "php-events", "hi"))
    # libgearman's blocking call concatenates WORK_DATA chunks in front of the result.
    assert reply["code"] == 0 and bytes.fromhex(reply["result_hex"]) == b"data1data2done:hi", reply
    assert (
        run_json(php("client.php", any_server, "do", "php-fail", "hi"))["code"] == 24
    )  # WORK_FAIL
    assert (
        run_json(php("client.php", any_server, "do", "php-exception", "hi"))["code"] == 23
    )  # EXCEPTION


def test_exception_to_client_without_exceptions_option(
    any_server: RunningServer, procs: Processes
) -> None:
    """WORK_EXCEPTION to clients without `exceptions`: gearmand hangs/croaks them, gearmanpy fails them."""
    start_event_workers(any_server, procs, "worker.php", "php")
    cli = procs.start(gearman(any_server, "-f", "php-exception", "--", "x"))
    php_client = procs.start(php("client.php", any_server, "do", "php-exception", "x", "noexc"))
    perl_client = procs.start(perl("client.pl", any_server, "do", "php-exception", "x"))
    if any_server.kind == "gearmand":
        # protocol.md §3.7 / §6.1 quirk 1: WORK_FAIL "H:vm:N\0" matches no handle.
        code, _, err = finish(perl_client, 20)
        assert code != 0 and b"Got work_fail for unknown handle" in err, err
        # All three jobs have ended on the server, yet the libgearman clients keep waiting.
        wait_for_total(any_server, "php-exception", 0)
        expect_hang(cli, 1.5)
        expect_hang(php_client, 0.5)
    else:
        code, out, err = finish(cli, 20)
        assert code == 1 and out == b"" and b"Job failed" in err, (code, out, err)
        code, out, err = finish(php_client, 20)
        assert code == 0 and last_json(out)["code"] == 24, (out, err)
        code, out, err = finish(perl_client, 20)
        assert code == 0 and last_json(out) == {
            "events": [["fail", "jshandle fail"]],
            "result": None,
        }, err


def test_cli_work_fail(any_server: RunningServer, procs: Processes) -> None:
    """A worker's plain WORK_FAIL makes `gearman` report "Job failed" and exit 1 promptly."""
    procs.start_quiet(perl("worker.pl", any_server, "perl-fail", "fail"))
    wait_for_workers(any_server, "perl-fail")
    result = run(gearman(any_server, "-f", "perl-fail", "--", "x"), timeout=20)
    assert result.returncode == 1 and b"Job failed" in result.stderr, result


# ---------------------------------------------------------------------------------------------
# Worker loss, binary payloads, load
# ---------------------------------------------------------------------------------------------


def test_worker_killed_mid_job_is_requeued(
    any_server: RunningServer, procs: Processes, tmp_path: Path
) -> None:
    """A job whose worker is SIGKILLed mid-job is requeued (retries 1) and completed by another worker."""
    log = tmp_path / "log"
    client = procs.start(perl("client.pl", any_server, "do", "fragile", "job-1", "fragile-1"))
    first = procs.start_quiet(
        php("worker.php", any_server, "fragile", "hold", str(log), str(tmp_path / "never"))
    )
    wait_until(lambda: len(log_lines(log)) == 1, what="the first worker to take the job")
    assert function_status(any_server, "fragile") == (1, 1, 1)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    wait_until(
        lambda: function_status(any_server, "fragile") == (1, 0, 0), what="the job to be requeued"
    )
    jobs = admin_list(any_server, b"show jobs\n").decode().splitlines()
    assert len(jobs) == 2 and re.fullmatch(r"H:[^\t]+\t1\t0\t0", jobs[0]), jobs
    procs.start_quiet(perl("worker.pl", any_server, "fragile", "count", str(log)))
    code, out, err = finish(client, 30)
    assert code == 0, err
    assert last_json(out)["result"] == "ok:job-1"
    runs = log_lines(log)
    assert [row[2] for row in runs] == [b"job-1", b"job-1"]
    assert runs[0][0] == str(first.pid) and runs[1][0] != runs[0][0]
    wait_for_total(any_server, "fragile", 0)


def binary_payload(size: int) -> bytes:
    """Deterministic pseudo-random bytes of ``size``, rich in NULs (every 7th byte is NUL)."""
    chunk = hashlib.sha256(str(size).encode()).digest()
    data = bytearray((chunk * (size // len(chunk) + 1))[:size])
    data[::7] = b"\0" * len(data[::7])
    return bytes(data)


@pytest.mark.parametrize(
    ("client_script", "worker_script", "size"),
    [("client.php", "worker.pl", 10 * 1024 * 1024), ("client.pl", "worker.php", 1024 * 1024 + 3)],
    ids=["php-client-perl-worker-10MiB", "perl-client-php-worker-1MiB"],
)
def test_binary_payload_roundtrip(
    any_server: RunningServer,
    procs: Processes,
    tmp_path: Path,
    client_script: str,
    worker_script: str,
    size: int,
) -> None:
    """A binary payload with NULs goes client -> server -> echoing worker -> client byte-exact."""
    worker_runner = perl if worker_script.endswith(".pl") else php
    client_runner = perl if client_script.endswith(".pl") else php
    procs.start_quiet(worker_runner(worker_script, any_server, "echo-bin", "echo"))
    wait_for_workers(any_server, "echo-bin")
    data = binary_payload(size)
    assert data.count(b"\0") > size // 8
    source, target = tmp_path / "in.bin", tmp_path / "out.bin"
    source.write_bytes(data)
    reply = run_json(
        client_runner(client_script, any_server, "file", "echo-bin", str(source), str(target)), 90
    )
    assert reply["length"] == size
    assert hashlib.sha256(target.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()


def test_fifty_workers_two_thousand_jobs(
    any_server: RunningServer, procs: Processes, tmp_path: Path
) -> None:
    """50 PHP worker processes run 2,000 jobs from one PHP client: every job completes exactly once."""
    log = tmp_path / "log"
    for _ in range(50):
        procs.start_quiet(php("worker.php", any_server, "load", "count", str(log)))
    wait_for_workers(any_server, "load", 50, timeout=40)
    reply = run_json(php("client.php", any_server, "many", "load", "2000"), timeout=60)
    assert reply["ok"] is True and reply["other"] == [], reply["other"][:5]
    complete = dict(reply["complete"])
    assert len(reply["complete"]) == 2000
    assert complete == {f"u-{i}": f"ok:job-{i}" for i in range(2000)}
    runs = log_lines(log)
    counts = Counter(row[2] for row in runs)
    assert len(runs) == 2000 and set(counts.values()) == {1}
    assert set(counts) == {f"job-{i}".encode() for i in range(2000)}
    pids = Counter(row[0] for row in runs)
    assert len(pids) >= 10, f"jobs went to only {len(pids)} of 50 workers: {pids}"
    assert function_status(any_server, "load") == (0, 0, 50)


# ---------------------------------------------------------------------------------------------
# gearadmin, every flag
# ---------------------------------------------------------------------------------------------


def test_gearadmin_status(any_server: RunningServer) -> None:
    """`gearadmin --status` prints NAME\\tTOTAL\\tRUNNING\\tWORKERS lines and `.` with live counts."""
    worker = Conn(any_server)
    worker.send(CAN_DO, b"adm-a")
    worker.send(CAN_DO, b"adm-a")  # registered twice: counted twice
    client = Conn(any_server)
    client.submit(b"adm-b", b"x", ptype=SUBMIT_JOB_BG)
    client.submit(b"adm-b", b"y", ptype=SUBMIT_JOB_LOW_BG)
    wait_until(lambda: function_status(any_server, "adm-a")[2] == 2)
    result = gearadmin(any_server, "--status")
    assert result.returncode == 0, result
    text = result.stdout.decode()
    assert text.endswith("\n.\n")
    lines = text.splitlines()[:-1]
    assert all(re.fullmatch(r"[^\t]*\t\d+\t\d+\t\d+", line) for line in lines), lines
    assert sorted(lines) == ["adm-a\t0\t0\t2", "adm-b\t2\t0\t0"]
    worker.close()
    client.close()


def test_gearadmin_priority_status(any_server: RunningServer) -> None:
    """`gearadmin --priority-status` prints NAME\\tHIGH\\tNORMAL\\tLOW\\tWORKERS per function."""
    client = Conn(any_server)
    for ptype in (SUBMIT_JOB_HIGH_BG, SUBMIT_JOB_LOW_BG, SUBMIT_JOB_LOW_BG, SUBMIT_JOB_BG):
        client.submit(b"ps", b"x", ptype=ptype)
    worker = Conn(any_server)
    worker.send(CAN_DO, b"ps-idle")
    wait_until(lambda: "ps-idle" in status_table(any_server))
    result = gearadmin(any_server, "--priority-status")
    assert result.returncode == 0, result
    lines = result.stdout.decode().splitlines()
    assert lines[-1] == "."
    assert sorted(lines[:-1]) == ["ps\t1\t1\t2\t0", "ps-idle\t0\t0\t0\t1"]
    client.close()
    worker.close()


def test_gearadmin_workers(any_server: RunningServer) -> None:
    """`gearadmin --workers` lists every connection as `FD IP ID : FUNCS` (newest function first)."""
    worker = Conn(any_server)
    worker.send(SET_CLIENT_ID, b"my-worker")
    for name in (b"wa", b"wb", b"wc"):
        worker.send(CAN_DO, name)
    plain = Conn(any_server)
    plain.send(CAN_DO, b"wz")
    wait_until(
        lambda: (
            function_status(any_server, "wz")[2] == 1 and function_status(any_server, "wa")[2] == 1
        )
    )
    result = gearadmin(any_server, "--workers")
    assert result.returncode == 0, result
    lines = result.stdout.decode().splitlines()
    assert lines[-1] == "."
    assert all(re.fullmatch(r"\d+ 127\.0\.0\.1 \S+ :( \S+)*", line) for line in lines[:-1]), lines
    tails = sorted(line.split(" ", 1)[1] for line in lines[:-1])
    # gearadmin's own connection shows as an idle "- :" entry too.
    assert "127.0.0.1 my-worker : wc wb wa" in tails and "127.0.0.1 - : wz" in tails, tails
    assert "127.0.0.1 - :" in tails, tails
    worker.close()
    plain.close()


def test_gearadmin_server_version(any_server: RunningServer) -> None:
    """`gearadmin --server-version` prints the version without the `OK ` prefix."""
    result = gearadmin(any_server, "--server-version")
    assert result.returncode == 0, result
    if any_server.kind == "gearmand":
        assert result.stdout == b"1.1.20+ds\n"
    else:
        assert re.fullmatch(rb"\d+\.\d+[^\s]*\n", result.stdout), result.stdout
    raw = Conn(any_server).admin_line(b"version\n")
    assert raw == b"OK " + result.stdout


def test_gearadmin_getpid(any_server: RunningServer) -> None:
    """`gearadmin --getpid` prints the server's process id (`OK <pid>\\n` on the wire)."""
    result = gearadmin(any_server, "--getpid")
    assert (result.returncode, result.stdout) == (0, f"{any_server.process.pid}\n".encode()), result
    assert Conn(any_server).admin_line(b"getpid\n") == f"OK {any_server.process.pid}\n".encode()


def test_gearadmin_server_verbose(any_server: RunningServer) -> None:
    """`gearadmin --server-verbose` prints one verbosity level name (`OK <LEVEL>\\n` on the wire)."""
    result = gearadmin(any_server, "--server-verbose")
    assert result.returncode == 0, result
    level = result.stdout.decode()
    assert level.endswith("\n") and level.strip() in VERBOSE_LEVELS, level
    if any_server.kind == "gearmand":
        assert level == "ERROR\n"
    assert Conn(any_server).admin_line(b"verbose\n") == b"OK " + result.stdout


def test_gearadmin_show_jobs_and_unique_jobs(any_server: RunningServer) -> None:
    """`--show-jobs` prints HANDLE\\tRETRIES\\tIGNORED\\tPERSISTED and `--show-unique-jobs` the uniques."""
    client = Conn(any_server)
    bg = client.submit(b"sj", b"x", b"unique-bg", ptype=SUBMIT_JOB_BG)
    fg = client.submit(b"sj", b"y", b"unique-fg")
    plain = client.submit(b"sj", b"z")
    result = gearadmin(any_server, "--show-jobs")
    assert result.returncode == 0, result
    lines = result.stdout.decode().splitlines()
    assert lines[-1] == "."
    assert sorted(lines[:-1]) == sorted(
        [f"{bg.decode()}\t0\t0\t1", f"{fg.decode()}\t0\t0\t0", f"{plain.decode()}\t0\t0\t0"]
    )
    result = gearadmin(any_server, "--show-unique-jobs")
    assert result.returncode == 0, result
    lines = result.stdout.decode().split("\n")
    assert lines[-2:] == [".", ""]
    assert sorted(lines[:-2]) == ["", "unique-bg", "unique-fg"]
    client.close()


def test_gearadmin_create_and_drop_function(any_server: RunningServer) -> None:
    """`--create-function` adds an idle function, `--drop-function` removes it or reports an error."""
    result = gearadmin(any_server, "--create-function", "made")
    assert (result.returncode, result.stdout) == (0, b"OK\n"), result
    assert status_table(any_server) == {"made": (0, 0, 0)}
    result = gearadmin(any_server, "--drop-function", "made")
    assert (result.returncode, result.stdout) == (0, b"OK\n"), result
    assert status_table(any_server) == {}
    result = gearadmin(any_server, "--drop-function", "made")
    assert result.stdout == b"" and result.stderr == b"Error: function not found\r\n", result
    worker = Conn(any_server)
    worker.send(CAN_DO, b"busy")
    wait_for_workers(any_server, "busy")
    result = gearadmin(any_server, "--drop-function", "busy")
    assert result.stderr == b"Error: there are still connected workers or executing clients\r\n", (
        result
    )
    assert "busy" in status_table(any_server)
    worker.close()


def test_gearadmin_drop_function_with_queued_jobs(any_server: RunningServer) -> None:
    """`drop function` with queued jobs: gearmand drops it (orphaning the jobs); gearmanpy refuses."""
    client = Conn(any_server)
    handle = client.submit(b"queued", b"x", ptype=SUBMIT_JOB_BG)
    result = gearadmin(any_server, "--drop-function", "queued")
    if any_server.kind == "gearmand":
        assert (result.stdout, result.stderr) == (b"OK\n", b""), result
        assert "queued" not in status_table(any_server)
        # The orphan still answers GET_STATUS as known.
        client.send(GET_STATUS, handle)
        assert client.read_packet() == (STATUS_RES, handle + b"\x001\x000\x000\x000")
    else:
        assert result.stdout == b"" and result.stderr.startswith(b"Error: "), result
        assert status_table(any_server) == {"queued": (1, 0, 0)}
    client.close()


def test_gearadmin_cancel_job(any_server: RunningServer) -> None:
    """`--cancel-job` cancels a queued job (its FG client gets WORK_FAIL) and reports UNKNOWN_JOB."""
    client = Conn(any_server)
    handle = client.submit(b"cj", b"x")
    result = gearadmin(any_server, "--cancel-job", handle.decode())
    assert (result.returncode, result.stdout, result.stderr) == (0, b"OK\n", b""), result
    assert client.read_packet() == (WORK_FAIL, handle)
    result = gearadmin(any_server, "--cancel-job", "H:nosuch:1")
    assert (result.stdout, result.stderr) == (b"", b"Error: UNKNOWN_JOB\r\n"), result
    # The cancelled job is never handed to a worker.
    worker = Conn(any_server)
    worker.send(CAN_DO, b"cj")
    worker.send(GRAB_JOB)
    assert worker.read_packet() == (NO_JOB, b"")
    wait_for_total(any_server, "cj", 0)
    client.close()
    worker.close()


def test_cancel_running_job(any_server: RunningServer) -> None:
    """Cancelling a running job: WORK_FAIL, then gearmand (not gearmanpy) forwards the late COMPLETE."""
    client = Conn(any_server)
    handle = client.submit(b"cr", b"x")
    worker = Conn(any_server)
    worker.send(CAN_DO, b"cr")
    worker.send(GRAB_JOB)
    assert worker.read_packet() == (JOB_ASSIGN, handle + b"\0cr\0x")
    result = gearadmin(any_server, "--cancel-job", handle.decode())
    assert result.stdout == b"OK\n", result
    assert client.read_packet() == (WORK_FAIL, handle)
    worker.send(WORK_COMPLETE, handle, b"late")
    if any_server.kind == "gearmand":
        assert client.read_packet() == (WORK_COMPLETE, handle + b"\0late")
    else:
        # Once the worker's ECHO is answered the server has handled its WORK_COMPLETE; had
        # that been forwarded, it would reach the client before the client's own ECHO_RES.
        worker.echo(b"after complete")
        client.echo(b"nothing before")
    client.close()
    worker.close()


# ---------------------------------------------------------------------------------------------
# Raw admin bytes (protocol.md §4.2, §4.3)
# ---------------------------------------------------------------------------------------------


def test_raw_status_bytes(any_server: RunningServer) -> None:
    """`status` answers exactly NAME\\tTOTAL\\tRUNNING\\tWORKERS\\n lines and `.\\n`, case-insensitively."""
    admin = Conn(any_server)
    assert admin.admin_list(b"status\n") == b".\n"
    worker = Conn(any_server)
    worker.send(CAN_DO, b"rawf")
    wait_for_workers(any_server, "rawf")
    assert admin.admin_list(b"status\r\n") == b"rawf\t0\t0\t1\n.\n"
    Conn(any_server).submit(b"rawf", b"x", ptype=SUBMIT_JOB_BG)
    assert admin.admin_list(b"STATUS\n") == b"rawf\t1\t0\t1\n.\n"
    worker.send(GRAB_JOB)
    assert worker.read_packet()[0] == JOB_ASSIGN
    assert admin.admin_list(b"status\n") == b"rawf\t1\t1\t1\n.\n"
    assert admin.admin_list(b"prioritystatus\n") == b"rawf\t0\t0\t0\t1\n.\n"


def test_raw_workers_bytes(any_server: RunningServer) -> None:
    """`workers` answers `FD 127.0.0.1 ID :[ FUNC...]\\n` per connection, then `.\\n`."""
    admin = Conn(any_server)
    # Only this admin connection is left once the server has reaped the fixture's port probe.
    wait_until(
        lambda: re.fullmatch(rb"\d+ 127\.0\.0\.1 - :\n\.\n", admin.admin_list(b"workers\n")),
        what="a workers list with only the admin connection",
    )
    worker = Conn(any_server)
    worker.send(SET_CLIENT_ID, b"raw-id")
    worker.send(CAN_DO, b"f1")
    worker.send(CAN_DO, b"f2")
    wait_for_workers(any_server, "f2")
    reply = admin.admin_list(b"workers\n")
    assert reply.endswith(b"\n.\n")
    lines = sorted(reply.split(b"\n")[:-2], key=lambda line: b"raw-id" in line)
    assert len(lines) == 2
    assert re.fullmatch(rb"\d+ 127\.0\.0\.1 - :", lines[0]), lines
    assert re.fullmatch(rb"\d+ 127\.0\.0\.1 raw-id : f2 f1", lines[1]), lines
    worker.close()


def test_raw_show_jobs_bytes(any_server: RunningServer) -> None:
    """`show jobs` and `show unique jobs` answer exact tab/newline-separated lines and `.\\n`."""
    admin = Conn(any_server)
    assert admin.admin_list(b"show jobs\n") == b".\n"
    assert admin.admin_list(b"show unique jobs\n") == b".\n"
    client = Conn(any_server)
    fg = client.submit(b"sj", b"x", b"u1")
    assert admin.admin_list(b"show jobs\n") == fg + b"\t0\t0\t0\n.\n"
    assert admin.admin_list(b"show unique jobs\n") == b"u1\n.\n"
    # gearmand without -q keeps BG jobs in its no-op "builtin" queue, whose add succeeds, so a
    # background job shows PERSISTED 1 even though nothing is stored anywhere.
    bg = client.submit(b"sj", b"y", b"u2", ptype=SUBMIT_JOB_BG)
    reply = admin.admin_list(b"show jobs\n")
    assert reply.endswith(b"\n.\n")
    assert sorted(reply.split(b"\n")[:-2]) == sorted([fg + b"\t0\t0\t0", bg + b"\t0\t0\t1"])


# One admin line and the exact reply gearmand 1.1.20 sends (protocol.md §4.2, §4.3).
ONE_LINE_REPLIES = [
    (b"foo\n", b"ERR UNKNOWN_COMMAND Unknown+server+commandfoo\r\n"),
    (b"\n", b"ERR UNKNOWN_COMMAND Unknown+server+command\r\n"),
    (b"show\n", b"ERR UNKNOWN_COMMAND Unknown+server+commandshow\r\n"),
    (b"show stuff\n", b"ERR UNKNOWN_SHOW_ARGUMENTS\r\n"),
    (b"cancel\n", b"ERR UNKNOWN_COMMAND Unknown+server+commandcancel\r\n"),
    (b"cancel job\n", b"ERR UNKNOWN_COMMAND Unknown+server+commandcancel\r\n"),
    (b"cancel foo bar\n", b"ERR UNKNOWN_ERROR\r\n"),
    (b"cancel job H:x:1\n", b"ERR UNKNOWN_JOB\r\n"),
    (
        b"create\n",
        b"ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+create\r\n",
    ),
    (
        b"drop function\n",
        b"ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+drop\r\n",
    ),
    (b"drop function nosuch\n", b"ERR function not found\r\n"),
    (
        b"maxqueue\n",
        b"ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+maxqueue\r\n",
    ),
    (b"maxqueue abc 5\n", b"OK\r\n"),
    (b"maxqueue abc\n", b"OK\r\n"),
    (b"maxqueue abc 1 2 3\n", b"OK\r\n"),
    (b"create function made\r\n", b"OK\r\n"),
]


@pytest.mark.parametrize(
    ("line", "reply"),
    ONE_LINE_REPLIES,
    ids=[line.decode().strip().replace(" ", "_") or "empty" for line, _ in ONE_LINE_REPLIES],
)
def test_raw_admin_one_line_replies(any_server: RunningServer, line: bytes, reply: bytes) -> None:
    """One-line admin replies, errors included, match gearmand's bytes exactly."""
    assert Conn(any_server).admin_line(line) == reply


def test_raw_create_function_without_cr(any_server: RunningServer) -> None:
    """`create function xyz\\n`: gearmand drops the last character (creates `xy`); gearmanpy keeps it."""
    admin = Conn(any_server)
    assert admin.admin_line(b"create function xyz\n") == b"OK\r\n"
    expected = b"xy" if any_server.kind == "gearmand" else b"xyz"
    assert admin.admin_list(b"status\n") == expected + b"\t0\t0\t0\n.\n"


def test_raw_maxqueue_limits_submissions(any_server: RunningServer) -> None:
    """`maxqueue F 1` makes a second new job fail with QUEUE_ERROR while a joining submission passes."""
    admin = Conn(any_server)
    assert admin.admin_line(b"create function mq\r\n") == b"OK\r\n"
    assert admin.admin_line(b"maxqueue mq 1\n") == b"OK\r\n"
    client = Conn(any_server)
    handle = client.submit(b"mq", b"x", b"mq-1", ptype=SUBMIT_JOB_BG)
    assert (
        client.submit(b"mq", b"y", b"mq-1", ptype=SUBMIT_JOB_BG) == handle
    )  # joins: no limit check
    client.send(SUBMIT_JOB_BG, b"mq", b"mq-2", b"z")
    assert client.read_packet() == (ERROR, b"QUEUE_ERROR\0Job queue is full")
    assert admin.admin_line(b"maxqueue mq\n") == b"OK\r\n"
    assert client.submit(b"mq", b"z", b"mq-2", ptype=SUBMIT_JOB_BG) != handle
    assert admin.admin_list(b"status\n") == b"mq\t2\t0\t0\n.\n"


def test_raw_admin_pipelined_and_mixed_with_binary(any_server: RunningServer) -> None:
    """Pipelined admin commands answer in order, and a binary packet may follow on the same connection."""
    conn = Conn(any_server)
    reply = conn.admin_raw(b"version\ngetpid\nfoo\n", lambda b: b.count(b"\n") >= 3)
    lines = reply.split(b"\n")
    assert lines[0].startswith(b"OK ") and lines[1] == f"OK {any_server.process.pid}".encode()
    assert lines[2] == b"ERR UNKNOWN_COMMAND Unknown+server+commandfoo\r"
    conn.submit(b"mix", b"x", ptype=SUBMIT_JOB_BG)
    assert conn.admin_list(b"status\n") == b"mix\t1\t0\t0\n.\n"
    assert conn.admin_line(b"version\n").startswith(b"OK ")


def test_raw_shutdown(any_server: RunningServer) -> None:
    """`shutdown`: gearmand 1.1.20 does not know it; gearmanpy answers OK to a loopback peer and exits."""
    reply = Conn(any_server).admin_line(b"shutdown\n")
    if any_server.kind == "gearmand":
        assert reply == b"ERR UNKNOWN_COMMAND Unknown+server+commandshutdown\r\n"
        assert any_server.process.poll() is None
    else:
        assert reply == b"OK\r\n"
        any_server.process.wait(15)
        assert any_server.process.returncode == 0
