#!/usr/bin/env python
"""Word count, step 1: store a text in memcached and dispatch the background job.

The text goes to memcached under ``doc-<id>-srctxt``; then the background job ``wordcount``
is submitted with the id as its payload (and as its unique key, so submitting the same
document twice while it is queued runs it once). A worker (``wordcount_worker.py``) does the
counting; ``wordcount_result.py`` reads the outcome.

    python examples/wordcount_client.py --id 42 --text "the quick brown fox"
    python examples/wordcount_client.py --id 43 --file README.rst
"""

from __future__ import annotations

import argparse
from typing import Any

from example_args import example_parser
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.task import react
from twisted.protocols.memcache import MemCacheProtocol

from gearmanpy import Client


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = example_parser(__doc__, memcached=True)
    parser.add_argument("--id", required=True, help="document id")
    text = parser.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", help="the document text")
    text.add_argument("--file", help="read the document from this file")
    return parser.parse_args(argv)


def memcache_endpoint(reactor: Any, address: str) -> Any:
    """A client endpoint for ``host:port``."""
    host, _, port = address.rpartition(":")
    return clientFromString(reactor, f"tcp:host={host}:port={port}")


async def submit(reactor: Any, options: argparse.Namespace) -> None:
    """Store the text, clear an old result, submit the job."""
    if options.file:
        with open(options.file, "rb") as f:
            text = f.read()
    else:
        text = options.text.encode("utf-8")
    doc = f"doc-{options.id}"
    mc = await connectProtocol(memcache_endpoint(reactor, options.memcached), MemCacheProtocol())
    await mc.set(f"{doc}-srctxt".encode(), text)
    await mc.delete(f"{doc}-status".encode())
    await mc.delete(f"{doc}-result".encode())
    mc.transport.loseConnection()

    client = Client([options.gearman], reactor=reactor, timeout=30)
    handle = await client.submit_background("wordcount", options.id, unique=doc)
    print(f"{doc}: {len(text)} bytes stored, job {handle.decode()} submitted")
    await client.stop()


def main(reactor: Any, argv: list[str] | None = None) -> Deferred[None]:
    """Run :func:`submit` under the reactor."""
    return Deferred.fromCoroutine(submit(reactor, parse_args(argv)))


if __name__ == "__main__":
    react(main)
