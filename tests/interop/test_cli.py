"""The ``gearmanpy`` command against real servers, gearmand's and ours: admin and top read
both, submit and the workers carry real jobs (real ``gearman`` clients included), SIGTERM
drains a worker mid-job, and the progress bar and top are checked in a real terminal
(tmux, its pane captured as a person sees it)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.conftest import RunningServer, require_tool, start_gearmanpy
from tests.interop.test_server_tools import function_status, wait_for_workers
from tests.procs import free_port, stop_process, wait_for_port, wait_until

pytestmark = pytest.mark.interop

SCRIPTS = str(Path(__file__).parent / "scripts")
ROOT = str(Path(__file__).parents[2])
GEARMANPY = [sys.executable, "-m", "gearmanpy"]


def env() -> dict[str, str]:
    """The environment: this checkout first on the path, no GEARMAN_SERVERS of the caller."""
    e = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    e.pop("GEARMAN_SERVERS", None)
    return e


def gp(
    *args: str, input: bytes | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[bytes]:
    """Run ``gearmanpy ARGS`` to completion."""
    return subprocess.run(
        [*GEARMANPY, *args], input=input, capture_output=True, timeout=timeout, env=env()
    )


def gp_all(
    *calls: tuple[list[str], bytes | None], timeout: float = 30.0
) -> list[subprocess.CompletedProcess[bytes]]:
    """Run several ``gearmanpy`` commands at once (each ``(args, stdin)``); their results."""
    procs = [
        subprocess.Popen(
            [*GEARMANPY, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env(),
        )
        for args, _ in calls
    ]
    results = []
    for proc, (_, data) in zip(procs, calls, strict=True):
        out, err = proc.communicate(data or b"", timeout=timeout)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def start_worker(server: RunningServer, *args: str) -> subprocess.Popen[bytes]:
    """Start ``gearmanpy worker -s SERVER ARGS`` in the scripts directory."""
    return subprocess.Popen(
        [*GEARMANPY, "worker", "-s", server.address, *args],
        cwd=SCRIPTS,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Worker processes a test starts, stopped at its end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        stop_process(proc, signal.SIGKILL)


ADMIN_SCRIPT = """
import json, sys
from twisted.internet import task
from gearmanpy.admin import AdminClient
from gearmanpy.errors import AdminError

async def main(reactor):
    admin = AdminClient(sys.argv[1])
    out = {}
    await admin.create_function("made")
    out["status"] = [[r.name, r.total, r.running, r.workers] for r in await admin.status()]
    out["prio"] = [[r.name, r.high, r.normal, r.low] for r in await admin.priority_status()]
    out["jobs"] = [[r.handle, r.ignored] for r in await admin.show_jobs()]
    out["uniques"] = sorted(await admin.show_unique_jobs())
    out["workers"] = [[w.ip, w.client_id, list(w.functions)] for w in await admin.workers()]
    out["version"] = await admin.version()
    out["pid"] = await admin.getpid()
    out["verbose"] = await admin.verbose()
    await admin.maxqueue("queued", 5)
    try:
        await admin.cancel_job("H:nope:1")
    except AdminError as e:
        out["cancel"] = str(e)
    try:
        await admin.drop_function("nothing-here")
    except AdminError as e:
        out["drop"] = str(e)
    await admin.cancel_job(out["jobs"][0][0])
    await admin.close()
    print(json.dumps(out))

task.react(main)
"""


def test_admin_api_reads_both_servers(any_server: RunningServer) -> None:
    """The Python admin API's every gearadmin command against gearmand and ours."""
    gearman = require_tool("gearman")
    for unique in ("u0", "u1"):
        base = [gearman, "-h", "127.0.0.1", "-p", str(any_server.port), "-b", "-f", "queued"]
        subprocess.run([*base, "-u", unique, "x"], check=True, capture_output=True)
    done = subprocess.run(
        [sys.executable, "-c", ADMIN_SCRIPT, any_server.address],
        capture_output=True,
        timeout=30,
        env=env(),
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert ["queued", 2, 0, 0] in out["status"] and ["made", 0, 0, 0] in out["status"]
    assert ["queued", 0, 2, 0] in out["prio"]
    assert len(out["jobs"]) == 2 and out["uniques"] == ["u0", "u1"]
    assert out["workers"] and all(w[0] == "127.0.0.1" for w in out["workers"])
    assert out["version"].startswith("1.1.20") and out["pid"] == any_server.process.pid
    assert out["verbose"] in {"ERROR", "WARNING", "NOTICE", "INFO", "DEBUG"}
    assert out["cancel"] == "UNKNOWN_JOB"
    assert out["drop"] == "function not found"


def test_admin_command_line(any_server: RunningServer) -> None:
    """``gearmanpy admin``: an aligned table, gearmand's raw lines, JSON, one-line errors."""
    s = ["-s", any_server.address]
    handle = gp("submit", *s, "-b", "queued", "x")
    assert handle.returncode == 0, handle.stderr
    table = gp("admin", *s, "status").stdout.decode().splitlines()
    assert table[0].split() == ["FUNCTION", "QUEUED", "RUNNING", "WORKERS"]
    assert ["queued", "1", "0", "0"] in [line.split() for line in table]
    raw, jobs_json, unknown = gp_all(
        (["admin", *s, "--raw", "status"], None),
        (["admin", *s, "--json", "jobs"], None),
        (["admin", *s, "cancel", "H:nope:1"], None),
    )
    assert raw.stdout.decode().splitlines() == ["queued\t1\t0\t0", "."]
    jobs = json.loads(jobs_json.stdout)
    assert [j["handle"] for j in jobs] == [handle.stdout.decode().strip()]
    assert (unknown.returncode, unknown.stderr) == (1, b"gearmanpy: error: UNKNOWN_JOB\n")


def test_unreachable_server_is_one_line() -> None:
    """Nothing listens: each command says so in one line and exits 1."""
    s = ["-s", f"127.0.0.1:{free_port()}"]
    calls = (["submit", *s, "f", "x"], ["admin", *s, "status"], ["top", *s, "--once"])
    for args, done in zip(calls, gp_all(*((c, None) for c in calls)), strict=True):
        assert done.returncode == 1, args
        lines = done.stderr.decode().splitlines() + done.stdout.decode().splitlines()
        errors = [line for line in lines if "refused" in line or "reachable" in line]
        assert errors and b"Traceback" not in done.stderr, (args, done)


def test_command_worker_serves_gearman_clients(
    any_server: RunningServer, workers: list[subprocess.Popen[bytes]]
) -> None:
    """``gearmanpy worker -f reverse -- rev`` answers Debian's ``gearman`` clients, two at
    once; a command that exits non-zero fails the job (WORK_FAIL)."""
    gearman = require_tool("gearman")
    workers.append(start_worker(any_server, "-f", "reverse", "-c", "2", "--", "rev"))
    workers.append(start_worker(any_server, "-f", "false", "--", "false"))
    wait_for_workers(any_server, "reverse")
    wait_for_workers(any_server, "false")
    argv = [gearman, "-h", "127.0.0.1", "-p", str(any_server.port), "-f", "reverse"]
    clients = [
        subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(2)
    ]
    outputs = [c.communicate(f"hello{i}\n".encode(), timeout=20)[0] for i, c in enumerate(clients)]
    assert outputs == [b"0olleh\n", b"1olleh\n"]
    ours = gp("submit", "-s", any_server.address, "reverse", input=b"abc\n")
    assert (ours.returncode, ours.stdout) == (0, b"cba\n")
    failed = gp("submit", "-s", any_server.address, "false", "x")
    assert failed.returncode == 1
    assert failed.stderr == b"gearmanpy: error: the job failed (WORK_FAIL)\n"
    worker = workers[0]
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0


def test_submit_streams_and_reports(
    any_server: RunningServer, workers: list[subprocess.Popen[bytes]]
) -> None:
    """WORK_DATA reaches stdout as it comes, then the result; off a terminal WORK_STATUS and
    warnings are plain lines on stderr; failures, exceptions and timeouts exit non-zero
    with the reason; --lines and --background; payloads are binary-safe."""
    names = ["echo", "stream", "fail", "boom"]
    workers.append(start_worker(any_server, "-c", "4", *(f"cli_jobs:{n}" for n in names)))
    for name in names:
        wait_for_workers(any_server, name)
    s = ["-s", any_server.address]
    binary = bytes(range(256)) * 4
    echoed, streamed, failed, boom, late, lines, handle = gp_all(
        (["submit", *s, "echo"], binary),
        (["submit", *s, "stream", "x"], None),
        (["submit", *s, "fail", "x"], None),
        (["submit", *s, "boom", "x"], None),
        (["submit", *s, "--timeout", "0.3", "nobody-in-time", "x"], None),
        (["submit", *s, "--lines", "echo"], b"a\nbb\nccc\n"),
        (["submit", *s, "--background", "--priority", "low", "nobody-serves-this", "x"], None),
    )
    assert (echoed.returncode, echoed.stdout) == (0, binary)
    assert (streamed.returncode, streamed.stdout) == (0, b"part1,part2,end")
    assert streamed.stderr.decode().splitlines() == ["status 1/2", "warning: careful", "status 2/2"]
    assert (failed.returncode, failed.stderr) == (
        1,
        b"gearmanpy: error: the job failed (WORK_FAIL)\n",
    )
    assert boom.returncode == 1
    assert boom.stderr.startswith(b"gearmanpy: error: the job raised an exception: KeyError")
    assert late.returncode == 3 and late.stderr.startswith(b"gearmanpy: error: timed out")
    assert (lines.returncode, lines.stdout) == (0, b"a\nbb\nccc\n")
    assert handle.returncode == 0 and handle.stdout.startswith(b"H:")
    assert function_status(any_server, "nobody-serves-this")[0] == 1


def test_worker_runner_drains_on_sigterm(
    any_server: RunningServer, workers: list[subprocess.Popen[bytes]]
) -> None:
    """SIGTERM mid-job: the runner takes no new job, delivers the running job's result to
    its client, and exits 0."""
    worker = start_worker(any_server, "--grace", "10", "cli_jobs:slow")
    workers.append(worker)
    wait_for_workers(any_server, "slow")
    client = subprocess.Popen(
        [*GEARMANPY, "submit", "-s", any_server.address, "slow", "abc"],
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_until(lambda: function_status(any_server, "slow")[1] == 1, what="the job running")
    worker.send_signal(signal.SIGTERM)
    out, err = client.communicate(timeout=20)
    assert (client.returncode, out) == (0, b"done:abc"), err
    assert worker.wait(15) == 0
    assert function_status(any_server, "slow") == (0, 0, 0)


def test_server_subcommand(tmp_path: Path) -> None:
    """``gearmanpy server`` runs twistd gearman in the foreground, taking its options."""
    port = free_port()
    proc = subprocess.Popen(
        [*GEARMANPY, "server", "--listen", f"tcp:{port}:interface=127.0.0.1", "--queue", "memory"],
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        assert gp("admin", "-s", f"127.0.0.1:{port}", "version").returncode == 0
        assert not (tmp_path / "twistd.pid").exists()
    finally:
        stop_process(proc)
    assert proc.returncode == -signal.SIGTERM  # twistd ends by the signal that stopped it


class Tmux:
    """A private tmux server with one window, to run a command in a real terminal."""

    def __init__(self, tmp_path: Path) -> None:
        """Use a socket of our own, so nothing else's tmux is touched."""
        self.socket = str(tmp_path / "tmux.sock")
        self.tmux = require_tool("tmux")

    def run(self, command: list[str], cwd: str) -> None:
        """Start ``command`` in a 100x30 window; the window stays open after it exits."""
        line = " ".join(shlex.quote(c) for c in command)
        wrapped = f"cd {shlex.quote(cwd)} && {line}; echo EXIT=$?; sleep 60"
        subprocess.run(
            [
                self.tmux,
                "-S",
                self.socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "100",
                "-y",
                "30",
                "-e",
                f"PYTHONPATH={env()['PYTHONPATH']}",
                wrapped,
            ],
            check=True,
        )

    def screen(self) -> str:
        """What the window shows now."""
        return subprocess.run(
            [self.tmux, "-S", self.socket, "capture-pane", "-p"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def keys(self, *keys: str) -> None:
        """Type keys into the window."""
        subprocess.run([self.tmux, "-S", self.socket, "send-keys", *keys], check=True)

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        """Wait until the window shows ``text``; return the screen."""
        return wait_until(
            lambda: (lambda s: s if text in s else None)(self.screen()),
            timeout,
            f"{text!r} on the screen",
            interval=0.1,
        )

    def close(self) -> None:
        """Stop the tmux server and everything in it."""
        subprocess.run([self.tmux, "-S", self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    """A tmux server for one test."""
    t = Tmux(tmp_path)
    yield t
    t.close()


def test_progress_bar_in_a_terminal(
    tmp_path: Path, tmux: Tmux, workers: list[subprocess.Popen[bytes]]
) -> None:
    """On a terminal WORK_STATUS is a bar that ends full, the warning is above it, and the
    streamed data and the result are on stdout."""
    server = start_gearmanpy(workdir=tmp_path / "server")
    try:
        workers.append(start_worker(server, "cli_jobs:stream"))
        wait_for_workers(server, "stream")
        tmux.run([*GEARMANPY, "submit", "-s", server.address, "stream", "x"], cwd=ROOT)
        screen = tmux.wait_for("EXIT=")
    finally:
        server.stop()
    lines = [line.rstrip() for line in screen.splitlines() if line.strip()]
    assert "warning: careful" in lines
    bar = next(line for line in lines if line.startswith("stream "))
    assert bar.endswith("2/2 100%") and "━" in bar
    # On a terminal the streamed data stays above the bar, the result below it.
    assert lines[:4] == ["part1,", "warning: careful", "part2,", bar]
    assert lines[4] == "endEXIT=0"


def test_top_in_a_terminal_against_gearmand(tmp_path: Path, tmux: Tmux) -> None:
    """``gearmanpy top`` on gearmand: the rows, a refresh that shows a new job, ``s``
    changes the sort, ``q`` quits with status 0."""
    from tests.interop.conftest import start_gearmand

    server = start_gearmand(workdir=tmp_path / "server")
    try:
        gp("submit", "-s", server.address, "-b", "alpha", "x")
        tmux.run([*GEARMANPY, "top", "-s", server.address, "-i", "0.2"], cwd=ROOT)
        screen = tmux.wait_for("alpha")
        assert "FUNCTION  QUEUED  RUNNING  WORKERS  CHANGE/s" in screen
        gp("submit", "-s", server.address, "-b", "beta", "x")
        screen = tmux.wait_for("beta")
        rows = [line.split() for line in screen.splitlines()]
        assert ["alpha", "1", "0", "0"] == next(r for r in rows if r and r[0] == "alpha")[:4]
        tmux.keys("s")
        tmux.wait_for("sort: running")
        tmux.keys("q")
        assert "EXIT=0" in tmux.wait_for("EXIT=")
    finally:
        server.stop()
    time.sleep(0)


def test_readme_quick_start(tmp_path: Path, workers: list[subprocess.Popen[bytes]]) -> None:
    """README's quick start runs as written: a server, a ``rev`` worker, a submission that
    prints olleh, top; only the server's address differs (``--listen`` and
    ``GEARMAN_SERVERS``, which every other command reads)."""
    from tests.readme import code_block_after

    block = code_block_after("with which the quick start is")
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]
    assert lines == [
        "gearmanpy server",
        "gearmanpy worker -f reverse -- rev",
        "echo hello | gearmanpy submit reverse",
        "gearmanpy top",
    ]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "gearmanpy"  # the console script pip installs, as a shim
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m gearmanpy "$@"\n')
    shim.chmod(0o755)
    port = free_port()
    shell_env = dict(
        env(),
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        GEARMAN_SERVERS=f"127.0.0.1:{port}",
    )

    def start(line: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["sh", "-c", line],
            cwd=tmp_path,
            env=shell_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        workers.append(proc)
        return proc

    server = start(f"exec {lines[0]} --listen tcp:{port}:interface=127.0.0.1 --queue memory")
    wait_for_port(port, server)
    running = RunningServer("gearmanpy", port, server, str(tmp_path))
    start(f"exec {lines[1]}")
    wait_for_workers(running, "reverse")
    submitted = start(lines[2])
    out, err = submitted.communicate(timeout=30)
    assert (submitted.returncode, out) == (0, b"olleh\n"), err
    top = start(lines[3])  # off a terminal: one table
    out, err = top.communicate(timeout=30)
    assert top.returncode == 0, err
    assert ["reverse", "0", "0", "1"] in [line.split()[:4] for line in out.decode().splitlines()]
