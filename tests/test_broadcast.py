"""Tests for broadcast functions (server/broadcast.py): one submission, one delivery per
worker connection, results gathered; in memory on a Clock."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gearmanpy.server.broadcast import DELIVERY_MARK, RESTART_GRACE
from gearmanpy.server.core import HIGH, JobServerCore
from gearmanpy.server.jobs import GRAB_UNIQ
from gearmanpy.server.policy import Policies
from gearmanpy.store.interface import Priority, StoredJob
from gearmanpy.store.memory import MemoryJobStore
from tests.serverhelpers import P, RecordingPeer, make_core

BROADCAST = Policies(rules={"bc": {"broadcast": True}})


def workers(core: JobServerCore, *ids: bytes) -> list[RecordingPeer]:
    """Workers registered for ``bc``, with these client ids."""
    out = []
    for client_id in ids:
        w = RecordingPeer(core)
        w.peer.client_id = client_id
        w.can_do(b"bc")
        out.append(w)
    return out


def take(worker: RecordingPeer) -> bytes:
    """The worker grabs; return the delivery's handle."""
    ptype, args = worker.grab(GRAB_UNIQ)
    assert ptype == P.JOB_ASSIGN_UNIQ, (ptype, args)
    return args[0]


class ForegroundTests(SynchronousTestCase):
    """A foreground broadcast: every worker once, results as WORK_DATA, a summary."""

    def setUp(self) -> None:
        self.core, self.clock = make_core(policies=BROADCAST)
        self.client = RecordingPeer(self.core)

    def test_every_worker_once_and_results_gathered(self) -> None:
        a, b, c = workers(self.core, b"wa", b"wb", b"wc")
        a.can_do(b"bc")  # registered twice: still one delivery
        parent = self.client.submit(b"bc", data=b"drop key K")
        handles = [take(w) for w in (a, b, c)]
        self.assertEqual(len(set(handles + [parent])), 4)
        self.assertEqual(a.grab(GRAB_UNIQ), (P.NO_JOB, ()))  # nothing more for a
        self.core.work_complete(b.peer, handles[1], b"ok-b")
        self.core.work_exception(c.peer, handles[2], b"boom")
        self.core.work_complete(a.peer, handles[0], b"ok-a")
        self.assertEqual(
            self.client.take(),
            [
                (P.WORK_DATA, (parent, b"wb\0ok-b")),
                (P.WORK_STATUS, (parent, b"1", b"3")),
                (P.WORK_WARNING, (parent, b"wc\0boom")),
                (P.WORK_STATUS, (parent, b"2", b"3")),
                (P.WORK_DATA, (parent, b"wa\0ok-a")),
                (P.WORK_STATUS, (parent, b"3", b"3")),
                (P.WORK_COMPLETE, (parent, b"completed=2 failed=1 lost=0 total=3")),
            ],
        )
        self.assertEqual(self.core.jobs, {})
        self.assertEqual((self.core.counters.broadcasts, self.core.counters.deliveries), (1, 3))

    def test_no_worker_completes_at_once(self) -> None:
        self.core.submit(self.client.peer, b"bc", b"", b"x")
        ((_, (parent,)), done) = self.client.take()
        self.assertEqual(done, (P.WORK_COMPLETE, (parent, b"completed=0 failed=0 lost=0 total=0")))

    def test_lost_worker_is_counted_not_waited_for(self) -> None:
        a, b = workers(self.core, b"wa", b"wb")
        parent = self.client.submit(b"bc")
        take(a)
        b.disconnect()  # its delivery was not even taken
        a.disconnect()  # and this one dies mid-delivery
        got = self.client.take()
        self.assertEqual(
            got[-1], (P.WORK_COMPLETE, (parent, b"completed=0 failed=0 lost=2 total=2"))
        )
        self.assertIn((P.WORK_WARNING, (parent, b"wa\0lost")), got)

    def test_sleeping_workers_are_woken(self) -> None:
        (a,) = workers(self.core, b"wa")
        self.assertEqual(a.grab(GRAB_UNIQ), (P.NO_JOB, ()))
        self.core.pre_sleep(a.peer)
        self.client.submit(b"bc")
        self.assertEqual(a.take(), [(P.NOOP, ())])
        take(a)

    def test_status_unique_and_priority(self) -> None:
        """GET_STATUS says done/total; a second submission with the unique joins it; the
        deliveries carry the priority (a HIGH delivery goes before a NORMAL one)."""
        a, b = workers(self.core, b"wa", b"wb")
        low = self.client.submit(b"bc", data=b"first")
        parent = self.client.submit(b"bc", unique=b"u1", data=b"second", priority=HIGH)
        other = RecordingPeer(self.core)
        self.assertEqual(other.submit(b"bc", unique=b"u1"), parent)
        ptype, args = a.grab(GRAB_UNIQ)
        self.assertEqual(args[-1], b"second")
        self.core.work_complete(a.peer, args[0], b"")
        self.core.get_status(self.client.peer, parent)
        self.assertEqual(self.client.take()[-1], (P.STATUS_RES, (parent, b"1", b"1", b"1", b"2")))
        self.assertNotEqual(low, parent)

    def test_cancel(self) -> None:
        """``cancel job`` on a broadcast drops the deliveries not yet taken."""
        a, b = workers(self.core, b"wa", b"wb")
        parent = self.client.submit(b"bc")
        running = take(a)
        self.assertTrue(self.core.cancel(parent))
        self.assertEqual(b.grab(GRAB_UNIQ), (P.NO_JOB, ()))
        self.core.work_complete(a.peer, running, b"late")
        self.assertEqual(self.core.jobs, {})

    def test_status_counts_deliveries(self) -> None:
        workers(self.core, b"wa", b"wb")
        self.client.submit(b"bc")
        self.assertEqual(self.core.functions[b"bc"].total(), 2)


class RetryTests(SynchronousTestCase):
    """With a retry policy, a lost delivery goes to a connection that has not had it."""

    def test_lost_delivery_goes_to_a_new_connection(self) -> None:
        policies = Policies(rules={"bc": {"broadcast": True, "attempts": 2}})
        core, _ = make_core(policies=policies)
        client = RecordingPeer(core)
        a, b = workers(core, b"wa", b"wb")
        parent = client.submit(b"bc")
        take(a)
        a.disconnect()
        (c,) = workers(core, b"wc")  # a new connection (say, a restarted worker)
        handle = take(c)
        self.assertEqual(b.grab(GRAB_UNIQ)[0], P.JOB_ASSIGN_UNIQ)
        core.work_complete(c.peer, handle, b"again")
        self.assertIn((P.WORK_DATA, (parent, b"wc\0again")), client.take())


class DurableTests(SynchronousTestCase):
    """Background broadcasts in a store: a restart loses no delivery."""

    def test_restart_mid_broadcast(self) -> None:
        store = MemoryJobStore()
        core, clock = make_core(policies=BROADCAST, store=store)
        client = RecordingPeer(core)
        a, b, c = workers(core, b"wa", b"wb", b"wc")
        parent = client.submit(b"bc", data=b"job", background=True)
        done = take(a)
        core.work_complete(a.peer, done, b"")
        take(b)  # b is running its delivery when the server stops
        rows = self.successResultOf(store.replay())
        self.assertEqual([r.reducer for r in rows][1:], [DELIVERY_MARK + parent] * 2)

        again, clock2 = make_core(policies=BROADCAST, store=store)
        again.set_boot(2)
        again.replay(rows)
        self.assertEqual(again.functions[b"bc"].total(), 2)
        client2 = RecordingPeer(again)
        again.get_status(client2.peer, parent)
        self.assertEqual(client2.take(), [(P.STATUS_RES, (parent, b"1", b"1", b"1", b"3"))])
        x, y, z = workers(again, b"x", b"y", b"z")
        for w in (x, y):
            again.work_complete(w.peer, take(w), b"")
        self.assertEqual(z.grab(GRAB_UNIQ), (P.NO_JOB, ()))  # two were left, not three
        self.assertEqual(again.jobs, {})
        self.assertEqual(self.successResultOf(store.replay()), [])

    def test_restart_before_it_started(self) -> None:
        """A stored broadcast with no worker at the time: after a restart it starts a moment
        after the first worker registers, with every worker registered by then."""
        store = MemoryJobStore()
        core, clock = make_core(policies=BROADCAST, store=store)
        # Accepted while no worker was there, and the server died before it started.
        store.add(StoredJob("k1", b"bc", b"", Priority.NORMAL, b"payload", handle=b"H:test:1-7"))
        core.set_boot(2)
        core.replay(self.successResultOf(store.replay()))
        a, b = workers(core, b"wa", b"wb")
        self.assertEqual(a.grab(GRAB_UNIQ), (P.NO_JOB, ()))
        clock.advance(RESTART_GRACE)
        for w in (a, b):
            core.work_complete(w.peer, take(w), b"")
        self.assertEqual(core.jobs, {})
