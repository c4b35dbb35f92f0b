"""Jepsen-style test of ``--cluster`` (issue 17): three nodes on one real PostgreSQL while a
seeded driver SIGKILLs and restarts nodes and workers, and restarts PostgreSQL once.

Clients submit background jobs through random nodes (and groups of one unique through three
nodes at once), and foreground jobs through random nodes; raw workers
(scripts/jepsen_worker.py) run on random nodes (the foreground function's only on node 0, so
that the other nodes share their foreground jobs), each logging every job it starts. After the
chaos, every node comes back with workers, and the test checks:

* every acknowledged background job ran at least once, and none is left queued or running (the
  table is empty and every node's ``status`` says 0);
* duplicates are counted and printed (there are node and worker deaths, so some may happen);
* every foreground client got exactly one outcome (its result, its node's connection lost, or
  ERROR when its job could not be shared while PostgreSQL was away);
* the submissions of one unique got one handle, and their job ran exactly once (its function's
  workers start only once the chaos is over); in half the groups one of the submissions is a
  foreground one, which joins the background job (or the others join it) and gets its outcome.

The schedule is seeded: ``GEARMANPY_JEPSEN_SEED`` (default 17) and
``GEARMANPY_JEPSEN_SECONDS`` of chaos (default 40; a longer soak by hand, e.g. 600).
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gearmanpy.protocol.packets import PacketType
from tests.dbservers import PostgresServer
from tests.interop.conftest import RunningServer, start_gearmanpy
from tests.interop.test_durability import Wire, status
from tests.procs import free_port, read_line, stop_process, wait_until

SCRIPTS = Path(__file__).parent / "scripts"
SEED = int(os.environ.get("GEARMANPY_JEPSEN_SEED", "17"))
SECONDS = float(os.environ.get("GEARMANPY_JEPSEN_SECONDS", "40"))
NODES = 3
#: The foreground jobs' function, whose only worker is on node 0: foreground jobs submitted
#: to the other nodes are shared and run there.
FOREGROUND_ONLY = ("jepf",)
TERMINAL = {PacketType.WORK_COMPLETE, PacketType.WORK_FAIL, PacketType.WORK_EXCEPTION}

pytestmark = pytest.mark.realdb


class Cluster:
    """The three nodes and their workers, started, killed and restarted by index."""

    def __init__(self, url: str, workdir: Path) -> None:
        self.url = url
        self.workdir = workdir
        self.ports = [free_port() for _ in range(NODES)]
        self.nodes: list[RunningServer | None] = [None] * NODES
        self.workers: list[tuple[int, tuple[str, ...], subprocess.Popen[str]]] = []
        self.log = workdir / "ran.log"
        self.deaths = Counter[str]()

    def start(self, i: int) -> None:
        """Start (or restart) node ``i`` under its name, on its port."""
        self.nodes[i] = start_gearmanpy(
            "--queue", self.url, "--cluster", "--node-name", f"n{i}",
            "--cluster-lease", "2", "--cluster-poll", "0.3",
            workdir=self.workdir / f"n{i}", port=self.ports[i],
        )  # fmt: skip

    def kill(self, i: int) -> None:
        """SIGKILL node ``i``."""
        node = self.nodes[i]
        if node is not None:
            node.kill()
            self.nodes[i] = None
            self.deaths["node"] += 1

    def alive(self) -> list[int]:
        """The indexes of the running nodes."""
        return [i for i, n in enumerate(self.nodes) if n is not None]

    def add_worker(self, i: int, *functions: str) -> None:
        """Start a worker for ``functions`` (default ``jep``) on node ``i``."""
        functions = functions or ("jep",)
        argv = [
            sys.executable,
            str(SCRIPTS / "jepsen_worker.py"),
            str(self.ports[i]),
            str(self.log),
        ]
        proc = subprocess.Popen(
            [*argv, *functions], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        try:
            read_line(proc, 10)
        except BaseException:
            stop_process(proc)
            raise
        self.workers.append((i, functions, proc))

    def reap(self, rng: random.Random) -> None:
        """Replace workers that exited (their node died) with new ones on live nodes."""
        for entry in list(self.workers):
            if entry[2].poll() is not None:
                self.workers.remove(entry)
                self.deaths["worker"] += 1
                alive = self.alive()
                if alive and entry[1] != FOREGROUND_ONLY:
                    self._try_worker(rng.choice(alive))
        if self.nodes[0] is not None and not any(f == FOREGROUND_ONLY for _, f, _ in self.workers):
            self._try_worker(0, *FOREGROUND_ONLY)

    def _try_worker(self, i: int, *functions: str) -> None:
        """Start a worker on node ``i`` unless that node has just died."""
        try:
            self.add_worker(i, *functions)
        except (AssertionError, Exception):  # the node died while the worker registered
            pass

    def stop_all(self) -> None:
        """Kill every worker and node."""
        for _, _, proc in self.workers:
            stop_process(proc)
        for i in self.alive():
            self.kill(i)

    def ran(self) -> Counter[tuple[bytes, bytes]]:
        """How often each (function, workload) ran, from the workers' log."""
        runs: Counter[tuple[bytes, bytes]] = Counter()
        if self.log.exists():
            for line in self.log.read_bytes().splitlines():
                function, data = line.split(b" ")
                runs[(function, bytes.fromhex(data.decode()))] += 1
        return runs


class Load:
    """The clients: background, grouped and foreground submissions through random nodes."""

    def __init__(self, cluster: Cluster, seed: int) -> None:
        self.cluster = cluster
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.acked: set[bytes] = set()
        self.groups: dict[bytes, list[bytes]] = {}
        #: The groups with an acknowledged background submission (which must run).
        self.promised: set[bytes] = set()
        self.fg: dict[bytes, list[str]] = {}
        self.lock = threading.Lock()
        #: The groups' foreground members, waiting for their outcome until the end.
        self.members: list[threading.Thread] = []
        self.threads = [
            threading.Thread(target=self._background, daemon=True),
            threading.Thread(target=self._grouped, daemon=True),
            *(threading.Thread(target=self._foreground, args=(k,), daemon=True) for k in range(2)),
        ]

    def start(self) -> None:
        """Start the client threads."""
        for t in self.threads:
            t.start()

    def join(self) -> None:
        """Stop submitting; wait for the foreground clients' outcomes."""
        self.stop.set()
        for t in self.threads + self.members:
            t.join(90)

    def _port(self, rng: random.Random) -> int | None:
        alive = self.cluster.alive()
        return self.cluster.ports[rng.choice(alive)] if alive else None

    def _background(self) -> None:
        """Submit background jobs one by one, a new connection when one fails."""
        rng = random.Random(self.rng.random())
        n = 0
        wire: Wire | None = None
        while not self.stop.is_set():
            try:
                if wire is None or rng.random() < 0.05:
                    if wire is not None:
                        wire.close()
                    port = self._port(rng)
                    if port is None:
                        time.sleep(0.1)
                        continue
                    wire = Wire(port, timeout=5)
                n += 1
                data = b"bg-%d" % n
                reply = wire.call(PacketType.SUBMIT_JOB_BG, b"jep", b"", data, timeout=5)
                if reply.type == PacketType.JOB_CREATED:
                    with self.lock:
                        self.acked.add(data)
                time.sleep(0.01)
            except (OSError, ConnectionError, TimeoutError):
                wire = None
                time.sleep(0.05)

    def _grouped(self) -> None:
        """Every second or so, one unique submitted through every live node at once."""
        rng = random.Random(self.rng.random())
        k = 0
        while not self.stop.is_set():
            k += 1
            unique = b"g-%d" % k
            self.groups[unique] = []
            ports = [self.cluster.ports[i] for i in self.cluster.alive()]
            barrier = threading.Barrier(len(ports)) if ports else None
            member = rng.randrange(len(ports)) if ports and rng.random() < 0.5 else -1
            threads = [
                threading.Thread(
                    target=self._one_of_group, args=(p, unique, barrier, i == member), daemon=True
                )
                for i, p in enumerate(ports)
            ]
            for t in threads:
                t.start()
            if member >= 0:  # (it waits for its outcome until the end)
                self.members.append(threads.pop(member))
            for t in threads:
                t.join(15)
            time.sleep(rng.uniform(0.5, 1.5))

    def _one_of_group(
        self, port: int, unique: bytes, barrier: threading.Barrier | None, foreground: bool
    ) -> None:
        """One submission of a group; a foreground one then waits for its outcome."""
        kind = PacketType.SUBMIT_JOB if foreground else PacketType.SUBMIT_JOB_BG
        try:
            wire = Wire(port, timeout=5)
            if barrier is not None:
                barrier.wait(5)
            reply = wire.call(kind, b"jepc", unique, unique, timeout=5)
        except (OSError, ConnectionError, TimeoutError, threading.BrokenBarrierError):
            return
        if reply.type == PacketType.JOB_CREATED:
            with self.lock:
                self.groups[unique].append(reply.args[0])
                if not foreground:
                    self.promised.add(unique)
            if foreground:  # the group's function has workers only after the chaos
                outcomes: list[str] = []
                self.fg[b"group " + unique] = outcomes
                self._outcome(wire, unique, outcomes, SECONDS + 60)
        wire.close()

    def _foreground(self, k: int) -> None:
        """Foreground jobs, one at a time, each on a new connection to a random node."""
        rng = random.Random(self.rng.random())
        n = 0
        while not self.stop.is_set():
            port = self._port(rng)
            if port is None:
                time.sleep(0.1)
                continue
            n += 1
            data = b"fg-%d-%d" % (k, n)
            outcomes = self.fg[data] = []
            try:
                wire = Wire(port, timeout=5)
                reply = wire.call(PacketType.SUBMIT_JOB, b"jepf", b"", data, timeout=5)
            except (OSError, ConnectionError, TimeoutError):
                self.fg.pop(data)  # never submitted
                time.sleep(0.05)
                continue
            if reply.type != PacketType.JOB_CREATED:
                outcomes.append(f"refused {reply.type.name}")
                wire.close()
                continue
            self._outcome(wire, data, outcomes, 60)
            wire.close()

    @staticmethod
    def _outcome(wire: Wire, data: bytes, outcomes: list[str], seconds: float) -> None:
        """Wait up to ``seconds`` for a foreground job's outcomes (its result is ``data``)."""
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                try:
                    packet = wire.recv(0.5)
                except TimeoutError:
                    if outcomes:
                        break  # no second outcome came
                    continue
                if packet.type in TERMINAL:
                    ok = packet.type == PacketType.WORK_COMPLETE and packet.args[1] == data
                    outcomes.append("result" if ok else f"wrong {packet.type.name}")
        except (OSError, ConnectionError):
            if not outcomes:  # (lost after its result is no second outcome)
                outcomes.append("connection lost")


def _chaos(cluster: Cluster, pg: PostgresServer, rng: random.Random, seconds: float) -> None:
    """Kill and restart nodes and workers on a seeded schedule; restart PostgreSQL once."""
    start = time.monotonic()
    restart_pg_at = seconds / 2
    restarts: list[tuple[float, int]] = []
    pg_done = False
    next_event = rng.uniform(1.5, 3.0)
    while (now := time.monotonic() - start) < seconds:
        cluster.reap(rng)
        for at, i in list(restarts):
            if now >= at:
                restarts.remove((at, i))
                cluster.start(i)
                cluster._try_worker(i)
        if not pg_done and now >= restart_pg_at:
            pg_done = True
            pg.stop()
            time.sleep(rng.uniform(0.5, 1.5))
            pg.start()
            cluster.deaths["postgresql"] += 1
        if now >= next_event:
            next_event = now + rng.uniform(1.5, 3.0)
            alive = cluster.alive()
            if rng.random() < 0.4 and len(alive) > 1:
                i = rng.choice(alive)
                cluster.kill(i)
                restarts.append((now + rng.uniform(0.5, 2.5), i))
            elif cluster.workers:
                _, functions, proc = cluster.workers.pop(rng.randrange(len(cluster.workers)))
                stop_process(proc, 9)
                cluster.deaths["worker"] += 1
                if functions != FOREGROUND_ONLY:  # (reap starts those again on node 0)
                    cluster._try_worker(rng.choice(alive))
        time.sleep(0.05)
    for _, i in restarts:
        cluster.start(i)


@pytest.fixture
def cluster(pg_server: PostgresServer, tmp_path: Path) -> Any:
    """Three nodes on a fresh database, two workers each; all killed at the end."""
    with psycopg.connect(pg_server.url, autocommit=True, connect_timeout=10) as conn:
        conn.execute("DROP DATABASE IF EXISTS jepsen")
        conn.execute("CREATE DATABASE jepsen")
    c = Cluster(f"postgresql://postgres@127.0.0.1:{pg_server.port}/jepsen", tmp_path)
    try:
        for i in range(NODES):
            c.start(i)
        for i in range(NODES):
            c.add_worker(i)
            c.add_worker(i)
        yield c
    finally:
        c.stop_all()


def test_cluster_under_kills(cluster: Cluster, pg_server: PostgresServer) -> None:
    """The checks in the module docstring hold after a seeded run of kills and restarts."""
    rng = random.Random(SEED)
    load = Load(cluster, rng.randrange(2**32))
    load.start()
    _chaos(cluster, pg_server, rng, SECONDS)
    load.stop.set()
    # Every node back, with a worker for each function (the groups' only now).
    for i in range(NODES):
        if cluster.nodes[i] is None:
            cluster.start(i)
        cluster.add_worker(i)
        cluster.add_worker(i, "jepc")
    cluster.reap(rng)  # the foreground jobs' worker on node 0
    load.join()

    def settled() -> bool:
        cluster.reap(rng)
        ran = cluster.ran()
        with psycopg.connect(cluster.url) as conn:
            left = conn.execute("SELECT count(*) FROM gearmanpy_queue").fetchone()
        return left == (0,) and all(ran[(b"jep", d)] for d in load.acked)

    wait_until(settled, 90, "every acknowledged job to run and the queue to empty", 0.5)
    ran = cluster.ran()
    for i in range(NODES):
        node = cluster.nodes[i]
        assert node is not None
        counts = status(node.port)
        for function in (b"jep", b"jepc", b"jepf"):
            assert counts.get(function, (0, 0, 0))[:2] == (0, 0), (i, function, counts)
    duplicates = {d: n for (f, d), n in ran.items() if f == b"jep" and n > 1}
    fg = {d: o for d, o in load.fg.items()}
    no_outcome = [d for d, o in fg.items() if not o]
    several = {d: o for d, o in fg.items() if len(o) > 1}
    # (ERROR QUEUE_ERROR: a shared foreground job refused while PostgreSQL was away)
    fine = ("result", "connection lost", "refused ERROR")
    wrong = {d: o for d, o in fg.items() if o and o[0] not in fine}
    split = {u: set(h) for u, h in load.groups.items() if len(set(h)) > 1}
    group_runs = {u: ran[(b"jepc", u)] for u, h in load.groups.items() if h}
    requeued = sum(
        int(n)
        for path in cluster.workdir.glob("n*/twistd.log*")
        for n in re.findall(
            r"cluster: (\d+) jobs of nodes without|; (\d+) of their jobs requeued",
            path.read_text(errors="replace"),
        )
        for n in n
        if n
    )
    print(
        f"\njepsen seed={SEED} seconds={SECONDS}: {len(load.acked)} background jobs acknowledged,"
        f" {sum(1 for (f, d) in ran if f == b'jep' and d.startswith(b'bg-'))} distinct ran,"
        f" {len(duplicates)} ran more than once ({sum(duplicates.values()) - len(duplicates)}"
        f" extra runs); {len(fg)} foreground ({sum(1 for o in fg.values() if o == ['result'])}"
        f" results, {sum(1 for o in fg.values() if o == ['connection lost'])} lost with"
        f" their node, {sum(1 for o in fg.values() if o == ['refused ERROR'])} refused);"
        f" {len(group_runs)} coalesced groups ({len(load.members)} with a foreground"
        f" member); {requeued} jobs requeued from dead"
        f" nodes; deaths {dict(cluster.deaths)}"
    )
    assert not no_outcome, no_outcome
    assert not several, several
    assert not wrong, wrong
    assert not split, split
    # A group whose only submission was a foreground one may not run: its node died.
    assert all(n == 1 or (n == 0 and u not in load.promised) for u, n in group_runs.items()), (
        group_runs
    )
    assert all(group_runs[u] == 1 for u in load.promised), group_runs
    if duplicates:
        assert cluster.deaths["node"] + cluster.deaths["worker"] + cluster.deaths["postgresql"]
