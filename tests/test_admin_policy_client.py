"""Tests for AdminClient's gearmanpy commands (dead set, scheduled, policy, stats) and
Client.result, in memory and against gearmand."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from gearmanpy import WorkerJob
from gearmanpy.admin import AdminClient, AdminError, DeadJob
from gearmanpy.server.policy import Policies
from gearmanpy.testing import MemoryGearman


def failing(job: WorkerJob) -> bytes:
    raise RuntimeError("disk full")


class AdminClientTests(SynchronousTestCase):
    """Every policy command and a few of gearadmin's, against an in-memory server."""

    def setUp(self) -> None:
        policies = Policies(
            rules={"slow": {"attempts": 2, "backoff": 3600.0}, "kept": {"keep_results": 60.0}}
        )
        self.gearman = MemoryGearman(policies=policies)
        self.addCleanup(self.gearman.stop)
        self.admin = AdminClient(self.gearman.endpoint(), reactor=self.gearman.reactor)
        self.addCleanup(self.admin.close)
        worker = self.gearman.worker()
        worker.register("doomed", failing)
        worker.register("slow", failing)
        worker.register("kept", lambda job: b"result:" + job.data)
        self.client = self.gearman.client()

    def run_(self, d: Deferred[Any]) -> Any:
        self.gearman.flush()
        return self.successResultOf(d)

    def fails(self, d: Deferred[Any]) -> AdminError:
        self.gearman.flush()
        error = self.failureResultOf(d, AdminError).value
        assert isinstance(error, AdminError)
        return error

    def test_dead_set_commands(self) -> None:
        """show dead, retry dead and drop dead, parsed."""
        handle = self.run_(self.client.submit_background("doomed", b"x", unique="u7"))
        self.gearman.flush()
        (row,) = self.run_(self.admin.show_dead())
        self.assertIsInstance(row, DeadJob)
        self.assertEqual(
            (row.handle, row.function, row.unique, row.attempts),
            (handle.decode(), "doomed", "u7", 1),
        )
        self.assertIn("disk full", row.error)
        self.assertEqual(self.run_(self.admin.show_dead("other")), [])
        self.assertIsNone(self.run_(self.admin.drop_dead("all")))
        self.assertEqual(self.fails(self.admin.drop_dead("all")).code, b"NO_DEAD_JOB")

    def test_scheduled_and_policy(self) -> None:
        """A failed attempt waits an hour: show scheduled says so; policies read and change."""
        self.run_(self.client.submit_background("slow", b"y"))
        self.gearman.flush()
        (row,) = self.run_(self.admin.show_scheduled())
        self.assertEqual((row.function, row.priority, row.attempts), ("slow", "normal", 1))
        self.assertIn("disk full", row.error or "")
        assert row.due is not None
        self.assertEqual(self.run_(self.admin.show_policy("slow"))["attempts"], "2")
        self.run_(self.admin.policy_set("slow", attempts=5, max_running=2))
        self.assertEqual(self.run_(self.admin.show_policy("slow"))["max_running"], "2")
        self.run_(self.admin.policy_reset("slow"))
        # back to the configured policy (attempts 2), max_running gone
        self.assertEqual(self.run_(self.admin.show_policy("slow"))["attempts"], "2")
        self.assertEqual(self.run_(self.admin.show_policy("slow"))["max_running"], "0")
        self.assertEqual(self.run_(self.admin.show_recurring()), [])
        stats = self.run_(self.admin.stats())
        self.assertEqual((stats["jobs"], stats["function.slow.submitted"]), ("1", "1"))
        with self.assertRaises(ValueError):
            self.admin.policy_set("slow")
        bad = self.fails(self.admin.policy_set("slow", attempts=0))
        self.assertEqual(bad.code, b"BAD_POLICY")
        self.assertIn("attempts must be", str(bad))

    def test_kept_result_through_the_client(self) -> None:
        """Client.result finds a kept result by handle and by unique; None for others."""
        handle = self.run_(self.client.submit_background("kept", b"abc", unique="k1"))
        self.gearman.flush()
        result = self.run_(self.client.result(handle))
        self.assertEqual(
            (result.outcome, result.data, result.unique), ("complete", b"result:abc", "k1")
        )
        by_unique = self.run_(self.client.result(function="kept", unique="k1"))
        self.assertEqual(by_unique.handle, handle.decode())
        self.assertIsNone(self.run_(self.client.result(b"H:memory:99")))
        with self.assertRaises(TypeError):
            self.client.result(function="kept")

    def test_gearadmin_commands(self) -> None:
        """status, workers, version, cancel of an unknown job (ERR), several in one go."""
        status, workers, version = (
            self.admin.status(),
            self.admin.workers(),
            self.admin.version(),
        )
        self.gearman.flush()
        names = {r.name for r in self.successResultOf(status)}
        self.assertEqual(names, {"doomed", "slow", "kept"})
        (worker,) = [w for w in self.successResultOf(workers) if w.functions]
        self.assertEqual(set(worker.functions), names)
        self.assertIn("gearmanpy", self.successResultOf(version))
        self.assertEqual(self.fails(self.admin.cancel_job("H:nope")).code, b"UNKNOWN_JOB")


@pytest.mark.interop
def test_gearmand_replies_parse(tmp_path: Any) -> None:
    """gearmand's status, workers and version parse; its ERR for our commands is an AdminError."""
    import subprocess

    from tests.interop.conftest import start_gearmand

    server = start_gearmand(workdir=tmp_path / "server")
    try:
        script = (
            "import sys\n"
            "from twisted.internet import defer, task\n"
            "from gearmanpy.admin import AdminClient, AdminError\n"
            "async def main(reactor):\n"
            f"    a = AdminClient('127.0.0.1:{server.port}')\n"
            "    await a.create_function('f1')\n"
            "    print([(r.name, r.total) for r in await a.status()])\n"
            "    print(len(await a.workers()) >= 1, (await a.version())[:3])\n"
            "    try:\n"
            "        await a.show_dead()\n"
            "    except AdminError as e:\n"
            "        print('ERR', e.code)\n"
            "    await a.close()\n"
            "    from gearmanpy import Client\n"
            f"    c = Client(['127.0.0.1:{server.port}'])\n"
            "    print('result', await c.result('H:x:1'))\n"
            "    await c.stop()\n"
            "task.react(lambda r: defer.ensureDeferred(main(r)))\n"
        )
        out = subprocess.run(
            [__import__("sys").executable, "-c", script], capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == "[('f1', 0)]"
        assert lines[1] == "True 1.1"
        assert lines[2].startswith("ERR ")
        assert lines[3] == "result None"  # gearmand's UNKNOWN_COMMAND: no result kept there
    finally:
        server.stop()
