"""The web dashboard's dead set on a cluster's node (gearmanpy/web/site.py, views.py, with
server/cluster_dead.py): ``GET /api/dead``, ``POST /api/dead/retry`` and ``/api/dead/drop``
answer from the cluster's table, asynchronously. Two nodes' cores on one real PostgreSQL (a
job buried on A is listed, retried and dropped through B's site), and a fake store on a
Clock for the error paths (the database away: 503 JSON; a client gone before the answer)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gearmanpy.errors import StoreError
from gearmanpy.server.admin import AdminCommands
from gearmanpy.server.cluster_dead import ClusterDeadCommands
from gearmanpy.server.core import JobServerCore
from gearmanpy.store.pg_cluster import ClusterStore
from gearmanpy.web.app import DashboardSite, build
from tests.serverhelpers import make_core
from tests.test_pg_cluster import sleep
from tests.test_pg_cluster_dead import DeadSetNodes
from tests.test_pg_cluster_jobs import log_messages
from tests.test_web_api import ACTION, LOOPBACK, REMOTE, Response, parse, send


def cluster_site(core: JobServerCore, store: Any) -> DashboardSite:
    """The dashboard of ``core``'s node, wired to the cluster's dead set as tap.py wires it."""
    site = build(core, core.clock)  # type: ignore[arg-type]
    site.views.cluster = ClusterDeadCommands(AdminCommands(core), store)
    return site


@inlineCallbacks
def answer(site: DashboardSite, method: str, path: str, **kw: Any) -> Any:
    """Send a request to ``site`` and wait (at most 5 s) until its answer is whole."""
    transport = send(site, method, path, **kw)
    for _ in range(250):
        if transport.disconnecting:  # "Connection: close": finished
            break
        yield sleep(0.02)
    return parse(transport.value())


def act(site: DashboardSite, path: str, what: str, **kw: Any) -> Any:
    """POST ``{"what": what}`` to ``path`` (an action, from loopback unless ``peer``)."""
    body = json.dumps({"what": what}).encode()
    return answer(site, "POST", path, headers=ACTION, body=body, **kw)


@pytest.mark.realdb
class ClusterDashboardTests(DeadSetNodes):
    """B's dashboard shows and acts on the dead jobs that A buried."""

    @inlineCallbacks
    def test_get_lists_every_nodes_dead_rows(self) -> Any:
        """B's ``/api/dead`` lists A's two dead jobs (B holds none in memory), oldest first,
        in the JSON of one server; ``function`` and ``limit`` apply, ``total`` counts them
        all."""
        handles, (core_a, _), (core_b, sb) = yield self.buried_on_a(b"u1", b"u2")
        self.assertEqual(len(core_a.dead) + len(core_b.dead), 0)
        site = cluster_site(core_b, sb)
        r = yield answer(site, "GET", "/api/dead")
        self.assertEqual(r.status, 200)
        body = r.json()
        self.assertEqual(body["total"], 2)
        self.assertEqual([j["handle"] for j in body["jobs"]], [h.decode() for h in handles])
        first = body["jobs"][0]
        failed_at = first.pop("failed_at")
        self.assertEqual(
            first,
            {
                "handle": handles[0].decode(),
                "function": "f",
                "unique": "u1",
                "priority": "normal",
                "attempts": 1,
                "error": "failed",
            },
        )
        self.assertLess(abs(failed_at - core_b.clock.seconds()), 30)
        r = yield answer(site, "GET", "/api/dead?limit=1")
        self.assertEqual((r.json()["total"], len(r.json()["jobs"])), (2, 1))
        r = yield answer(site, "GET", "/api/dead?function=g")
        self.assertEqual(r.json(), {"total": 2, "jobs": []})
        r = yield answer(site, "GET", "/api/dead?limit=x")
        self.assertEqual(r.status, 400)

    @inlineCallbacks
    def test_retry_and_drop_act_on_the_table(self) -> Any:
        """Through B's site: a remote peer is refused and nothing changes; a retry of A's
        first dead job queues it in the table (count 1, logged), a second finds nothing
        (404); ``drop`` of ``f`` deletes the other one, then ``all`` matches nothing."""
        (h1, h2), _, (core_b, sb) = yield self.buried_on_a(b"u1", b"u2")
        site = cluster_site(core_b, sb)
        seen = log_messages(self)
        r = yield act(site, "/api/dead/retry", h1.decode(), peer=REMOTE)
        self.assertEqual(r.status, 403)
        self.assertEqual(self.query("SELECT count(*) FROM {t}_dead"), [(2,)])
        r = yield act(site, "/api/dead/retry", h1.decode())
        self.assertEqual((r.status, r.json()), (200, {"retried": h1.decode(), "count": 1}))
        self.assertIn(f"{h1.decode()} retried over HTTP by 127.0.0.1", seen)
        self.assertEqual(self.query("SELECT handle, owner, retries FROM {t}"), [(h1, None, 0)])
        r = yield act(site, "/api/dead/retry", h1.decode())
        self.assertEqual(
            (r.status, r.json()), (404, {"error": f"no dead job matching {h1.decode()}"})
        )
        r = yield act(site, "/api/dead/drop", "f")
        self.assertEqual((r.status, r.json()), (200, {"dropped": "f", "count": 1}))
        self.assertEqual(self.query("SELECT handle FROM {t}_dead"), [])
        self.assertIn("f dropped over HTTP by 127.0.0.1", seen)
        r = yield act(site, "/api/dead/drop", "all")
        self.assertEqual(r.status, 404)
        r = yield answer(site, "GET", "/api/dead")
        self.assertEqual(r.json(), {"total": 0, "jobs": []})
        self.assertNotIn(h2, [row[0] for row in self.query("SELECT handle FROM {t}")])


class BrokenTable:
    """A cluster store whose dead table cannot be read: each read fails (an empty page
    once ``broken`` is False), or (``held``) waits for the test to answer it."""

    def __init__(self, held: bool = False) -> None:
        self.held = held
        self.broken = True
        self.pending: list[Deferred[Any]] = []

    def _read(self, *args: Any) -> Deferred[Any]:
        if self.held:
            self.pending.append(Deferred())
            return self.pending[-1]
        if not self.broken:
            return succeed((0, []))
        return fail(StoreError("connection to server\nrefused"))

    dead_page = select_dead = _read


class ErrorPathTests(TestCase):
    """The dashboard's dead set on a node whose database is away, on a Clock."""

    def site(self, store: Any) -> DashboardSite:
        core, _ = make_core()
        return cluster_site(core, store)

    def request(self, site: DashboardSite, method: str, path: str, what: str = "") -> Response:
        """One request, answered at once (the fake fires before it returns)."""
        body = json.dumps({"what": what}).encode() if what else b""
        transport = send(site, method, path, headers=ACTION if what else None, body=body)
        self.assertTrue(transport.disconnecting)
        return parse(transport.value())

    def test_the_database_away_is_a_503_json_error(self) -> None:
        """GET and both POSTs answer 503 with a one-line JSON error, no traceback, and the
        log has one warning line each (for GET, which the page polls, one per outage)."""
        seen = log_messages(self)
        store = BrokenTable()
        site = self.site(store)
        error = {"error": "the cluster's dead set cannot be read now (is the database away?)"}
        for method, path, what in (
            ("GET", "/api/dead", ""),
            ("POST", "/api/dead/retry", "all"),
            ("POST", "/api/dead/drop", "f"),
        ):
            r = self.request(site, method, path, what)
            self.assertEqual((r.status, r.json()), (503, error))
        again = self.request(site, "GET", "/api/dead")  # the page asks every two seconds
        self.assertEqual(again.status, 503)
        reason = "the cluster's table cannot be read (connection to server refused)"
        self.assertEqual(
            [line for line in seen if "cannot be read" in line],
            [
                f"the dashboard's dead set failed: {reason}",
                f"retry dead failed: {reason}",
                f"drop dead failed: {reason}",
            ],
        )
        store.broken = False
        self.assertEqual(self.request(site, "GET", "/api/dead").status, 200)
        self.assertIn("the dashboard's dead set can be read again", seen)
        store.broken = True
        self.assertEqual(self.request(site, "GET", "/api/dead").status, 503)
        self.assertEqual(seen.count(f"the dashboard's dead set failed: {reason}"), 2)
        self.assertFalse(self.flushLoggedErrors())

    def test_a_client_gone_before_the_answer(self) -> None:
        """A client that closed its connection before the table answered gets nothing, and
        nothing raises (answer or failure); one still connected gets its answer."""
        store = BrokenTable(held=True)
        site = self.site(store)
        gone = []
        for _ in range(2):
            proto = site.buildProtocol(LOOPBACK)
            assert proto is not None
            transport = StringTransport(peerAddress=LOOPBACK)
            proto.makeConnection(transport)
            proto.dataReceived(b"GET /api/dead HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            proto.connectionLost(Failure(ConnectionError("gone")))
            gone.append(transport)
        stays = send(site, "GET", "/api/dead")
        store.pending[0].callback((0, []))
        store.pending[1].errback(StoreError("refused"))
        store.pending[2].callback((0, []))
        self.assertEqual([t.value() for t in gone], [b"", b""])
        self.assertEqual(parse(stays.value()).json(), {"total": 0, "jobs": []})
        self.assertFalse(self.flushLoggedErrors())


class TapWiringTests(SynchronousTestCase):
    """``twistd gearman --cluster --http ...`` gives the dashboard the cluster's dead set."""

    def test_the_site_gets_the_cluster_admins_dead_commands(self) -> None:
        from gearmanpy.tap import Options, _cluster_service, _makeService

        options = Options()
        options.parseOptions(
            ["--queue", "postgresql://nobody@127.0.0.1:1/none", "--cluster", "--http", "tcp:0"]
        )
        reactor = Clock()
        server = _makeService(options, reactor)
        ((_, site),) = server.http
        self.assertIsNone(site.views.cluster)  # type: ignore[attr-defined]
        _cluster_service(options, server, reactor)
        dead = site.views.cluster  # type: ignore[attr-defined]
        self.assertIs(dead, server.factory.admin.dead)  # type: ignore[attr-defined]
        self.assertIsInstance(dead.store, ClusterStore)
