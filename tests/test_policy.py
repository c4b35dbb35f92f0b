"""Tests for the failure policy in the core: retries, the dead set, timeouts, throttles, kept
results and recurring jobs (server/policy.py, failures.py, kept.py, recurring.py), in memory
on a Clock."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from gearmanpy.protocol.admin import parse_admin_line
from gearmanpy.server.admin import AdminCommands
from gearmanpy.server.core import HIGH, JobServerCore
from gearmanpy.server.kept import DeadSet
from gearmanpy.server.outbound import Outbound
from gearmanpy.server.policy import FunctionPolicy, Policies, Throttle
from gearmanpy.server.recurring import RecurringJob, RecurringJobs
from gearmanpy.store.interface import DeadJob, Priority, StoredJob
from tests.serverhelpers import P, RecordingPeer, SlowStore, make_core


class Admin:
    """Admin lines against a core, answered as text."""

    def __init__(self, core: JobServerCore, trusted: bool = True) -> None:
        self.commands = AdminCommands(core)
        self.raw: list[bytes] = []
        self.peer = core.connect(Outbound(self.raw.append), lambda: None, trusted=trusted)

    def __call__(self, line: bytes) -> bytes:
        self.commands.handle(self.peer, parse_admin_line(line))
        return self.raw.pop()

    def rows(self, line: bytes) -> list[list[bytes]]:
        """A list reply's rows, split on tabs."""
        reply = self(line)
        assert reply.endswith(b".\n"), reply
        return [r.split(b"\t") for r in reply[:-2].splitlines()]


def policy_core(**settings: Any) -> tuple[JobServerCore, Any, RecordingPeer, RecordingPeer]:
    """A core whose function ``f`` has the policy ``settings`` (jitter 0), a client and a
    worker registered for ``f``."""
    settings.setdefault("jitter", 0.0)
    core, clock = make_core(policies=Policies(rules={"f": settings}), random=lambda: 0.5)
    client = RecordingPeer(core)
    worker = RecordingPeer(core)
    worker.can_do(b"f")
    return core, clock, client, worker


def fail_once(core: JobServerCore, worker: RecordingPeer, how: str = "fail") -> bytes:
    """The worker takes the next job and fails it; return its handle."""
    ptype, args = worker.grab()
    assert ptype == P.JOB_ASSIGN_UNIQ, (ptype, args)
    handle = args[0]
    if how == "fail":
        core.work_fail(worker.peer, handle)
    elif how == "exception":
        core.work_exception(worker.peer, handle, b"boom\nat line 3")
    else:
        worker.disconnect()
    return handle


class DefaultPolicyTests(SynchronousTestCase):
    """With no configuration, nothing changes on the wire and failures are kept."""

    def test_failed_background_job_goes_to_the_dead_set(self) -> None:
        """gearmand forgets it; here ``show dead`` finds it with its error and attempts."""
        core, clock = make_core()
        client, worker = RecordingPeer(core), RecordingPeer(core)
        worker.can_do(b"f")
        h = client.submit(b"f", data=b"payload", unique=b"u1", background=True)
        fail_once(core, worker, "exception")
        self.assertEqual(core.counters.dead, 1)
        self.assertNotIn(h, core.jobs)
        (row,) = Admin(core).rows(b"show dead")
        self.assertEqual(row[:4], [h, b"f", b"u1", b"1"])
        self.assertEqual(row[5], b"boom\\x0aat line 3")  # one line, the newline escaped
        self.assertEqual(worker.grab(), (P.NO_JOB, ()))  # not retried

    def test_lost_worker_requeues_at_once_as_gearmand(self) -> None:
        """No retry policy: a lost worker's background job is queued again at once."""
        core, clock = make_core()
        client, worker = RecordingPeer(core), RecordingPeer(core)
        worker.can_do(b"f")
        h = client.submit(b"f", background=True)
        fail_once(core, worker, "lost")
        other = RecordingPeer(core)
        other.can_do(b"f")
        self.assertEqual(other.grab()[1][0], h)
        self.assertEqual(len(core.dead), 0)

    def test_job_retries_exhausted_background_job_is_dead(self) -> None:
        """``--job-retries`` ends a background job in the dead set ("worker lost")."""
        core, clock = make_core(job_retries=1)
        client, worker = RecordingPeer(core), RecordingPeer(core)
        worker.can_do(b"f")
        h = client.submit(b"f", background=True)
        fail_once(core, worker, "lost")
        self.assertEqual(core.dead.jobs[h].error, b"worker lost")

    def test_foreground_failure_is_not_kept(self) -> None:
        """A foreground job's failure goes to its client, as in gearmand, and nowhere else."""
        core, clock = make_core()
        client, worker = RecordingPeer(core), RecordingPeer(core)
        worker.can_do(b"f")
        h = client.submit(b"f")
        fail_once(core, worker)
        self.assertEqual(client.take(), [(P.WORK_FAIL, (h,))])
        self.assertEqual(len(core.dead), 0)


class RetryTests(SynchronousTestCase):
    """Background jobs retried with exponential backoff, then dead."""

    def test_backoff_then_dead(self) -> None:
        """attempts=3, backoff 10 s doubling: retried at +10 s and +20 s, then dead."""
        core, clock, client, worker = policy_core(attempts=3, backoff=10.0)
        h = client.submit(b"f", unique=b"u", background=True)
        admin = Admin(core)
        fail_once(core, worker)
        (row,) = admin.rows(b"show scheduled")
        self.assertEqual(row[:3], [h, b"f", b"u"])
        self.assertEqual(row[5:], [b"1", b"failed"])
        clock.advance(9.9)
        self.assertEqual(worker.grab(), (P.NO_JOB, ()))
        clock.advance(0.1)
        fail_once(core, worker, "exception")
        clock.advance(19.9)
        self.assertEqual(worker.grab(), (P.NO_JOB, ()))
        clock.advance(0.1)
        fail_once(core, worker)
        self.assertEqual(core.counters.retried, 2)
        self.assertEqual(core.dead.jobs[h].job.retries, 3)
        self.assertEqual(admin.rows(b"show scheduled"), [])

    def test_lost_worker_counts_as_an_attempt(self) -> None:
        """With a retry policy, worker loss waits for the backoff like any failure."""
        core, clock, client, worker = policy_core(attempts=2, backoff=5.0)
        h = client.submit(b"f", background=True)
        fail_once(core, worker, "lost")
        other = RecordingPeer(core)
        other.can_do(b"f")
        self.assertEqual(other.grab(), (P.NO_JOB, ()))
        clock.advance(5)
        self.assertEqual(other.grab()[1][0], h)
        other.disconnect()
        self.assertEqual(core.dead.jobs[h].error, b"worker lost")

    def test_lost_worker_fails_the_attempt_to_a_joined_foreground_client(self) -> None:
        """A foreground submission that joined a background job with a retry policy hears
        WORK_FAIL when the attempt's worker is lost, as when the worker sends WORK_FAIL (it
        was left waiting for nothing)."""
        core, clock, client, worker = policy_core(attempts=2, backoff=5.0)
        h = client.submit(b"f", unique=b"u", background=True)
        joined = RecordingPeer(core)
        self.assertEqual(joined.submit(b"f", unique=b"u"), h)
        fail_once(core, worker, "lost")
        self.assertEqual(joined.take(), [(P.WORK_FAIL, (h,))])
        self.assertEqual(joined.peer.client_jobs, set())

    def test_backoff_is_capped_and_jittered(self) -> None:
        """The delay doubles up to backoff_max, spread by the jitter fraction."""
        policy = FunctionPolicy(backoff=1.0, backoff_max=8.0, jitter=0.5)
        self.assertEqual([policy.delay(n, lambda: 0.5) for n in (1, 2, 3, 4, 9)], [1, 2, 4, 8, 8])
        self.assertEqual(policy.delay(2, lambda: 0.0), 1.0)
        self.assertEqual(policy.delay(2, lambda: 1.0), 3.0)

    def test_foreground_jobs_are_not_retried(self) -> None:
        """A client waits on a foreground job: WORK_FAIL reaches it at once."""
        core, clock, client, worker = policy_core(attempts=5)
        h = client.submit(b"f")
        fail_once(core, worker)
        self.assertEqual(client.take(), [(P.WORK_FAIL, (h,))])
        self.assertEqual(core.counters.retried, 0)

    def test_store_sees_reschedule_and_bury(self) -> None:
        """The waiting retry and the dead job are written to the store (with the job's key)."""
        store = SlowStore()
        core, clock = make_core(store=store, policies=Policies(rules={"f": {"attempts": 2}}))
        client, worker = RecordingPeer(core), RecordingPeer(core)
        worker.can_do(b"f")
        core.submit(client.peer, b"f", b"", b"x", background=True)
        store.adds[0][1].callback(None)
        key = store.adds[0][0].key
        fail_once(core, worker)
        ((op, k, when, retries, error),) = store.calls
        self.assertEqual((op, k, retries, error), ("reschedule", key, 1, b"failed"))
        clock.advance(when - clock.seconds())
        fail_once(core, worker)
        op, dead = store.calls[1]
        self.assertEqual((op, dead.job.key, dead.job.retries), ("bury", key, 2))

    def test_cancel_a_waiting_retry_by_unique(self) -> None:
        """``cancel unique`` finds a job that waits for its retry."""
        core, clock, client, worker = policy_core(attempts=3, backoff=60.0)
        client.submit(b"f", unique=b"nightly", background=True)
        fail_once(core, worker)
        admin = Admin(core)
        self.assertEqual(admin(b"cancel unique f nightly"), b"OK\r\n")
        self.assertEqual(admin.rows(b"show scheduled"), [])
        self.assertEqual(admin(b"cancel unique f nightly"), b"ERR UNKNOWN_JOB\r\n")
        clock.advance(60)
        self.assertEqual(worker.grab(), (P.NO_JOB, ()))


class DeadSetTests(SynchronousTestCase):
    """``show dead``, ``retry dead``, ``drop dead`` and the dead set's bounds."""

    def setUp(self) -> None:
        self.core, self.clock = make_core()
        self.client, self.worker = RecordingPeer(self.core), RecordingPeer(self.core)
        self.worker.can_do(b"f", b"g")
        self.admin = Admin(self.core)

    def kill(self, name: bytes) -> bytes:
        h = self.client.submit(name, background=True)
        fail_once(self.core, self.worker)
        return h

    def test_retry_dead_by_handle_runs_it_again(self) -> None:
        """``retry dead HANDLE`` queues it under its handle; a healthy worker completes it."""
        h = self.kill(b"f")
        self.assertEqual(self.admin(b"retry dead " + h), b"OK\r\n")
        self.assertEqual(self.admin.rows(b"show dead"), [])
        ptype, args = self.worker.grab()
        self.assertEqual(args[0], h)
        self.core.work_complete(self.worker.peer, h, b"done")
        self.assertEqual(self.core.counters.completed, 1)

    def test_retry_and_drop_by_function_and_all(self) -> None:
        """FUNCTION picks that function's dead jobs; ``all`` every one; no match is ERR."""
        hf, hg, hg2 = self.kill(b"f"), self.kill(b"g"), self.kill(b"g")
        self.assertEqual([r[0] for r in self.admin.rows(b"show dead g")], [hg, hg2])
        self.assertEqual(self.admin(b"drop dead g"), b"OK\r\n")
        self.assertEqual([r[0] for r in self.admin.rows(b"show dead")], [hf])
        self.assertTrue(self.admin(b"drop dead g").startswith(b"ERR NO_DEAD_JOB"))
        self.assertEqual(self.admin(b"retry dead all"), b"OK\r\n")
        self.assertEqual(len(self.core.dead), 0)

    def test_changing_the_dead_set_is_for_trusted_peers(self) -> None:
        """A remote peer may look, not retry or drop."""
        h = self.kill(b"f")
        remote = Admin(self.core, trusted=False)
        self.assertEqual(len(remote.rows(b"show dead")), 1)
        self.assertTrue(remote(b"retry dead " + h).startswith(b"ERR PERMISSION_DENIED"))
        self.assertTrue(remote(b"drop dead all").startswith(b"ERR PERMISSION_DENIED"))

    def test_bounded_by_count_and_age(self) -> None:
        """Past max_jobs the oldest goes; past max_age the sweep forgets it."""
        dead = DeadSet(max_jobs=2, max_age=100.0)
        jobs = [
            DeadJob(StoredJob(str(n), b"f", b"", Priority.NORMAL, b"", handle=b"H:%d" % n), b"e", t)
            for n, t in ((1, 0.0), (2, 50.0), (3, 60.0))
        ]
        self.assertEqual(dead.add(jobs[0]), [])
        self.assertEqual(dead.add(jobs[1]), [])
        self.assertEqual(dead.add(jobs[2]), [jobs[0]])
        self.assertEqual(dead.expire(155.0), [jobs[1]])
        self.assertEqual(list(dead.jobs), [b"H:3"])

    def test_sweep_forgets_old_dead_jobs(self) -> None:
        """The core's sweep timer applies the dead set's age."""
        self.core.dead.max_age = 100.0
        self.kill(b"f")
        self.clock.advance(120)
        self.assertEqual(len(self.core.dead), 0)

    def test_replay_restores_the_dead_set(self) -> None:
        """A restart reads the dead set back; old entries past the age are dropped."""
        now = self.clock.seconds()
        stored = [
            DeadJob(StoredJob("k1", b"f", b"u", Priority.HIGH, b"x", handle=b"H:a"), b"e", now),
            DeadJob(StoredJob("k2", b"f", b"", Priority.LOW, b"", handle=b""), b"e", 1.0),
        ]
        self.core.dead.max_age = 100.0
        self.core.replay_dead(stored)
        self.assertEqual(list(self.core.dead.jobs), [b"H:a"])
        self.assertEqual(self.admin(b"retry dead H:a"), b"OK\r\n")
        job = self.core.jobs[b"H:a"]
        self.assertEqual((job.priority, job.unique, job.data), (HIGH, b"u", b"x"))


class TimeoutTests(SynchronousTestCase):
    """A default run-time limit for workers that do not send CAN_DO_TIMEOUT."""

    def test_default_timeout_requeues(self) -> None:
        """timeout=5: after 5 s the job goes back to the queue (on_timeout retry)."""
        core, clock, client, worker = policy_core(timeout=5.0)
        h = client.submit(b"f", background=True)
        self.assertEqual(worker.grab()[1][0], h)
        clock.advance(5)
        self.assertEqual(core.counters.timed_out, 1)
        other = RecordingPeer(core)
        other.can_do(b"f")
        self.assertEqual(other.grab()[1][0], h)

    def test_timeout_fails_to_the_dead_set(self) -> None:
        """on_timeout=fail: a timed-out background job is dead at once, error "timeout"."""
        core, clock, client, worker = policy_core(timeout=5.0, on_timeout="fail", attempts=5)
        h = client.submit(b"f", background=True)
        worker.grab()
        clock.advance(5)
        self.assertEqual(core.dead.jobs[h].error, b"timeout")

    def test_timeout_fails_a_foreground_job(self) -> None:
        """on_timeout=fail: a foreground client gets WORK_FAIL."""
        core, clock, client, worker = policy_core(timeout=5.0, on_timeout="fail")
        h = client.submit(b"f")
        worker.grab()
        clock.advance(5)
        self.assertEqual(client.take(), [(P.WORK_FAIL, (h,))])
        self.assertNotIn(h, core.jobs)

    def test_can_do_timeout_wins(self) -> None:
        """A worker's own CAN_DO_TIMEOUT is used instead of the default."""
        core, clock, client, worker = policy_core(timeout=5.0)
        core.can_do(worker.peer, b"f", b"20000")
        client.submit(b"f", background=True)
        worker.grab()
        clock.advance(10)
        self.assertEqual(core.counters.timed_out, 0)


class ThrottleTests(SynchronousTestCase):
    """Running caps and rates withhold assignment as an empty queue would."""

    def test_running_cap(self) -> None:
        """max_running=1: a second worker gets NO_JOB, sleeps, and a NOOP when the first ends."""
        core, clock, client, worker = policy_core(max_running=1)
        h1 = client.submit(b"f", background=True)
        client.submit(b"f", background=True)
        second = RecordingPeer(core)
        second.can_do(b"f")
        self.assertEqual(worker.grab()[1][0], h1)
        self.assertEqual(second.grab(), (P.NO_JOB, ()))
        core.pre_sleep(second.peer)
        self.assertEqual(second.take(), [])  # no NOOP while the cap is reached
        core.work_complete(worker.peer, h1, b"")
        self.assertEqual(second.take(), [(P.NOOP, ())])
        self.assertEqual(second.grab()[0], P.JOB_ASSIGN_UNIQ)

    def test_other_functions_still_served(self) -> None:
        """A throttled function does not keep a worker from its other functions."""
        core, clock, client, first = policy_core(max_running=1)
        client.submit(b"f", background=True)
        client.submit(b"f", background=True)
        hg = client.submit(b"g", background=True)
        both = RecordingPeer(core)
        both.can_do(b"g", b"f")  # f is its newest: asked first
        self.assertEqual(first.grab()[0], P.JOB_ASSIGN_UNIQ)  # f's cap is reached
        self.assertEqual(both.grab()[1][0], hg)
        self.assertEqual(both.grab(), (P.NO_JOB, ()))

    def test_rate(self) -> None:
        """rate=1, burst=1: one job per second; the sleeper is woken when a token is back."""
        core, clock, client, worker = policy_core(rate=1.0, burst=1)
        for _ in range(3):
            client.submit(b"f", background=True)
        self.assertEqual(worker.grab()[0], P.JOB_ASSIGN_UNIQ)
        self.assertEqual(worker.grab(), (P.NO_JOB, ()))
        core.pre_sleep(worker.peer)
        self.assertEqual(worker.take(), [])
        clock.advance(1.0)
        self.assertEqual(worker.take(), [(P.NOOP, ())])
        self.assertEqual(worker.grab()[0], P.JOB_ASSIGN_UNIQ)

    def test_token_bucket(self) -> None:
        """A bucket of 3 at 2 per second: three at once, then one per half second."""
        t = Throttle.of(FunctionPolicy(rate=2.0, burst=3), 0.0)
        assert t is not None
        started = 0
        while t.allows(0, 0.0):
            t.take(0.0)
            started += 1
        self.assertEqual(started, 3)
        self.assertAlmostEqual(t.wait(0.0), 0.5)
        self.assertTrue(t.allows(0, 0.5))

    def test_policy_set_at_run_time(self) -> None:
        """``policy set`` changes a function's throttle at once; ``policy reset`` lifts it."""
        core, clock = make_core()
        client, worker, second = (RecordingPeer(core) for _ in range(3))
        worker.can_do(b"f")
        second.can_do(b"f")
        admin = Admin(core)
        self.assertEqual(admin(b"policy set f max_running=1"), b"OK\r\n")
        client.submit(b"f", background=True)
        client.submit(b"f", background=True)
        worker.grab()
        self.assertEqual(second.grab(), (P.NO_JOB, ()))
        core.pre_sleep(second.peer)
        self.assertEqual(admin(b"policy reset f"), b"OK\r\n")
        self.assertEqual(second.take(), [(P.NOOP, ())])
        self.assertIn([b"max_running", b"0"], admin.rows(b"show policy f"))

    def test_bad_policy_is_refused(self) -> None:
        """An unknown setting or a bad value is ERR BAD_POLICY, and changes nothing."""
        core, clock = make_core()
        admin = Admin(core)
        self.assertTrue(admin(b"policy set f nonsense=1").startswith(b"ERR BAD_POLICY"))
        self.assertTrue(admin(b"policy set f attempts=0").startswith(b"ERR BAD_POLICY"))
        self.assertTrue(admin(b"policy set f on_timeout=later").startswith(b"ERR BAD_POLICY"))
        self.assertEqual(core.policies.rules, {})


class KeptResultTests(SynchronousTestCase):
    """Kept results of background jobs (``show result``)."""

    def test_complete_result_is_kept_then_expires(self) -> None:
        """keep_results=100: the result, its status and times, gone after the time."""
        core, clock, client, worker = policy_core(keep_results=100.0)
        h = client.submit(b"f", unique=b"u", background=True)
        worker.grab()
        core.work_status(worker.peer, h, b"3", b"4")
        core.work_complete(worker.peer, h, b"\x00binary")
        admin = Admin(core)
        fields = dict(admin.rows(b"show result " + h))  # type: ignore[arg-type]
        self.assertEqual(fields[b"outcome"], b"complete")
        self.assertEqual(fields[b"status"], b"3/4")
        self.assertEqual(fields[b"data"], b"AGJpbmFyeQ==")
        self.assertEqual(dict(admin.rows(b"show result f u"))[b"handle"], h)  # type: ignore[arg-type]
        core.get_status(client.peer, h)
        self.assertEqual(client.take()[-1], (P.STATUS_RES, (h, b"0", b"0", b"0", b"0")))
        clock.advance(120)
        self.assertTrue(admin(b"show result " + h).startswith(b"ERR NO_RESULT"))

    def test_failure_is_kept_too(self) -> None:
        """A job that ends in the dead set keeps its failure as its result."""
        core, clock, client, worker = policy_core(keep_results=100.0)
        h = client.submit(b"f", background=True)
        fail_once(core, worker, "exception")
        self.assertEqual(core.kept.get(h).outcome, "exception")  # type: ignore[union-attr]

    def test_not_kept_by_default(self) -> None:
        """Without keep_results nothing is kept."""
        core, clock, client, worker = policy_core()
        h = client.submit(b"f", background=True)
        worker.grab()
        core.work_complete(worker.peer, h, b"r")
        self.assertEqual(len(core.kept), 0)


class PoliciesTests(SynchronousTestCase):
    """Finding a function's policy: defaults, globs in order, then the exact name."""

    def test_resolution_order(self) -> None:
        policies = Policies(
            defaults={"attempts": 2},
            rules={"img_*": {"attempts": 4, "rate": 5.0}, "img_big": {"rate": 1.0}, "*_x": {}},
        )
        self.assertEqual(policies.for_function(b"other").attempts, 2)
        self.assertEqual(policies.for_function(b"img_small").rate, 5.0)
        big = policies.for_function(b"img_big")
        self.assertEqual((big.attempts, big.rate), (4, 1.0))

    def test_run_time_changes_sit_over_the_configuration_and_reset_takes_them_back(self) -> None:
        """``policy set`` wins over the configured rules (a glob over an exact name too);
        ``policy reset`` goes back to the configured policy, not to gearmand's defaults."""
        policies = Policies(defaults={"attempts": 2}, rules={"img_big": {"attempts": 4}})
        policies.set("img_*", {"attempts": 7})
        policies.set("*", {"rate": 3.0})
        big = policies.for_function(b"img_big")
        self.assertEqual((big.attempts, big.rate), (7, 3.0))
        self.assertTrue(policies.reset("img_*"))
        self.assertEqual(policies.for_function(b"img_big").attempts, 4)
        self.assertFalse(policies.reset("img_big"))  # configured, never changed
        self.assertEqual(policies.for_function(b"img_big").attempts, 4)
        self.assertTrue(policies.reset("*"))
        self.assertEqual(policies.for_function(b"other").attempts, 2)
        with self.assertRaises(ValueError):
            policies.set("img_big", {"attempts": 0})
        self.assertEqual(policies.for_function(b"img_big").attempts, 4)

    def test_unknown_setting_is_an_error(self) -> None:
        with self.assertRaises(ValueError):
            Policies(rules={"f": {"retries": 3}})


class RecurringTests(SynchronousTestCase):
    """Cron-driven background jobs, submitted once per tick."""

    def setUp(self) -> None:
        self.core, self.clock = make_core()
        self.clock.advance(1_800_000_000 - self.clock.seconds())  # a whole minute, UTC
        self.job = RecurringJob.make("r", "*/5 * * * *", "f", payload="p", unique="tick")

    def test_submits_at_each_tick(self) -> None:
        """Every five minutes one job; a tick whose previous run is still live is skipped."""
        recurring = RecurringJobs(self.core, self.clock, (self.job,))
        recurring.start()
        (row,) = [r for r in recurring.rows()]
        self.assertEqual(row[1] % 300, 0)
        self.clock.advance(row[1] - self.clock.seconds())
        self.assertEqual(self.core.functions[b"f"].queued(), 1)
        self.clock.advance(300)  # the first run is still queued: skipped
        self.assertEqual(self.core.functions[b"f"].queued(), 1)
        worker = RecordingPeer(self.core)
        worker.can_do(b"f")
        ptype, args = worker.grab()
        self.assertEqual(args[-1], b"p")
        self.core.work_complete(worker.peer, args[0], b"")
        self.clock.advance(300)
        self.assertEqual(self.core.functions[b"f"].queued(), 1)
        recurring.stop()

    def test_store_claim_decides(self) -> None:
        """With a store, only a successful claim queues the run."""
        store = SlowStore()
        core, clock = make_core(store=store)
        clock.advance(1_800_000_000 - clock.seconds())
        claims = iter([False, True])
        store.claim_tick = lambda name, tick, job: __import__(  # type: ignore[method-assign]
            "twisted.internet.defer", fromlist=["succeed"]
        ).succeed(next(claims))
        recurring = RecurringJobs(core, clock, (self.job,))
        recurring.start()
        clock.advance(300)
        self.assertNotIn(b"f", core.functions)
        clock.advance(300)
        self.assertEqual(core.functions[b"f"].queued(), 1)
        recurring.stop()

    def test_bad_expressions(self) -> None:
        for cron in ("bogus", "61 * * * *"):
            with self.assertRaises(ValueError):
                RecurringJob.make("r", cron, "f")
        with self.assertRaises(ValueError):
            RecurringJob.make("r", "* * * * *", "f", timezone="Mars/Olympus")
        with self.assertRaises(ValueError):
            RecurringJob.make("r", "* * * * *", "f", priority="urgent")

    def test_show_recurring(self) -> None:
        admin = Admin(self.core)
        admin.commands.recurring = RecurringJobs(self.core, self.clock, (self.job,))
        admin.commands.recurring.start()
        (row,) = admin.rows(b"show recurring")
        self.assertEqual(row[:4], [b"r", b"*/5 * * * *", b"f", b"tick"])
        self.assertEqual(row[4], b"2027-01-15T08:05:00Z")
        admin.commands.recurring.stop()
