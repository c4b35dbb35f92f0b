"""Client and Worker results awaited from coroutines that asyncio runs, under Twisted's
asyncioreactor (a real reactor, so in a subprocess): a plain Deferred there fails with
"Task got bad yield". The same code driven by ensureDeferred keeps working."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import asyncio, sys
from twisted.internet import asyncioreactor
loop = asyncio.new_event_loop()
asyncioreactor.install(loop)
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from gearmanpy import Client, JobFailed, Worker
from gearmanpy.server.core import JobServerCore
from gearmanpy.server.protocol import ServerFactory

def reverse(job):
    job.send_status(1, 2)
    job.send_data(b"half")
    if job.data == b"fail":
        raise JobFailed()
    return job.data[::-1]

async def main(port, out):
    address = f"127.0.0.1:{port}"
    worker = Worker([address])
    worker.register("reverse", reverse)
    worker.startService()
    client = Client([address], timeout=10)
    job = client.submit("reverse", b"hello")
    events = [event async for event in job]
    out.append(repr(events))
    out.append(repr(await job))
    try:
        await client.submit("reverse", b"fail")
    except JobFailed:
        out.append("JobFailed")
    handle = await client.submit_background("reverse", b"bg")
    out.append(type(handle).__name__)
    out.append(repr(await client.echo(b"ping")))
    status = await client.get_status(handle)
    out.append(type(status).__name__)
    out.append(repr(await client.submit("reverse", b"x").when_created() is not None))
    await client.stop()
    await worker.stopService()
    out.append("stopped")

def start(driver):
    port = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    def listening(p):
        out = []
        coro = main(p.getHost().port, out)
        if driver == "asyncio":
            d = Deferred.fromFuture(loop.create_task(coro))
        else:
            d = ensureDeferred(coro)
        def done(result):
            print("\n".join(out))
            if result is not None:
                print("ERROR", result.getTraceback() if hasattr(result, "getTraceback") else result)
            reactor.stop()
        d.addCallbacks(lambda _: done(None), done)
    d = port.listen(ServerFactory(JobServerCore(clock=reactor))).addCallback(listening)
    d.addErrback(lambda f: (print("ERROR", f.getTraceback()), reactor.stop()))

reactor.callWhenRunning(start, sys.argv[1])
reactor.run()
"""

EXPECTED = [
    "[WorkStatus(numerator=1, denominator=2), WorkData(data=b'half')]",
    "b'olleh'",
    "JobFailed",
    "bytes",
    "b'ping'",
    "JobStatus",
    "True",
    "stopped",
]


def run(driver: str) -> list[str]:
    """Run the script with ``driver`` ("asyncio" or "twisted") driving the coroutine."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, driver],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.splitlines()


def test_asyncio_task_awaits_results() -> None:
    """An asyncio Task awaits jobs, their events, background handles, statuses and stops."""
    assert run("asyncio") == EXPECTED


def test_ensure_deferred_still_works() -> None:
    """The same coroutine under ensureDeferred (the Deferred path) gets the same answers."""
    assert run("twisted") == EXPECTED
