"""Job functions the command-line tests run with ``gearmanpy worker cli_jobs:NAME``."""

from __future__ import annotations

from twisted.internet import reactor, task

from gearmanpy.errors import JobFailed
from gearmanpy.worker import WorkerJob


def echo(job: WorkerJob) -> bytes:
    """The payload back, byte for byte."""
    return job.data


async def stream(job: WorkerJob) -> bytes:
    """Two WORK_DATA chunks and two WORK_STATUS, a warning, then the result."""
    job.send_data(b"part1,")
    job.send_status(1, 2)
    await task.deferLater(reactor, 0.3, lambda: None)
    job.send_warning(b"careful")
    job.send_data(b"part2,")
    job.send_status(2, 2)
    await task.deferLater(reactor, 0.3, lambda: None)
    return b"end"


async def slow(job: WorkerJob) -> bytes:
    """Takes 1.5 s, so a test can stop the worker while it runs."""
    job.send_status(0, 1)
    await task.deferLater(reactor, 1.5, lambda: None)
    return b"done:" + job.data


def fail(job: WorkerJob) -> bytes:
    """WORK_FAIL."""
    raise JobFailed("no")


def boom(job: WorkerJob) -> bytes:
    """WORK_EXCEPTION."""
    raise KeyError("k")
