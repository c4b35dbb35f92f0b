"""The server's own CPU cost per job, with no sockets: S1, S2 and S3 shapes in one process.

``run.py`` measures the whole system (kernel, load generator, scheduler). This drives
:class:`~gearmanpy.server.protocol.ServerProtocol` directly over in-memory transports, so what
it reports is the Python work per job alone: decoding, the core, encoding, batching. It is
steadier than ``run.py`` (no loopback, no second CPU) and is what hot-path changes were
judged by. Run it pinned to one CPU and compare before and after in the same sitting::

    taskset -c 0 python benchmarks/inprocess_bench.py            # all three, best of 7
    taskset -c 0 python benchmarks/inprocess_bench.py S2 --reps 3

Shapes (as in ``loadgen.c``, 100-byte payloads, empty uniques):

S1
    4 connections, each fed chunks of 100 pipelined SUBMIT_JOB_BG; 300k jobs.
S2
    100k queued background jobs drained by 16 workers, each chunk a WORK_COMPLETE plus the
    next GRAB_JOB, answered by one JOB_ASSIGN.
S3
    16 foreground clients and 8 workers in a closed loop: a worker completes its job and
    grabs the next, then the client of the finished job submits a new one.

The harness's own work (building each worker's WORK_COMPLETE, reading handles back) is
included in S2 and S3: roughly 0.3 and 0.6 us a job.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.task import Clock  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402

from gearmanpy.process import GC_THRESHOLDS  # noqa: E402
from gearmanpy.protocol.packets import PacketType as P  # noqa: E402
from gearmanpy.protocol.packets import encode_raw  # noqa: E402
from gearmanpy.server.core import JobServerCore  # noqa: E402
from gearmanpy.server.protocol import ServerFactory, ServerProtocol  # noqa: E402

REQ = b"\0REQ"
PAYLOAD = b"x" * 100
SUBMIT = encode_raw(REQ, P.SUBMIT_JOB, (b"bench", b"", PAYLOAD))
SUBMIT_BG = encode_raw(REQ, P.SUBMIT_JOB_BG, (b"bench", b"", PAYLOAD))
GRAB = encode_raw(REQ, P.GRAB_JOB, ())


class LastWrite(StringTransport):
    """Keeps only the last write: enough to read a handle back, and no growing buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.last = b""

    def write(self, data: bytes) -> None:
        self.last = data


def connect(factory: ServerFactory) -> ServerProtocol:
    proto = factory.buildProtocol(None)
    proto.makeConnection(LastWrite())
    return proto


def fresh() -> ServerFactory:
    return ServerFactory(JobServerCore(clock=Clock()), coalesce_writes=True)


def handle_of(proto: ServerProtocol) -> bytes:
    """The handle in the last JOB_ASSIGN or JOB_CREATED sent to ``proto``."""
    return proto.transport.last[12:].split(b"\0", 1)[0]  # type: ignore[union-attr]


def s1(jobs: int = 300_000) -> tuple[float, int, JobServerCore]:
    factory = fresh()
    conns = [connect(factory) for _ in range(4)]
    chunk = SUBMIT_BG * 100
    rounds = jobs // 100
    t0 = time.perf_counter()
    for i in range(rounds):
        conns[i % 4].dataReceived(chunk)
    return time.perf_counter() - t0, rounds * 100, factory.core


def s2(jobs: int = 100_000) -> tuple[float, int, JobServerCore]:
    factory = fresh()
    connect(factory).dataReceived(SUBMIT_BG * jobs)
    workers = [connect(factory) for _ in range(16)]
    for w in workers:
        w.dataReceived(encode_raw(REQ, P.CAN_DO, (b"bench",)) + GRAB)
    done = jobs - len(workers)
    t0 = time.perf_counter()
    for i in range(done):
        w = workers[i % 16]
        w.dataReceived(encode_raw(REQ, P.WORK_COMPLETE, (handle_of(w), PAYLOAD)) + GRAB)
    return time.perf_counter() - t0, done, factory.core


def s3(jobs: int = 100_000) -> tuple[float, int, JobServerCore]:
    factory = fresh()
    workers = [connect(factory) for _ in range(8)]
    for w in workers:
        w.dataReceived(encode_raw(REQ, P.CAN_DO, (b"bench",)))
    owner: dict[bytes, ServerProtocol] = {}
    for _ in range(16):
        c = connect(factory)
        c.dataReceived(SUBMIT)
        owner[handle_of(c)] = c
    for w in workers:
        w.dataReceived(GRAB)
    t0 = time.perf_counter()
    for i in range(jobs):
        w = workers[i % 8]
        h = handle_of(w)
        w.dataReceived(encode_raw(REQ, P.WORK_COMPLETE, (h, PAYLOAD)) + GRAB)
        c = owner.pop(h)
        c.dataReceived(SUBMIT)
        owner[handle_of(c)] = c
    return time.perf_counter() - t0, jobs, factory.core


#: Each takes a job count and returns (seconds, jobs timed, the core it ran on).
Shape = Callable[..., tuple[float, int, JobServerCore]]
SCENARIOS: dict[str, Shape] = {"S1": s1, "S2": s2, "S3": s3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("scenarios", nargs="*", help="S1, S2 and/or S3 (default: all)")
    parser.add_argument("--reps", type=int, default=7, help="repetitions; best and median shown")
    args = parser.parse_args()
    unknown = set(args.scenarios) - SCENARIOS.keys()
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    # As ``twistd gearman`` runs: its collector thresholds, start-up objects frozen.
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()
    for name in args.scenarios or SCENARIOS:
        per_job = []
        for _ in range(args.reps):
            seconds, jobs, _ = SCENARIOS[name]()
            per_job.append(seconds / jobs * 1e6)
            gc.collect()
            gc.freeze()
        per_job.sort()
        print(
            f"{name}: best {per_job[0]:.2f} us a job, median {per_job[len(per_job) // 2]:.2f} "
            f"({args.reps} reps)"
        )


if __name__ == "__main__":
    main()
