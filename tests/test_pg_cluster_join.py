"""Foreground submissions that join a live background job of the same unique on another node
(gearmanpy/server/cluster_results.py, gearmanpy/store/pg_cluster_results.py): one job, run
once, whose outcome reaches the foreground client; two cores on one real PostgreSQL table.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from twisted.internet.defer import inlineCallbacks

from gearmanpy.protocol.packets import PacketType as P
from tests.serverhelpers import RecordingPeer
from tests.test_pg_cluster import sleep
from tests.test_pg_cluster_results import TwoNodes


@inlineCallbacks
def run_unique(case: Any, core: Any, worker: RecordingPeer, client: RecordingPeer,
               handle: bytes) -> Any:  # fmt: skip
    """``worker`` on ``core`` runs the job of unique ``u`` (WORK_DATA, then WORK_COMPLETE),
    and both reach ``client`` under ``handle`` (``case``: the TwoNodes test)."""
    local, _, unique, _ = yield case.worker_gets(worker, core)
    case.assertEqual(unique, b"u")
    core.work_data(worker.peer, P.WORK_DATA, local, b"part")
    core.work_complete(worker.peer, local, b"done")
    got = yield case.until(client, 2)
    case.assertEqual(got, [(P.WORK_DATA, (handle, b"part")), (P.WORK_COMPLETE, (handle, b"done"))])


@pytest.mark.realdb
class JoinBackgroundTests(TwoNodes):
    """A background job on one node, a foreground submission of its unique on another."""

    def foreground_rows(self) -> list[tuple[bytes, bool]]:
        """The table's (unique, foreground) pairs."""
        with psycopg.connect(self.server.url) as conn:
            rows = conn.execute(f"SELECT unique_id, foreground FROM {self.table}").fetchall()
        return [(bytes(u), bool(f)) for u, f in rows]

    @inlineCallbacks
    def running_joined(self, attempts: int = 0) -> Any:
        """A background job of ``f`` (with ``attempts``, if any) running on B's worker that
        a foreground client on A then joined: (B's core, the worker, the client, the
        handle). The worker's WORK_DATA before the join reaches nobody on A."""
        (core_a, _), (core_b, _) = yield self.pair()
        if attempts:
            core_b.set_policy("f", {"attempts": attempts, "backoff": 0.1})
        worker = RecordingPeer(core_b)
        worker.can_do(b"f")
        submitter = RecordingPeer(core_b)
        core_b.submit(submitter.peer, b"f", b"u", b"x", background=True)
        ((_, (handle,)),) = yield self.until(submitter)
        yield self.worker_gets(worker, core_b)
        core_b.work_data(worker.peer, P.WORK_DATA, handle, b"before")
        client = RecordingPeer(core_a)
        core_a.submit(client.peer, b"f", b"u", b"x")
        got = yield self.until(client)
        self.assertEqual(got, [(P.JOB_CREATED, (handle,))])
        return core_b, worker, client, handle

    @inlineCallbacks
    def test_joins_a_queued_background_job(self) -> Any:
        """A foreground submission on B of the unique of A's queued background job gets A's
        handle; the job runs once, on B's worker, and B's client hears WORK_COMPLETE."""
        (core_a, _), (core_b, _) = yield self.pair()
        submitter = RecordingPeer(core_a)
        core_a.submit(submitter.peer, b"f", b"u", b"x", background=True)
        ((_, (handle,)),) = yield self.until(submitter)
        client = RecordingPeer(core_b)
        core_b.submit(client.peer, b"f", b"u", b"x")
        got = yield self.until(client)
        self.assertEqual(got, [(P.JOB_CREATED, (handle,))])
        self.assertEqual(self.foreground_rows(), [(b"u", False)])
        worker = RecordingPeer(core_b)
        worker.can_do(b"f")
        yield run_unique(self, core_b, worker, client, handle)
        yield sleep(0.3)
        self.assertEqual(worker.grab()[0], P.NO_JOB)  # it ran once
        self.assertEqual(self.rows(), [])
        self.assertEqual((core_a.jobs, core_b.jobs), ({}, {}))

    @inlineCallbacks
    def test_joins_a_running_background_job(self) -> Any:
        """A foreground submission on A of the unique of a background job B's worker is
        running gets its packets from the join on, and its WORK_COMPLETE."""
        core_b, worker, client, handle = yield self.running_joined()
        yield sleep(0.3)  # B hears of the join
        core_b.work_status(worker.peer, handle, b"1", b"2")
        core_b.work_complete(worker.peer, handle, b"done")
        got = yield self.until(client, 2)
        self.assertEqual(
            got, [(P.WORK_STATUS, (handle, b"1", b"2")), (P.WORK_COMPLETE, (handle, b"done"))]
        )
        self.assertEqual(self.rows(), [])

    @inlineCallbacks
    def test_joined_while_the_row_is_written(self) -> Any:
        """A foreground submission on A that joins A's background job while its row is
        being written waits for the row, and hears the WORK_COMPLETE of B's worker."""
        (core_a, _), (core_b, _) = yield self.pair()
        submitter = RecordingPeer(core_a)
        client = RecordingPeer(core_a)
        core_a.submit(submitter.peer, b"f", b"u", b"x", background=True)
        core_a.submit(client.peer, b"f", b"u", b"x")
        ((_, (handle,)),) = yield self.until(submitter)
        got = yield self.until(client)
        self.assertEqual(got, [(P.JOB_CREATED, (handle,))])
        worker = RecordingPeer(core_b)
        worker.can_do(b"f")
        local, _, _, _ = yield self.worker_gets(worker, core_b)
        core_b.work_complete(worker.peer, local, b"done")
        got = yield self.until(client)
        self.assertEqual(got, [(P.WORK_COMPLETE, (handle, b"done"))])
        self.assertEqual(self.rows(), [])
        self.assertEqual((core_a.jobs, core_a.held.payload_bytes), ({}, 0))

    @inlineCallbacks
    def test_a_failed_attempt_reaches_the_joined_client(self) -> Any:
        """A background job with retries left that fails on B's worker: A's joined client
        hears WORK_FAIL for that attempt (as on one node), and the job is retried."""
        core_b, worker, client, handle = yield self.running_joined(attempts=3)
        yield sleep(0.3)
        core_b.work_fail(worker.peer, handle)
        got = yield self.until(client)
        self.assertEqual(got, [(P.WORK_FAIL, (handle,))])
        again = yield self.worker_gets(worker, core_b)
        self.assertEqual(again[2], b"u")  # retried
        core_b.work_complete(worker.peer, again[0], b"")
        for _ in range(50):
            if not self.rows():
                break
            yield sleep(0.05)
        self.assertEqual(self.rows(), [])

    @inlineCallbacks
    def test_background_submission_keeps_a_shared_foreground_job(self) -> Any:
        """A background submission on B that joins A's shared foreground job (A has a worker
        of the function, but the job has a unique, so A shares it) makes its row a
        background row: it still runs, once, when A's client goes away."""
        (core_a, _), (core_b, _) = yield self.pair()
        client = RecordingPeer(core_a)
        busy = RecordingPeer(core_a)
        busy.can_do(b"f")  # a worker here, awake: the unique job is shared all the same
        core_a.submit(client.peer, b"f", b"u", b"x")
        ((_, (handle,)),) = yield self.until(client)
        self.assertEqual(self.foreground_rows(), [(b"u", True)])
        submitter = RecordingPeer(core_b)
        core_b.submit(submitter.peer, b"f", b"u", b"x", background=True)
        got = yield self.until(submitter)
        self.assertEqual(got, [(P.JOB_CREATED, (handle,))])
        self.assertEqual(self.foreground_rows(), [(b"u", False)])
        client.disconnect()
        worker = RecordingPeer(core_b)
        worker.can_do(b"f")
        local, _, unique, _ = yield self.worker_gets(worker, core_b)
        self.assertEqual(unique, b"u")
        core_b.work_complete(worker.peer, local, b"")
        yield sleep(0.3)
        self.assertEqual(busy.grab()[0], P.NO_JOB)  # ran once
        self.assertEqual(self.rows(), [])


@pytest.mark.realdb
class UnheardJoinTests(JoinBackgroundTests):
    """The node running the job never hears of the join: the row's delete still gives the
    joined client the job's final packet."""

    hear_joins = False

    @inlineCallbacks
    def test_joins_a_running_background_job(self) -> Any:
        """Without the notice A's client gets no intermediate packets, but its
        WORK_COMPLETE comes with the row's delete."""
        core_b, worker, client, handle = yield self.running_joined()
        core_b.work_data(worker.peer, P.WORK_DATA, handle, b"unheard")
        core_b.work_complete(worker.peer, handle, b"done")
        got = yield self.until(client)
        self.assertEqual(got, [(P.WORK_COMPLETE, (handle, b"done"))])
        self.assertEqual(self.rows(), [])

    @inlineCallbacks
    def test_a_failed_attempt_reaches_the_joined_client(self) -> Any:
        """Without the notice the failed attempt's WORK_FAIL is not published; the retried
        attempt's WORK_COMPLETE comes with the row's delete."""
        core_b, worker, client, handle = yield self.running_joined(attempts=3)
        core_b.work_fail(worker.peer, handle)
        again = yield self.worker_gets(worker, core_b)
        self.assertEqual(client.take(), [])
        core_b.work_complete(worker.peer, again[0], b"ok")
        got = yield self.until(client)
        self.assertEqual(got, [(P.WORK_COMPLETE, (handle, b"ok"))])


@pytest.mark.realdb
class OwnRowTests(TwoNodes):
    """A node that claims the shared foreground row it waits for itself."""

    @inlineCallbacks
    def test_unique_foreground_job_on_a_node_with_a_worker(self) -> Any:
        """A foreground job with a unique is shared even where a worker of its function is
        connected; that node's worker runs it and its client hears the result."""
        (core_a, _), _ = yield self.pair()
        worker = RecordingPeer(core_a)
        worker.can_do(b"f")
        client = RecordingPeer(core_a)
        core_a.submit(client.peer, b"f", b"u", b"x")
        ((_, (handle,)),) = yield self.until(client)
        self.assertEqual(len(self.rows()), 1)
        yield run_unique(self, core_a, worker, client, handle)
        yield sleep(0.2)
        self.assertEqual((self.rows(), core_a.jobs), ([], {}))


@pytest.mark.realdb
class LapsedLeaseTests(TwoNodes):
    """A node that lived through the loss of its lease: the cluster forgot its waiters, and
    the node waits again for what its clients wait for."""

    @inlineCallbacks
    def test_a_queued_shared_job_is_put_back(self) -> Any:
        """A's client waits for a shared job no worker has claimed; A's lease lapses (the
        cluster drops the row, nobody waiting for it); A puts it back, and when B's worker
        runs it the client gets the result."""
        (core_a, node_a), (core_b, node_b) = yield self.pair()
        client = RecordingPeer(core_a)
        core_a.submit(client.peer, b"f", b"", b"fg")
        ((kind, (handle,)),) = yield self.until(client)
        self.assertEqual(kind, P.JOB_CREATED)
        yield self.lapse(node_a, node_b)
        worker = RecordingPeer(core_b)
        worker.can_do(b"f")
        args = yield self.worker_gets(worker, core_b)
        self.assertEqual(args[0], handle)
        core_b.work_complete(worker.peer, handle, b"done")
        self.assertEqual((yield self.until(client)), [(P.WORK_COMPLETE, (handle, b"done"))])

    @inlineCallbacks
    def test_a_running_shared_job_is_waited_for_again(self) -> Any:
        """B's worker runs A's client's shared job when A's lease lapses; A waits on the row
        again, so the client gets the result B's worker sends after that."""
        (core_a, node_a), (core_b, node_b) = yield self.pair()
        worker = RecordingPeer(core_b)
        worker.can_do(b"f")
        self.assertEqual(worker.grab(), (P.NO_JOB, ()))
        core_b.pre_sleep(worker.peer)
        client = RecordingPeer(core_a)
        core_a.submit(client.peer, b"f", b"u", b"fg")
        ((kind, (handle,)),) = yield self.until(client)
        self.assertEqual(kind, P.JOB_CREATED)
        self.assertEqual((yield self.until(worker)), [(P.NOOP, ())])
        kind, args = worker.grab()
        self.assertEqual((kind, args[0]), (P.JOB_ASSIGN_UNIQ, handle))
        yield self.lapse(node_a, node_b)
        core_b.work_complete(worker.peer, args[0], b"done")
        self.assertEqual((yield self.until(client)), [(P.WORK_COMPLETE, (handle, b"done"))])
