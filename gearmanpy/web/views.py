# -*- test-case-name: tests.test_web_api -*-
"""What the JSON API answers: plain dicts and lists read from the core, ready for ``json``.

Each function here is one endpoint's body (``/api/overview``, ``/api/functions``,
``/api/workers``, ``/api/jobs``); docs/http-api.rst describes them. Bytes on the wire
(function names, handles, uniques) become text with any non-UTF-8 byte escaped. Nothing here
scans more than :data:`MAX_SCAN` jobs, so a request never stalls a server with a deep queue.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from gearmanpy._version import __version__
from gearmanpy.server.core import JobServerCore
from gearmanpy.server.jobs import (
    LATENCY_BUCKETS,
    QUEUED,
    RUNNING,
    SCHEDULED,
    Job,
    JobCounters,
    Latencies,
    is_live,
)
from gearmanpy.store.interface import DeadJob
from gearmanpy.web.history import History
from gearmanpy.web.metrics import PRIORITY_NAMES, label

if TYPE_CHECKING:
    from gearmanpy.server.cluster_dead import ClusterDeadCommands

_log = Logger()

#: Jobs a search looks at, at most (handle order).
MAX_SCAN = 100_000
#: Jobs one answer lists, at most.
MAX_LIMIT = 500
STATE_NAMES = {SCHEDULED: "scheduled", QUEUED: "queued", RUNNING: "running"}


def counters(c: JobCounters) -> dict[str, int]:
    """Every JobCounters field by name."""
    return attrs.asdict(c)


def latency(lat: Latencies) -> dict[str, Any]:
    """A histogram's count, mean, and the bucket bounds its median and 99th percentile
    fall under (None past the last bound)."""
    count = sum(lat.counts)

    def quantile(q: float) -> float | None:
        if not count:
            return None
        rank, seen = q * count, 0
        for bound, n in zip(LATENCY_BUCKETS, lat.counts, strict=False):
            seen += n
            if seen >= rank:
                return bound
        return None

    return {
        "count": count,
        "mean": lat.total / count if count else None,
        "p50": quantile(0.5),
        "p99": quantile(0.99),
    }


@attrs.define(eq=False)
class Views:
    """The JSON API's answers for one server.

    :ivar started: when the server started (the clock's seconds).
    :ivar store: the store's name as the operator gave it (password hidden), or ``memory``.
    :ivar cluster: on a cluster's node, what reads and acts on the cluster's dead set.
    """

    core: JobServerCore
    history: History
    started: float
    store: str = "memory"
    #: A cluster node's dead set commands (the dead set is the cluster's table), set where
    #: the cluster is wired (tap.py); None without ``--cluster``.
    cluster: ClusterDeadCommands | None = None
    #: Whether the last read of the cluster's dead set failed (its warning was logged).
    _dead_away: bool = attrs.field(init=False, default=False)

    def overview(self) -> dict[str, Any]:
        """The server: version, uptime, connections, job totals, counters and the store."""
        core = self.core
        peers = core.peers
        durable = core._durable  # the store's figures are kept there
        acked = Latencies()
        for f in core.functions.values():
            acked.counts = [a + b for a, b in zip(acked.counts, f.acked.counts, strict=True)]
            acked.total += f.acked.total
        return {
            "version": __version__,
            "gearmand": "1.1.20",
            "uptime": core.clock.seconds() - self.started,
            "connections": len(peers),
            "workers": sum(1 for p in peers if p.abilities),
            "clients_waiting": sum(1 for p in peers if p.client_jobs),
            "jobs": len(core.jobs),
            "payload_bytes": core.held.payload_bytes,
            "functions": len(core.functions),
            "counters": counters(core.counters),
            "store": {
                "name": self.store,
                "durable": core.store is not None,
                "backlog": durable.in_flight if durable is not None else 0,
                "outage": durable is not None and durable.outage.since is not None,
                "ack": latency(acked),
            },
        }

    def functions(self) -> list[dict[str, Any]]:
        """Per function: queues per priority, running, scheduled, workers, counters, rates."""
        out = []
        for f in self.core.functions.values():
            name = label(f.name)
            out.append(
                {
                    "name": name,
                    "queued": {PRIORITY_NAMES[p]: len(q) for p, q in enumerate(f.queues)},
                    "running": f.running,
                    "scheduled": f.scheduled,
                    "workers": len(f.workers),
                    "counters": counters(f.counters),
                    "rate": round(self.history.rate(name), 3),
                    "wait": latency(f.waited),
                    "run": latency(f.ran),
                }
            )
        return out

    def workers(self) -> list[dict[str, Any]]:
        """Every connection registered for a function or running a job: what it runs."""
        return [
            {
                "fd": p.fd,
                "ip": label(p.ip),
                "client_id": label(p.client_id),
                "functions": [label(f.name) for f in reversed(p.abilities)],
                "running": [label(j.handle) for j in p.worker_jobs],
                "sleeping": p.sleeping,
            }
            for p in self.core.peers
            if p.abilities or p.worker_jobs
        ]

    def jobs(self, query: str = "", state: str = "", limit: int = 100) -> dict[str, Any]:
        """Live jobs, handle order: those whose handle or unique contains ``query`` (an exact
        handle or unique is found at once), of ``state`` if given, ``limit`` at most."""
        limit = max(1, min(limit, MAX_LIMIT))
        core = self.core
        exact = _exact(core, query.encode("utf-8", "surrogateescape")) if query else []
        candidates = itertools.chain(exact, itertools.islice(core.jobs.values(), MAX_SCAN))
        seen: set[bytes] = set()
        found = []
        for job in _matching(candidates, query, state):
            if job.handle in seen:
                continue
            seen.add(job.handle)
            found.append(self.job(job))
            if len(found) >= limit:
                break
        return {"total": len(core.jobs), "scanned": min(len(core.jobs), MAX_SCAN), "jobs": found}

    def dead(self, function: str = "", limit: int = 100) -> dict[str, Any]:
        """The dead set (oldest failure first), of ``function`` if given, ``limit`` at most."""
        limit = max(1, min(limit, MAX_LIMIT))
        name = function.encode("utf-8", "surrogateescape") if function else None
        found = [dead_entry(d) for d in itertools.islice(self.core.dead.of_function(name), limit)]
        return {"total": len(self.core.dead), "jobs": found}

    def cluster_dead(self, function: str = "", limit: int = 100) -> Deferred[dict[str, Any]]:
        """:meth:`dead` on a cluster's node, which keeps no dead set in memory: every node's
        dead rows, read from the cluster's table; fires when they have been read."""
        if self.cluster is None:
            return succeed(self.dead(function, limit))
        limit = max(1, min(limit, MAX_LIMIT))
        name = function.encode("utf-8", "surrogateescape") if function else None

        def answer(page: tuple[int, list[DeadJob]]) -> dict[str, Any]:
            if self._dead_away:
                self._dead_away = False
                _log.info("the dashboard's dead set can be read again")
            total, rows = page
            return {"total": total, "jobs": [dead_entry(d) for d in rows]}

        def failed(failure: Failure) -> Failure:
            if not self._dead_away:  # once per outage: the page asks every two seconds
                self._dead_away = True
                _log.warn(
                    "the dashboard's dead set failed: the cluster's table cannot be read ({error})",
                    error=" ".join(str(failure.value).split()),
                )
            return failure

        return self.cluster.dead_page(name, limit).addCallbacks(answer, failed)

    def job(self, job: Job) -> dict[str, Any]:
        """One job as the API shows it."""
        worker = job.worker
        return {
            "handle": label(job.handle),
            "function": label(job.function.name),
            "unique": label(job.unique),
            "priority": PRIORITY_NAMES[job.priority],
            "background": job.background,
            "state": STATE_NAMES.get(job.state, "pending"),
            "retries": job.retries,
            "age": round(self.core.clock.seconds() - job.since, 3) if job.since else None,
            "worker": label(worker.client_id) if worker is not None else None,
            "progress": [job.numerator, job.denominator],
        }


def dead_entry(d: DeadJob) -> dict[str, Any]:
    """One dead job as ``/api/dead`` lists it (a row written before handles were kept shows
    its row key, as ``show dead`` does)."""
    return {
        "handle": label(d.job.handle or d.job.key.encode()),
        "function": label(d.job.function),
        "unique": label(d.job.unique),
        "priority": PRIORITY_NAMES[int(d.job.priority)],
        "attempts": d.job.retries,
        "failed_at": d.failed_at,
        "error": label(d.error),
    }


def _exact(core: JobServerCore, key: bytes) -> list[Job]:
    """The job with handle ``key`` and those with unique ``key``."""
    found = [core.jobs[key]] if key in core.jobs else []
    for f in core.functions.values():
        job = f.uniques.get(key)
        if job is not None and job.unique == key:
            found.append(job)
    return found


def _matching(jobs: Iterable[Job], query: str, state: str) -> Iterator[Job]:
    """The live ``jobs`` whose handle or unique contains ``query``, in ``state`` if given."""
    for job in jobs:
        if not is_live(job) or (state and STATE_NAMES.get(job.state) != state):
            continue
        if query and query not in label(job.handle) and query not in label(job.unique):
            continue
        yield job


__all__ = ["MAX_LIMIT", "MAX_SCAN", "Views", "latency"]
