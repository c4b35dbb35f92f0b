#!/usr/bin/env python
"""A worker for a long foreground job that reports progress and streams partial data.

Function ``progress``: the payload is a number of steps. Each step takes a moment, then the
worker sends WORK_STATUS (step of steps) and a WORK_DATA chunk; the result is a summary.

    python examples/progress_worker.py --gearman 127.0.0.1:4730
"""

from __future__ import annotations

from typing import Any

from example_args import example_parser
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater, react

from gearmanpy import Worker, WorkerJob


def main(reactor: Any) -> Deferred[None]:
    """Serve ``progress`` until interrupted."""
    parser = example_parser(__doc__)
    parser.add_argument("--delay", type=float, default=0.2, help="seconds per step")
    options = parser.parse_args()
    worker = Worker([options.gearman], concurrency=2, reactor=reactor)

    @worker.register("progress")
    async def progress(job: WorkerJob) -> str:
        steps = int(job.data or b"5")
        for step in range(1, steps + 1):
            await deferLater(reactor, options.delay, lambda: None)  # the "work"
            job.send_status(step, steps)
            job.send_data(f"chunk {step}\n")
        return f"result: {steps} steps done"

    worker.startService()
    reactor.addSystemEventTrigger("before", "shutdown", worker.stopService)
    return Deferred()


if __name__ == "__main__":
    react(main)
