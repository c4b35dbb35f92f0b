#!/usr/bin/env python
"""A worker pool embedded in a twisted.web application, next to its HTTP server.

One process, one reactor, one service tree: the Gearman worker pool (function ``reverse``),
a Gearman client, and an HTTP server whose pages submit jobs and show the pool's state.

    python examples/web_worker.py --gearman 127.0.0.1:4730 --http-port 8080
    curl 'http://127.0.0.1:8080/reverse?text=hello'
    curl 'http://127.0.0.1:8080/status'

To run it under twistd instead, build the same tree with :func:`make_service` in a ``.tac``
file and ``setServiceParent(application)``.
"""

from __future__ import annotations

import json
from typing import Any

from example_args import example_parser
from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.task import react
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from gearmanpy import Client, GearmanError, Worker, WorkerJob


class ReversePage(Resource):
    """``/reverse?text=...``: run the text through the ``reverse`` job."""

    isLeaf = True

    def __init__(self, client: Client) -> None:
        """:param client: the Gearman client the page submits with."""
        super().__init__()
        self.client = client

    def render_GET(self, request: Request) -> Any:
        """Submit the job and answer when it completes."""
        text = (request.args or {}).get(b"text", [b""])[0]
        job = self.client.submit("reverse", text, timeout=10)
        finished = request.notifyFinish()
        finished.addErrback(lambda _: job.result.cancel())  # the browser went away

        async def answer() -> None:
            try:
                result = await job
            except GearmanError as e:
                request.setResponseCode(502)
                result = f"job failed: {type(e).__name__}: {e}\n".encode()
            except Exception:  # cancelled: nobody to answer
                return
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.write(result + b"\n")
            request.finish()

        Deferred.fromCoroutine(answer())
        return NOT_DONE_YET


class StatusPage(Resource):
    """``/status``: the worker pool's concurrency and how many slots are busy."""

    isLeaf = True

    def __init__(self, worker: Worker) -> None:
        """:param worker: the pool to describe."""
        super().__init__()
        self.worker = worker

    def render_GET(self, request: Request) -> bytes:
        """Return JSON."""
        request.setHeader(b"content-type", b"application/json")
        state = {
            "concurrency": self.worker.concurrency,
            "busy": self.worker.busy,
            "functions": sorted(f.decode() for f in self.worker.functions),
        }
        return json.dumps(state).encode()


def make_service(reactor: Any, gearman: str, http: str, concurrency: int = 4) -> MultiService:
    """Build the whole application: worker pool, client, and HTTP server."""
    top = MultiService()

    worker = Worker([gearman], concurrency=concurrency, reactor=reactor, client_id="web")

    @worker.register("reverse")
    def reverse(job: WorkerJob) -> bytes:
        return job.data[::-1]

    worker.setServiceParent(top)
    client = Client([gearman], reactor=reactor)
    client.setServiceParent(top)

    root = Resource()
    root.putChild(b"reverse", ReversePage(client))
    root.putChild(b"status", StatusPage(worker))
    strports.service(http, Site(root)).setServiceParent(top)
    return top


def main(reactor: Any) -> Deferred[None]:
    """Start the application and run until interrupted."""
    parser = example_parser(__doc__)
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--concurrency", type=int, default=4)
    options = parser.parse_args()
    app = make_service(
        reactor,
        options.gearman,
        f"tcp:{options.http_port}:interface=127.0.0.1",
        options.concurrency,
    )
    app.startService()
    reactor.addSystemEventTrigger("before", "shutdown", app.stopService)
    return Deferred()


if __name__ == "__main__":
    react(main)
