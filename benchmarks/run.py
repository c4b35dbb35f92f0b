#!/usr/bin/env python3
"""Benchmark gearmanpy and gearmand side by side in one run.

Each server runs pinned to CPU 0 (``taskset -c 0``) and the C load generator (``loadgen.c``,
compiled with gcc into a temporary directory at start-up) runs on CPU 1. Servers are interleaved
run by run, a fresh server is started for every scenario run, and the table shows medians over
``--runs`` runs. See ``benchmarks/README.rst`` for the scenarios and how to read the output.

Only the standard library is used, so any Python 3.11+ can run this file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
GEARMAND = "/usr/sbin/gearmand"
SERVER_CPU = "0"
LOAD_CPU = "1"

SCENARIOS = ("S1", "S2", "S3", "S4", "S5", "S6")
#: What runs without --scenarios: the timing scenarios and S4 (S6 waits out its timers).
DEFAULT_SCENARIOS = ("S1", "S2", "S3", "S4", "S5")

# Scenario sizes: (full, quick).
PARAMS: dict[str, dict[str, Any]] = {
    "full": {
        "S1_jobs": 300_000,
        "S2_jobs": 100_000,
        "S3_warmup": 1.0,
        "S3_measure": 5.0,
        "S4_jobs": 1_000_000,
        # gearmand's sqlite queue does ~700 jobs/s; the others get more jobs so that their run
        # lasts long enough to measure. Every S5 run also stops sending after S5_max_seconds.
        "S5_jobs_gearmand": 5_000,
        "S5_jobs_other": 200_000,
        "S5_max_seconds": 10.0,
        "S6_jobs": 1_000_000,
        # gearmanpy looks for a drained queue every 10 s (gearmanpy.server.memory).
        "S6_settle": 12.0,
    },
    "quick": {
        "S1_jobs": 50_000,
        "S2_jobs": 20_000,
        "S3_warmup": 0.3,
        "S3_measure": 1.0,
        "S4_jobs": 100_000,
        "S5_jobs_gearmand": 500,
        "S5_jobs_other": 20_000,
        "S5_max_seconds": 2.0,
        "S6_jobs": 100_000,
        "S6_settle": 12.0,
    },
}

# One table row per metric: (scenario, metric key, label, better, target gearmanpy/gearmand ratio).
ROWS = (
    ("S1", "rate", "S1 pipelined SUBMIT_JOB_BG, jobs/s", "higher", 1.0),  # issue 16: was 0.5
    ("S2", "rate", "S2 drain by 16 workers, jobs/s", "higher", 1.0),
    ("S3", "rate", "S3 closed loop 16c/8w, jobs/s", "higher", 1.0),
    ("S3", "p50_us", "S3 latency p50, us", "lower", None),
    ("S3", "p99_us", "S3 latency p99, us", "lower", 1.0),
    ("S4", "bytes_per_job", "S4 RSS bytes per queued job", "lower", 0.6),
    ("S5", "rate", "S5 SUBMIT_JOB_BG durable store, jobs/s", "higher", 50.0),
    ("S6", "rss_before_mib", "S6 RSS idle, MiB", "lower", None),
    ("S6", "rss_peak_mib", "S6 RSS, all jobs queued, MiB", "lower", None),
    ("S6", "rss_drained_mib", "S6 RSS 0.5 s after the drain, MiB", "lower", None),
    ("S6", "rss_settled_mib", "S6 RSS 12 s after the drain, MiB", "lower", None),
)


class BenchError(Exception):
    """A scenario run failed; the message says why."""


class StartError(BenchError):
    """A server did not start (or did not answer ECHO_REQ)."""


# ---------------------------------------------------------------- servers


@dataclass
class ServerSpec:
    """How to start one server.

    ``argv(port, tmpdir, db)`` returns the command (without the ``taskset`` prefix). ``db`` is a
    fresh sqlite path for S5 and ``None`` otherwise; ``argv`` returns ``None`` when the server
    has no durable variant.
    """

    name: str
    argv: Callable[[int, str, str | None], list[str] | None]
    env: dict[str, str] = field(default_factory=dict)


def gearmand_spec(path: str) -> ServerSpec:
    def argv(port: int, tmpdir: str, db: str | None) -> list[str]:
        cmd = [
            path,
            "-t",
            "1",
            "-L",
            "127.0.0.1",
            "-p",
            str(port),
            "-l",
            os.path.join(tmpdir, "gearmand.log"),
            "-P",
            os.path.join(tmpdir, "gearmand.pid"),
        ]
        if db is not None:
            cmd += ["-q", "libsqlite3", "--libsqlite3-db", db]
        return cmd

    return ServerSpec("gearmand", argv)


def gearmanpy_spec(python: str) -> ServerSpec:
    def argv(port: int, tmpdir: str, db: str | None) -> list[str]:
        queue = "memory" if db is None else f"sqlite:{db}"
        # ``twistd -n gearman``, as README.rst runs it: twistd (unlike ``python -m twisted``,
        # the ``twist`` runner) leaves the reactor to the plugin, which picks its own.
        twistd = os.path.join(os.path.dirname(python), "twistd")
        return [
            twistd,
            "--nodaemon",
            "--pidfile=",
            "--logfile",
            os.path.join(tmpdir, "twistd.log"),
            "gearman",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--queue",
            queue,
        ]

    # The checkout is not necessarily installed into the venv: put it first on the path so that
    # both the gearmanpy package and twisted/plugins/gearmanpy_plugin.py are found.
    pythonpath = REPO + (
        os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""
    )
    return ServerSpec("gearmanpy", argv, {"PYTHONPATH": pythonpath})


def custom_spec(name: str, template: str, durable_template: str | None) -> ServerSpec:
    def argv(port: int, tmpdir: str, db: str | None) -> list[str] | None:
        if db is None:
            return shlex.split(template.format(port=port, tmpdir=tmpdir, db=""))
        if durable_template is None:
            return None
        return shlex.split(durable_template.format(port=port, tmpdir=tmpdir, db=db))

    return ServerSpec(name, argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def echo_ok(port: int, timeout: float) -> bool:
    """Send one ECHO_REQ and check the ECHO_RES: the server is up and speaks Gearman."""
    body = b"gearman-bench"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"\0REQ" + struct.pack(">II", 16, len(body)) + body)
            want = 12 + len(body)
            got = b""
            while len(got) < want:
                chunk = s.recv(want - len(got))
                if not chunk:
                    return False
                got += chunk
            return got == b"\0RES" + struct.pack(">II", 17, len(body)) + body
    except OSError:
        return False


def tail(path: str, head: int = 6, lines: int = 12) -> str:
    """The first ``head`` and last ``lines`` lines of a log (errors come first, usage last)."""
    try:
        with open(path, "rb") as f:
            data = f.read(200_000)
    except OSError:
        return ""
    text = data.decode("utf-8", "replace").splitlines()
    if len(text) > head + lines:
        text = text[:head] + [f"[... {len(text) - head - lines} lines ...]"] + text[-lines:]
    return "\n".join(text)


def machine_busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine since boot, all CPUs (from /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:8]]
    except OSError:
        return float("nan")
    busy = sum(vals) - vals[3] - vals[4]  # minus idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def other_load(seconds: float = 1.0) -> float:
    """CPUs' worth of work the machine does while we do nothing (another job on the machine?)."""
    b0 = machine_busy_seconds()
    time.sleep(seconds)
    return (machine_busy_seconds() - b0) / seconds


class Server:
    """One server process, pinned to SERVER_CPU, in its own temporary directory."""

    def __init__(self, spec: ServerSpec, durable: bool, pin: bool, start_timeout: float) -> None:
        self.spec = spec
        self.tmpdir = tempfile.mkdtemp(prefix=f"bench-{spec.name}-")
        self.port = free_port()
        self.db = os.path.join(self.tmpdir, "queue.sqlite") if durable else None
        cmd = spec.argv(self.port, self.tmpdir, self.db)
        if cmd is None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            raise StartError(f"{spec.name} has no durable-store command (see --server-cmd-durable)")
        self.cmd = (["taskset", "-c", SERVER_CPU] if pin else []) + cmd
        self.log = os.path.join(self.tmpdir, "server-output.log")
        env = dict(os.environ, **spec.env)
        try:
            with open(self.log, "wb") as out:
                # taskset execs the server, so this pid is the server's own (for /proc/PID/status).
                self.proc = subprocess.Popen(
                    self.cmd,
                    cwd=self.tmpdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as e:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            raise StartError(f"cannot run {shlex.join(self.cmd)}: {e}") from e
        deadline = time.monotonic() + start_timeout
        while True:
            if self.proc.poll() is not None:
                msg = self._describe(f"exited with status {self.proc.returncode} during start-up")
                self.stop()
                raise StartError(msg)
            if echo_ok(self.port, 1.0):
                break
            if time.monotonic() > deadline:
                msg = self._describe(
                    f"did not answer ECHO_REQ on port {self.port} within {start_timeout:.0f}s"
                )
                self.stop()
                raise StartError(msg)
            time.sleep(0.05)

    def _describe(self, what: str) -> str:
        text = f"{self.spec.name} {what}\n  command: {shlex.join(self.cmd)}"
        out = tail(self.log)
        if out:
            text += "\n  output:\n    " + out.replace("\n", "\n    ")
        return text

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise BenchError("no VmRSS line in /proc/PID/status")

    def cpu_split(self) -> tuple[float, float]:
        """(utime, stime) of the whole server process (all threads), in seconds."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan"), float("nan")
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        shutil.rmtree(self.tmpdir, ignore_errors=True)


# ---------------------------------------------------------------- load generator


def compile_loadgen(workdir: str) -> str:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        sys.exit("run.py: gcc is needed to build benchmarks/loadgen.c")
    exe = os.path.join(workdir, "loadgen")
    src = os.path.join(HERE, "loadgen.c")
    res = subprocess.run([gcc, "-O2", "-Wall", "-o", exe, src], capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"run.py: compiling {src} failed:\n{res.stderr}")
    return exe


class Loadgen:
    def __init__(self, exe: str, pin: bool) -> None:
        self.exe = exe
        self.prefix = ["taskset", "-c", LOAD_CPU] if pin else []

    def run(self, server: Server, *args: object, timeout: float = 900) -> dict[str, Any]:
        cmd = [*self.prefix, self.exe, str(args[0]), str(server.port), *(str(a) for a in args[1:])]
        user0, sys0 = server.cpu_split()
        busy0 = machine_busy_seconds()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise BenchError(
                f"load generator timed out after {timeout:.0f}s: {shlex.join(cmd)}"
            ) from e
        wall = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy = machine_busy_seconds() - busy0
        user1, sys1 = server.cpu_split()
        server_cpu = (user1 - user0) + (sys1 - sys0)
        lg_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        out: dict[str, Any] = json.loads(lines[-1]) if lines else {}
        if res.returncode != 0 or "error" in out or not lines:
            why = out.get("error") or res.stderr.strip() or f"exit status {res.returncode}"
            if not server.alive():
                why += f" (the server died: exit status {server.proc.returncode})"
            raise BenchError(f"load generator failed: {why}")
        # Over the whole invocation (S2's untimed pre-load included): server CPU as a rough
        # saturation check, and whatever else the machine did meanwhile (other people's jobs).
        out["server_cpu"] = server_cpu / wall if wall > 0 else 0.0
        out["server_user_s"] = user1 - user0
        out["server_sys_s"] = sys1 - sys0
        out["other_cpu"] = max(0.0, busy - server_cpu - lg_cpu) / wall if wall > 0 else 0.0
        return out


# ---------------------------------------------------------------- scenarios


def scenario_run(name: str, server: Server, lg: Loadgen, p: dict[str, Any]) -> dict[str, Any]:
    """Run one scenario against a freshly started server; return its metrics."""
    extra: dict[str, Any] = {}
    if name == "S1":
        r = lg.run(server, "submit", p["S1_jobs"], 4, 100)
    elif name == "S2":
        r = lg.run(server, "drain", p["S2_jobs"], 16)
    elif name == "S3":
        r = lg.run(server, "closed", 16, 8, p["S3_warmup"], p["S3_measure"])
        extra = {k: r[k] for k in ("p50_us", "p90_us", "p99_us", "max_us")}
        # Server CPU per job, split into user and kernel time: a steady closed loop, so the
        # jobs of the whole run are about the measured rate times warm-up plus measurement.
        jobs = r["rate"] * (p["S3_warmup"] + p["S3_measure"])
        if jobs > 0:
            extra["server_user_us"] = 1e6 * r["server_user_s"] / jobs
            extra["server_sys_us"] = 1e6 * r["server_sys_s"] / jobs
    elif name == "S4":
        time.sleep(0.2)
        before = server.rss_bytes()
        r = lg.run(server, "submit", p["S4_jobs"], 4, 100)
        time.sleep(0.5)
        if not server.alive():
            raise BenchError("server died after the load")
        after = server.rss_bytes()
        extra = {
            "bytes_per_job": (after - before) / r["jobs"],
            "rss_before": before,
            "rss_after": after,
        }
    elif name == "S6":
        r, extra = memory_run(server, lg, p)
    elif name == "S5":
        jobs = p["S5_jobs_gearmand"] if server.spec.name == "gearmand" else p["S5_jobs_other"]
        r = lg.run(server, "submit", jobs, 4, 100, p["S5_max_seconds"])
    else:
        raise ValueError(name)
    expected = {"S1": p["S1_jobs"], "S2": p["S2_jobs"], "S4": p["S4_jobs"], "S6": p["S6_jobs"]}.get(
        name
    )
    if expected is not None and r["jobs"] != expected:
        raise BenchError(f"{r['jobs']} jobs done where {expected} were submitted")
    return {
        "rate": r["rate"],
        "jobs": r["jobs"],
        "elapsed": r["elapsed"],
        **extra,
        "loadgen_cpu": r["cpu"],
        "loadgen_user": r["cpu_user"],
        "loadgen_sys": r["cpu_sys"],
        "server_cpu": r["server_cpu"],
        "other_cpu": r["other_cpu"],
    }


def memory_run(
    server: Server, lg: Loadgen, p: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """S6: RSS idle, with S6_jobs queued, just after workers drained them, and S6_settle
    seconds after that (time for a server to give memory back); the submission's metrics."""
    mib = 1 / 2**20
    time.sleep(0.2)
    before = server.rss_bytes()
    r = lg.run(server, "submit", p["S6_jobs"], 4, 100)
    time.sleep(0.5)
    peak = server.rss_bytes()
    lg.run(server, "drain", p["S6_jobs"], 16, 0)
    time.sleep(0.5)
    drained = server.rss_bytes()
    time.sleep(p["S6_settle"] - 0.5)
    if not server.alive():
        raise BenchError("server died after the load")
    settled = server.rss_bytes()
    return r, {
        "rss_before_mib": before * mib,
        "rss_peak_mib": peak * mib,
        "rss_drained_mib": drained * mib,
        "rss_settled_mib": settled * mib,
    }


# ---------------------------------------------------------------- reporting


def summarise(
    results: list[dict[str, Any]], servers: list[str], scenarios: list[str]
) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for scen in scenarios:
        summary[scen] = {}
        for srv in servers:
            runs = [r for r in results if r["scenario"] == scen and r["server"] == srv]
            ok = [r["metrics"] for r in runs if r["ok"]]
            entry: dict[str, Any] = {
                "runs": len(runs),
                "ok": len(ok),
                "errors": [r["error"] for r in runs if not r["ok"]],
            }
            for key in (
                "rate",
                "p50_us",
                "p99_us",
                "bytes_per_job",
                "rss_before_mib",
                "rss_peak_mib",
                "rss_drained_mib",
                "rss_settled_mib",
                "loadgen_cpu",
                "server_cpu",
                "server_user_us",
                "server_sys_us",
                "other_cpu",
            ):
                vals = [m[key] for m in ok if key in m]
                if vals:
                    entry[key] = {
                        "median": statistics.median(vals),
                        "min": min(vals),
                        "max": max(vals),
                    }
            summary[scen][srv] = entry
    return summary


def fmt_value(key: str, v: float | None) -> str:
    if v is None:
        return "-"
    if key == "rate":
        return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"
    if key.endswith("_mib"):
        return f"{v:,.1f}"
    return f"{v:,.0f}"


def render_table(summary: dict[str, Any], servers: list[str], baseline: str | None) -> str:
    others = [s for s in servers if s != baseline]
    head = ["scenario"] + [f"{s} median" for s in servers]
    if baseline:
        head += [f"{s}/{baseline}" for s in others]
    show_target = baseline == "gearmand" and "gearmanpy" in others
    if show_target:
        head.append("target")
    head.append("loadgen CPU")
    head.append("server CPU")
    rows = [head]
    for scen, key, label, better, target in ROWS:
        if scen not in summary:
            continue
        row = [label]
        med: dict[str, float | None] = {}
        for srv in servers:
            e = summary[scen][srv]
            m = e.get(key, {}).get("median")
            med[srv] = m
            cell = fmt_value(key, m)
            if e["runs"] and e["ok"] < e["runs"]:
                cell = "FAILED" if e["ok"] == 0 else f"{cell} ({e['ok']}/{e['runs']} ok)"
            elif not e["runs"]:
                cell = "-"
            row.append(cell)
        if baseline:
            for srv in others:
                b, o = med.get(baseline), med.get(srv)
                row.append(f"{o / b:.2f}x" if b and o is not None else "-")
        if show_target:
            if target is None:
                row.append("")
            else:
                b, o = med.get("gearmand"), med.get("gearmanpy")
                sign = ">=" if better == "higher" else "<="
                verdict = ""
                if b and o is not None:
                    ok = o / b >= target if better == "higher" else o / b <= target
                    verdict = " ok" if ok else " MISS"
                row.append(f"{sign} {target:g}x{verdict}")
        for what in ("loadgen_cpu", "server_cpu"):
            cpus = []
            for srv in servers:
                c = summary[scen][srv].get(what, {}).get("median")
                cpus.append("-" if c is None else f"{100 * c:.0f}%")
            row.append(" / ".join(cpus))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    out = []
    for n, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


# ---------------------------------------------------------------- main


def parse_named(values: list[str], option: str) -> dict[str, str]:
    named = {}
    for v in values:
        name, sep, template = v.partition("=")
        if not sep or not name or not template:
            sys.exit(f"run.py: {option} takes NAME=COMMAND, got {v!r}")
        named[name] = template
    return named


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Benchmark gearmanpy against gearmand (see benchmarks/README.rst).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--runs",
        type=int,
        default=None,
        help="runs per scenario and server (default 5; 1 with --quick)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="small sizes for a smoke run (well under a minute per server)",
    )
    ap.add_argument(
        "--scenarios",
        default=",".join(DEFAULT_SCENARIOS),
        help="comma-separated subset of S1..S6 (default S1..S5)",
    )
    ap.add_argument(
        "--servers",
        default=None,
        help="comma-separated: gearmand, gearmanpy and any --server-cmd names "
        "(default: gearmand,gearmanpy plus every --server-cmd)",
    )
    ap.add_argument("--json", metavar="FILE", help="also write all runs and the summary as JSON")
    ap.add_argument(
        "--server-cmd",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="benchmark any server: COMMAND is split like a shell line after substituting "
        "{port} and {tmpdir}; it must listen on 127.0.0.1:{port}. Repeatable",
    )
    ap.add_argument(
        "--server-cmd-durable",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="the S5 (durable store) command for a --server-cmd NAME; {db} is a fresh sqlite path",
    )
    ap.add_argument(
        "--baseline",
        default="gearmand",
        help="server the ratios are relative to (default gearmand)",
    )
    ap.add_argument("--gearmand", default=GEARMAND, help=f"gearmand binary (default {GEARMAND})")
    ap.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter for gearmanpy (default: the one running this script)",
    )
    ap.add_argument(
        "--start-timeout", type=float, default=30.0, help="seconds to wait for a server to answer"
    )
    ap.add_argument(
        "--no-pin", action="store_true", help="do not use taskset (results then mean little)"
    )
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each scenario run, wait up to SECONDS for the machine to be idle "
        "(other load < 0.3 CPU over 1 s); default 0: don't wait",
    )
    args = ap.parse_args(argv)

    mode = "quick" if args.quick else "full"
    params = PARAMS[mode]
    runs = args.runs if args.runs is not None else (1 if args.quick else 5)
    scenarios = [s.strip().upper() for s in args.scenarios.split(",") if s.strip()]
    bad = [s for s in scenarios if s not in SCENARIOS]
    if bad:
        sys.exit(
            f"run.py: unknown scenario(s) {', '.join(bad)}; choose from {', '.join(SCENARIOS)}"
        )

    custom = parse_named(args.server_cmd, "--server-cmd")
    durable = parse_named(args.server_cmd_durable, "--server-cmd-durable")
    for name in durable:
        if name not in custom:
            sys.exit(f"run.py: --server-cmd-durable {name}=... needs a --server-cmd {name}=...")
    specs: dict[str, ServerSpec] = {
        "gearmand": gearmand_spec(args.gearmand),
        "gearmanpy": gearmanpy_spec(args.python),
    }
    for name, template in custom.items():
        specs[name] = custom_spec(name, template, durable.get(name))
    servers = (
        [s.strip() for s in args.servers.split(",") if s.strip()]
        if args.servers
        else ["gearmand", "gearmanpy", *[n for n in custom if n not in ("gearmand", "gearmanpy")]]
    )
    unknown = [s for s in servers if s not in specs]
    if unknown:
        sys.exit(
            f"run.py: unknown server(s) {', '.join(unknown)}; "
            "define them with --server-cmd NAME=COMMAND"
        )
    baseline = args.baseline if args.baseline in servers else None

    pin = not args.no_pin
    if pin and (shutil.which("taskset") is None or (os.cpu_count() or 1) < 2):
        print(
            "run.py: warning: taskset or a second CPU is missing; running unpinned", file=sys.stderr
        )
        pin = False

    background = other_load(1.0)
    if background > 0.15:
        print(
            f"run.py: warning: the machine is already busy ({100 * background:.0f}% of a CPU) "
            "before the benchmark starts; expect noisy numbers",
            file=sys.stderr,
        )
    workdir = tempfile.mkdtemp(prefix="gearman-bench-")
    try:
        lg = Loadgen(compile_loadgen(workdir), pin)
        results: list[dict[str, Any]] = []
        # A server command that failed to start once is not retried: (server, durable) -> message.
        start_failures: dict[tuple[str, bool], str] = {}
        started = time.monotonic()
        for run in range(runs):
            order = servers if run % 2 == 0 else list(reversed(servers))
            for scen in scenarios:
                for srv in order:
                    is_durable = scen == "S5"
                    rec: dict[str, Any] = {"run": run + 1, "scenario": scen, "server": srv}
                    key = (srv, is_durable)
                    if key in start_failures:
                        rec.update(
                            ok=False,
                            error="not started: " + start_failures[key].splitlines()[0],
                            seconds=0.0,
                        )
                        results.append(rec)
                        progress(rec, run + 1, runs)
                        continue
                    if args.wait_idle > 0:
                        rec["load_before"] = wait_idle(args.wait_idle)
                    t0 = time.monotonic()
                    server = None
                    try:
                        server = Server(specs[srv], is_durable, pin, args.start_timeout)
                        rec["command"] = shlex.join(server.cmd)
                        rec["metrics"] = scenario_run(scen, server, lg, params)
                        rec["ok"] = True
                    except StartError as e:
                        start_failures[key] = str(e)
                        rec.update(ok=False, error=str(e))
                    except BenchError as e:
                        out = tail(server.log) if server is not None else ""
                        if out:
                            e = BenchError(
                                f"{e}\n  server output:\n    " + out.replace("\n", "\n    ")
                            )
                        rec.update(ok=False, error=str(e))
                    finally:
                        if server is not None:
                            server.stop()
                    rec["seconds"] = round(time.monotonic() - t0, 2)
                    results.append(rec)
                    progress(rec, run + 1, runs)
        elapsed = time.monotonic() - started
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    summary = summarise(results, servers, scenarios)
    print()
    print(
        f"gearman benchmarks: {runs} run(s) per cell, {mode} sizes, medians; "
        f"servers on CPU {SERVER_CPU}, loadgen on CPU {LOAD_CPU}{'' if pin else ' (NOT pinned)'}; "
        f"{elapsed:.0f}s"
    )
    print(render_table(summary, servers, baseline))
    print(
        "loadgen CPU: the load generator's (user+sys)/wall over the timed phase; near 100% would\n"
        "mean it, not the server, was the limit. server CPU: the server's CPU over the whole\n"
        "load-generator run (S2 includes the untimed pre-load); near 100% means it was saturated."
    )
    if "S3" in summary:
        split = []
        for srv in servers:
            m = summary["S3"][srv]
            if "server_user_us" in m and "server_sys_us" in m:
                user, kernel = m["server_user_us"]["median"], m["server_sys_us"]["median"]
                split.append(f"{srv} {user:.1f} / {kernel:.1f}")
        if split:
            print(
                "S3 server CPU per job, user / kernel us (medians): " + ", ".join(split) + ".\n"
                "The kernel part is mostly loopback sends and the wake-ups they cause."
            )
    # S5 is left out: its fsyncs keep kernel threads (jbd2, kworkers) busy, which counts as "other".
    others = [r["metrics"]["other_cpu"] for r in results if r["ok"] and r["scenario"] != "S5"]
    if others:
        worst = max(others)
        print(
            "Other load on the machine during the runs (S5 excluded): "
            f"median {100 * statistics.median(others):.0f}%, "
            f"max {100 * worst:.0f}% of a CPU (before the start: {100 * background:.0f}%)."
            + (" WARNING: something else was running; numbers are noisy." if worst > 0.25 else "")
        )
    for key, msg in start_failures.items():
        print(f"\n*** {key[0]} FAILED TO START{' (durable store, S5)' if key[1] else ''}:\n{msg}")
    errors = [
        r
        for r in results
        if not r["ok"]
        and not r["error"].startswith("not started")
        and (r["server"], r["scenario"] == "S5") not in start_failures
    ]
    for r in errors:
        print(f"\n*** {r['server']} {r['scenario']} run {r['run']} failed: {r['error']}")

    if args.json:
        doc = {
            "meta": {
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "host": platform.node(),
                "cpus": os.cpu_count(),
                "mode": mode,
                "runs": runs,
                "params": params,
                "pinned": pin,
                "servers": servers,
                "baseline": baseline,
                "gearmand_version": gearmand_version(args.gearmand)
                if "gearmand" in servers
                else None,
                "cpu_model": cpu_model(),
                "background_load_before": background,
            },
            "summary": summary,
            "results": results,
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        print(f"\nJSON written to {args.json}")
    any_ok = any(r["ok"] for r in results)
    return 0 if any_ok and not errors and not start_failures else 1


def progress(rec: dict[str, Any], run: int, runs: int) -> None:
    if rec["ok"]:
        m = rec["metrics"]
        if "bytes_per_job" in m:
            what = f"{m['bytes_per_job']:,.0f} B/job"
        elif "rss_peak_mib" in m:
            what = "RSS MiB idle / queued / drained / settled " + " / ".join(
                f"{m[k]:,.1f}"
                for k in ("rss_before_mib", "rss_peak_mib", "rss_drained_mib", "rss_settled_mib")
            )
        else:
            what = f"{m['rate']:,.0f} jobs/s"
            if "p99_us" in m:
                what += f", p50 {m['p50_us']:,.0f} / p99 {m['p99_us']:,.0f} us"
        what += (
            f", loadgen CPU {100 * m['loadgen_cpu']:.0f}%, "
            f"server CPU {100 * m['server_cpu']:.0f}%, "
            f"other {100 * m['other_cpu']:.0f}%"
        )
    else:
        what = "FAILED: " + rec["error"].splitlines()[0]
    print(
        f"[run {run}/{runs}] {rec['scenario']} {rec['server']:<10} {what} ({rec['seconds']:.1f}s)",
        file=sys.stderr,
        flush=True,
    )


def wait_idle(limit: float, threshold: float = 0.3) -> float:
    """Wait up to ``limit`` s for other load below ``threshold`` CPUs; return the last load."""
    deadline = time.monotonic() + limit
    while True:
        load = other_load(1.0)
        if load < threshold or time.monotonic() >= deadline:
            return load


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def gearmand_version(path: str) -> str | None:
    try:
        return (
            subprocess.run(
                [path, "--version"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


if __name__ == "__main__":
    sys.exit(main())
