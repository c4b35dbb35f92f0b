"""Measure how many background jobs per second a persistent store acknowledges durably.

The load is shaped like the job server's: a closed loop on the reactor thread keeps
``--in-flight`` adds outstanding (a new add is issued as each one is acknowledged) until
``--jobs`` adds have been acknowledged; then the same loop runs ``done`` for every job.
Every acknowledgement is a durable one (see each store's docstring). Prints adds/s and
dones/s, plus the process CPU time so a CPU-bound run is visible.

Usage::

    python benchmarks/store_bench.py --backend sqlite             # temp file
    python benchmarks/store_bench.py --backend postgres           # throwaway PostgreSQL
    python benchmarks/store_bench.py --backend redis              # throwaway redis-server
    python benchmarks/store_bench.py --queue sqlite:/tmp/q.db     # any --queue URL
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.defer import Deferred, inlineCallbacks  # noqa: E402

from gearmanpy.store.interface import IJobStore, Priority, StoredJob  # noqa: E402
from gearmanpy.store.url import store_from_url  # noqa: E402


@contextmanager
def backend_url(backend: str) -> Iterator[str]:
    """A ``--queue`` URL for ``backend``, starting a throwaway server where needed."""
    if backend == "memory":
        yield "memory"
    elif backend == "sqlite":
        tmp = tempfile.mkdtemp(prefix="gearmanpy-bench-")
        try:
            yield "sqlite:" + os.path.join(tmp, "queue.db")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    elif backend in ("postgres", "redis"):
        from tests import dbservers

        server: Any = (
            dbservers.start_postgres() if backend == "postgres" else dbservers.start_redis()
        )
        try:
            yield server.url
        finally:
            server.destroy()
    else:
        raise SystemExit(f"unknown backend {backend!r}")


def closed_loop(
    reactor: Any, count: int, in_flight: int, op: Callable[[int], Deferred[None]]
) -> Deferred[float]:
    """Run ``op(0..count-1)`` keeping ``in_flight`` outstanding; fire with elapsed seconds."""
    finished: Deferred[float] = Deferred()
    state = {"next": 0, "acked": 0, "issuing": False}
    started = time.perf_counter()

    def acked(result: Any) -> None:
        state["acked"] += 1
        if state["acked"] == count:
            finished.callback(time.perf_counter() - started)
        else:
            issue()

    def failed(reason: Any) -> None:
        if not finished.called:
            finished.errback(reason)

    def issue() -> None:
        if state["issuing"]:  # a store that answers synchronously: the loop below goes on
            return
        state["issuing"] = True
        try:
            while state["next"] < count and state["next"] - state["acked"] < in_flight:
                i = state["next"]
                state["next"] += 1
                op(i).addCallbacks(acked, failed)
        finally:
            state["issuing"] = False

    issue()
    return finished


def _adds(store: IJobStore, records: list[StoredJob]) -> Callable[[int], Deferred[None]]:
    """An operation that adds the i-th record."""
    return lambda i: store.add(records[i])


def _dones(store: IJobStore, records: list[StoredJob]) -> Callable[[int], Deferred[None]]:
    """An operation that marks the i-th record done."""
    return lambda i: store.done(records[i].key)


@inlineCallbacks
def run(reactor: Any, url: str, jobs: int, in_flight: int, size: int, repeat: int) -> Any:
    """Open the store, run the add phase and the done phase ``repeat`` times, print rates."""
    store: IJobStore = store_from_url(url, reactor)
    yield store.open()
    name = url.split(":")[0]
    payload = b"x" * size
    add_rates: list[float] = []
    for round_ in range(repeat):
        prefix = f"bench-{os.getpid()}-{round_}-"
        records = [
            StoredJob(prefix + str(i), b"bench", b"", Priority.NORMAL, payload) for i in range(jobs)
        ]
        cpu = time.process_time()
        elapsed = yield closed_loop(reactor, jobs, in_flight, _adds(store, records))
        add_cpu = time.process_time() - cpu
        add_rates.append(jobs / elapsed)
        print(
            f"{name}: {jobs} adds, {in_flight} in flight, {size}-byte payload:"
            f" {jobs / elapsed:,.0f} adds/s ({elapsed:.2f} s, process CPU {add_cpu:.2f} s)"
        )
        cpu = time.process_time()
        elapsed = yield closed_loop(reactor, jobs, in_flight, _dones(store, records))
        done_cpu = time.process_time() - cpu
        print(
            f"{name}: {jobs} dones: {jobs / elapsed:,.0f} dones/s"
            f" ({elapsed:.2f} s, process CPU {done_cpu:.2f} s)"
        )
        left = yield store.replay()
        if left:
            raise SystemExit(f"{len(left)} jobs left after done")
    yield store.close()
    if repeat > 1:
        print(f"{name}: median {statistics.median(add_rates):,.0f} adds/s over {repeat} runs")


def main() -> None:
    """Parse options and run the benchmark on the default reactor."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--backend", choices=["memory", "sqlite", "postgres", "redis"])
    where.add_argument("--queue", help="a --queue URL of an existing store")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--in-flight", type=int, default=5_000)
    parser.add_argument("--size", type=int, default=100, help="payload bytes")
    parser.add_argument("--repeat", type=int, default=1, help="rounds on one store")
    args = parser.parse_args()

    from twisted.internet import reactor

    context = nullcontext(args.queue) if args.queue else backend_url(args.backend or "sqlite")
    outcome: list[Any] = []
    with context as url:

        def go() -> None:
            d = run(reactor, url, args.jobs, args.in_flight, args.size, args.repeat)
            d.addBoth(outcome.append)
            d.addBoth(lambda _: reactor.stop())

        reactor.callWhenRunning(go)
        reactor.run()
    if outcome and hasattr(outcome[0], "raiseException"):
        outcome[0].raiseException()


if __name__ == "__main__":
    main()
