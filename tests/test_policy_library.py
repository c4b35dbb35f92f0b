"""The failure policy as the Python library sees it: a worker's attempt number and a reduce
job's reducer (gearmanpy.testing, in memory, on a Clock)."""

from __future__ import annotations

from typing import cast

from twisted.trial.unittest import SynchronousTestCase

from gearmanpy import WorkerJob
from gearmanpy.server.policy import Policies
from gearmanpy.store.interface import Priority, StoredJob
from gearmanpy.testing import MemoryGearman


class AttemptTests(SynchronousTestCase):
    """``WorkerJob.attempt`` counts the runs of a retried background job."""

    def test_attempt_numbers_across_retries(self) -> None:
        """Attempts 1 and 2 fail, 3 completes; the worker saw each number."""
        gearman = MemoryGearman(
            policies=Policies(rules={"flaky": {"attempts": 3, "backoff": 1.0, "jitter": 0.0}})
        )
        self.addCleanup(gearman.stop)
        seen: list[int | None] = []

        def flaky(job: WorkerJob) -> bytes:
            seen.append(job.attempt)
            if job.attempt is not None and job.attempt < 3:
                raise RuntimeError("not yet")
            return b"ok"

        gearman.worker().register("flaky", flaky)
        gearman.client().submit_background("flaky", b"x")
        gearman.flush()
        for _ in range(3):
            gearman.clock.advance(2.0)
            gearman.flush()
        self.assertEqual(seen, [1, 2, 3])
        self.assertEqual(len(gearman.core.dead), 0)
        self.assertEqual(gearman.core.counters.completed, 1)

    def test_reducer_of_a_reduce_job(self) -> None:
        """A reduce job reaches the worker with its reducer (JOB_ASSIGN_ALL)."""
        gearman = MemoryGearman()
        self.addCleanup(gearman.stop)
        got: list[tuple[bytes, bytes]] = []
        gearman.worker().register("map", lambda job: got.append((job.reducer, job.data)))
        gearman.flush()
        gearman.core.replay(
            [StoredJob("k", b"map", b"u", Priority.NORMAL, b"rows", reducer=b"sum", handle=b"")]
        )
        gearman.flush()
        self.assertEqual(got, [(b"sum", b"rows")])


class AttemptOptionTests(SynchronousTestCase):
    """The worker's side of OPTION_REQ ``attempts``, against servers that know it or not."""

    def setUp(self) -> None:
        from tests.test_worker import make_worker

        self.worker, (self.endpoint,), _ = make_worker()
        self.seen: list[tuple[int | None, bytes]] = []
        self.worker.register("f", lambda job: self.seen.append((job.attempt, job.reducer)))
        self.worker.startService()
        self.addCleanup(self.worker.stopService)
        self.server = self.endpoint.next().accept()
        self.server.received()
        self.assertEqual(self.server.options, [b"attempts"])

    def test_announced_attempt(self) -> None:
        """OPTION_RES ``attempt=N`` before a JOB_ASSIGN gives that job its number."""
        from tests.fakes import P

        self.server.send(P.OPTION_RES, b"attempts")
        self.server.send(P.OPTION_RES, b"attempt=4")
        self.server.send(P.JOB_ASSIGN_ALL, b"H:1", b"f", b"u", b"red", b"d")
        self.server.send(P.JOB_ASSIGN_UNIQ, b"H:2", b"f", b"u", b"d")
        self.assertEqual(self.seen, [(4, b"red"), (None, b"")])

    def test_gearmand_refuses_quietly(self) -> None:
        """A server without the option answers UNKNOWN_OPTION: nothing is logged."""
        from twisted.logger import ILogObserver, globalLogPublisher

        from tests.fakes import P

        events: list[dict[str, object]] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.server.send(P.ERROR, b"UNKNOWN_OPTION", b"Server does not recognize given option")
        self.server.send(P.JOB_ASSIGN_UNIQ, b"H:1", b"f", b"", b"d")
        self.assertEqual(self.seen, [(None, b"")])
        self.assertEqual([e for e in events if "ERROR" in str(e.get("log_format"))], [])
