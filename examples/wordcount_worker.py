#!/usr/bin/env python
"""Word count, step 2: the worker.

For each ``wordcount`` job (payload: the document id) it reads ``doc-<id>-srctxt`` from
memcached, counts the words, and writes ``doc-<id>-result`` (JSON: the total and the count
of each word) and ``doc-<id>-status`` (``Complete``, or ``Error: ...``). It runs until
interrupted (Ctrl-C stops taking jobs, lets running ones finish, then exits).

    python examples/wordcount_worker.py --gearman 127.0.0.1:4730 --memcached 127.0.0.1:11211
"""

from __future__ import annotations

import collections
import json
import re
from typing import Any

from example_args import example_parser
from twisted.application.internet import ClientService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.protocol import Factory
from twisted.internet.task import react
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.protocols.memcache import MemCacheProtocol

from gearmanpy import Worker, WorkerJob

log = Logger()
WORD = re.compile(r"\w+", re.UNICODE)


def count_words(text: str) -> dict[str, Any]:
    """Return the number of words and each word's count (case-folded), most frequent first."""
    counts = collections.Counter(word.casefold() for word in WORD.findall(text))
    return {"words": sum(counts.values()), "counts": dict(counts.most_common())}


def make_worker(reactor: Any, gearman: str, memcached: str, concurrency: int) -> Worker:
    """Build the worker service (and the memcached connection it uses)."""
    host, _, port = memcached.rpartition(":")
    cache = ClientService(
        clientFromString(reactor, f"tcp:host={host}:port={port}"),
        Factory.forProtocol(MemCacheProtocol),
        clock=reactor,
    )
    worker = Worker([gearman], concurrency=concurrency, reactor=reactor, client_id="wordcount")
    cache.setServiceParent(worker)  # started and stopped together with the worker

    @worker.register("wordcount")
    async def wordcount(job: WorkerJob) -> bytes:
        doc = f"doc-{job.data.decode('utf-8', 'replace')}"
        mc: MemCacheProtocol = await cache.whenConnected()  # type: ignore[assignment]
        _, text = await mc.get(f"{doc}-srctxt".encode())
        if text is None:
            status = f"Error: no text stored under {doc}-srctxt"
        else:
            try:
                result = count_words(text.decode("utf-8"))
            except UnicodeDecodeError as e:
                status = f"Error: text is not UTF-8 ({e})"
            else:
                await mc.set(f"{doc}-result".encode(), json.dumps(result).encode())
                status = "Complete"
        await mc.set(f"{doc}-status".encode(), status.encode())
        log.info("{doc}: {status}", doc=doc, status=status)
        return status.encode()

    return worker


def main(reactor: Any) -> Deferred[None]:
    """Start the worker and run until the reactor stops."""
    parser = example_parser(__doc__, memcached=True)
    parser.add_argument("--concurrency", type=int, default=4)
    options = parser.parse_args()
    import sys

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    worker = make_worker(reactor, options.gearman, options.memcached, options.concurrency)
    worker.startService()
    reactor.addSystemEventTrigger("before", "shutdown", worker.stopService)
    return Deferred()  # forever: Ctrl-C or SIGTERM stops the reactor


if __name__ == "__main__":
    react(main)
