"""Job functions the command-line tests run with ``gearmanpy worker cli_jobs:NAME``."""

from __future__ import annotations

from twisted.internet import task
from twisted.internet.defer import Deferred

from gearmanpy.errors import JobFailed
from gearmanpy.worker import WorkerJob


def pause(seconds: float) -> Deferred[None]:
    """A Deferred that fires after ``seconds`` on the running reactor."""
    from twisted.internet import reactor

    return task.deferLater(reactor, seconds, lambda: None)


def echo(job: WorkerJob) -> bytes:
    """The payload back, byte for byte."""
    return job.data


async def stream(job: WorkerJob) -> bytes:
    """Two WORK_DATA chunks and two WORK_STATUS, a warning, then the result."""
    job.send_data(b"part1,")
    job.send_status(1, 2)
    await pause(0.3)
    job.send_warning(b"careful")
    job.send_data(b"part2,")
    job.send_status(2, 2)
    await pause(0.3)
    return b"end"


async def slow(job: WorkerJob) -> bytes:
    """Takes 1.5 s, so a test can stop the worker while it runs."""
    job.send_status(0, 1)
    await pause(1.5)
    return b"done:" + job.data


def fail(job: WorkerJob) -> bytes:
    """WORK_FAIL."""
    raise JobFailed("no")


def boom(job: WorkerJob) -> bytes:
    """WORK_EXCEPTION."""
    raise KeyError("k")
