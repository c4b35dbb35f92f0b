#!/usr/bin/env python
"""Word count, step 3: read the result of a document, or say it is not ready (and what the
job server knows of its job).

Run it as::

    python examples/wordcount_result.py --gearman 127.0.0.1:4730 --id 42 [--top 10]

Start ``twistd -n gearman`` first (see README.rst, *Examples*).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from example_args import example_parser
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.task import react
from twisted.protocols.memcache import MemCacheProtocol

from gearmanpy import Client, GearmanError


async def show(reactor: Any, options: argparse.Namespace) -> None:
    """Print the status and the most frequent words."""
    host, _, port = options.memcached.rpartition(":")
    endpoint = clientFromString(reactor, f"tcp:host={host}:port={port}")
    mc = await connectProtocol(endpoint, MemCacheProtocol())
    doc = f"doc-{options.id}"
    _, status = await mc.get(f"{doc}-status".encode())
    _, result = await mc.get(f"{doc}-result".encode())
    mc.transport.loseConnection()
    if status is None:
        print(f"{doc}: not ready ({await job_state(reactor, options.gearman, doc)})")
        return
    print(f"{doc}: {status.decode()}")
    if result is not None:
        data = json.loads(result)
        print(f"words: {data['words']}")
        for word, count in list(data["counts"].items())[: options.top]:
            print(f"{word}: {count}")


async def job_state(reactor: Any, gearman: str, unique: str) -> str:
    """What the job server says of the job submitted under ``unique`` (GET_STATUS_UNIQUE)."""
    client = Client([gearman], reactor=reactor, timeout=10)
    try:
        status = await client.get_status_unique(unique)
    except GearmanError as e:
        return f"job server {gearman}: {e}"
    finally:
        await client.stop()
    if not status.known:
        return "no such job on the job server"
    if status.running:
        return f"running, {status.numerator}/{status.denominator}"
    return "queued"


def main(reactor: Any) -> Deferred[None]:
    """Parse options and run :func:`show`."""
    parser = example_parser(__doc__, memcached=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--top", type=int, default=10)
    return Deferred.fromCoroutine(show(reactor, parser.parse_args()))


if __name__ == "__main__":
    react(main)
