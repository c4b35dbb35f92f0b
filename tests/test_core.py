"""Tests for gearmanpy.server.core: the job server's rules, in memory, on a Clock."""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import example, given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, fail
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gearmanpy.errors import StoreError
from gearmanpy.server.admin import live_jobs, priority_rows, status_rows
from gearmanpy.server.core import HIGH, LOW, NORMAL, JobServerCore
from gearmanpy.server.jobs import GRAB_ALL, GRAB_PLAIN, GRAB_UNIQ
from gearmanpy.store.interface import IJobStore, Priority, StoredJob
from gearmanpy.store.memory import MemoryJobStore
from tests.serverhelpers import P, RecordingPeer, SlowStore, make_core


class SubmitTests(SynchronousTestCase):
    """Submissions, handles and coalescing (protocol.md §3.1, §3.3)."""

    def setUp(self) -> None:
        self.core, self.clock = make_core()
        self.client = RecordingPeer(self.core)

    def test_handles_count_from_one(self) -> None:
        """Handles are <prefix>:<n> with n counting from 1 across functions."""
        self.assertEqual(self.client.submit(b"a"), b"H:test:1")
        self.assertEqual(self.client.submit(b"b"), b"H:test:2")

    def test_handles_and_job_created_across_batches(self) -> None:
        """Handles come in batches: numbering and JOB_CREATED framing run on across them."""
        for n in range(1, 9000):
            self.core.submit(self.client.peer, b"f", b"", b"x", background=True)
            ((ptype, args),) = self.client.take()
            self.assertEqual((ptype, args), (P.JOB_CREATED, (b"H:test:%d" % n,)))

    def test_handle_prefix_with_nul_is_refused(self) -> None:
        """A NUL would split the handle on the wire."""
        with self.assertRaises(ValueError):
            make_core(handle_prefix=b"H:a\0b")

    def test_empty_unique_never_coalesces(self) -> None:
        """Two submissions with an empty unique make two jobs."""
        self.assertNotEqual(self.client.submit(b"f"), self.client.submit(b"f"))

    def test_unique_coalesces_per_function(self) -> None:
        """The same unique joins within a function, not across functions."""
        h1 = self.client.submit(b"f", unique=b"u")
        self.assertEqual(self.client.submit(b"f", unique=b"u", data=b"other"), h1)
        self.assertNotEqual(self.client.submit(b"g", unique=b"u"), h1)
        self.assertEqual(self.core.counters.coalesced, 1)

    def test_joining_does_not_use_a_handle_number(self) -> None:
        """A join replies with the existing handle and the counter does not move."""
        self.client.submit(b"f", unique=b"u")
        self.client.submit(b"f", unique=b"u")
        self.assertEqual(self.client.submit(b"f"), b"H:test:2")

    def test_dash_unique_coalesces_on_payload(self) -> None:
        """Unique ``-`` joins a live job with the same payload; an empty payload never joins."""
        h = self.client.submit(b"f", unique=b"-", data=b"same")
        self.assertEqual(self.client.submit(b"f", unique=b"-", data=b"same"), h)
        self.assertNotEqual(self.client.submit(b"f", unique=b"-", data=b"diff"), h)
        self.assertNotEqual(
            self.client.submit(b"f", unique=b"-", data=b""),
            self.client.submit(b"f", unique=b"-", data=b""),
        )

    def test_64_byte_unique_coalesces(self) -> None:
        """A 64-byte unique is kept whole and coalesces (gearmand truncates it to 63)."""
        u = b"u" * 64
        h = self.client.submit(b"f", unique=u)
        self.assertEqual(self.client.submit(b"f", unique=u), h)
        worker = RecordingPeer(self.core)
        worker.can_do(b"f")
        self.assertEqual(worker.grab(GRAB_UNIQ), (P.JOB_ASSIGN_UNIQ, (h, b"f", u, b"x")))

    def test_unique_over_64_bytes_is_refused(self) -> None:
        """A 65-byte unique (or reducer) gets ERROR ARGUMENT_TOO_LARGE."""
        self.core.submit(self.client.peer, b"f", b"u" * 65, b"x")
        self.core.submit(self.client.peer, b"f", b"u", b"x", reducer=b"r" * 65)
        self.assertEqual(
            self.client.take(),
            [(P.ERROR, (b"ARGUMENT_TOO_LARGE", b"Unique value too large"))] * 2,
        )

    def test_maxqueue_refuses_new_jobs_but_not_joins(self) -> None:
        """With maxqueue 1, a second job is refused with QUEUE_ERROR, but a join passes."""
        self.client.submit(b"f", unique=b"u")
        self.core.set_max_queue(b"f", [1, 1, 1])
        self.core.submit(self.client.peer, b"f", b"", b"x")
        self.assertEqual(self.client.take(), [(P.ERROR, (b"QUEUE_ERROR", b"Job queue is full"))])
        self.assertEqual(self.client.submit(b"f", unique=b"u"), b"H:test:1")

    def test_maxqueue_per_priority(self) -> None:
        """Limits apply by the new job's priority; 0 means unlimited."""
        self.core.function(b"f")
        self.core.set_max_queue(b"f", [0, 1, 0])
        self.client.submit(b"f")
        self.client.submit(b"f", priority=HIGH)
        self.core.submit(self.client.peer, b"f", b"", b"x", NORMAL)
        self.assertEqual(self.client.take()[0][0], P.ERROR)


class AssignmentTests(SynchronousTestCase):
    """Priorities, function order and assignment packets (§3.4)."""

    def setUp(self) -> None:
        self.core, self.clock = make_core()
        self.client = RecordingPeer(self.core)
        self.worker = RecordingPeer(self.core)

    def test_priority_then_fifo(self) -> None:
        """Jobs come out HIGH, NORMAL, LOW and first-in first-out within each."""
        order = [(b"low1", LOW), (b"norm1", NORMAL), (b"high1", HIGH)]
        order += [(b"low2", LOW), (b"norm2", NORMAL), (b"high2", HIGH)]
        for data, prio in order:
            self.client.submit(b"f", data=data, priority=prio, background=True)
        self.worker.can_do(b"f")
        got = [self.worker.grab(GRAB_PLAIN)[1][2] for _ in range(6)]
        self.assertEqual(got, [b"high1", b"high2", b"norm1", b"norm2", b"low1", b"low2"])
        self.assertEqual(self.worker.grab(), (P.NO_JOB, ()))

    def test_newest_registration_first(self) -> None:
        """By default the most recently registered function is served first."""
        for name in (b"A", b"B", b"C"):
            self.client.submit(name, background=True)
        self.worker.can_do(b"A", b"B", b"C")
        self.assertEqual([self.worker.grab(GRAB_PLAIN)[1][1] for _ in range(3)], [b"C", b"B", b"A"])

    def test_round_robin_alternates_functions(self) -> None:
        """With round_robin, functions alternate: C B A C B A."""
        self.core.round_robin = True
        for _ in range(2):
            for name in (b"A", b"B", b"C"):
                self.client.submit(name, background=True)
        self.worker.can_do(b"A", b"B", b"C")
        got = [self.worker.grab(GRAB_PLAIN)[1][1] for _ in range(6)]
        self.assertEqual(got, [b"C", b"B", b"A", b"C", b"B", b"A"])

    def test_assignment_forms(self) -> None:
        """GRAB_JOB, GRAB_JOB_UNIQ and GRAB_JOB_ALL get their packet forms (§3.13)."""
        self.worker.can_do(b"f")
        h1 = self.client.submit(b"f", unique=b"u1", data=b"d1")
        h2 = self.client.submit(b"f", unique=b"", data=b"d2")
        h3 = self.client.submit(b"f", unique=b"u3", data=b"d3", reducer=b"red")
        self.assertEqual(self.worker.grab(GRAB_PLAIN), (P.JOB_ASSIGN, (h1, b"f", b"d1")))
        self.assertEqual(self.worker.grab(GRAB_UNIQ), (P.JOB_ASSIGN_UNIQ, (h2, b"f", b"", b"d2")))
        self.assertEqual(
            self.worker.grab(GRAB_ALL), (P.JOB_ASSIGN_ALL, (h3, b"f", b"u3", b"red", b"d3"))
        )

    def test_worker_may_hold_several_jobs(self) -> None:
        """Each GRAB hands out another job."""
        self.worker.can_do(b"f")
        self.client.submit(b"f")
        self.client.submit(b"f")
        self.assertEqual(self.worker.grab()[0], P.JOB_ASSIGN_UNIQ)
        self.assertEqual(self.worker.grab()[0], P.JOB_ASSIGN_UNIQ)
        self.assertEqual(status_rows(self.core), [(b"f", 2, 2, 1)])


class WakeUpTests(SynchronousTestCase):
    """PRE_SLEEP and NOOP (§3.5)."""

    def setUp(self) -> None:
        self.core, self.clock = make_core()
        self.client = RecordingPeer(self.core)

    def sleeper(self, *names: bytes) -> RecordingPeer:
        w = RecordingPeer(self.core)
        w.can_do(*names)
        self.assertEqual(w.grab(), (P.NO_JOB, ()))
        self.core.pre_sleep(w.peer)
        self.assertEqual(w.take(), [])
        return w

    def test_one_noop_per_grab_cycle(self) -> None:
        """A sleeping worker gets one NOOP however many jobs arrive before it grabs."""
        w = self.sleeper(b"f")
        self.client.submit(b"f")
        self.client.submit(b"f")
        self.assertEqual(w.take(), [(P.NOOP, ())])
        w.grab()
        w.grab()
        self.core.pre_sleep(w.peer)
        self.client.submit(b"f")
        self.assertEqual(w.take(), [(P.NOOP, ())])

    def test_pre_sleep_with_work_waiting_gets_noop_at_once(self) -> None:
        """PRE_SLEEP while a job is runnable answers NOOP immediately."""
        w = RecordingPeer(self.core)
        w.can_do(b"f")
        self.client.submit(b"f")
        self.core.pre_sleep(w.peer)
        self.assertEqual(w.take(), [(P.NOOP, ())])

    def test_only_workers_of_the_function_wake(self) -> None:
        """Workers of other functions, and awake workers, get nothing."""
        a = self.sleeper(b"f")
        b = self.sleeper(b"g")
        awake = RecordingPeer(self.core)
        awake.can_do(b"f")
        self.client.submit(b"f")
        self.assertEqual(a.take(), [(P.NOOP, ())])
        self.assertEqual(b.take(), [])
        self.assertEqual(awake.take(), [])

    def test_sleeper_registrations_follow_can_do_and_cant_do(self) -> None:
        """CANT_DO while asleep: no NOOP for that function; CAN_DO while asleep: NOOPs for it."""
        w = self.sleeper(b"f")
        self.core.cant_do(w.peer, b"f")
        self.core.can_do(w.peer, b"g")
        self.client.submit(b"f")
        self.assertEqual(w.take(), [])
        self.client.submit(b"g")
        self.assertEqual(w.take(), [(P.NOOP, ())])

    def test_awake_worker_gets_no_noop_from_an_old_sleep(self) -> None:
        """A worker that slept for ``f`` and was woken by ``g`` is not woken again by ``f``."""
        w = self.sleeper(b"f", b"g")
        self.client.submit(b"g")
        self.assertEqual(w.take(), [(P.NOOP, ())])
        self.core.grab(w.peer)
        w.take()
        self.client.submit(b"f")
        self.assertEqual(w.take(), [])

    def test_sleep_cycles_do_not_grow_the_sleeper_list(self) -> None:
        """Sleeping over and over for ``f`` and ``g`` while only ``g`` gets jobs keeps one entry."""
        w = self.sleeper(b"f", b"g")
        for _ in range(100):
            self.client.submit(b"g", data=b"y")
            self.core.grab(w.peer)
            self.core.grab(w.peer)
            self.core.pre_sleep(w.peer)
        self.assertEqual(len(self.core.functions[b"f"].sleepers), 1)

    def test_worker_wakeup_limits_and_rotates(self) -> None:
        """With worker_wakeup=1 each job wakes one worker, and successive jobs wake the next."""
        self.core.worker_wakeup = 1
        ws = [self.sleeper(b"f") for _ in range(3)]
        woken = []
        for _ in range(3):
            self.client.submit(b"f")
            woken.append([i for i, w in enumerate(ws) if w.take()])
        self.assertEqual(woken, [[0], [1], [2]])


class WorkResultTests(SynchronousTestCase):
    """WORK_* packets from workers and what clients receive (§3.6, §3.7)."""

    def setUp(self) -> None:
        self.core, self.clock = make_core()
        self.client = RecordingPeer(self.core)
        self.worker = RecordingPeer(self.core)
        self.worker.can_do(b"f")

    def running(self, **kw: object) -> bytes:
        h = self.client.submit(b"f", **kw)  # type: ignore[arg-type]
        self.worker.grab()
        return h

    def test_progress_and_result_forwarded(self) -> None:
        """WORK_DATA, WARNING, STATUS and COMPLETE reach the client in order."""
        h = self.running()
        self.core.work_data(self.worker.peer, P.WORK_DATA, h, b"part\0ial")
        self.core.work_data(self.worker.peer, P.WORK_WARNING, h, b"careful")
        self.core.work_status(self.worker.peer, h, b"1", b"2")
        self.core.work_complete(self.worker.peer, h, b"done")
        self.assertEqual(
            self.client.take(),
            [
                (P.WORK_DATA, (h, b"part\0ial")),
                (P.WORK_WARNING, (h, b"careful")),
                (P.WORK_STATUS, (h, b"1", b"2")),
                (P.WORK_COMPLETE, (h, b"done")),
            ],
        )
        self.assertEqual(status_rows(self.core), [(b"f", 0, 0, 1)])
        self.assertEqual(self.core.counters.completed, 1)

    def test_joiner_gets_later_packets_only(self) -> None:
        """A client joining a running job hears only what happens after it joined."""
        h = self.running(unique=b"u")
        self.core.work_data(self.worker.peer, P.WORK_DATA, h, b"early")
        late = RecordingPeer(self.core)
        self.assertEqual(late.submit(b"f", unique=b"u"), h)
        self.core.work_complete(self.worker.peer, h, b"r")
        self.assertEqual(late.take(), [(P.WORK_COMPLETE, (h, b"r"))])
        self.assertEqual(len(self.client.take()), 2)

    def test_same_connection_twice_gets_two_copies(self) -> None:
        """Two submissions of one unique on one connection get every packet twice."""
        h = self.running(unique=b"u")
        self.client.submit(b"f", unique=b"u")
        self.core.work_complete(self.worker.peer, h, b"r")
        self.assertEqual(self.client.take(), [(P.WORK_COMPLETE, (h, b"r"))] * 2)

    def test_exception_becomes_bare_work_fail_without_option(self) -> None:
        """Without the exceptions option a client gets WORK_FAIL with the bare handle."""
        h = self.running(unique=b"u")
        other = RecordingPeer(self.core)
        other.peer.exceptions = True
        other.submit(b"f", unique=b"u")
        self.core.work_exception(self.worker.peer, h, b"boom")
        self.assertEqual(self.client.take(), [(P.WORK_FAIL, (h,))])
        self.assertEqual(self.client.raw[-1][12:], h)
        self.assertEqual(other.take(), [(P.WORK_EXCEPTION, (h, b"boom"))])

    def test_results_for_unknown_or_foreign_jobs(self) -> None:
        """WORK_* for a job the sender does not hold gets JOB_NOT_FOUND with gearmand's text."""
        h = self.running()
        intruder = RecordingPeer(self.core)
        self.core.work_complete(intruder.peer, h, b"")
        self.core.work_data(intruder.peer, P.WORK_DATA, h, b"")
        self.core.work_exception(intruder.peer, b"H:none", b"")
        self.assertEqual(
            [args for _, args in intruder.take()],
            [
                (b"JOB_NOT_FOUND", b"Job given in work result not found"),
                (b"JOB_NOT_FOUND", b"Job does not exist on server"),
                (b"JOB_NOT_FOUND", b"An exception was received for a job that does not exist"),
            ],
        )

    def test_work_fail_with_overlong_handle(self) -> None:
        """WORK_FAIL with a 64-byte handle gets gearmand's ARGUMENT_TOO_LARGE error."""
        self.core.work_fail(self.worker.peer, b"H" * 64)
        self.assertEqual(
            self.worker.take(),
            [
                (
                    P.ERROR,
                    (
                        b"ARGUMENT_TOO_LARGE",
                        b"Error occurred due to GEARMAND_JOB_HANDLE_SIZE being too small from snprintf",
                    ),
                )
            ],
        )

    def test_background_results_are_dropped(self) -> None:
        """Nobody hears a background job's WORK_DATA or COMPLETE, and the job ends."""
        h = self.running(background=True)
        self.core.work_data(self.worker.peer, P.WORK_DATA, h, b"x")
        self.core.work_complete(self.worker.peer, h, b"x")
        self.assertEqual(self.client.take(), [])
        self.assertEqual(self.core.jobs, {})


class LossTests(SynchronousTestCase):
    """Worker and client loss, retries and timeouts (§3.8, §3.9, §3.11)."""

    def setUp(self) -> None:
        self.core, self.clock = make_core()
        self.client = RecordingPeer(self.core)

    def worker(self, timeout: bytes | None = None) -> RecordingPeer:
        w = RecordingPeer(self.core)
        self.core.can_do(w.peer, b"f", timeout)
        return w

    def test_requeue_goes_to_the_tail(self) -> None:
        """A job whose worker disconnects is retried after the jobs already queued."""
        w = self.worker()
        for data in (b"j0", b"j1", b"j2"):
            self.client.submit(b"f", data=data)
        w.grab()
        w.disconnect()
        w2 = self.worker()
        self.assertEqual([w2.grab()[1][3] for _ in range(3)], [b"j1", b"j2", b"j0"])
        self.assertEqual(live_jobs(self.core)[0].retries, 1)
        self.assertEqual(self.client.take(), [])

    def test_cant_do_and_reset_requeue(self) -> None:
        """CANT_DO and RESET_ABILITIES give back the jobs the worker holds."""
        w = self.worker()
        self.client.submit(b"f")
        w.grab()
        self.core.cant_do(w.peer, b"f")
        self.assertEqual(status_rows(self.core), [(b"f", 1, 0, 0)])
        w.can_do(b"f")
        w.grab()
        self.core.reset_abilities(w.peer)
        self.assertEqual(status_rows(self.core), [(b"f", 1, 0, 0)])

    def test_job_retries_one_fails_on_first_loss(self) -> None:
        """With job_retries=1 the job runs once: a lost worker fails it (bare handle)."""
        self.core.job_retries = 1
        w = self.worker()
        h = self.client.submit(b"f")
        w.grab()
        w.disconnect()
        self.assertEqual(self.client.take(), [(P.WORK_FAIL, (h,))])
        self.assertEqual(self.core.jobs, {})

    def test_job_retries_caps_runs(self) -> None:
        """With job_retries=2 the job runs twice, then fails, as in gearmand 1.1.20 (the
        code before this measured three runs)."""
        self.core.job_retries = 2
        h = self.client.submit(b"f")
        for _ in range(2):
            w = self.worker()
            self.assertEqual(w.grab()[0], P.JOB_ASSIGN_UNIQ)
            w.disconnect()
        self.assertEqual(self.client.take(), [(P.WORK_FAIL, (h,))])
        self.assertEqual(self.core.jobs, {})

    def test_job_retries_zero_means_no_limit(self) -> None:
        """job_retries=0 is gearmand's default: requeue for ever."""
        self.core.job_retries = 0
        self.client.submit(b"f")
        for _ in range(5):
            w = self.worker()
            self.assertEqual(w.grab()[0], P.JOB_ASSIGN_UNIQ)
            w.disconnect()
        self.assertEqual(self.client.take(), [])
        self.assertEqual(live_jobs(self.core)[0].retries, 5)

    def test_timeout_requeues_and_is_cancelled_by_completion(self) -> None:
        """CAN_DO_TIMEOUT requeues a job that overruns (minimum 1 s) and dies with the job."""
        w = self.worker(b"500")
        h = self.client.submit(b"f")
        w.grab()
        self.clock.advance(0.9)
        self.assertEqual(status_rows(self.core), [(b"f", 1, 1, 1)])
        self.clock.advance(0.2)
        self.assertEqual(status_rows(self.core), [(b"f", 1, 0, 1)])
        self.assertEqual(self.core.counters.timed_out, 1)
        self.core.work_complete(w.peer, h, b"late")
        self.assertEqual(w.take(), [])  # a superseded attempt: dropped without an ERROR
        w.grab()
        self.core.work_complete(w.peer, h, b"ok")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.client.take(), [(P.WORK_COMPLETE, (h, b"ok"))])

    def test_overflowing_timeout_means_no_limit(self) -> None:
        """A CAN_DO_TIMEOUT value that overflows or is junk sets no timer (gearmand crashes)."""
        w = self.worker(b"9" * 40)
        self.client.submit(b"f")
        w.grab()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeout_length_does_not_matter_only_its_value(self) -> None:
        """Leading zeros are still 1000 ms; 19 or 20 nines overflow 64 bits: no limit."""
        for value, limit in ((b"0" * 18 + b"1000", 1.0), (b"9" * 19, None), (b"9" * 20, None)):
            w = self.worker(value)
            self.assertEqual(w.peer.timeouts.get(b"f"), limit, value)
            w.disconnect()

    def test_orphaned_queued_job_is_discarded(self) -> None:
        """A queued foreground job whose client left never reaches a worker."""
        h = self.client.submit(b"f", unique=b"u")
        self.client.disconnect()
        self.assertEqual(status_rows(self.core), [(b"f", 1, 0, 0)])
        w = self.worker()
        self.assertEqual(w.grab(), (P.NO_JOB, ()))
        self.assertNotIn(h, self.core.jobs)

    def test_running_job_outlives_its_client(self) -> None:
        """A running job whose client left finishes quietly."""
        w = self.worker()
        h = self.client.submit(b"f")
        w.grab()
        self.client.disconnect()
        self.core.work_complete(w.peer, h, b"r")
        self.assertEqual(w.take(), [])
        self.assertEqual(self.core.jobs, {})


class EpochTests(SynchronousTestCase):
    """SUBMIT_JOB_EPOCH scheduling (§3.12), without gearmand's starvation."""

    def setUp(self) -> None:
        self.core, self.clock = make_core()
        self.client = RecordingPeer(self.core)

    def test_future_job_waits_and_wakes_workers_when_due(self) -> None:
        """A future epoch job is invisible until due, then a sleeping worker gets NOOP."""
        w = RecordingPeer(self.core)
        w.can_do(b"f")
        h = self.client.submit(b"f", background=True, when=1010)
        self.assertEqual(status_rows(self.core), [(b"f", 1, 0, 1)])
        self.assertEqual(w.grab(), (P.NO_JOB, ()))
        self.core.pre_sleep(w.peer)
        self.assertEqual(w.take(), [])
        self.clock.advance(10)
        self.assertEqual(w.take(), [(P.NOOP, ())])
        self.assertEqual(w.grab()[1][0], h)

    def test_future_job_does_not_block_low_jobs(self) -> None:
        """A LOW job runs while a NORMAL epoch job of the same function waits."""
        w = RecordingPeer(self.core)
        w.can_do(b"f")
        self.client.submit(b"f", background=True, when=5000)
        low = self.client.submit(b"f", priority=LOW, background=True)
        self.assertEqual(w.grab()[1][0], low)

    def test_past_epoch_runs_at_once(self) -> None:
        """An epoch in the past queues the job immediately."""
        self.client.submit(b"f", background=True, when=10)
        self.assertEqual(priority_rows(self.core), [(b"f", 0, 1, 0, 0)])


class StatusAndAdminTests(SynchronousTestCase):
    """GET_STATUS(_UNIQUE), cancel, drop function (§3.10, §4.2)."""

    def setUp(self) -> None:
        self.core, self.clock = make_core()
        self.client = RecordingPeer(self.core)
        self.worker = RecordingPeer(self.core)
        self.worker.can_do(b"f")

    def status(self, handle: bytes) -> tuple[bytes, ...]:
        self.core.get_status(self.client.peer, handle)
        return self.client.take()[0][1]

    def test_status_through_a_jobs_life(self) -> None:
        """Unknown, queued, running with progress, then unknown again."""
        self.assertEqual(self.status(b"H:no"), (b"H:no", b"0", b"0", b"0", b"0"))
        h = self.client.submit(b"f", background=True)
        self.assertEqual(self.status(h), (h, b"1", b"0", b"0", b"0"))
        self.worker.grab()
        self.core.work_status(self.worker.peer, h, b"7x", b"abc")
        self.assertEqual(self.status(h), (h, b"1", b"1", b"7", b"0"))
        self.core.work_complete(self.worker.peer, h, b"")
        self.assertEqual(self.status(h), (h, b"0", b"0", b"0", b"0"))

    def test_long_handle_gets_an_answer(self) -> None:
        """A 64+-byte handle gets an 'unknown' reply (gearmand never answers)."""
        self.assertEqual(self.status(b"h" * 80)[1:], (b"0", b"0", b"0", b"0"))

    def test_status_unique_counts_clients(self) -> None:
        """STATUS_RES_UNIQUE echoes the unique and counts foreground client records."""
        self.client.submit(b"f", unique=b"u")
        self.client.submit(b"f", unique=b"u")
        self.core.get_status_unique(self.client.peer, b"u")
        self.assertEqual(
            self.client.take(), [(P.STATUS_RES_UNIQUE, (b"u", b"1", b"0", b"0", b"0", b"2"))]
        )

    def test_cancel_queued_job(self) -> None:
        """Cancelling a queued job fails it to its clients; no worker ever gets it."""
        h = self.client.submit(b"f")
        self.assertTrue(self.core.cancel(h))
        self.assertEqual(self.client.take(), [(P.WORK_FAIL, (h,))])
        self.assertEqual(self.worker.grab(), (P.NO_JOB, ()))
        self.assertFalse(self.core.cancel(b"H:unknown"))

    def test_cancel_running_job_forwards_nothing_later(self) -> None:
        """After cancel, the worker's WORK_COMPLETE is accepted but not forwarded."""
        h = self.client.submit(b"f")
        self.worker.grab()
        self.core.cancel(h)
        self.client.take()
        self.core.work_complete(self.worker.peer, h, b"r")
        self.assertEqual(self.client.take(), [])
        self.assertEqual(self.worker.take(), [])
        self.assertEqual(self.core.jobs, {})

    def test_drop_function_refuses_with_queued_jobs(self) -> None:
        """drop function refuses while workers or jobs need the function."""
        self.assertEqual(
            self.core.drop_function(b"F"),
            b"there are still connected workers or executing clients",
        )
        self.worker.disconnect()
        self.client.submit(b"f", background=True)
        self.assertEqual(self.core.drop_function(b"f"), b"there are still queued jobs")
        self.assertEqual(self.core.drop_function(b"nope"), b"function not found")
        self.core.function(b"idle")
        self.assertIsNone(self.core.drop_function(b"IDLE"))


class StoreTests(SynchronousTestCase):
    """Background jobs and the persistent store (§5)."""

    def setUp(self) -> None:
        self.store = SlowStore()
        verifyObject(IJobStore, self.store)
        self.core, self.clock = make_core(store=self.store)
        self.client = RecordingPeer(self.core)

    def test_ack_only_after_durable_and_in_order(self) -> None:
        """JOB_CREATED for a background job waits for the store; later replies queue behind."""
        self.core.submit(self.client.peer, b"f", b"", b"bg", NORMAL, True)
        self.core.submit(self.client.peer, b"f", b"", b"fg", NORMAL, False)
        self.assertEqual(self.client.take(), [])
        worker = RecordingPeer(self.core)
        worker.can_do(b"f")
        # Only the foreground job is runnable before the write completes.
        self.assertEqual(worker.grab()[1][3], b"fg")
        self.assertEqual(worker.grab(), (P.NO_JOB, ()))
        stored, d = self.store.adds[0]
        self.assertEqual(
            (stored.function, stored.data, stored.priority), (b"f", b"bg", Priority.NORMAL)
        )
        d.callback(None)
        self.assertEqual(
            self.client.take(), [(P.JOB_CREATED, (b"H:test:1",)), (P.JOB_CREATED, (b"H:test:2",))]
        )
        self.assertEqual(worker.grab()[1][3], b"bg")

    def test_store_failure_refuses_the_job(self) -> None:
        """A failed write answers ERROR QUEUE_ERROR and the job never runs."""
        self.core.submit(self.client.peer, b"f", b"u", b"bg", NORMAL, True)
        self.core.submit(self.client.peer, b"f", b"u", b"bg", NORMAL, True)
        self.store.adds[0][1].errback(StoreError("disk gone"))
        self.assertEqual(self.client.take(), [(P.ERROR, (b"QUEUE_ERROR", b"QUEUE_ERROR"))] * 2)
        self.assertEqual(self.core.jobs, {})
        self.assertEqual(self.flushLoggedErrors(), [])  # one line, no traceback (test_store_outage)

    def test_done_on_completion_and_retries_recorded(self) -> None:
        """A requeue records the retry count; completion removes the stored job."""
        self.core.submit(self.client.peer, b"f", b"", b"bg", NORMAL, True)
        self.store.adds[0][1].callback(None)
        key = self.store.adds[0][0].key
        w = RecordingPeer(self.core)
        w.can_do(b"f")
        w.grab()
        w.disconnect()
        self.assertEqual(self.store.retries, {key: 1})
        w = RecordingPeer(self.core)
        w.can_do(b"f")
        h = w.grab()[1][0]
        self.core.work_complete(w.peer, h, b"")
        self.assertEqual(self.store.done_keys, [key])

    def test_background_join_promotes_a_foreground_job(self) -> None:
        """A background submission joining a foreground job makes it durable (quirk 11)."""
        h = self.client.submit(b"f", unique=b"u")
        bg = RecordingPeer(self.core)
        self.core.submit(bg.peer, b"f", b"u", b"x", NORMAL, True)
        self.assertEqual(bg.take(), [])
        self.store.adds[0][1].callback(None)
        self.assertEqual(bg.take(), [(P.JOB_CREATED, (h,))])
        self.client.disconnect()
        w = RecordingPeer(self.core)
        w.can_do(b"f")
        self.assertEqual(w.grab()[1][0], h)

    def test_replay_restores_jobs(self) -> None:
        """Replayed jobs keep priority, order, unique, epoch and retries; uniques coalesce."""
        core, clock = make_core(store=MemoryJobStore())
        core.replay(
            [
                StoredJob("k1", b"f", b"u1", Priority.LOW, b"a", retries=2),
                StoredJob("k2", b"f", b"", Priority.HIGH, b"b"),
                StoredJob("k3", b"f", b"u3", Priority.NORMAL, b"c", when=2000),
            ]
        )
        client = RecordingPeer(core)
        self.assertEqual(client.submit(b"f", unique=b"u1", background=True), b"H:test:1")
        w = RecordingPeer(core)
        w.can_do(b"f")
        self.assertEqual(w.grab()[1][3], b"b")
        self.assertEqual(w.grab()[1][3], b"a")
        self.assertEqual(w.grab(), (P.NO_JOB, ()))
        clock.advance(1000)
        self.assertEqual(w.grab()[1][2:], (b"u3", b"c"))
        self.assertEqual(core.jobs[b"H:test:1"].retries, 2)

    def test_when_drained(self) -> None:
        """when_drained fires once the last job ends."""
        core, clock = make_core()
        client = RecordingPeer(core)
        h = client.submit(b"f", background=True)
        d = core.when_drained()
        self.assertNoResult(d)
        self.assertTrue(core.cancel(h))
        w = RecordingPeer(core)
        w.can_do(b"f")
        w.grab()
        self.successResultOf(d)


class FailingStoreTests(SynchronousTestCase):
    """A store that fails synchronously still gets an orderly refusal."""

    def test_sync_failure(self) -> None:
        """fail() from add() answers ERROR at once."""

        @implementer(IJobStore)
        class Broken(SlowStore):
            def add(self, job: StoredJob) -> Deferred[None]:
                return fail(StoreError("read-only"))

        core, _ = make_core(store=Broken())
        client = RecordingPeer(core)
        core.submit(client.peer, b"f", b"", b"x", NORMAL, True)
        self.assertEqual(client.take()[0][0], P.ERROR)
        self.flushLoggedErrors(StoreError)


#: One submission: (function, unique, payload). Two names, so runs of one name alternate
#: with the other; uniques empty, ``-`` (coalesces on the payload), plain, 64 bytes (the
#: longest accepted) and 65 (refused); payloads that make ``-`` and ``u1`` jobs meet.
batch_jobs = st.tuples(
    st.sampled_from([b"f", b"g"]),
    st.sampled_from([b"", b"-", b"u1", b"u2", b"x" * 64, b"x" * 65]),
    st.sampled_from([b"", b"a", b"u1"]),
)

#: One run of one SUBMIT type, as the decoder hands it over: priority, background, the
#: jobs, the epoch (clock at 1000: past, future) and the reducer (65 bytes: refused).
batches = st.tuples(
    st.sampled_from([HIGH, NORMAL, LOW]),
    st.booleans(),
    st.lists(batch_jobs, min_size=1, max_size=8),
    st.sampled_from([0, 0, 500, 2000]),
    st.sampled_from([b"", b"", b"r", b"r" * 65]),
)

Batch = tuple[int, bool, list[tuple[bytes, bytes, bytes]], int, bytes]


class SubmitBatchTests(SynchronousTestCase):
    """submit_batch() (a pipelined run, as the protocol calls it) is submit() per job."""

    def run_batches(
        self,
        runs: list[Batch],
        batched: bool,
        limits: list[int],
        store: bool,
        sleeper: bool,
        submitter_sleeps: bool,
    ) -> dict[str, Any]:
        """Submit ``runs`` to a fresh core, each run in one call or job by job; return
        everything that can be seen of the outcome."""
        core, clock = make_core(store=MemoryJobStore() if store else None)
        client = RecordingPeer(core)
        worker = RecordingPeer(core)
        for peer, sleeps in ((worker, sleeper), (client, submitter_sleeps)):
            if sleeps:
                peer.can_do(b"f", b"g")
                core.pre_sleep(peer.peer)
        core.function(b"f")
        core.set_max_queue(b"f", limits)
        for priority, background, jobs, when, reducer in runs:
            if batched:
                core.submit_batch(client.peer, priority, background, jobs, when, reducer)
            else:
                for name, unique, data in jobs:
                    core.submit(
                        client.peer, name, unique, data, priority, background, when, reducer
                    )
        return self.outcome(core, clock, [client, worker])

    def outcome(
        self, core: JobServerCore, clock: Any, peers: list[RecordingPeer]
    ) -> dict[str, Any]:
        """Replies, jobs, queues, uniques, counters, timers and store rows, as plain data."""
        index = [p.peer for p in peers]
        rows = None
        if core.store is not None:
            # A store key is "<boot>-<handle number>": the boot part differs per core.
            rows = [
                attrs.evolve(row, key=row.key.partition("-")[2])
                for row in self.successResultOf(core.store.replay())
            ]
        return {
            "replies": [p.raw for p in peers],
            "jobs": [
                (
                    h,
                    j.function.name,
                    j.unique,
                    j.data,
                    j.priority,
                    j.background,
                    j.state,
                    j.when,
                    j.reducer,
                    j.key,
                    [index.index(c) for c in j.clients],
                    j.persisted,
                )
                for h, j in core.jobs.items()
            ],
            "functions": [
                (
                    name,
                    [[j.handle for j in q] for q in f.queues],
                    {k: j.handle for k, j in f.uniques.items()},
                    f.scheduled,
                    attrs.asdict(f.counters),
                )
                for name, f in core.functions.items()
            ],
            "counters": attrs.asdict(core.counters),
            "client_jobs": [sorted(j.handle for j in p.client_jobs) for p in index],
            "timers": sorted(c.getTime() for c in clock.getDelayedCalls()),
            "rows": rows,
        }

    @given(
        runs=st.lists(batches, min_size=1, max_size=4),
        limits=st.lists(st.integers(0, 4), min_size=3, max_size=3),
        store=st.booleans(),
        sleeper=st.booleans(),
        submitter_sleeps=st.booleans(),
    )
    @example(
        runs=[
            (NORMAL, True, [(b"f", b"u1", b"a"), (b"f", b"-", b"u1"), (b"g", b"u1", b"")], 0, b""),
            (NORMAL, False, [(b"f", b"", b"a")] * 3 + [(b"f", b"u1", b"")], 0, b""),
        ],
        limits=[0, 2, 0],
        store=True,
        sleeper=True,
        submitter_sleeps=False,
    )
    def test_batch_equals_submit_per_job(
        self,
        runs: list[Batch],
        limits: list[int],
        store: bool,
        sleeper: bool,
        submitter_sleeps: bool,
    ) -> None:
        """The same runs in one call each or job by job give the same replies and state."""
        args = (limits, store, sleeper, submitter_sleeps)
        self.assertEqual(self.run_batches(runs, True, *args), self.run_batches(runs, False, *args))


class FixedStoreTests(SynchronousTestCase):
    """The store and the counters are fixed when the core is made (durability is built on them)."""

    def test_store_and_counters_cannot_be_replaced(self) -> None:
        """Replacing the store later would send JOB_CREATED for jobs no store keeps: refused."""
        import attrs

        core, _ = make_core(store=MemoryJobStore())
        with self.assertRaises(attrs.exceptions.FrozenAttributeError):
            core.store = MemoryJobStore()
        with self.assertRaises(attrs.exceptions.FrozenAttributeError):
            core.counters = core.counters.__class__()
