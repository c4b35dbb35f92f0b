# -*- test-case-name: tests.test_core_state -*-
"""Stateful property tests of :class:`gearmanpy.server.core.JobServerCore` (style.md §5).

A Hypothesis ``RuleBasedStateMachine`` drives the core with recording fake connections and a
``task.Clock``, keeps its own model of every job, queue and connection (protocol.md §3), and after
every step compares the bytes each fake received (decoded with ``PacketDecoder``) and the core's
public state with that model. Three variants: no store, ``MemoryJobStore``, and a store whose
``add`` Deferreds the test fires late, in any order, sometimes with a failure.

The plain tests at the end pin bugs the machine found (since fixed in ``core.py``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, cast

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gearmanpy.errors import StoreError
from gearmanpy.protocol.numbers import atoi
from gearmanpy.protocol.packets import Packet, PacketDecoder, PacketType, response
from gearmanpy.server import jobs as jobs_mod
from gearmanpy.server.admin import status_rows
from gearmanpy.server.core import HIGH, LOW, NORMAL, JobServerCore
from gearmanpy.server.jobs import GRAB_ALL, GRAB_PLAIN, GRAB_UNIQ
from gearmanpy.server.outbound import Outbound
from gearmanpy.store.memory import MemoryJobStore
from tests.serverhelpers import SlowStore

P = PacketType
PREFIX = b"H:t"
FUNCS = [b"f", b"g"]
#: Empty (never coalesces), ``-`` (coalesces on the payload), two plain ones, one too long.
UNIQUES = [b"", b"-", b"u1", b"u2", b"x" * 65]
#: Payloads; ``u1`` makes a ``-`` job coalesce with an explicit unique ``u1`` (§3.3).
DATAS = [b"", b"a", b"u1"]
TERMINAL = (P.WORK_COMPLETE, P.WORK_FAIL, P.WORK_EXCEPTION)
STATE_CONST = {
    "pending": jobs_mod.PENDING,
    "scheduled": jobs_mod.SCHEDULED,
    "queued": jobs_mod.QUEUED,
    "running": jobs_mod.RUNNING,
}

# Store rows are compared for MemoryJobStore only; with late writes the model would have to
# track which writes succeeded, and the regression tests below pin that case instead.


def err(code: bytes, text: bytes) -> Packet:
    """An ERROR packet as the core sends it."""
    return response(P.ERROR, code, text)


class Slot:
    """A reply whose value the store decides later (JOB_CREATED or ERROR)."""

    value: Packet | None = None


class Conn:
    """A recording fake connection: decodes every byte the core writes to it."""

    def __init__(self, core: JobServerCore, name: str, exceptions: bool = False) -> None:
        self.name = name
        self.decoder = PacketDecoder(allow_admin=False)
        self.received: list[Packet] = []
        self.connected = True
        self.closed = False
        self.peer = core.connect(Outbound(self._write), self._close)
        self.peer.exceptions = exceptions
        self.exceptions = exceptions
        # Client model: what it must receive, in order (Slot = reply waiting for the store).
        self.expected: list[Packet | Slot] = []
        #: FG submissions per handle that were (or will be) acknowledged.
        self.records: Counter[bytes] = Counter()
        #: Terminal packets the model has sent per handle.
        self.ended: Counter[bytes] = Counter()
        self.submissions = 0
        # Worker model.
        self.abilities: list[bytes] = []
        self.timeouts: dict[bytes, float] = {}
        self.running: list[MJob] = []
        self.asleep = False
        self.noops_at_grab = 0
        self.pre_sleeps = 0
        #: Handles taken from it by CAN_DO_TIMEOUT -> until when it may not have them back.
        self.superseded: dict[bytes, float] = {}

    def _write(self, data: bytes) -> None:
        # The core must never write to a connection it has been told is gone.
        assert self.connected, f"write to {self.name} after it disconnected: {data!r}"
        self.received.extend(cast(list[Packet], self.decoder.feed(data)))

    def _close(self) -> None:
        self.closed = True

    def noops(self) -> int:
        """NOOPs received so far."""
        return sum(1 for p in self.received if p.type == P.NOOP)

    def delivered(self) -> list[Packet]:
        """The expected stream up to the first reply still waiting for the store."""
        out: list[Packet] = []
        for item in self.expected:
            if isinstance(item, Slot):
                if item.value is None:
                    break
                out.append(item.value)
            else:
                out.append(item)
        return out

    def expect(self, packet: Packet) -> None:
        self.expected.append(packet)


class MJob:
    """The model of one job."""

    def __init__(
        self,
        handle: bytes,
        func: bytes,
        unique: bytes,
        key: bytes | None,
        data: bytes,
        prio: int,
        bg: bool,
        when: int,
    ) -> None:
        self.handle = handle
        self.func = func
        self.unique = unique
        self.key = key
        self.data = data
        self.prio = prio
        self.bg = bg
        self.when = when
        self.state = "pending"
        self.clients: list[Conn] = []
        self.worker: Conn | None = None
        self.ignored = False
        self.cancelled = False
        self.retries = 0
        self.num = 0
        self.den = 0
        self.persisted = False
        self.timer: list[Any] | None = None
        self.timeout = 0.0
        self.waiting: list[tuple[Conn, Slot]] = []


class MFunc:
    """The model of one function: three FIFO queues and its coalescing keys."""

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.queues: list[list[MJob]] = [[], [], []]
        self.uniques: dict[bytes, MJob] = {}


def _result(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "Deferred has not fired"
    return out[0]


class CoreMachine(RuleBasedStateMachine):
    """Clients, workers, an admin and a clock against one core, checked against a model."""

    store_kind: str | None = None

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(cast(ILogObserver, self._observe))

    def _observe(self, event: dict[str, Any]) -> None:
        if "log_failure" in event:
            self.failures.append(event)

    def teardown(self) -> None:
        try:
            if not hasattr(self, "core"):
                return
            if self.store_kind == "late":
                while self.store.adds:
                    self._fire(0, True)
                    self.check_streams()
            for c in self.clients:
                if not c.connected:
                    continue
                assert all(not isinstance(i, Slot) or i.value is not None for i in c.expected)
                replies = [p for p in c.received if p.type in (P.JOB_CREATED, P.ERROR)]
                assert len(replies) == c.submissions, "one JOB_CREATED/ERROR per SUBMIT"
                got = Counter(p.args[0] for p in c.received if p.type in TERMINAL)
                assert +got == +c.ended
                for h, n in c.records.items():
                    job = self.jobs[h]
                    if n and (job.state == "finished" or job.cancelled):
                        # exactly one terminal packet per acknowledged FG submission
                        assert got[h] == n, (h, got[h], n)
        finally:
            globalLogPublisher.removeObserver(cast(ILogObserver, self._observe))

    # -- set-up ----------------------------------------------------------------------------

    @initialize(
        retries=st.sampled_from([None, 0, 1, 2]),
        timeout=st.sampled_from([None, b"1000", b"2500"]),
    )
    def setup(self, retries: int | None, timeout: bytes | None) -> None:
        """Build the core (optional ``job_retries``), two clients and two registered workers."""
        self.clock = Clock()
        if self.store_kind == "memory":
            self.store: Any = MemoryJobStore()
        elif self.store_kind == "late":
            self.store = SlowStore()
        else:
            self.store = None
        self.retries = retries
        self.dead: set[bytes] = set()
        self.core = JobServerCore(
            self.clock, store=self.store, handle_prefix=PREFIX, job_retries=retries
        )
        self.clients: list[Conn] = []
        self.workers: list[Conn] = []
        self.funcs: dict[bytes, MFunc] = {}
        self.jobs: dict[bytes, MJob] = {}
        self.next_handle = 1
        self.timers: list[list[Any]] = []  # [time, seq, kind, job]
        self.seq = 0
        # (handle, was_pending) per store write in flight, keyed by the store key.
        self.writes: dict[str, tuple[MJob, bool]] = {}
        # Start with somebody on every side, so short runs already move jobs around.
        self.connect_client(False)
        self.connect_client(True)
        self.connect_worker([b"f", b"g"], None)
        self.connect_worker([b"f"], timeout)

    # -- model helpers -------------------------------------------------------------------

    def fn(self, name: bytes) -> MFunc:
        f = self.funcs.get(name)
        if f is None:
            f = self.funcs[name] = MFunc(name)
        return f

    def add_timer(self, when: float, kind: str, job: MJob) -> list[Any]:
        self.seq += 1
        t = [when, self.seq, kind, job]
        self.timers.append(t)
        return t

    def cancel_timer(self, job: MJob) -> None:
        if job.timer is not None:
            self.timers.remove(job.timer)
            job.timer = None

    def forget_unique(self, job: MJob) -> None:
        f = self.funcs[job.func]
        if job.key is not None and f.uniques.get(job.key) is job:
            del f.uniques[job.key]

    def send_clients(self, job: MJob, packet_for: Any, terminal: bool) -> None:
        for c in job.clients:
            c.expect(packet_for(c))
            if terminal:
                c.ended[job.handle] += 1

    def m_submit(
        self, c: Conn, name: bytes, unique: bytes, data: bytes, prio: int, bg: bool, when: int
    ) -> None:
        c.submissions += 1
        if len(unique) > 64:
            c.expect(err(b"ARGUMENT_TOO_LARGE", b"Unique value too large"))
            return
        f = self.fn(name)
        key = None if not unique else ((data or None) if unique == b"-" else unique)
        if key is not None and key in f.uniques:
            self.m_join(c, f.uniques[key], bg)
            return
        handle = b"%s:%d" % (PREFIX, self.next_handle)
        self.next_handle += 1
        job = MJob(handle, name, unique, key, data, prio, bg, when)
        self.jobs[handle] = job
        if key is not None:
            f.uniques[key] = job
        if not bg:
            job.clients.append(c)
            c.records[handle] += 1
        if bg and self.store is not None:
            self.m_persist(job, c, was_pending=True)
            return
        c.expect(response(P.JOB_CREATED, handle))
        self.m_admit(job)

    def m_join(self, c: Conn, job: MJob, bg: bool) -> None:
        if not bg:
            job.clients.append(c)
            c.records[job.handle] += 1
            job.ignored = False
        elif not job.bg:
            job.bg = True  # promoted: a BG submitter was promised it would run
            if self.store is not None and job.state != "finished":
                self.m_persist(job, c, was_pending=False)
                return
        if job.state == "pending" or any(w[0] is job for w in self.writes.values()):
            # A store write for the job is in flight: the answer waits for it.
            slot = Slot()
            c.expected.append(slot)
            job.waiting.append((c, slot))
            return
        c.expect(response(P.JOB_CREATED, job.handle))

    def m_persist(self, job: MJob, c: Conn, was_pending: bool) -> None:
        slot = Slot()
        c.expected.append(slot)
        job.waiting.append((c, slot))
        key = job.handle.rsplit(b":", 1)[1].decode()
        self.writes[key] = (job, was_pending)
        if self.store_kind == "memory":
            self.m_store_fired(key, True)

    def m_store_fired(self, key: str, ok: bool) -> None:
        job, was_pending = self.writes.pop(key)
        waiting, job.waiting = job.waiting, []
        if ok:
            job.persisted = True
            for _, slot in waiting:
                slot.value = response(P.JOB_CREATED, job.handle)
            if job.state == "finished" or job.cancelled:
                job.persisted = False  # the core deletes the row at once
            elif was_pending:
                self.m_admit(job)
        else:
            if was_pending:
                job.state = "dropped"
                self.forget_unique(job)
                for cl in job.clients:
                    cl.records[job.handle] -= 1
                job.clients = []
            else:
                job.bg = False  # a failed promotion leaves the job in the foreground
            for _, slot in waiting:
                slot.value = err(b"QUEUE_ERROR", b"QUEUE_ERROR")

    def m_admit(self, job: MJob) -> None:
        if job.when and job.when - self.clock.seconds() > 0:
            job.state = "scheduled"
            job.timer = self.add_timer(float(job.when), "due", job)
            return
        self.m_enqueue(job)

    def m_enqueue(self, job: MJob) -> None:
        job.state = "queued"
        self.funcs[job.func].queues[job.prio].append(job)

    def excluded(self, w: Conn, job: MJob) -> bool:
        """Whether ``w`` may still run a timed-out attempt of ``job`` (not handed back)."""
        return w.superseded.get(job.handle, float("-inf")) > self.clock.seconds()

    def m_take(self, f: MFunc, w: Conn) -> MJob | None:
        for q in f.queues:
            i = 0
            while i < len(q):
                job = q[i]
                if job.ignored:
                    del q[i]
                    job.state = "finished"  # discarded when a worker reaches it (§3.4)
                    self.forget_unique(job)
                elif self.excluded(w, job):
                    i += 1  # skipped, keeping its place
                else:
                    del q[i]
                    return job
        return None

    def m_unassign(self, job: MJob) -> None:
        self.cancel_timer(job)
        if job.worker is not None:
            job.worker.running.remove(job)
            job.worker = None

    def m_finish(self, job: MJob, dead: bool = False) -> None:
        """End ``job``; a failed background job goes to the dead set (no policy: at once)."""
        if dead and not job.cancelled:
            self.dead.add(job.handle)
        self.cancel_timer(job)
        job.state = "finished"
        self.forget_unique(job)
        job.clients = []
        job.persisted = False

    def m_lose_worker(self, job: MJob) -> None:
        self.m_unassign(job)
        if job.cancelled:
            self.m_finish(job)
            return
        job.retries += 1
        if self.retries and job.retries >= self.retries:  # runs at most N times (gearmand)
            self.send_clients(job, lambda c: response(P.WORK_FAIL, job.handle), True)
            self.m_finish(job, dead=job.bg)
            return
        job.num = job.den = 0
        if not job.clients and not job.bg:
            job.ignored = True
            self.forget_unique(job)
        self.m_enqueue(job)

    def runnable_for(self, w: Conn) -> bool:
        for name in w.abilities:
            f = self.funcs[name]
            if any(not j.ignored and not self.excluded(w, j) for q in f.queues for j in q):
                return True
        return False

    def core_order(self, w: Conn, func: bytes | None = None) -> list[MJob]:
        """The jobs the core will requeue, in the order it iterates ``peer.worker_jobs``."""
        handles = [j.handle for j in w.peer.worker_jobs if func is None or j.function.name == func]
        assert sorted(handles) == sorted(
            j.handle for j in w.running if func is None or j.func == func
        )
        return [self.jobs[h] for h in handles]

    def pick(self, items: list[Any], i: int) -> Any:
        return items[i % len(items)]

    def live_clients(self) -> list[Conn]:
        return [c for c in self.clients if c.connected]

    def live_workers(self) -> list[Conn]:
        return [w for w in self.workers if w.connected]

    # -- clients ------------------------------------------------------------------------------

    @rule(exceptions=st.booleans())
    def connect_client(self, exceptions: bool) -> None:
        """A client connects (maybe with the ``exceptions`` option)."""
        self.clients.append(Conn(self.core, f"c{len(self.clients)}", exceptions))

    @precondition(lambda self: self.live_clients())
    @rule(i=st.integers(0, 99))
    def disconnect_client(self, i: int) -> None:
        """A client goes away: its queued FG jobs with no other client are orphaned (§3.9)."""
        c = self.pick(self.live_clients(), i)
        c.connected = False
        self.core.disconnect(c.peer)
        for job in self.jobs.values():
            if c in job.clients:
                job.clients = [x for x in job.clients if x is not c]
                if not job.clients and not job.bg and job.state == "queued":
                    job.ignored = True
                    self.forget_unique(job)

    @precondition(lambda self: self.live_clients())
    @rule(
        i=st.integers(0, 99),
        batch=st.lists(
            st.tuples(
                st.sampled_from(FUNCS),
                st.sampled_from(UNIQUES),
                st.sampled_from(DATAS),
                st.sampled_from([HIGH, NORMAL, LOW]),
                st.booleans(),
                st.sampled_from([None, None, None, -1, 0, 1, 3]),
            ),
            min_size=1,
            max_size=4,
        ),
    )
    def submit(
        self, i: int, batch: list[tuple[bytes, bytes, bytes, int, bool, int | None]]
    ) -> None:
        """Pipelined SUBMIT_JOB[_HIGH|_LOW][_BG] / SUBMIT_JOB_EPOCH: new, coalesced or ERROR."""
        c = self.pick(self.live_clients(), i)
        for name, unique, data, prio, bg, ahead in batch:
            if ahead is None:
                self.core.submit(c.peer, name, unique, data, prio, bg)
                self.m_submit(c, name, unique, data, prio, bg, 0)
            else:
                # An epoch job: background, NORMAL, held until its Unix time (§3.12).
                when = max(int(self.clock.seconds()) + ahead, 0)
                self.core.submit(c.peer, name, unique, data, NORMAL, True, when=when)
                self.m_submit(c, name, unique, data, NORMAL, True, when)

    @precondition(lambda self: self.live_clients() and self.jobs)
    @rule(i=st.integers(0, 99), j=st.integers(0, 999))
    def get_status(self, i: int, j: int) -> None:
        """GET_STATUS on a known (or finished) handle."""
        c = self.pick(self.live_clients(), i)
        job = self.pick(list(self.jobs.values()), j)
        self.core.get_status(c.peer, job.handle)
        known = job.state in ("scheduled", "queued", "running")
        fields = (
            (b"1", b"1" if job.state == "running" else b"0", b"%d" % job.num, b"%d" % job.den)
            if known
            else (b"0", b"0", b"0", b"0")
        )
        c.expect(response(P.STATUS_RES, job.handle, *fields))

    # -- admin -------------------------------------------------------------------------------

    @precondition(lambda self: self.jobs)
    @rule(j=st.integers(0, 999))
    def cancel(self, j: int) -> None:
        """``cancel job H``: WORK_FAIL to the FG clients, the job is forgotten."""
        job = self.pick(list(self.jobs.values()), j)
        ok = self.core.cancel(job.handle)
        if job.state in ("pending", "finished", "dropped") or job.cancelled:
            assert not ok
            return
        assert ok
        self.send_clients(job, lambda c: response(P.WORK_FAIL, job.handle), True)
        job.clients = []
        job.cancelled = True
        job.ignored = True
        self.forget_unique(job)
        job.persisted = False
        if job.state == "scheduled":
            self.cancel_timer(job)
            job.state = "finished"
        elif job.state == "queued":  # freed at once (gearmand waits for a worker to reach it)
            self.funcs[job.func].queues[job.prio].remove(job)
            self.cancel_timer(job)
            job.state = "finished"

    # -- workers -----------------------------------------------------------------------------

    @rule(
        funcs=st.lists(st.sampled_from(FUNCS), min_size=1, max_size=3),
        timeout=st.sampled_from([None, None, b"1000", b"2500"]),
    )
    def connect_worker(self, funcs: list[bytes], timeout: bytes | None) -> None:
        """A worker connects and sends CAN_DO (or CAN_DO_TIMEOUT) per function."""
        w = Conn(self.core, f"w{len(self.workers)}")
        self.workers.append(w)
        for name in funcs:
            self._can_do(w, name, timeout)

    @precondition(lambda self: self.live_workers())
    @rule(i=st.integers(0, 99))
    def disconnect_worker(self, i: int) -> None:
        """A worker goes away, maybe mid-job: its jobs are requeued at the tail (§3.8)."""
        w = self.pick(self.live_workers(), i)
        order = self.core_order(w)
        w.connected = False
        self.core.disconnect(w.peer)
        for job in order:
            self.m_lose_worker(job)
        w.abilities = []
        w.timeouts.clear()

    @precondition(lambda self: self.live_workers())
    @rule(
        i=st.integers(0, 99),
        name=st.sampled_from(FUNCS),
        timeout=st.sampled_from([None, b"0", b"500", b"1000", b"2500", b"junk"]),
    )
    def can_do(self, i: int, name: bytes, timeout: bytes | None) -> None:
        """CAN_DO / CAN_DO_TIMEOUT (a well-behaved worker GRABs after it)."""
        self._can_do(self.pick(self.live_workers(), i), name, timeout)

    def _can_do(self, w: Conn, name: bytes, timeout: bytes | None) -> None:
        self.core.can_do(w.peer, name, timeout)
        self.fn(name)
        w.abilities.append(name)
        ms = atoi(timeout) if timeout is not None else 0
        if ms > 0:
            w.timeouts[name] = max(ms, 1000) / 1000.0
        else:
            w.timeouts.pop(name, None)
        # No NOOP is owed for jobs already queued (gearmand sends none either): the worker
        # is expected to GRAB after changing its abilities.
        w.asleep = False

    @precondition(lambda self: self.live_workers())
    @rule(i=st.integers(0, 99), name=st.sampled_from(FUNCS))
    def cant_do(self, i: int, name: bytes) -> None:
        """CANT_DO: unregister; that function's running jobs on this worker are requeued."""
        w = self.pick(self.live_workers(), i)
        order = self.core_order(w, name) if name in w.abilities else []
        self.core.cant_do(w.peer, name)
        if name not in w.abilities:
            return
        w.abilities = [a for a in w.abilities if a != name]
        w.timeouts.pop(name, None)
        for job in order:
            self.m_lose_worker(job)

    @precondition(lambda self: self.live_workers())
    @rule(i=st.integers(0, 99), funcs=st.lists(st.sampled_from(FUNCS), max_size=2))
    def reset_abilities(self, i: int, funcs: list[bytes]) -> None:
        """RESET_ABILITIES (running jobs are requeued), then CAN_DO for a new set of functions."""
        w = self.pick(self.live_workers(), i)
        order = self.core_order(w)
        self.core.reset_abilities(w.peer)
        for job in order:
            self.m_lose_worker(job)
        w.abilities = []
        w.timeouts.clear()
        for name in funcs:
            self._can_do(w, name, None)

    @precondition(lambda self: self.live_workers())
    @rule(
        i=st.integers(0, 99),
        kind=st.sampled_from([GRAB_PLAIN, GRAB_UNIQ, GRAB_ALL]),
        sleep=st.booleans(),
    )
    def grab(self, i: int, kind: int, sleep: bool) -> None:
        """GRAB_JOB(_UNIQ/_ALL): newest function first, HIGH>NORMAL>LOW, FIFO; maybe PRE_SLEEP."""
        w = self.pick(self.live_workers(), i)
        self._grab(w, kind)
        if sleep and w.expected[-1] == response(P.NO_JOB):
            self._pre_sleep(w)

    def _grab(self, w: Conn, kind: int) -> None:
        self.core.grab(w.peer, kind)
        w.asleep = False
        w.noops_at_grab = w.noops()
        w.pre_sleeps = 0
        for name in reversed(w.abilities):
            job = self.m_take(self.funcs[name], w)
            if job is None:
                continue
            assert all(job not in other.running for other in self.workers)
            self.cancel_timer(job)  # the wake-up after a timed-out attempt's exclusion
            job.state = "running"
            job.worker = w
            w.running.append(job)
            if kind == GRAB_PLAIN:
                w.expect(response(P.JOB_ASSIGN, job.handle, job.func, job.data))
            else:
                w.expect(response(P.JOB_ASSIGN_UNIQ, job.handle, job.func, job.unique, job.data))
            timeout = w.timeouts.get(name)
            if timeout:
                job.timeout = timeout
                job.timer = self.add_timer(self.clock.seconds() + timeout, "timeout", job)
            return
        w.expect(response(P.NO_JOB))

    @precondition(lambda self: self.live_workers())
    @rule(i=st.integers(0, 99))
    def pre_sleep(self, i: int) -> None:
        """PRE_SLEEP: an immediate NOOP if work is waiting, else asleep until one (§3.5)."""
        self._pre_sleep(self.pick(self.live_workers(), i))

    def _pre_sleep(self, w: Conn) -> None:
        before = w.noops()
        queued = any(self.funcs[n].queues[p] for n in w.abilities for p in range(3))
        runnable = self.runnable_for(w)
        self.core.pre_sleep(w.peer)
        if runnable:
            assert w.noops() == before + 1, "PRE_SLEEP with a runnable job must get a NOOP"
        elif not queued:
            assert w.noops() == before, "PRE_SLEEP with nothing queued must not get a NOOP"
        w.asleep = True
        w.pre_sleeps += 1

    def _holding(self) -> list[Conn]:
        return [w for w in self.live_workers() if w.running]

    @precondition(lambda self: self._holding())
    @rule(
        i=st.integers(0, 99),
        j=st.integers(0, 99),
        what=st.sampled_from(["status", "complete", "fail", "exception", "foreign"]),
        num=st.sampled_from([b"1", b"7x", b"abc"]),
        result=st.sampled_from([b"", b"r", b"r\0s"]),
    )
    def work(self, i: int, j: int, what: str, num: bytes, result: bytes) -> None:
        """WORK_STATUS/COMPLETE/FAIL/EXCEPTION on a held job, or on another job (§3.6)."""
        w = self.pick(self._holding(), i)
        if what == "foreign":
            # WORK_COMPLETE for a job this worker does not hold: JOB_NOT_FOUND, nothing else.
            handles = [h for h, job in self.jobs.items() if job.worker is not w] + [b"H:t:99"]
            h = self.pick(handles, j)
            self.core.work_complete(w.peer, h, b"x")
            if h in w.superseded:  # a timed-out attempt's late result: dropped quietly
                del w.superseded[h]
            else:
                w.expect(err(b"JOB_NOT_FOUND", b"Job given in work result not found"))
            return
        job = self.pick(w.running, j)
        h = job.handle
        if what == "status":
            self.core.work_status(w.peer, h, num, b"10")
            job.num, job.den = atoi(num), 10
            self.send_clients(job, lambda c: response(P.WORK_STATUS, h, num, b"10"), False)
            return
        if what == "complete":
            self.core.work_complete(w.peer, h, result)
            self.send_clients(job, lambda c: response(P.WORK_COMPLETE, h, result), True)
        elif what == "fail":
            self.core.work_fail(w.peer, h)
            self.send_clients(job, lambda c: response(P.WORK_FAIL, h), True)
        else:
            self.core.work_exception(w.peer, h, result)
            self.send_clients(
                job,
                lambda c: (
                    response(P.WORK_EXCEPTION, h, result)
                    if c.exceptions
                    else response(P.WORK_FAIL, h)
                ),
                True,
            )
        self.m_unassign(job)
        self.m_finish(job, dead=job.bg and what != "complete")

    # -- time and the store ------------------------------------------------------------------

    @rule(dt=st.sampled_from([0.5, 1.0, 2.5]))
    def advance(self, dt: float) -> None:
        """Time passes: epoch jobs fall due, CAN_DO_TIMEOUT requeues overdue jobs (§3.11)."""
        self.clock.advance(dt)
        now = self.clock.seconds()
        while True:
            due = sorted((t for t in self.timers if t[0] <= now), key=lambda t: (t[0], t[1]))
            if not due:
                break
            t = due[0]
            self.timers.remove(t)
            job = t[3]
            job.timer = None
            if t[2] == "due":
                self.m_enqueue(job)
            elif t[2] == "lapse":
                pass  # the core wakes sleepers; check_wakeups proves none is lost
            else:
                w = job.worker
                self.m_lose_worker(job)
                if w is not None and w.connected:
                    w.superseded[job.handle] = now + job.timeout
                    if job.state == "queued" and job.timer is None:
                        job.timer = self.add_timer(now + job.timeout, "lapse", job)

    def _fire(self, i: int, ok: bool) -> None:
        stored, d = self.store.adds.pop(i % len(self.store.adds))
        key = stored.key.rsplit("-", 1)[1]
        self.m_store_fired(key, ok)
        if ok:
            d.callback(None)
        else:
            d.errback(Failure(StoreError("disk full")))

    @precondition(lambda self: self.store_kind == "late" and self.store.adds)
    @rule(i=st.integers(0, 99), ok=st.sampled_from([True, True, True, False]))
    def fire_store(self, i: int, ok: bool) -> None:
        """A store write completes (any one of those in flight), or fails."""
        self._fire(i, ok)

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def check_streams(self) -> None:
        """Every connection received exactly the model's packets, in order."""
        for c in self.clients:
            if c.connected:
                assert not c.decoder.buffered()
                assert c.received == c.delivered(), c.name
                got = Counter(p.args[0] for p in c.received if p.type in TERMINAL)
                for h, n in got.items():
                    assert n <= c.records[h], "more terminal packets than submissions"
        for w in self.workers:
            if w.connected:
                assert not w.decoder.buffered()
                assert [p for p in w.received if p.type != P.NOOP] == w.expected, w.name

    @invariant()
    def check_job_states(self) -> None:
        """Every acknowledged job is in exactly one of queued/scheduled/running/finished."""
        core = self.core
        in_queue: Counter[bytes] = Counter()
        for f in core.functions.values():
            for q in f.queues:
                in_queue.update(j.handle for j in q)
        holders: Counter[bytes] = Counter()
        for p in core.peers:
            holders.update(j.handle for j in p.worker_jobs)
        for h, job in self.jobs.items():
            if job.state in ("finished", "dropped"):
                assert h not in core.jobs and in_queue[h] == 0 and holders[h] == 0, h
                continue
            cj = core.jobs[h]
            assert cj.state == STATE_CONST[job.state], (h, job.state, cj.state)
            assert in_queue[h] == (1 if job.state == "queued" else 0), h
            assert holders[h] == (1 if job.state == "running" else 0), h
            if job.state == "running":
                assert job.worker is not None and cj.worker is job.worker.peer
            assert cj.ignored == job.ignored and cj.retries == job.retries
        assert set(core.jobs) == {
            h for h, j in self.jobs.items() if j.state not in ("finished", "dropped")
        }

    @invariant()
    def check_queue_order(self) -> None:
        """Each priority queue holds the model's jobs in FIFO order."""
        assert list(self.core.functions) == list(self.funcs)
        for name, f in self.funcs.items():
            cf = self.core.functions[name]
            for p in range(3):
                assert [j.handle for j in cf.queues[p]] == [j.handle for j in f.queues[p]]

    @invariant()
    def check_no_double_assignment(self) -> None:
        """No job is held by two workers at once."""
        seen: set[bytes] = set()
        for w in self.live_workers():
            for job in w.running:
                assert job.handle not in seen
                seen.add(job.handle)

    @invariant()
    def check_status_rows(self) -> None:
        """``status`` rows (total, running, registrations) equal the model's counts."""
        expected = {}
        for name in self.funcs:
            live = [
                j
                for j in self.jobs.values()
                if j.func == name and j.state in ("scheduled", "queued", "running")
            ]
            running = sum(1 for j in live if j.state == "running")
            regs = sum(w.abilities.count(name) for w in self.live_workers())
            expected[name] = (len(live), running, regs)
        assert {r[0]: r[1:] for r in status_rows(self.core)} == expected

    @invariant()
    def check_wakeups(self) -> None:
        """No lost wake-up: an asleep worker with a runnable job has had a NOOP since its GRAB."""
        for w in self.live_workers():
            since = w.noops() - w.noops_at_grab
            assert since <= w.pre_sleeps + 1, "more than one wake-up NOOP per GRAB cycle"
            if w.asleep and self.runnable_for(w):
                assert since >= 1, "lost wake-up for " + w.name

    @invariant()
    def check_dead_set(self) -> None:
        """The dead set holds exactly the background jobs that failed for good."""
        if hasattr(self, "core"):
            assert set(self.core.dead.jobs) == self.dead

    @invariant()
    def check_store_rows(self) -> None:
        """MemoryJobStore holds exactly the live persisted jobs, with their retry counts."""
        if self.store_kind != "memory":
            return
        rows = {s.key.rsplit("-", 1)[1]: s for s in _result(self.store.replay())}
        live = {j.handle.rsplit(b":", 1)[1].decode(): j for j in self.jobs.values() if j.persisted}
        assert set(rows) == set(live)
        for k, row in rows.items():
            assert row.retries == live[k].retries

    @invariant()
    def check_logged_failures(self) -> None:
        """No failure is logged with a traceback, not even a store write the test made fail
        (an outage is one log line; tests/test_store_outage.py)."""
        assert not self.failures, self.failures


_machine_settings = settings(stateful_step_count=100)


@_machine_settings
class CoreStateMachine(CoreMachine):
    """No persistent store."""


@_machine_settings
class MemoryStoreStateMachine(CoreMachine):
    """Background jobs go through ``MemoryJobStore``."""

    store_kind = "memory"


@_machine_settings
class LateStoreStateMachine(CoreMachine):
    """Store writes complete when the test says, in any order, sometimes failing."""

    store_kind = "late"


CoreStateTests = CoreStateMachine.TestCase
MemoryStoreStateTests = MemoryStoreStateMachine.TestCase
LateStoreStateTests = LateStoreStateMachine.TestCase


# -- regression tests for bugs the machine found ---------------------------------------------


def _conn(core: JobServerCore) -> Conn:
    return Conn(core, "x")


class CoreBugTests(SynchronousTestCase):
    """Minimal reproductions of core bugs found by the state machine."""

    @staticmethod
    def _holding_sleeper(worker_wakeup: int = 0) -> tuple[JobServerCore, Conn]:
        """A core with one background job of ``f``, held by a worker that then slept."""
        core = JobServerCore(Clock(), handle_prefix=PREFIX, worker_wakeup=worker_wakeup)
        c, w = _conn(core), _conn(core)
        core.submit(c.peer, b"f", b"", b"x", NORMAL, True)
        core.can_do(w.peer, b"f")
        core.grab(w.peer)
        core.pre_sleep(w.peer)
        return core, w

    def _second_sleeper(self, core: JobServerCore) -> Conn:
        w = _conn(core)
        core.can_do(w.peer, b"f")
        core.pre_sleep(w.peer)
        return w

    def test_disconnect_wakeup_not_lost(self) -> None:
        """With -w 1, a job requeued by a worker's disconnect wakes another sleeping worker."""
        core, w1 = self._holding_sleeper(worker_wakeup=1)
        w2 = self._second_sleeper(core)
        w1.connected = False
        core.disconnect(w1.peer)
        self.assertEqual([p.type for p in w2.received], [P.NOOP])

    def test_reset_abilities_wakeup_not_lost(self) -> None:
        """With -w 1, a job requeued by RESET_ABILITIES wakes a worker that can still run it."""
        core, w1 = self._holding_sleeper(worker_wakeup=1)
        w2 = self._second_sleeper(core)
        core.reset_abilities(w1.peer)
        self.assertEqual([p.type for p in w2.received], [P.NOOP])

    def test_no_write_after_disconnect(self) -> None:
        """Nothing is written to a worker after ``disconnect`` (it held a job and slept)."""
        core, w = self._holding_sleeper()
        w.connected = False
        core.disconnect(w.peer)  # Conn._write fails the test on any write from here on
        self.assertEqual(status_rows(core), [(b"f", 1, 0, 0)])

    def test_cancel_during_promotion_write_deletes_row(self) -> None:
        """A job cancelled while its BG promotion is being written leaves no row behind."""
        store = SlowStore()
        core = JobServerCore(Clock(), store=store, handle_prefix=PREFIX)
        c1, c2 = _conn(core), _conn(core)
        core.submit(c1.peer, b"f", b"u", b"x", NORMAL, False)  # FG job H:t:1
        core.submit(c2.peer, b"f", b"u", b"x", NORMAL, True)  # BG joiner: promotion write
        self.assertTrue(core.cancel(b"H:t:1"))
        stored, d = store.adds.pop()
        d.callback(None)  # the row is now durable
        self.assertEqual(store.done_keys, [stored.key])
