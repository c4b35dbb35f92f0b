"""Tests for gearmanpy.testing: Client, Worker and job server end to end, all in memory."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import types
import unittest
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

import gearmanpy.testing
from gearmanpy import (
    Client,
    Job,
    JobException,
    JobFailed,
    JobLost,
    JobTimeout,
    NoServersAvailable,
    RequestLost,
    WorkData,
    WorkerJob,
    WorkStatus,
)
from gearmanpy.client import JobEvent
from gearmanpy.store.memory import MemoryJobStore
from gearmanpy.testing import RECONNECT_DELAY, MemoryEndpoint, MemoryGearman
from tests.readme import code_block_after


def reverse(job: WorkerJob) -> bytes:
    """A plain worker function."""
    return job.data[::-1]


def holding(held: list[Deferred[bytes]]) -> Any:
    """A worker function that returns a new Deferred each time, kept in ``held``."""

    def hold(job: WorkerJob) -> Deferred[bytes]:
        held.append(Deferred())
        return held[-1]

    return hold


async def events(job: Job) -> list[JobEvent]:
    """Every event of ``job``, collected with ``async for`` until the job ends."""
    return [event async for event in job]


def status_lines(reply: bytes) -> set[bytes]:
    """The rows of an admin ``status`` reply (the order of functions is not defined)."""
    assert reply.endswith(b"\n.\n") or reply == b".\n", reply
    return set(reply.splitlines()[:-1])


class GearmanTestCase(SynchronousTestCase):
    """A fresh in-memory server and one client for each test, stopped afterwards."""

    def setUp(self) -> None:
        """Start the server and a client with no default timeout."""
        self.gearman = MemoryGearman()
        self.addCleanup(self.gearman.stop)
        self.client = self.gearman.client()

    def run_job(self, function: Any, data: bytes = b"", **register: Any) -> Job:
        """Register ``function`` on a new worker, submit one job for it and flush."""
        self.gearman.worker().register("f", function, **register)
        job = self.client.submit("f", data)
        self.gearman.flush()
        return job


class EndToEndTests(GearmanTestCase):
    """A Client, a Worker and the job server, as a user's test would drive them."""

    def test_foreground_result(self) -> None:
        """A foreground job's result comes back from the worker in one flush."""
        self.gearman.worker().register("reverse", reverse)
        job = self.client.submit("reverse", b"hello")
        self.assertNoResult(job.result)
        self.assertTrue(self.gearman.flush())
        self.assertEqual(self.successResultOf(job.result), b"olleh")
        self.assertEqual(job.handle, b"H:memory:1")

    def test_background_job_runs(self) -> None:
        """A background job is stored, waits for a worker, runs once, and leaves the store."""
        store = MemoryJobStore()
        gearman = MemoryGearman(store=store)
        self.addCleanup(gearman.stop)
        ran: list[bytes] = []
        handle = gearman.client().submit_background("index", b"doc-7")
        gearman.flush()
        self.assertEqual(self.successResultOf(handle), b"H:memory:1")
        self.assertEqual([j.data for j in self.successResultOf(store.replay())], [b"doc-7"])
        gearman.worker().register("index", lambda job: ran.append(job.data))
        gearman.flush()
        self.assertEqual(ran, [b"doc-7"])
        self.assertEqual(self.successResultOf(store.replay()), [])

    def test_progress_reaches_async_for(self) -> None:
        """WORK_STATUS and WORK_DATA reach ``async for`` in order, then the result."""

        def progress(job: WorkerJob) -> bytes:
            job.send_status(1, 2)
            job.send_data(b"half")
            job.send_status(2, 2)
            return b"done"

        self.gearman.worker().register("convert", progress)
        job = self.client.submit("convert")
        seen = ensureDeferred(events(job))
        self.gearman.flush()
        self.assertEqual(
            self.successResultOf(seen), [WorkStatus(1, 2), WorkData(b"half"), WorkStatus(2, 2)]
        )
        self.assertEqual(self.successResultOf(job.result), b"done")

    def test_progress_reaches_callbacks(self) -> None:
        """``on_data`` and ``on_status`` callbacks get each packet as it arrives."""
        held: list[Deferred[bytes]] = []
        jobs: list[WorkerJob] = []

        def start(job: WorkerJob) -> Deferred[bytes]:
            jobs.append(job)
            return holding(held)(job)

        self.gearman.worker().register("convert", start)
        data: list[bytes] = []
        statuses: list[tuple[int, int]] = []
        job = self.client.submit("convert")
        job.on_data(data.append).on_status(lambda n, d: statuses.append((n, d)))
        self.gearman.flush()
        jobs[0].send_status(3, 10)
        self.gearman.flush()
        self.assertEqual(statuses, [(3, 10)])
        jobs[0].send_data(b"part")
        held[0].callback(b"all")
        self.gearman.flush()
        self.assertEqual((data, statuses), ([b"part"], [(3, 10)]))
        self.assertEqual(self.successResultOf(job.result), b"all")

    def test_worker_exception(self) -> None:
        """A worker function that raises ends the job with JobException naming the error."""

        def broken(job: WorkerJob) -> bytes:
            raise ValueError("bad size")

        failure = self.failureResultOf(self.run_job(broken).result, JobException)
        self.assertEqual(failure.value.payload, b"ValueError: bad size")

    def test_worker_job_failed(self) -> None:
        """A worker function that raises JobFailed ends the job with JobFailed."""

        def refuse(job: WorkerJob) -> bytes:
            raise JobFailed("no")

        self.failureResultOf(self.run_job(refuse).result, JobFailed)

    def test_client_timeout(self) -> None:
        """A client's timeout fires when the clock reaches it, not before."""
        self.gearman.worker().register("slow", holding([]))
        job = self.gearman.client(timeout=5).submit("slow")
        self.gearman.advance(4.5)
        self.assertNoResult(job.result)
        self.gearman.advance(0.5)
        self.failureResultOf(job.result, JobTimeout)

    def test_dropped_worker_job_requeued(self) -> None:
        """A worker dropped mid-job loses it to another worker; its late result is dropped."""
        held: list[Deferred[bytes]] = []
        first = self.gearman.worker()
        first.register("resize", holding(held))
        job = self.client.submit("resize", b"img")
        self.gearman.flush()
        self.assertEqual(len(held), 1)
        self.gearman.worker().register("resize", lambda job: b"by the second")
        self.gearman.flush()
        self.assertNoResult(job.result)
        self.assertEqual(self.gearman.disconnect(first), 1)
        self.assertEqual(self.successResultOf(job.result), b"by the second")
        held[0].callback(b"by the first")
        self.gearman.flush()
        self.assertEqual(status_lines(self.gearman.admin("status")), {b"resize\t0\t0\t1"})
        self.gearman.advance(RECONNECT_DELAY)
        self.assertEqual(status_lines(self.gearman.admin("status")), {b"resize\t0\t0\t2"})

    def test_coalescing(self) -> None:
        """Two submissions with the same unique run once and both get the result."""
        held: list[Deferred[bytes]] = []
        self.gearman.worker(concurrency=2).register("thumb", holding(held))
        one = self.client.submit("thumb", b"img", unique="img-1")
        two = self.gearman.client().submit("thumb", b"img", unique="img-1")
        self.gearman.flush()
        self.assertEqual((len(held), one.handle), (1, two.handle))
        held[0].callback(b"small")
        self.gearman.flush()
        self.assertEqual(self.successResultOf(one.result), b"small")
        self.assertEqual(self.successResultOf(two.result), b"small")

    def test_admin_status(self) -> None:
        """``status`` lists a registered function and one with only a queued job."""
        self.gearman.worker().register("reverse", reverse)
        self.client.submit_background("unheard", b"x")
        self.gearman.flush()
        self.assertEqual(
            status_lines(self.gearman.admin("status\n")),
            {b"reverse\t0\t0\t1", b"unheard\t1\t0\t0"},
        )

    def test_async_def_worker(self) -> None:
        """An ``async def`` worker function's result arrives once what it awaits fires."""
        waiting: Deferred[bytes] = Deferred()

        async def lookup(job: WorkerJob) -> bytes:
            return b"%s=%s" % (job.data, await waiting)

        self.gearman.worker().register("lookup", lookup)
        job = self.client.submit("lookup", b"key")
        self.gearman.flush()
        self.assertNoResult(job.result)
        waiting.callback(b"value")
        self.gearman.flush()
        self.assertEqual(self.successResultOf(job.result), b"key=value")


class MemoryGearmanTests(GearmanTestCase):
    """How the in-memory server moves bytes and time, drops peers and stops."""

    def test_flush_says_whether_anything_moved(self) -> None:
        """``flush`` is false when all is quiet and true when it delivered something."""
        self.assertFalse(self.gearman.flush())
        self.client.submit_background("f")
        self.assertTrue(self.gearman.flush())
        self.assertFalse(self.gearman.flush())

    def test_thread_functions_run_inline(self) -> None:
        """A ``thread=True`` function runs in the flushing thread, and its packets arrive."""
        threads: list[int] = []

        def blocking(job: WorkerJob) -> bytes:
            threads.append(threading.get_ident())
            job.send_status(1, 1)
            return b"done"

        job = self.run_job(blocking, thread=True)
        self.assertEqual(self.successResultOf(job.result), b"done")
        self.assertEqual(
            (threads, self.successResultOf(ensureDeferred(events(job)))),
            ([threading.get_ident()], [WorkStatus(1, 1)]),
        )

    def test_thread_pool_refused(self) -> None:
        """A worker cannot be given a real thread pool: it would call back from elsewhere."""
        self.assertRaises(TypeError, self.gearman.worker, thread_pool=object())

    def test_timers_and_bytes_interleave(self) -> None:
        """Within one ``advance``, a worker reconnecting at 1s takes a job before a 5s timeout."""
        worker = self.gearman.worker()
        worker.register("reverse", reverse)
        self.gearman.disconnect(worker)
        job = self.gearman.client(timeout=5).submit("reverse", b"abc")
        self.gearman.advance(10)
        self.assertEqual(self.successResultOf(job.result), b"cba")

    def test_scheduled_job(self) -> None:
        """A ``submit_at`` job runs when the clock reaches its time."""
        ran: list[float] = []
        self.gearman.worker().register(
            "later", lambda job: ran.append(self.gearman.clock.seconds())
        )
        self.gearman.advance(2)
        self.client.submit_at(10, "later")
        self.gearman.advance(7.5)
        self.assertEqual(ran, [])
        self.gearman.advance(1)
        self.assertEqual(ran, [10.0])

    def test_drop_from_inside_a_job(self) -> None:
        """A job function may drop its own worker: the job reruns after the reconnection."""
        calls: list[bytes] = []
        dropped: list[int] = []

        def flaky(job: WorkerJob) -> bytes:
            calls.append(job.handle)
            if len(calls) == 1:
                dropped.append(self.gearman.disconnect(worker))
            return b"ok"

        worker = self.gearman.worker()
        worker.register("flaky", flaky)
        job = self.client.submit("flaky")
        self.gearman.flush()
        self.assertEqual((calls, dropped), ([b"H:memory:1"], [1]))
        self.assertNoResult(job.result)
        self.gearman.advance(RECONNECT_DELAY)
        self.assertEqual(calls, [b"H:memory:1", b"H:memory:1"])
        self.assertEqual(self.successResultOf(job.result), b"ok")

    def test_drop_loses_bytes_in_flight(self) -> None:
        """What a peer wrote but no flush delivered is lost when its connection drops."""
        job = self.client.submit("never")
        self.assertEqual(self.gearman.disconnect(self.client), 1)
        self.failureResultOf(job.result, RequestLost)
        self.assertEqual(self.gearman.admin("status"), b".\n")

    def test_dropped_client_loses_its_job(self) -> None:
        """A client dropped while its job runs gets JobLost, and can submit again later."""
        self.gearman.worker().register("slow", holding([]))
        job = self.client.submit("slow")
        self.gearman.flush()
        self.assertEqual(self.gearman.disconnect(self.client), 1)
        self.failureResultOf(job.result, JobLost)
        self.gearman.advance(RECONNECT_DELAY)
        self.gearman.worker().register("reverse", reverse)
        again = self.client.submit("reverse", b"ab")
        self.gearman.flush()
        self.assertEqual(self.successResultOf(again.result), b"ba")

    def test_disconnect_everything(self) -> None:
        """``disconnect()`` without a peer breaks every connection."""
        self.gearman.worker()
        self.assertEqual(self.gearman.disconnect(), 2)
        self.assertEqual(self.gearman.disconnect(), 0)

    def test_disconnect_stranger(self) -> None:
        """A client from elsewhere is not this server's to disconnect."""
        other = MemoryGearman().client()
        self.assertRaises(ValueError, self.gearman.disconnect, other)

    def test_own_client_on_an_endpoint(self) -> None:
        """A Client built by the code under test works on ``endpoint()`` and ``reactor``."""
        self.gearman.worker().register("reverse", reverse)
        endpoint = self.gearman.endpoint()
        self.assertIsInstance(endpoint, MemoryEndpoint)
        client = Client([endpoint], reactor=self.gearman.reactor)
        job = client.submit("reverse", b"xy")
        self.gearman.flush()
        self.assertEqual(self.successResultOf(job.result), b"yx")
        self.assertEqual(self.gearman.disconnect(endpoint), 1)
        self.successResultOf(client.stop())

    def test_stop(self) -> None:
        """``stop`` fails what is outstanding, and the server then refuses connections."""
        job = self.client.submit("resize")
        self.gearman.flush()
        self.successResultOf(self.gearman.stop())
        self.failureResultOf(job.result, JobLost)
        attempt = self.gearman.endpoint().connect(Factory.forProtocol(Protocol))
        self.failureResultOf(attempt, ConnectionRefusedError)
        late = Client([self.gearman.endpoint()], reactor=self.gearman.reactor)
        self.failureResultOf(late.submit("resize").result, NoServersAvailable)
        self.assertRaises(RuntimeError, self.gearman.admin, "status")

    def test_stop_waits_for_running_jobs(self) -> None:
        """A worker still running a job holds ``stop`` up to its grace period."""
        self.gearman.worker(grace_period=3).register("slow", holding([]))
        job = self.client.submit("slow")
        self.gearman.flush()
        stopped = self.gearman.stop()
        self.failureResultOf(job.result, JobLost)
        self.gearman.advance(2.9)
        self.assertNoResult(stopped)
        self.gearman.advance(0.1)
        self.successResultOf(stopped)

    def test_admin_is_one_line(self) -> None:
        """An admin command with a line break inside is refused before anything is sent."""
        self.assertRaises(ValueError, self.gearman.admin, "status\nshutdown")

    def test_endless_traffic(self) -> None:
        """``flush`` gives up on peers that never go quiet, and works again once they do."""
        self.patch(gearmanpy.testing, "MAX_FLUSH_ROUNDS", 50)
        going = [True]

        def again(job: WorkerJob) -> None:
            if going[0]:
                self.client.submit_background("again")

        self.gearman.worker().register("again", again)
        self.client.submit_background("again")
        self.assertRaises(RuntimeError, self.gearman.flush)
        going[0] = False
        self.assertTrue(self.gearman.flush())
        self.assertEqual(status_lines(self.gearman.admin("status")), {b"again\t0\t0\t1"})

    def test_no_global_reactor(self) -> None:
        """A whole round trip, thread function included, never imports the global reactor."""
        script = (
            "import sys\n"
            "from gearmanpy.testing import MemoryGearman\n"
            "g = MemoryGearman()\n"
            "g.worker().register('f', lambda job: job.data * 2, thread=True)\n"
            "job = g.client().submit('f', b'ab')\n"
            "g.flush()\n"
            "g.stop()\n"
            "print(job.result.result, 'twisted.internet.reactor' in sys.modules)\n"
        )
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=root)
        out = subprocess.run(
            [sys.executable, "-c", script],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        self.assertEqual(out, "b'abab' False\n")


def run_readme_example(source: str) -> unittest.TestResult:
    """Run the TestCases defined by ``source`` (the README's example) and return the result."""
    module = types.ModuleType("test_palindrome")
    exec(compile(source, "README.rst", "exec"), module.__dict__)
    suite = unittest.TestSuite(
        unittest.defaultTestLoader.loadTestsFromTestCase(value)
        for value in vars(module).values()
        if isinstance(value, type) and value.__module__ == module.__name__
    )
    result = unittest.TestResult()
    suite.run(result)
    return result


class ReadmeTests(SynchronousTestCase):
    """README.rst's "Testing your code" example works as printed."""

    EXAMPLE = code_block_after("``test_palindrome.py``")

    def test_example_passes(self) -> None:
        """Both of the example's tests run and pass."""
        result = run_readme_example(self.EXAMPLE)
        self.assertEqual((result.testsRun, result.errors, result.failures), (2, [], []))

    def test_example_can_fail(self) -> None:
        """With a worker that does not reverse, the example's palindrome test fails."""
        broken = self.EXAMPLE.replace("return job.data[::-1]", "return job.data")
        self.assertNotEqual(broken, self.EXAMPLE)
        result = run_readme_example(broken)
        self.assertEqual((result.testsRun, len(result.failures)), (2, 1))


class ReactorArgumentTests(SynchronousTestCase):
    """Clients and workers made by MemoryGearman run on its clock, not a reactor passed in."""

    def test_reactor_is_refused_with_a_clear_error(self) -> None:
        """``reactor=`` is refused with a message naming what to do instead."""
        server = MemoryGearman()
        for make in (server.client, server.worker):
            with self.assertRaises(TypeError) as caught:
                make(reactor=Clock())
            self.assertIn("clock=", str(caught.exception))
