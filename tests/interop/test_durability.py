"""Background jobs survive crashes, restarts and store outages (real twistd, real databases).

Every test drives ``twistd -n gearman`` over raw binary Gearman on loopback and checks the
durability promise: a background job whose JOB_CREATED arrived was durable at that moment, so
it runs at least once whatever happens to the server afterwards. The databases are real
(``tests/dbservers.py``: PostgreSQL with fsync, Redis with ``appendfsync always``), and a
missing binary fails the test instead of skipping it. Every socket and subprocess has a
timeout, so a hung server fails the test rather than the suite.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from collections import Counter, deque
from collections.abc import Callable

import pytest

from gearmanpy.protocol.packets import Packet, PacketDecoder, PacketType, encode, request

from ..dbservers import PostgresServer, RedisServer, start_postgres, start_redis
from .conftest import RunningServer, StartServer

pytestmark = pytest.mark.interop

#: The backends, the database ones marked ``realdb`` like the store tests that need a server.
REDIS = pytest.param("redis", marks=pytest.mark.realdb)
POSTGRESQL = pytest.param("postgresql", marks=pytest.mark.realdb)

P = PacketType
BG_TYPES = (P.SUBMIT_JOB_BG, P.SUBMIT_JOB_HIGH_BG, P.SUBMIT_JOB_LOW_BG)
CRASH_FUNCTIONS = (b"durable-a", b"durable-b")

#: A job as a worker sees it, and as the tests identify it: (function, unique, payload).
JobKey = tuple[bytes, bytes, bytes]


# -- raw protocol helpers ------------------------------------------------------------------


class Wire:
    """One blocking binary Gearman connection (client or worker) with timeouts on every read."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.decoder = PacketDecoder(allow_admin=False)
        self.pending: deque[Packet] = deque()

    def send(self, ptype: PacketType, *args: bytes) -> None:
        """Send one request packet."""
        self.sock.sendall(encode(request(ptype, *args)))

    def recv(self, timeout: float = 10.0) -> Packet:
        """The next packet from the server; TimeoutError if none arrives in ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no packet within {timeout}s")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError(f"no packet within {timeout}s") from None
            if not data:
                raise ConnectionError("the server closed the connection")
            self.pending.extend(self.decoder.feed(data))  # type: ignore[arg-type]
        return self.pending.popleft()

    def call(self, ptype: PacketType, *args: bytes, timeout: float = 10.0) -> Packet:
        """Send a request and return the next packet."""
        self.send(ptype, *args)
        return self.recv(timeout)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


def admin(port: int, command: str, timeout: float = 10.0) -> list[bytes]:
    """Run a list-style admin text command; return its lines without the final ``.``."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(command.encode() + b"\n")
        buf = b""
        deadline = time.monotonic() + timeout
        while not (buf == b".\n" or buf.endswith(b"\n.\n")):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{command!r}: incomplete reply {buf[-200:]!r}")
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError(f"{command!r}: connection closed after {buf[-200:]!r}")
            buf += chunk
    return buf[:-2].split(b"\n")[:-1] if buf != b".\n" else []


def status(port: int) -> dict[bytes, tuple[int, int, int]]:
    """``status`` as {function: (total, running, workers)}."""
    rows = {}
    for line in admin(port, "status"):
        name, total, running, workers = line.split(b"\t")
        rows[name] = (int(total), int(running), int(workers))
    return rows


def priority_status(port: int) -> dict[bytes, tuple[int, int, int, int]]:
    """``prioritystatus`` as {function: (high, normal, low, workers)}."""
    rows = {}
    for line in admin(port, "prioritystatus"):
        name, high, normal, low, workers = line.split(b"\t")
        rows[name] = (int(high), int(normal), int(low), int(workers))
    return rows


def show_jobs(port: int) -> list[bytes]:
    """The handles listed by ``show jobs``."""
    return [line.split(b"\t")[0] for line in admin(port, "show jobs")]


def queued_total(port: int, functions: tuple[bytes, ...]) -> int:
    """Jobs still known (queued, scheduled or running) for ``functions``."""
    rows = status(port)
    return sum(rows.get(f, (0, 0, 0))[0] for f in functions)


def drain(port: int, functions: tuple[bytes, ...], timeout: float = 60.0) -> Counter[JobKey]:
    """Run every job of ``functions`` with a raw pipelining worker; count what ran.

    The worker keeps a window of GRAB_JOB_UNIQ requests in flight, completes each job at once,
    and after NO_JOB goes to sleep with PRE_SLEEP: a NOOP means more work, silence for a
    second means the queue is empty.
    """
    window = 32
    ran: Counter[JobKey] = Counter()
    w = Wire(port)
    deadline = time.monotonic() + timeout
    try:
        for f in functions:
            w.send(P.CAN_DO, f)
        grab = encode(request(P.GRAB_JOB_UNIQ))
        w.sock.sendall(grab * window)
        outstanding = window
        while True:
            assert time.monotonic() < deadline, (
                f"drain took over {timeout}s ({sum(ran.values())} run)"
            )
            p = w.recv(10.0)
            if p.type == P.JOB_ASSIGN_UNIQ:
                handle, function, unique, data = p.args
                ran[(function, unique, data)] += 1
                w.sock.sendall(encode(request(P.WORK_COMPLETE, handle, b"")) + grab)
            elif p.type == P.NO_JOB:
                outstanding -= 1
                if outstanding == 0:
                    w.send(P.PRE_SLEEP)
                    try:
                        p = w.recv(1.0)
                    except TimeoutError:
                        break
                    assert p.type == P.NOOP, f"expected NOOP after PRE_SLEEP, got {p}"
                    w.sock.sendall(grab * window)
                    outstanding = window
            elif p.type == P.NOOP:
                continue
            else:
                pytest.fail(f"worker got an unexpected packet while draining: {p}")
    finally:
        w.close()
    return ran


def stop_cleanly(server: RunningServer) -> None:
    """SIGTERM the server and check that twistd shut down in order (not killed on timeout).

    twistd re-raises the signal it stopped on, so a clean exit is status -SIGTERM.
    """
    server.stop()
    assert server.process.returncode == -signal.SIGTERM, server.process.returncode
    with open(os.path.join(server.workdir, "twistd.log"), errors="replace") as f:
        assert "Server Shut Down." in f.read()[-2000:], "twistd did not finish its shutdown"


# -- store fixtures -----------------------------------------------------------------------


_REDIS_DBS = {"crash": 1, "restart": 2}


def queue_url(request: pytest.FixtureRequest, backend: str, name: str, workdir: str) -> str:
    """A fresh, empty ``--queue`` URL for ``backend`` (databases started on first use)."""
    if backend == "sqlite":
        return f"sqlite:{os.path.join(workdir, name + '.sqlite')}"
    if backend == "postgresql":
        import psycopg

        pg: PostgresServer = request.getfixturevalue("pg_server")
        with psycopg.connect(pg.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{pg.port}/{name}"
    assert backend == "redis"
    redis: RedisServer = request.getfixturevalue("redis_server")
    return f"redis://127.0.0.1:{redis.port}/{_REDIS_DBS[name]}"


# -- 1. crash ----------------------------------------------------------------------------


def _crash_job(conn: str, i: int) -> tuple[PacketType, JobKey]:
    """The i-th submission of connection ``conn``: distinct, with every awkward shape."""
    function = CRASH_FUNCTIONS[i % 2]
    tag = f"{conn}-{i}".encode()
    kind = i % 5
    if kind == 0:
        unique, data = b"", b"plain " + tag
    elif kind == 1:
        unique, data = b"u" + tag, b"nul\0" + tag + b"\0\0end"
    elif kind == 2:
        unique, data = b"e" + tag, b""
    elif kind == 3:
        unique, data = b"", b"\0" + tag + b"\0"
    else:
        unique, data = b"-", b"dash " + tag
    return BG_TYPES[i % 3], (function, unique, data)


class _Flooder:
    """One non-blocking client connection that pipelines background submissions."""

    window = 256

    def __init__(self, index: str, port: int) -> None:
        self.index = index
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setblocking(False)
        self.decoder = PacketDecoder(allow_admin=False)
        self.out = bytearray()
        self.inflight: deque[JobKey] = deque()
        self.next = 0
        self.open = True

    def refill(self, submitted: set[JobKey]) -> None:
        """Queue submissions until ``window`` are awaiting their answer."""
        while len(self.inflight) < self.window:
            ptype, key = _crash_job(self.index, self.next)
            self.next += 1
            self.out += encode(request(ptype, *key))
            self.inflight.append(key)
            submitted.add(key)

    def write(self) -> None:
        try:
            n = self.sock.send(self.out)
        except BlockingIOError:
            return
        except OSError:
            self.open = False
            return
        del self.out[:n]

    def read(self, acked: dict[JobKey, bytes], errors: list[Packet]) -> None:
        try:
            data = self.sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.open = False
            return
        for p in self.decoder.feed(data):
            assert isinstance(p, Packet)
            key = self.inflight.popleft()
            if p.type == P.JOB_CREATED:
                acked[key] = p.args[0]
            else:
                errors.append(p)


def flood_then_crash(
    port: int,
    duration: float,
    crash: Callable[[], None],
    min_acked: int = 0,
    conns: int = 4,
    phase: int = 0,
    timeout: float = 30.0,
) -> tuple[set[JobKey], dict[JobKey, bytes], list[Packet]]:
    """Submit from ``conns`` pipelining connections, then ``crash()``.

    The flood lasts at least ``duration`` s and until ``min_acked`` submissions have been
    acknowledged (the test fails if that takes over ``timeout`` s). The crash happens while
    every connection still has submissions in flight. Answers that arrive before the
    connections report EOF are still counted. Returns (every submission sent or queued, the
    acknowledged ones with their handles, ERROR packets received).
    """
    flooders = [_Flooder(f"{phase}.{i}", port) for i in range(conns)]
    submitted: set[JobKey] = set()
    acked: dict[JobKey, bytes] = {}
    errors: list[Packet] = []
    start = time.monotonic()
    crashed_at: float | None = None
    try:
        while True:
            now = time.monotonic()
            live = [f for f in flooders if f.open]
            if crashed_at is None:
                for f in live:
                    f.refill(submitted)
                assert now - start < timeout, (
                    f"no crash within {timeout} s ({len(acked)} of {min_acked} acknowledged)"
                )
                # Crash only while some submission is still unsent: those can never be
                # acknowledged, so the crash is certainly mid-stream.
                enough = now - start >= duration and len(acked) >= min_acked
                if enough and any(f.out for f in live):
                    crash()
                    crashed_at = time.monotonic()
            if crashed_at is not None:
                if not live:
                    break
                assert now - crashed_at < 15, "connections stayed open 15 s after SIGKILL"
            rlist = [f.sock for f in live]
            wlist = [f.sock for f in live if f.out and crashed_at is None]
            readable, writable, _ = select.select(rlist, wlist, [], 0.05)
            for f in live:
                if f.sock in writable:
                    f.write()
                if f.sock in readable:
                    f.read(acked, errors)
    finally:
        for f in flooders:
            f.sock.close()
    return submitted, acked, errors


HELD = b"held"


def _jobs_in_odd_states(port: int) -> tuple[set[JobKey], set[JobKey], list[Wire]]:
    """Acknowledged jobs that are not simply queued when the server dies.

    * a background submission that joined a queued foreground job (promoted: it must run,
      with the first submission's payload);
    * a job requeued once after its worker vanished (its retry count must come back);
    * ten jobs held by a live worker, five of them completed just before the crash.

    Returns (jobs that must run after the crash, completed jobs that may run again, the
    connections to keep open until the crash).
    """
    fg = Wire(port)
    fg.send(P.SUBMIT_JOB, b"promoted", b"p1", b"first payload")
    assert fg.recv().type == P.JOB_CREATED
    client = Wire(port)
    p = client.call(P.SUBMIT_JOB_BG, b"promoted", b"p1", b"second payload")
    assert p.type == P.JOB_CREATED, p
    for i in range(21):
        client.send(P.SUBMIT_JOB_BG, HELD, f"h{i}".encode(), b"held %d" % i)
    for _ in range(21):
        assert client.recv().type == P.JOB_CREATED
    client.close()
    lost = Wire(port)
    lost.send(P.CAN_DO, HELD)
    assert lost.call(P.GRAB_JOB_UNIQ).args[2] == b"h0"
    lost.close()  # h0 is requeued with one retry, at the tail
    worker = Wire(port)
    worker.send(P.CAN_DO, HELD)
    grabbed = [worker.call(P.GRAB_JOB_UNIQ).args for _ in range(10)]
    assert [a[2] for a in grabbed] == [f"h{i}".encode() for i in range(1, 11)], grabbed
    for handle, _, _, _ in grabbed[:5]:
        worker.send(P.WORK_COMPLETE, handle, b"")
    assert worker.call(P.ECHO_REQ, b"sync").type == P.ECHO_RES
    assert sum(1 for line in admin(port, "show jobs") if line.split(b"\t")[1] == b"1") == 1
    done = {(HELD, f"h{i}".encode(), b"held %d" % i) for i in range(1, 6)}
    must = {(HELD, f"h{i}".encode(), b"held %d" % i) for i in range(21)} - done
    must.add((b"promoted", b"p1", b"first payload"))
    return must, done, [fg, worker]


@pytest.mark.parametrize("backend", ["sqlite", POSTGRESQL, REDIS])
def test_acknowledged_jobs_survive_sigkill(
    request: pytest.FixtureRequest, backend: str, workdir: str, start_server: StartServer
) -> None:
    """Every background job acknowledged before a SIGKILL runs after the restart (twice over)."""
    url = queue_url(request, backend, "crash", workdir)
    first = start_server("--queue", url)
    must, done, keep = _jobs_in_odd_states(first.port)

    submitted, acked, errors = flood_then_crash(first.port, 0.8, first.kill, min_acked=500)
    for conn in keep:
        conn.close()
    assert first.process.returncode == -signal.SIGKILL
    assert not errors, f"ERROR answers from a healthy {backend} store: {errors[:5]}"
    assert len(acked) >= 500, f"only {len(acked)} jobs acknowledged before the crash"
    assert len(submitted) > len(acked), "the crash did not happen mid-stream"
    assert len(set(acked.values())) == len(acked), "two acknowledged jobs share a handle"

    # Crash again while the replayed jobs are queued and new ones are arriving.
    second = start_server("--queue", url)
    retried = [line for line in admin(second.port, "show jobs") if line.split(b"\t")[1] != b"0"]
    assert len(retried) == 1 and retried[0].split(b"\t")[1] == b"1", retried
    submitted2, acked2, errors2 = flood_then_crash(second.port, 0.3, second.kill, phase=1)
    assert not errors2, f"ERROR answers from a healthy {backend} store: {errors2[:5]}"
    submitted |= submitted2
    acked.update(acked2)

    third = start_server("--queue", url)
    functions = (*CRASH_FUNCTIONS, HELD, b"promoted")
    ran = drain(third.port, functions)
    leftover = queued_total(third.port, functions)

    missing = [k for k in [*acked, *must] if k not in ran]
    known = submitted | must | done
    strange = [k for k in ran if k not in known]
    dups = sum(n - 1 for n in ran.values())
    counts = (
        f"{backend}: submitted {len(submitted)}, acked {len(acked)} "
        f"({len(acked) - len(acked2)} + {len(acked2)} over two crashes), "
        f"replayed {len(ran)} distinct ({sum(ran.values())} runs, {dups} duplicates), "
        f"unacked-but-replayed {sum(1 for k in ran if k in submitted and k not in acked)}, "
        f"completed-but-replayed {sum(1 for k in done if k in ran)}, "
        f"missing {len(missing)}, never-submitted {len(strange)}, left queued {leftover}"
    )
    print(counts)
    assert not missing, f"{counts}; lost acknowledged jobs, e.g. {missing[:5]}"
    assert not strange, f"{counts}; replayed jobs nobody submitted, e.g. {strange[:5]}"
    assert leftover == 0, counts
    third.stop()


# -- 2. clean restart with epoch jobs and uniques -------------------------------------------

SCHED = b"sched"


@pytest.mark.parametrize("backend", ["sqlite", POSTGRESQL, REDIS])
def test_clean_restart_keeps_uniques_priorities_and_epochs(
    request: pytest.FixtureRequest, backend: str, workdir: str, start_server: StartServer
) -> None:
    """After SIGTERM and restart: uniques coalesce, priorities hold, epoch jobs wait their time."""
    url = queue_url(request, backend, "restart", workdir)
    first = start_server("--queue", url)
    near = int(time.time()) + 5
    far = int(time.time()) + 86400
    submissions: list[tuple[PacketType, tuple[bytes, ...]]] = [
        (P.SUBMIT_JOB_LOW_BG, (SCHED, b"low-1", b"L1")),
        (P.SUBMIT_JOB_BG, (SCHED, b"norm-1", b"N1\0with NUL")),
        (P.SUBMIT_JOB_HIGH_BG, (SCHED, b"high-1", b"H1")),
        (P.SUBMIT_JOB_EPOCH, (SCHED, b"epoch-near", str(near).encode(), b"E-near")),
        (P.SUBMIT_JOB_EPOCH, (SCHED, b"epoch-far", str(far).encode(), b"E-far")),
        (P.SUBMIT_JOB_LOW_BG, (SCHED, b"low-2", b"")),
        (P.SUBMIT_JOB_BG, (SCHED, b"", b"N2 no unique")),
        (P.SUBMIT_JOB_HIGH_BG, (SCHED, b"high-2", b"H2")),
        (P.SUBMIT_JOB_LOW_BG, (SCHED, b"-", b"dash payload")),
    ]
    client = Wire(first.port)
    for ptype, args in submissions:
        client.send(ptype, *args)
    for ptype, args in submissions:
        p = client.recv()
        assert p.type == P.JOB_CREATED, f"{ptype.name} {args!r}: {p}"
    client.close()
    assert status(first.port)[SCHED] == (9, 0, 0)
    stop_cleanly(first)

    second = start_server("--queue", url)
    port = second.port
    assert time.time() < near - 0.5, "restart too slow: the epoch job is already due"
    assert status(port)[SCHED] == (9, 0, 0), "status after restart"
    assert priority_status(port)[SCHED] == (2, 4, 3, 0), "prioritystatus (epoch jobs are NORMAL)"
    uniques = Counter(admin(port, "show unique jobs"))
    assert uniques == Counter([args[1] for _, args in submissions])
    handles = show_jobs(port)
    assert len(handles) == 9

    client = Wire(port)
    for unique in (
        b"low-1",
        b"norm-1",
        b"high-1",
        b"epoch-near",
        b"epoch-far",
        b"low-2",
        b"high-2",
    ):
        p = client.call(P.GET_STATUS_UNIQUE, unique)
        assert p == Packet(P.STATUS_RES_UNIQUE, (unique, b"1", b"0", b"0", b"0", b"0"), p.magic)
    p = client.call(P.SUBMIT_JOB_BG, SCHED, b"norm-1", b"a different payload")
    assert p.type == P.JOB_CREATED, p
    joined = p.args[0]
    assert joined in handles, "a replayed unique did not coalesce with the replayed job"
    p = client.call(P.SUBMIT_JOB_HIGH_BG, SCHED, b"-", b"dash payload")
    assert p.type == P.JOB_CREATED, p
    joined_dash = p.args[0]
    assert joined_dash in handles, "a replayed '-' job did not coalesce on its payload"
    p = client.call(P.SUBMIT_JOB_EPOCH, SCHED, b"epoch-far", b"1", b"now!")
    assert p.type == P.JOB_CREATED and p.args[0] in handles, p
    assert len(show_jobs(port)) == 9, "coalescing created a new job"
    assert status(port)[SCHED] == (9, 0, 0)
    client.close()

    worker = Wire(port)
    worker.send(P.CAN_DO, SCHED)
    order = []
    while True:
        p = worker.call(P.GRAB_JOB_UNIQ)
        if p.type == P.NO_JOB:
            break
        assert p.type == P.JOB_ASSIGN_UNIQ, p
        handle, _, unique, data = p.args
        order.append((unique, data))
        if unique == b"norm-1":
            assert handle == joined
        if unique == b"-":
            assert handle == joined_dash
        worker.send(P.WORK_COMPLETE, handle, b"ok")
    assert time.time() < near, "the test was too slow to see the epoch job held back"
    assert order == [
        (b"high-1", b"H1"),
        (b"high-2", b"H2"),
        (b"norm-1", b"N1\0with NUL"),
        (b"", b"N2 no unique"),
        (b"low-1", b"L1"),
        (b"low-2", b""),
        (b"-", b"dash payload"),
    ]

    # The near epoch job: nothing before its time, one NOOP to the sleeping worker once due.
    worker.send(P.PRE_SLEEP)
    p = worker.recv(timeout=near - time.time() + 5)
    woke = time.time()
    assert p.type == P.NOOP, p
    assert woke >= near, f"NOOP {near - woke:.3f}s before the epoch job was due"
    assert woke < near + 3, f"NOOP only {woke - near:.3f}s after the epoch"
    p = worker.call(P.GRAB_JOB_UNIQ)
    assert p.type == P.JOB_ASSIGN_UNIQ and p.args[2:] == (b"epoch-near", b"E-near"), p
    worker.send(P.WORK_COMPLETE, p.args[0], b"ok")
    assert worker.call(P.GRAB_JOB_UNIQ).type == P.NO_JOB, "the far epoch job was handed out"
    worker.close()
    assert status(port)[SCHED] == (1, 0, 0)
    assert priority_status(port)[SCHED] == (0, 1, 0, 0)

    # Completed jobs are forgotten by the store: only the far epoch job comes back.
    stop_cleanly(second)
    third = start_server("--queue", url)
    assert admin(third.port, "show unique jobs") == [b"epoch-far"]
    third.stop()


# -- 3. the default queue is durable -------------------------------------------------------


def test_default_queue_is_durable(workdir: str, start_server: StartServer) -> None:
    """Without --queue, background jobs go to ./gearmanpy.sqlite and survive a SIGKILL."""
    first = start_server(default_queue=True)
    jobs = [(b"dflt", b"", b"one"), (b"dflt", b"u2", b"two\0"), (b"dflt", b"u3", b"")]
    client = Wire(first.port)
    for job in jobs:
        p = client.call(P.SUBMIT_JOB_BG, *job)
        assert p.type == P.JOB_CREATED, p
    client.close()
    first.kill()
    assert os.path.isfile(os.path.join(workdir, "gearmanpy.sqlite"))

    second = start_server(default_queue=True)
    assert status(second.port)[b"dflt"] == (3, 0, 0)
    assert drain(second.port, (b"dflt",)) == Counter(jobs)
    second.stop()


# -- 4. store outage -----------------------------------------------------------------------


@pytest.mark.realdb
@pytest.mark.parametrize("backend", ["redis", "postgresql"])
def test_store_outage_refuses_background_jobs(backend: str, start_server: StartServer) -> None:
    """With the database down a BG submit gets ERROR QUEUE_ERROR, FG runs, then BG recovers."""
    db: RedisServer | PostgresServer = start_redis() if backend == "redis" else start_postgres()
    try:
        server = start_server("--queue", db.url)
        client = Wire(server.port, timeout=20)
        p = client.call(P.SUBMIT_JOB_BG, b"bg", b"before", b"before outage")
        assert p.type == P.JOB_CREATED, p
        worker = Wire(server.port)
        worker.send(P.CAN_DO, b"fg")

        db.stop()
        sent = time.monotonic()
        client.send(P.SUBMIT_JOB_BG, b"bg", b"during", b"during outage")

        # A foreground job needs no store: it runs while the BG submit waits for the database.
        fg = Wire(server.port)
        p = fg.call(P.SUBMIT_JOB, b"fg", b"", b"ping")
        assert p.type == P.JOB_CREATED, p
        p = worker.call(P.GRAB_JOB_UNIQ)
        assert p.type == P.JOB_ASSIGN_UNIQ and p.args[1:] == (b"fg", b"", b"ping"), p
        worker.send(P.WORK_COMPLETE, p.args[0], b"pong")
        p = fg.recv()
        assert p.type == P.WORK_COMPLETE and p.args[1] == b"pong", p
        fg.close()
        worker.close()

        p = client.recv(timeout=20)
        waited = time.monotonic() - sent
        assert p.type == P.ERROR, f"BG submit during the outage got {p} after {waited:.1f}s"
        assert p.args[0] == b"QUEUE_ERROR", p
        assert waited <= 15, f"ERROR took {waited:.1f}s"
        assert status(server.port)[b"bg"][0] == 1, "the refused job was kept"

        db.start()
        p = client.call(P.SUBMIT_JOB_BG, b"bg", b"after", b"after outage", timeout=15)
        assert p.type == P.JOB_CREATED, f"BG submit after the database came back: {p}"
        for i in range(5):
            p = client.call(P.SUBMIT_JOB_LOW_BG, b"bg", f"after-{i}".encode(), b"x", timeout=15)
            assert p.type == P.JOB_CREATED, p
        client.close()
        ran = drain(server.port, (b"bg",))
        assert (b"bg", b"during", b"during outage") not in ran, "a refused job ran"
        assert (b"bg", b"before", b"before outage") in ran, "lost across the database restart"
        assert len(ran) == 7, ran
        stop_cleanly(server)
    finally:
        db.destroy()
