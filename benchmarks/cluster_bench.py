"""Measure ``--cluster`` (issue 17): background jobs submitted on one node and run by workers
on another, with one and with two nodes, against the single-node PostgreSQL store on the same
database server.

For each setup it starts a throwaway PostgreSQL (tests/dbservers.py) once, a fresh database
per setup, and ``twistd -n gearman`` nodes on it:

* ``single``: one node, ``--queue postgresql://...`` without ``--cluster``;
* ``cluster-1``: one ``--cluster`` node: submissions and workers on it;
* ``cluster-2``: two ``--cluster`` nodes: submissions on A, workers only on B.

and measures, with the C load generator of run.py (``loadgen.c``):

* ``submit``: JOB_CREATED per second (pipelined SUBMIT_JOB_BG, 4 connections);
* ``drain``: jobs per second run by ``--workers`` workers once ``--jobs`` are queued;
* ``end-to-end``: jobs per second with the workers running while the jobs are submitted;
* ``wake``: for ``--probes`` jobs one at a time, the time from SUBMIT_JOB_BG sent on the
  submitting node to the NOOP a sleeping worker gets (on the other node for cluster-2),
  p50 and p99.

Usage::

    python benchmarks/cluster_bench.py                    # 20000 jobs, 4 workers, 200 probes
    python benchmarks/cluster_bench.py --jobs 5000 --probes 50 --json out.json

Numbers from a shared machine mean little; compare setups from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import psycopg  # noqa: E402
from run import compile_loadgen  # noqa: E402

from gearmanpy.protocol.packets import PacketDecoder, PacketType, encode, request  # noqa: E402
from tests import dbservers  # noqa: E402
from tests.procs import free_port, stop_process, wait_for_port  # noqa: E402

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def start_node(url: str, workdir: str, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    """A ``twistd -n gearman`` on ``url`` on a free port: (process, port)."""
    port = free_port()
    log = os.path.join(workdir, f"node-{port}.log")
    env = {**os.environ, "PYTHONPATH": ROOT}
    argv = [TWISTD, "--nodaemon", "--pidfile=", "--logfile", log, "gearman"]
    argv += ["--listen", f"tcp:{port}:interface=127.0.0.1", "--queue", url, *extra]
    proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=subprocess.DEVNULL)
    wait_for_port(port, proc, log=log)
    return proc, port


def loadgen(exe: str, *args: object) -> dict[str, Any]:
    """Run the load generator once; its JSON answer."""
    out = subprocess.run(
        [exe, *(str(a) for a in args)], capture_output=True, text=True, timeout=900
    )
    result: dict[str, Any] = json.loads(out.stdout)
    if out.returncode != 0:
        raise SystemExit(f"loadgen {args}: {result.get('error')}")
    return result


class Conn:
    """One blocking Gearman connection."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = PacketDecoder(allow_admin=False)
        self.pending: list[Any] = []

    def send(self, ptype: PacketType, *args: bytes) -> None:
        self.sock.sendall(encode(request(ptype, *args)))

    def recv(self) -> Any:
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0)


def wake_latency(submit_port: int, worker_port: int, probes: int) -> list[float]:
    """Seconds from each SUBMIT_JOB_BG to the sleeping worker's NOOP."""
    worker = Conn(worker_port)
    worker.send(PacketType.CAN_DO, b"probe")
    client = Conn(submit_port)
    out = []
    for i in range(probes):
        worker.send(PacketType.GRAB_JOB)
        packet = worker.recv()
        while packet.type == PacketType.JOB_ASSIGN:  # (a job left from the last probe)
            worker.send(PacketType.WORK_COMPLETE, packet.args[0], b"")
            worker.send(PacketType.GRAB_JOB)
            packet = worker.recv()
        worker.send(PacketType.PRE_SLEEP)
        time.sleep(0.02)  # asleep, and the node's claim for it answered
        started = time.perf_counter()
        client.send(PacketType.SUBMIT_JOB_BG, b"probe", b"", b"%d" % i)
        packet = worker.recv()
        out.append(time.perf_counter() - started)
        assert packet.type == PacketType.NOOP, packet
        client.recv()  # JOB_CREATED
    return out


def measure(
    exe: str, name: str, url: str, workdir: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Every measurement for one setup."""
    cluster = name.startswith("cluster")
    extra = ("--cluster",) if cluster else ()
    nodes = [
        start_node(url, workdir, *extra, "--node-name", "a")
        if cluster
        else start_node(url, workdir)
    ]
    if name == "cluster-2":
        nodes.append(start_node(url, workdir, *extra, "--node-name", "b"))
    submit_port, worker_port = nodes[0][1], nodes[-1][1]
    try:
        sub = loadgen(exe, "submit", submit_port, args.jobs, 4, 100)
        drain = loadgen(exe, "drain", worker_port, args.jobs, args.workers, 0)
        result: dict[str, Any] = {}
        thread = threading.Thread(
            target=lambda: result.update(
                loadgen(exe, "drain", worker_port, args.jobs, args.workers, 0)
            )
        )
        thread.start()
        time.sleep(1.0)  # the workers asleep
        started = time.perf_counter()
        loadgen(exe, "submit", submit_port, args.jobs, 4, 100)
        thread.join()
        end_to_end = args.jobs / (time.perf_counter() - started)
        wake = wake_latency(submit_port, worker_port, args.probes)
    finally:
        for proc, _ in nodes:
            stop_process(proc)
    q = statistics.quantiles(wake, n=100)
    return {
        "setup": name,
        "submit_jobs_s": sub["rate"],
        "drain_jobs_s": drain["rate"],
        "end_to_end_jobs_s": end_to_end,
        "wake_p50_ms": q[49] * 1000,
        "wake_p99_ms": q[98] * 1000,
    }


def main() -> None:
    """Run every setup once and print a table (and --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--setups", default="single,cluster-1,cluster-2")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="gearmanpy-cluster-bench-")
    exe = compile_loadgen(workdir)
    pg = dbservers.start_postgres()
    rows = []
    try:
        for name in args.setups.split(","):
            db = name.replace("-", "_")
            with psycopg.connect(pg.url, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {db}")
            url = f"postgresql://postgres@127.0.0.1:{pg.port}/{db}"
            rows.append(measure(exe, name, url, workdir, args))
    finally:
        pg.destroy()
    print(
        f"{'setup':<10} {'submit/s':>10} {'drain/s':>10} {'end-to-end/s':>13}"
        f" {'wake p50':>9} {'wake p99':>9}"
    )
    for r in rows:
        print(
            f"{r['setup']:<10} {r['submit_jobs_s']:>10,.0f} {r['drain_jobs_s']:>10,.0f}"
            f" {r['end_to_end_jobs_s']:>13,.0f}"
            f" {r['wake_p50_ms']:>7.1f}ms {r['wake_p99_ms']:>7.1f}ms"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
