"""The JSON API, the dashboard's files and the action rules, through the real twisted.web site
on in-memory transports, against a core driven by fake peers on a Clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.testing import StringTransport

from gearmanpy._version import __version__
from gearmanpy.server.core import JobServerCore
from gearmanpy.server.jobs import GRAB_PLAIN
from gearmanpy.web.app import DashboardSite, build
from gearmanpy.web.auth import is_loopback_host, read_token
from tests.serverhelpers import RecordingPeer, SlowStore, make_core

LOOPBACK = IPv4Address("TCP", "127.0.0.1", 40000)
REMOTE = IPv4Address("TCP", "10.1.2.3", 40000)


@attrs.define
class Response:
    """A parsed HTTP response."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        assert self.headers["content-type"].startswith("application/json"), self.headers
        return json.loads(self.body)


def request(site: DashboardSite, method: str, path: str, *args: Any, **kw: Any) -> Response:
    """Send one request over a fresh in-memory connection (as :func:`send`) and parse the
    answer."""
    return parse(send(site, method, path, *args, **kw).value())


def send(
    site: DashboardSite,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    peer: IPv4Address | IPv6Address = LOOPBACK,
    host: str = "127.0.0.1:8080",
) -> StringTransport:
    """Send one request over a fresh in-memory connection: its transport, where the answer
    is written (closed once it is whole)."""
    proto = site.buildProtocol(peer)
    assert proto is not None
    transport = StringTransport(peerAddress=peer)
    proto.makeConnection(transport)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines.append(f"Content-Length: {len(body)}")
    proto.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    return transport


def parse(raw: bytes) -> Response:
    """An HTTP answer's status, headers and body."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, val = line.partition(":")
        parsed[name.strip().lower()] = val.strip()
    return Response(int(status_line.split()[1]), parsed, rest)


@pytest.fixture
def server() -> Iterator[tuple[JobServerCore, DashboardSite, Any]]:
    """A core with function ``rev`` (one job running, two queued) and ``sum`` (a worker);
    the site is stopped at the end (its log clock is a timer on the global reactor)."""
    core, clock = make_core()
    client, worker = RecordingPeer(core), RecordingPeer(core)
    worker.peer.client_id = b"worker-1"
    worker.can_do(b"rev")
    worker.can_do(b"sum")
    client.submit(b"rev", b"a", unique=b"order-17")
    client.submit(b"rev", b"b", unique=b"order-18", background=True)
    client.submit(b"rev", b"c", unique=b"order-19", background=True)
    worker.grab(GRAB_PLAIN)
    site = build(core, clock)
    site.startFactory()
    yield core, site, clock
    site.stopFactory()


def test_overview(server: Any) -> None:
    """Version, uptime, connections, workers, jobs, counters, the store."""
    core, site, clock = server
    clock.advance(90)
    body = request(site, "GET", "/api/overview").json()
    assert body["version"] == __version__
    assert body["uptime"] == 90
    assert (body["connections"], body["workers"], body["clients_waiting"]) == (2, 1, 1)
    assert body["jobs"] == 3 and body["functions"] == 2
    assert body["counters"]["submitted"] == 3
    assert body["store"] == {
        "name": "memory",
        "durable": False,
        "backlog": 0,
        "outage": False,
        "ack": {"count": 0, "mean": None, "p50": None, "p99": None},
    }


def test_functions(server: Any) -> None:
    """Per function: queues, running, workers, counters, and the rate from the sampler."""
    core, site, clock = server
    worker = core.peers[1]
    for _ in range(10):  # ten seconds, one sample each, one job completed in each
        handle = next(iter(worker.worker_jobs)).handle
        core.work_complete(worker, handle, b"ok")
        core.submit(core.peers[0], b"rev", b"", b"more", background=True)
        core.grab(worker, GRAB_PLAIN)
        clock.advance(1)
    rows = {f["name"]: f for f in request(site, "GET", "/api/functions").json()}
    rev = rows["rev"]
    assert rev["queued"] == {"high": 0, "normal": 2, "low": 0}
    assert (rev["running"], rev["workers"], rev["counters"]["completed"]) == (1, 1, 10)
    assert rev["rate"] == pytest.approx(1.0)
    assert rev["wait"]["count"] == 11 and rev["run"]["count"] == 10
    assert rev["run"]["p50"] == 1.0  # each ran one second: the bucket bound 1.0
    assert rows["sum"]["workers"] == 1 and rows["sum"]["rate"] == 0


def test_history_series(server: Any) -> None:
    """Throughput between samples and queue length at each, per function."""
    core, site, clock = server
    worker = core.peers[1]
    clock.advance(1)
    core.work_complete(worker, next(iter(worker.worker_jobs)).handle, b"ok")
    clock.advance(1)
    series = request(site, "GET", "/api/history").json()
    assert series["interval"] == 1.0
    assert len(series["times"]) == 2
    assert series["functions"]["rev"] == {"throughput": [0, 1.0], "queued": [2, 2]}


def test_history_counts_a_new_functions_first_jobs() -> None:
    """Jobs finished by a function that did not exist at the previous sample count."""
    core, clock = make_core()
    site = build(core, clock)
    site.startFactory()
    client, worker = RecordingPeer(core), RecordingPeer(core)
    worker.can_do(b"new")
    for _ in range(3):
        client.submit(b"new", b"x")
        _, args = worker.grab(GRAB_PLAIN)
        core.work_complete(worker.peer, args[0], b"ok")
    clock.advance(1)
    assert site.views.history.series()["functions"]["new"]["throughput"] == [3.0]
    assert site.views.history.rate("new") == 3.0
    site.stopFactory()


def test_sampler_stops_with_the_listener(server: Any) -> None:
    """The site's port closing stops the LoopingCall (no timer left on the clock)."""
    core, site, clock = server
    assert clock.getDelayedCalls()
    site.stopFactory()
    assert not clock.getDelayedCalls()
    before = len(site.views.history.samples)
    clock.advance(5)
    assert len(site.views.history.samples) == before


def test_workers(server: Any) -> None:
    """Workers with their functions (newest first) and the handles they run."""
    core, site, _ = server
    (w,) = request(site, "GET", "/api/workers").json()
    running = next(iter(core.peers[1].worker_jobs)).handle.decode()
    assert w["client_id"] == "worker-1"
    assert w["functions"] == ["sum", "rev"]
    assert w["running"] == [running]


def test_jobs_search(server: Any) -> None:
    """By exact handle, by unique, by part of either, by state; limit respected."""
    core, site, _ = server
    jobs = request(site, "GET", "/api/jobs").json()
    assert jobs["total"] == 3 and len(jobs["jobs"]) == 3
    handle = jobs["jobs"][1]["handle"]
    (found,) = request(site, "GET", f"/api/jobs?q={handle}").json()["jobs"]
    assert found["handle"] == handle and found["unique"] == "order-18"
    (found,) = request(site, "GET", "/api/jobs?q=order-19").json()["jobs"]
    assert found["state"] == "queued" and found["background"] is True
    assert len(request(site, "GET", "/api/jobs?q=order-1").json()["jobs"]) == 3
    (running,) = request(site, "GET", "/api/jobs?state=running").json()["jobs"]
    assert running["unique"] == "order-17" and running["worker"] == "worker-1"
    assert len(request(site, "GET", "/api/jobs?limit=2").json()["jobs"]) == 2
    assert request(site, "GET", "/api/jobs?q=nothing").json()["jobs"] == []


def test_bad_queries_are_one_line_errors(server: Any) -> None:
    """A bad limit or state, an unknown endpoint: a 4xx with a JSON error, no traceback."""
    _, site, _ = server
    r = request(site, "GET", "/api/jobs?limit=lots")
    assert (r.status, r.json()) == (400, {"error": "limit must be a whole number"})
    r = request(site, "GET", "/api/jobs?state=odd")
    assert r.status == 400 and "odd" in r.json()["error"]
    r = request(site, "GET", "/api/nothing")
    assert r.status == 404 and r.json()["error"] == "no such API endpoint: /api/nothing"


def test_dashboard_files(server: Any) -> None:
    """``/`` is the page; its script and style come from here (the CSP allows only that)."""
    _, site, _ = server
    page = request(site, "GET", "/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert b'src="static/app.js"' in page.body and b"http" not in page.body.split(b"<body>")[0]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    script = request(site, "GET", "/static/app.js")
    assert script.status == 200 and script.headers["content-type"].startswith("text/javascript")
    assert request(site, "GET", "/static/style.css").status == 200
    assert request(site, "GET", "/static/../app.py").status == 404
    assert request(site, "GET", "/static/").status == 404


def test_metrics_endpoint(server: Any) -> None:
    """``/metrics`` is the Prometheus text format."""
    _, site, _ = server
    r = request(site, "GET", "/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=")
    assert b'gearmanpy_function_running{function="rev"} 1.0' in r.body


ACTION = {"X-Gearmanpy-Action": "1", "Content-Type": "application/json"}


def cancel(site: DashboardSite, handle: str, **kw: Any) -> Response:
    """POST a cancel of ``handle``."""
    headers = kw.pop("headers", ACTION)
    return request(
        site, "POST", "/api/jobs/cancel", headers, json.dumps({"handle": handle}).encode(), **kw
    )


def queued_handle(core: JobServerCore) -> str:
    """A queued job's handle."""
    return next(j.handle for j in core.jobs.values() if j.unique == b"order-18").decode()


def test_cancel_from_loopback(server: Any) -> None:
    """Without a token, a loopback request with the action header cancels a queued job."""
    core, site, _ = server
    handle = queued_handle(core)
    r = cancel(site, handle)
    assert (r.status, r.json()) == (200, {"cancelled": handle})
    assert handle.encode() not in core.jobs and core.counters.cancelled == 1
    r = cancel(site, handle)
    assert (r.status, r.json()) == (404, {"error": f"no live job {handle}"})


@pytest.mark.parametrize(
    ("kw", "status", "error"),
    [
        ({"headers": {"Content-Type": "application/json"}}, 403, "X-Gearmanpy-Action"),
        ({"peer": REMOTE}, 403, "loopback only"),
        ({"host": "evil.example:8080"}, 403, "loopback only"),  # DNS rebinding
        ({"headers": {**ACTION, "Origin": "http://evil.example"}}, 403, "cross-origin"),
        ({"headers": {**ACTION, "Origin": "null"}}, 403, "cross-origin"),
        ({"headers": {**ACTION, "Sec-Fetch-Site": "cross-site"}}, 403, "cross-site"),
    ],
)
def test_cancel_refused(server: Any, kw: dict[str, Any], status: int, error: str) -> None:
    """Without the header, from elsewhere, for another host name, or cross-site: refused,
    and the job stays."""
    core, site, _ = server
    handle = queued_handle(core)
    r = cancel(site, handle, **kw)
    assert r.status == status and error in r.json()["error"], r.json()
    assert handle.encode() in core.jobs


def test_cancel_same_origin_and_ipv6_loopback(server: Any) -> None:
    """The dashboard's own request (same Origin) and an IPv6 loopback peer are accepted."""
    core, site, _ = server
    headers = {**ACTION, "Origin": "http://[::1]:8080", "Sec-Fetch-Site": "same-origin"}
    peer = IPv6Address("TCP", "::1", 40000)
    r = cancel(site, queued_handle(core), headers=headers, peer=peer, host="[::1]:8080")
    assert r.status == 200, r.json()


def test_cancel_is_post_only(server: Any) -> None:
    """A GET of the action is not an action."""
    core, site, _ = server
    assert request(site, "GET", "/api/jobs/cancel").status == 404
    r = request(site, "POST", "/api/jobs/cancel", ACTION, b"not json")
    assert (r.status, r.json()) == (400, {"error": 'send {"handle": "H:..."} as JSON'})
    assert request(site, "POST", "/api/overview", ACTION).status == 404


def test_token_rules(server: Any) -> None:
    """With a token: any address may act with it, none without it (loopback included)."""
    core, _, clock = server
    site = build(core, clock, token=b"s3cret")
    handle = queued_handle(core)
    assert cancel(site, handle).status == 401
    bad = {**ACTION, "Authorization": "Bearer wrong"}
    assert cancel(site, handle, headers=bad).status == 401
    good = {**ACTION, "Authorization": "Bearer s3cret"}
    r = cancel(site, handle, headers=good, peer=REMOTE, host="gearman.example:8080")
    assert r.status == 200, r.json()


def test_token_file(tmp_path: Any) -> None:
    """The token file's one word is the token; an empty or missing file is a clear error."""
    path = tmp_path / "token"
    path.write_text("  abc123\n")
    assert read_token(str(path)) == b"abc123"
    path.write_text("\n")
    with pytest.raises(ValueError, match="must hold one token"):
        read_token(str(path))
    with pytest.raises(ValueError, match="cannot read .*: No such file"):
        read_token(str(tmp_path / "missing"))


def test_loopback_host_names() -> None:
    """localhost, 127.x and ::1 are loopback names; anything else is not."""
    assert all(map(is_loopback_host, ["localhost", "127.0.0.1", "127.8.9.1", "[::1]"]))
    assert not any(map(is_loopback_host, ["evil.example", "10.0.0.1", "", "localhost.evil"]))


def test_store_figures() -> None:
    """With a store, the overview names it and shows its backlog and ack latency."""
    store = SlowStore()
    core, clock = make_core(store=store)
    site = build(core, clock, store="sqlite:q.db")
    client = RecordingPeer(core)
    core.submit(client.peer, b"rev", b"", b"x", background=True)
    core.submit(client.peer, b"rev", b"", b"y", background=True)
    s = request(site, "GET", "/api/overview").json()["store"]
    assert (s["name"], s["durable"], s["backlog"]) == ("sqlite:q.db", True, 2)
    store.adds[0][1].callback(None)
    s = request(site, "GET", "/api/overview").json()["store"]
    assert s["backlog"] == 1 and s["ack"]["count"] == 1


def test_dead_set_listed_retried_and_dropped(server: Any) -> None:
    """``/api/dead`` lists the dead set; ``dead/retry`` and ``dead/drop`` act on it, under the
    same rules as cancel."""
    core, site, _ = server
    client, worker = RecordingPeer(core), RecordingPeer(core)
    worker.can_do(b"doomed")
    handles = [client.submit(b"doomed", unique=b"d%d" % i, background=True) for i in range(2)]
    for _ in handles:
        core.grab(worker.peer, GRAB_PLAIN)
        ((_, args),) = worker.take()
        core.work_exception(worker.peer, args[0], b"disk full")
    r = request(site, "GET", "/api/dead?function=doomed")
    assert r.status == 200 and r.json()["total"] == 2
    first = r.json()["jobs"][0]
    assert (first["handle"], first["unique"], first["attempts"], first["error"]) == (
        handles[0].decode(),
        "d0",
        1,
        "disk full",
    )

    def act(path: str, what: str, **kw: Any) -> Response:
        body = json.dumps({"what": what}).encode()
        return request(site, "POST", path, kw.pop("headers", ACTION), body, **kw)

    assert act("/api/dead/retry", handles[0].decode(), peer=REMOTE).status == 403
    r = act("/api/dead/retry", handles[0].decode())
    assert (r.status, r.json()) == (200, {"retried": handles[0].decode(), "count": 1})
    assert core.jobs[handles[0]].unique == b"d0"
    r = act("/api/dead/drop", "doomed")
    assert (r.status, r.json()["count"]) == (200, 1)
    assert len(core.dead) == 0
    assert act("/api/dead/drop", "all").status == 404
