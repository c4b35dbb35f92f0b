# -*- test-case-name: tests.test_web_api -*-
"""The HTTP resources: ``/`` (the dashboard), ``/static/``, ``/metrics`` and ``/api/...``.

Built with twisted.web, served in the job server's process and reactor. Requests are not
logged one by one (a dashboard polls every two seconds); actions are, with who sent them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.http import Request
from twisted.web.iweb import IRequest
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from gearmanpy.protocol.text import show
from gearmanpy.web.auth import ActionGuard
from gearmanpy.web.views import Views

_log = Logger()

#: The dashboard's HTML, script and style sheet (package data).
STATIC = Path(__file__).resolve().parent / "static"

#: Headers on every answer: no framing (clickjacking), scripts only from here, no sniffing.
SECURITY_HEADERS = {
    b"content-security-policy": b"default-src 'self'; img-src 'self' data:; "
    b"frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    b"x-frame-options": b"DENY",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"cache-control": b"no-store",
}


def _secure(request: IRequest) -> None:
    for name, value in SECURITY_HEADERS.items():
        request.setHeader(name, value)


def send_json(request: IRequest, body: Any, status: int = 200) -> bytes:
    """Answer ``body`` as JSON with ``status``."""
    _secure(request)
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


#: The answer when the cluster's table cannot be read (the log has the database's error).
UNAVAILABLE = "the cluster's dead set cannot be read now (is the database away?)"


def later(request: IRequest, d: Deferred[Any]) -> Any:
    """Answer ``request`` with the JSON ``d`` fires with (a body, or a ``(body, status)``
    pair) once it does; 503 with a one-line error if it fails (``d`` has logged why), and
    nothing at all if the client went away meanwhile. For a resource's ``render_*``:
    returns NOT_DONE_YET."""
    gone: list[bool] = []
    request.notifyFinish().addErrback(lambda _: gone.append(True))  # type: ignore[attr-defined]

    def send(answer: Any) -> None:
        body, status = answer if isinstance(answer, tuple) else (answer, 200)
        if gone:
            return
        data = send_json(request, body, status)
        request.setHeader(b"content-length", b"%d" % len(data))  # as a rendered answer has
        request.write(data)
        request.finish()

    d.addCallbacks(send, lambda _: send(({"error": UNAVAILABLE}, 503)))
    d.addErrback(lambda f: _log.failure("HTTP answer failed", f))
    return NOT_DONE_YET


def _arg(request: IRequest, name: bytes, default: str = "") -> str:
    """A query argument's first value, as text."""
    values = (request.args or {}).get(name)  # type: ignore[attr-defined]
    return values[0].decode("utf-8", "surrogateescape") if values else default


#: The files the dashboard is made of, and their types.
FILES = {
    "index.html": b"text/html; charset=utf-8",
    "app.js": b"text/javascript; charset=utf-8",
    "style.css": b"text/css; charset=utf-8",
}


class StaticFile(Resource):
    """One of the dashboard's files, read from the package once."""

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.body = (STATIC / name).read_bytes()
        self.type = FILES[name]

    def render_GET(self, request: IRequest) -> bytes:
        """The file, with the security headers."""
        _secure(request)
        request.setHeader(b"content-type", self.type)
        return self.body

    render_HEAD = render_GET


class Folder(Resource):
    """A resource holding children; anything else is a plain 404 page."""

    def getChild(self, path: bytes, request: IRequest) -> Resource:
        """Not found (twisted.web's default page for it is deprecated)."""
        return notFound()  # type: ignore[return-value]


class Metrics(Resource):
    """``/metrics``: the registry in the Prometheus text format."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: IRequest) -> bytes:
        """Every family, collected now."""
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.registry)


class Api(Resource):
    """``/api/...``: the JSON API (docs/http-api.rst)."""

    isLeaf = True
    log = Logger()

    def __init__(self, views: Views, guard: ActionGuard) -> None:
        super().__init__()
        self.views = views
        self.guard = guard

    def render_GET(self, request: IRequest) -> bytes:
        """``overview``, ``functions``, ``workers``, ``jobs`` and ``history``."""
        path = request.postpath or []  # type: ignore[attr-defined]
        name = b"/".join(path).decode("latin-1")
        v = self.views
        if name == "overview":
            return send_json(request, v.overview())
        if name == "functions":
            return send_json(request, v.functions())
        if name == "workers":
            return send_json(request, v.workers())
        if name == "history":
            return send_json(request, v.history.series())
        if name == "dead":
            try:
                limit = int(_arg(request, b"limit", "100"))
            except ValueError:
                return send_json(request, {"error": "limit must be a whole number"}, 400)
            if v.cluster is not None:  # the dead set is the cluster's table
                return later(request, v.cluster_dead(_arg(request, b"function"), limit))
            return send_json(request, v.dead(_arg(request, b"function"), limit))
        if name == "jobs":
            try:
                limit = int(_arg(request, b"limit", "100"))
            except ValueError:
                return send_json(request, {"error": "limit must be a whole number"}, 400)
            state = _arg(request, b"state")
            if state not in ("", "queued", "running", "scheduled"):
                return send_json(request, {"error": f"unknown state {state!r}"}, 400)
            return send_json(request, v.jobs(_arg(request, b"q"), state, limit))
        return send_json(request, {"error": f"no such API endpoint: /api/{name}"}, 404)

    def render_POST(self, request: IRequest) -> bytes:
        """``jobs/cancel``, ``dead/retry`` and ``dead/drop``, if the request is authorised."""
        path = request.postpath or []  # type: ignore[attr-defined]
        action = ACTIONS.get(b"/".join(path))
        if action is None:
            return send_json(request, {"error": "no such action"}, 404)
        refusal = self.guard.refusal(request)
        if refusal is not None:
            return send_json(request, {"error": refusal[1]}, refusal[0])
        field, verb = action
        try:
            body = json.loads(request.content.read() or b"{}")  # type: ignore[attr-defined]
            value = body[field]
            if not isinstance(value, str) or not value:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            example = "H:..." if field == "handle" else "HANDLE|FUNCTION|all"
            return send_json(request, {"error": f'send {{"{field}": "{example}"}} as JSON'}, 400)
        raw = value.encode("utf-8", "surrogateescape")
        core = self.views.core
        cluster = self.views.cluster
        if verb != "cancelled" and cluster is not None:  # the cluster's dead rows
            d = cluster.act("retry" if verb == "retried" else "drop", raw)
            return later(request, d.addCallback(lambda n: self._acted(request, verb, value, n)))
        if verb == "cancelled":
            done = int(core.cancel(raw))
        elif verb == "retried":
            done = core.retry_dead(raw)
        else:
            done = core.drop_dead(raw)
        body, status = self._acted(request, verb, value, done)
        return send_json(request, body, status)

    def _acted(self, request: IRequest, verb: str, value: str, done: Any) -> tuple[Any, int]:
        """The answer to an action that acted on ``done`` jobs (0: none matched), logged."""
        if not done:
            what = "live job" if verb == "cancelled" else "dead job matching"
            return {"error": f"no {what} {value}"}, 404
        self.log.info(
            "{what} {verb} over HTTP by {peer}",
            what=show(value.encode("utf-8", "surrogateescape")),
            verb=verb,
            peer=_peer(request),
        )
        if verb == "cancelled":
            return {verb: value}, 200
        return {verb: value, "count": done}, 200

    render_HEAD = render_GET


#: The actions: path -> (the JSON field naming what to act on, the past tense in replies).
ACTIONS = {
    b"jobs/cancel": ("handle", "cancelled"),
    b"dead/retry": ("what", "retried"),
    b"dead/drop": ("what", "dropped"),
}


def _peer(request: IRequest) -> str:
    """Who sent ``request``, for the log."""
    address = request.getClientAddress()
    return str(getattr(address, "host", None) or address)


class QuietSite(Site):
    """A Site that writes no access log line per request (the dashboard polls)."""

    noisy = False

    def log(self, request: Request) -> None:
        """Requests are not logged."""


def build_root(views: Views, registry: CollectorRegistry, guard: ActionGuard) -> Resource:
    """The site's resources: the dashboard, its files, the metrics and the JSON API."""
    root = Folder()
    root.putChild(b"", StaticFile("index.html"))
    static = Folder()
    for name in FILES:
        static.putChild(name.encode("ascii"), StaticFile(name))
    root.putChild(b"static", static)
    root.putChild(b"metrics", Metrics(registry))
    root.putChild(b"api", Api(views, guard))
    return root


__all__ = ["Api", "Metrics", "QuietSite", "STATIC", "build_root"]
