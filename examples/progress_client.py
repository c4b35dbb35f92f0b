#!/usr/bin/env python
"""Submit a foreground job and show its progress and partial data as they arrive.

Run it as::

    python examples/progress_client.py --gearman 127.0.0.1:4730 --steps 5

Start ``twistd -n gearman`` first (see README.rst, *Examples*).
"""

from __future__ import annotations

import argparse
from typing import Any

from example_args import example_parser
from twisted.internet.defer import Deferred
from twisted.internet.task import react

from gearmanpy import Client, GearmanError, WorkData, WorkStatus, WorkWarning


async def run(reactor: Any, options: argparse.Namespace) -> None:
    """Submit, print every event, then the result."""
    client = Client([options.gearman], reactor=reactor, timeout=options.timeout)
    job = client.submit("progress", str(options.steps))
    try:
        async for event in job:
            if isinstance(event, WorkStatus):
                print(f"progress {event.numerator}/{event.denominator}", flush=True)
            elif isinstance(event, WorkData):
                print(event.data.decode().rstrip("\n"), flush=True)
            elif isinstance(event, WorkWarning):
                print(f"warning: {event.data.decode()}", flush=True)
        print((await job).decode())
    except GearmanError as e:
        print(f"job failed: {type(e).__name__}: {e}")
        raise SystemExit(1) from e
    finally:
        await client.stop()


def main(reactor: Any) -> Deferred[None]:
    """Parse options and run."""
    parser = example_parser(__doc__)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=60.0)
    return Deferred.fromCoroutine(run(reactor, parser.parse_args()))


if __name__ == "__main__":
    react(main)
