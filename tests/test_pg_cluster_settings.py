"""Settings shared across a cluster (gearmanpy/server/cluster_settings.py,
gearmanpy/store/pg_cluster_settings.py): ``maxqueue`` and ``policy set|reset`` sent to one
node are written to the settings table and applied by every node, on a notification or at
the next tick; two nodes' cores on one real PostgreSQL table."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from twisted.internet.defer import inlineCallbacks

from gearmanpy.protocol.packets import PacketType as P
from gearmanpy.server.admin import AdminCommands
from gearmanpy.server.cluster_settings import ClusterSettings
from gearmanpy.server.core import JobServerCore
from gearmanpy.server.outbound import Outbound
from gearmanpy.server.policy import Policies
from gearmanpy.store.pg_cluster import ClusterStore, NotifyListener
from tests.serverhelpers import RecordingPeer
from tests.test_pg_cluster import _reactor, admin_lines, sleep
from tests.test_pg_cluster_limits import FULL
from tests.test_pg_cluster_results import TwoNodes


@pytest.mark.realdb
class ClusterSettingsTests(TwoNodes):
    """Nodes A and B, each with its shared settings."""

    def settings(
        self, core: JobServerCore, store: ClusterStore, interval: float, listen: bool = True
    ) -> ClusterSettings:
        """``core``'s shared settings, started, reading the table every ``interval`` seconds
        and (with ``listen``) when a notification says it changed."""
        settings = ClusterSettings(core, store, _reactor(), interval)
        settings.start()
        self.addCleanup(settings.stop)
        if listen:
            listener = NotifyListener(
                self.server.url,
                store.channel,
                _reactor(),
                lambda _: None,
                settings=settings.refresh,
            )
            listener.start()
            self.addCleanup(listener.stop)
        return settings

    @inlineCallbacks
    def admin(self, core: JobServerCore, settings: ClusterSettings, line: bytes) -> Any:
        """The answer to the admin ``line`` on ``core``'s node (a loopback peer)."""
        lines = yield admin_lines(
            core, settings.store, line, settings=settings, ip=b"127.0.0.1", trusted=True
        )
        return b"\n".join(lines)

    @inlineCallbacks
    def becomes(self, probe: Any, want: Any, seconds: float = 5.0) -> Any:
        """Wait until ``probe()`` returns ``want`` (at most ``seconds``); its last value."""
        got = probe()
        for _ in range(int(seconds / 0.02)):
            if got == want:
                break
            yield sleep(0.02)
            got = probe()
        return got

    def show_policy(self, core: JobServerCore, setting: bytes) -> bytes:
        """The value ``show policy f`` prints for ``setting`` on ``core``'s node."""
        reply = AdminCommands(core).show_policy_state(
            core.connect(Outbound(lambda _: None), lambda: None),
            [b"policy"],
            (b"policy", b"f"),
        )
        lines = dict(line.split(b"\t") for line in reply.split(b"\n") if b"\t" in line)
        return lines[setting]

    @inlineCallbacks
    def test_maxqueue_sent_to_one_node_limits_the_other(self) -> Any:
        """``maxqueue f 1`` on A is in force on A once it answers OK and on B once the
        notification arrives (B's own ticks are a minute apart): B takes one background f
        and refuses the next; a node opened later applies it before it starts; ``maxqueue
        f`` on B takes the limit back on A."""
        (core_a, node_a), (core_b, node_b) = yield self.pair()
        on_a = self.settings(core_a, node_a.store, 60.0)
        self.settings(core_b, node_b.store, 60.0)
        yield sleep(0.3)  # both read the (empty) table and listen
        got = yield self.admin(core_a, on_a, b"maxqueue f 1")
        self.assertEqual(got, b"OK\r\n")
        self.assertEqual(core_a.max_queues, {b"f": [1, 1, 1]})
        got = yield self.becomes(lambda: core_b.max_queues, {b"f": [1, 1, 1]})
        self.assertEqual(got, {b"f": [1, 1, 1]})
        for want in (P.JOB_CREATED, None):
            client = RecordingPeer(core_b)
            core_b.submit(client.peer, b"f", b"", b"x", background=True)
            (reply,) = yield self.until(client)
            self.assertEqual(reply[0] if want else reply, want or FULL)
        core_c = JobServerCore(clock=_reactor())
        later = ClusterStore(self.server.url, _reactor(), table=self.table, node_name="c")
        later.on_settings = ClusterSettings(core_c, later, _reactor()).apply
        yield later.open()
        self.addCleanup(later.close)
        self.assertEqual(core_c.max_queues, {b"f": [1, 1, 1]})
        got = yield self.admin(core_b, on_a, b"maxqueue f")
        self.assertEqual(got, b"OK\r\n")
        got = yield self.becomes(lambda: core_a.max_queues, {})
        self.assertEqual(got, {})

    @inlineCallbacks
    def test_policy_set_on_one_node_shows_and_acts_on_the_other(self) -> Any:
        """``policy set f attempts=7 max_running=1`` on A shows in ``show policy f`` on B and
        throttles B's f; it overrides B's configuration file (``attempts = 2``) until
        ``policy reset f`` on B, which takes it back on A too; a second reset is
        ``ERR NO_POLICY``, and a bad value is refused before anything is written."""
        (core_a, node_a), (core_b, node_b) = yield self.pair()
        core_b.policies = Policies(rules={"f": {"attempts": 2}})
        on_a = self.settings(core_a, node_a.store, 60.0)
        on_b = self.settings(core_b, node_b.store, 60.0)
        yield sleep(0.3)
        self.assertEqual(self.show_policy(core_b, b"attempts"), b"2")
        got = yield self.admin(core_a, on_a, b"policy set f attempts=7 max_running=1")
        self.assertEqual(got, b"OK\r\n")
        self.assertEqual(self.show_policy(core_a, b"attempts"), b"7")
        got = yield self.becomes(lambda: self.show_policy(core_b, b"attempts"), b"7")
        self.assertEqual(got, b"7")
        self.assertEqual(self.show_policy(core_b, b"max_running"), b"1")
        throttle = core_b.function(b"f").throttle
        self.assertIsNotNone(throttle)
        assert throttle is not None
        self.assertEqual(throttle.max_running, 1)
        got = yield self.admin(core_b, on_b, b"policy reset f")
        self.assertEqual(got, b"OK\r\n")
        self.assertEqual(self.show_policy(core_b, b"attempts"), b"2")  # the file's again
        self.assertIsNone(core_b.function(b"f").throttle)
        got = yield self.becomes(lambda: self.show_policy(core_a, b"attempts"), b"None")
        self.assertEqual(got, b"None")
        got = yield self.admin(core_a, on_a, b"policy reset f")
        self.assertEqual(got, b"ERR NO_POLICY no+run-time+change+for+that+pattern\r\n")
        got = yield self.admin(core_a, on_a, b"policy set f attempts=many")
        self.assertTrue(got.startswith(b"ERR BAD_POLICY "), got)
        with psycopg.connect(self.server.url) as conn:
            (n,) = conn.execute(f"SELECT count(*) FROM {self.table}_settings").fetchone()  # type: ignore[misc]
        self.assertEqual(n, 0)

    @inlineCallbacks
    def test_a_lost_notification_is_caught_up_by_the_tick(self) -> Any:
        """B hears no notification (its listener is gone): ``maxqueue`` and ``policy set``
        sent to A reach B at its next read of the table, a tick later."""
        (core_a, node_a), (core_b, node_b) = yield self.pair()
        on_a = self.settings(core_a, node_a.store, 60.0)
        self.settings(core_b, node_b.store, 1.5, listen=False)
        yield sleep(0.3)
        got = yield self.admin(core_a, on_a, b"maxqueue f 4 3 2")
        self.assertEqual(got, b"OK\r\n")
        got = yield self.admin(core_a, on_a, b"policy set f* attempts=3")
        self.assertEqual(got, b"OK\r\n")
        self.assertEqual(core_b.max_queues, {})  # not before B's next tick
        got = yield self.becomes(lambda: core_b.max_queues, {b"f": [4, 3, 2]}, seconds=3.0)
        self.assertEqual(got, {b"f": [4, 3, 2]})
        self.assertEqual(self.show_policy(core_b, b"attempts"), b"3")

    @inlineCallbacks
    def test_a_write_the_database_refuses_changes_nothing(self) -> Any:
        """When the settings table cannot be written, ``maxqueue`` and ``policy set`` answer
        one ``ERR STORE_ERROR`` line and the node keeps its own settings."""
        (core_a, node_a), _ = yield self.pair()
        on_a = self.settings(core_a, node_a.store, 60.0, listen=False)
        yield sleep(0.2)
        with psycopg.connect(self.server.url) as conn:
            conn.execute(f"DROP TABLE {self.table}_settings")
        error = b"ERR STORE_ERROR the+cluster's+settings+could+not+be+written\r\n"
        got = yield self.admin(core_a, on_a, b"maxqueue f 3")
        self.assertEqual(got, error)
        got = yield self.admin(core_a, on_a, b"policy set f attempts=4")
        self.assertEqual(got, error)
        self.assertEqual(core_a.max_queues, {})
        self.assertEqual(self.show_policy(core_a, b"attempts"), b"None")

    @inlineCallbacks
    def test_a_peer_without_admin_changes_nothing(self) -> Any:
        """``maxqueue`` and ``policy set`` from a remote peer without the ``admin``
        permission answer ``ERR PERMISSION_DENIED`` and write nothing; malformed ones
        answer gearmand's ``INVALID_ARGUMENTS``."""
        (core_a, node_a), _ = yield self.pair()
        on_a = self.settings(core_a, node_a.store, 60.0, listen=False)
        for line in (b"maxqueue f 1", b"policy set f attempts=2", b"policy reset f"):
            lines = yield admin_lines(core_a, node_a.store, line, settings=on_a, ip=b"10.0.0.9")
            self.assertTrue(lines[0].startswith(b"ERR PERMISSION_DENIED "), lines)
        for line, command in ((b"maxqueue", b"maxqueue"), (b"policy set f", b"policy")):
            got = yield self.admin(core_a, on_a, line)
            self.assertEqual(
                got,
                b"ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+"
                + command
                + b"\r\n",
            )
        with psycopg.connect(self.server.url) as conn:
            (n,) = conn.execute(f"SELECT count(*) FROM {self.table}_settings").fetchone()  # type: ignore[misc]
        self.assertEqual((n, core_a.max_queues), (0, {}))
