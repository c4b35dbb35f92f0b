#!/usr/bin/env python
"""Word count, step 3: read the result of a document, or say it is not ready.

Run it as::

    python examples/wordcount_result.py --id 42 [--top 10]

Start ``twistd -n gearman`` first (see README.rst, *Examples*).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.task import react
from twisted.protocols.memcache import MemCacheProtocol


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
        print(f"{doc}: not ready")
        return
    print(f"{doc}: {status.decode()}")
    if result is not None:
        data = json.loads(result)
        print(f"words: {data['words']}")
        for word, count in list(data["counts"].items())[: options.top]:
            print(f"{word}: {count}")


def main(reactor: Any) -> Deferred[None]:
    """Parse options and run :func:`show`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memcached", default="127.0.0.1:11211")
    parser.add_argument("--id", required=True)
    parser.add_argument("--top", type=int, default=10)
    return Deferred.fromCoroutine(show(reactor, parser.parse_args()))


if __name__ == "__main__":
    react(main)
