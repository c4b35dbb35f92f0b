"""The blocking client, used as a Django view or a script would: from plain threads, with
Twisted's reactor running in its own thread.

Each test runs in a fresh Python process (the blocking client starts the global reactor in
a thread for the rest of the process, which the other tests must not share). That process
runs a gearmanpy server core and a worker on the same reactor, on loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SETUP = """
import json, sys, threading, time
from twisted.internet import defer, task
from gearmanpy.blocking import Client, ReactorThread
from gearmanpy.errors import JobException, JobFailed, JobTimeout, NoServersAvailable
from gearmanpy.server.core import JobServerCore
from gearmanpy.server.protocol import ServerFactory
from gearmanpy.store.memory import MemoryJobStore
from gearmanpy.worker import Worker

def serve():
    from twisted.internet import reactor
    core = JobServerCore(clock=reactor, store=MemoryJobStore(), handle_prefix=b"H:t")
    port = reactor.listenTCP(0, ServerFactory(core), interface="127.0.0.1")
    address = f"127.0.0.1:{port.getHost().port}"
    worker = Worker([address], concurrency=8)
    def rev(job):
        return job.data[::-1]
    held = []
    def together(job):
        # Answers only once eight jobs are in hand at the same time: calls made one after
        # the other (a client that serialised its callers) would never get there.
        d = defer.Deferred()
        held.append((d, job.data[::-1]))
        if len(held) == 8:
            for waiting, result in held:
                waiting.callback(result)
        return d
    def fail(job):
        raise JobFailed("no")
    def boom(job):
        raise KeyError("k")
    def slow(job):
        return task.deferLater(reactor, 30, lambda: b"late")
    for name, f in [("rev", rev), ("together", together), ("fail", fail), ("boom", boom), ("slow", slow)]:
        worker.register(name, f)
    worker.startService()
    return address

# The reactor thread starts with the first call.
ADDRESS = ReactorThread.call(serve)
"""


def run_script(body: str) -> dict[str, object]:
    """Run SETUP then ``body`` (which prints one JSON line) in a new Python; return it."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(
        [sys.executable, "-c", SETUP + textwrap.dedent(body)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_eight_threads_at_once() -> None:
    """Eight threads submit through one client at once and each gets its own result; the
    worker answers only when it holds all eight jobs at the same time."""
    out = run_script(
        """
        client = Client([ADDRESS], timeout=20)
        results = {}
        def call(i):
            results[i] = client.submit("together", f"job{i}".encode()).decode()
        threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        client.close()
        print(json.dumps({"results": results}))
        """
    )
    assert out["results"] == {str(i): f"{i}boj" for i in range(8)}


def test_raises_what_the_deferred_client_fails_with() -> None:
    """WORK_FAIL, WORK_EXCEPTION, a timeout and an unreachable server raise the Deferred
    client's exceptions; background submissions and GET_STATUS return their answers."""
    out = run_script(
        """
        got = {}
        with Client([ADDRESS], timeout=20) as client:
            for name in ["fail", "boom"]:
                try:
                    client.submit(name, b"x")
                except (JobFailed, JobException) as e:
                    got[name] = type(e).__name__ + ":" + str(e)
            try:
                client.submit("slow", b"x", timeout=0.2)
            except JobTimeout as e:
                got["slow"] = "JobTimeout"
            handle = client.submit_background("slow", b"x")
            status = client.get_status(handle)
            got["status"] = [status.known, status.running]
            got["handle"] = handle.decode()
        try:
            client.submit("rev", b"x")
        except RuntimeError as e:
            got["closed"] = str(e)
        with Client(["127.0.0.1:1"], timeout=5) as dead:
            try:
                dead.submit("rev", b"x")
            except NoServersAvailable:
                got["dead"] = "NoServersAvailable"
        def inside():
            try:
                Client([ADDRESS])
            except RuntimeError as e:
                return str(e)
        got["inside"] = ReactorThread.call(inside)
        print(json.dumps(got))
        """
    )
    assert str(out["fail"]).startswith("JobFailed:")
    assert str(out["boom"]).startswith("JobException:KeyError")
    assert out["slow"] == "JobTimeout"
    assert out["status"] == [True, True]
    assert str(out["handle"]).startswith("H:t")
    assert out["closed"] == "the blocking client is closed"
    assert out["dead"] == "NoServersAvailable"
    assert "reactor thread" in str(out["inside"])
