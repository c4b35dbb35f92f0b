# -*- test-case-name: tests.test_web_metrics -*-
"""Prometheus collectors that read the job server's core when scraped.

The core already counts what happens to jobs (:class:`~gearmanpy.server.jobs.JobCounters`,
server-wide and per function) and keeps latency buckets per function
(:class:`~gearmanpy.server.jobs.Latencies`); :class:`CoreCollector` turns them into metric
families at scrape time, so ``/metrics`` adds no bookkeeping to the hot path. Counters come
from JobCounters' attrs fields, so a counter added there shows up here without another
change (:data:`COUNTER_HELP` only gives it a better help text).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import attrs
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gearmanpy._version import __version__
from gearmanpy.server.core import JobServerCore
from gearmanpy.server.jobs import (
    LATENCY_BUCKETS,
    SERVER_WIDE_COUNTERS,
    JobCounters,
    Latencies,
    Peer,
)

#: Help texts of JobCounters' fields; a field missing here gets a generic one.
COUNTER_HELP = {
    "submitted": "Jobs submitted (new jobs, not submissions that joined a live job).",
    "coalesced": "Submissions that joined a live job with the same unique.",
    "completed": "Jobs that ended with WORK_COMPLETE.",
    "failed": "Jobs that ended with WORK_FAIL (or ran out of retries).",
    "exceptions": "Jobs that ended with WORK_EXCEPTION.",
    "requeued": "Attempts that ended without a result (worker lost, timed out): job requeued.",
    "timed_out": "Attempts stopped by CAN_DO_TIMEOUT.",
    "cancelled": "Jobs cancelled by an operator.",
    "refused": "Submissions refused: a full queue, the server-wide bounds, or a store failure.",
    "discarded": "Orphaned or cancelled jobs freed when a worker reached them.",
    "retried": "Failed attempts scheduled to run again by the failure policy.",
    "dead": "Jobs moved to the dead set after their last attempt.",
    "broadcasts": "Submissions to broadcast functions (each delivered to every worker).",
    "deliveries": "Deliveries made of broadcasts, one per worker connection.",
}

#: Function.submitted_by's index is ``priority * 2 + background``.
PRIORITY_NAMES = ("high", "normal", "low")
MODE_NAMES = ("foreground", "background")


def counter_fields() -> list[str]:
    """JobCounters' fields, in declaration order (what the counter families are built from)."""
    return [f.name for f in attrs.fields(JobCounters)]


def counter_help(field: str) -> str:
    """The help text of the counter built from JobCounters field ``field``."""
    return COUNTER_HELP.get(field, f"Jobs counted as {field.replace('_', ' ')} by the core.")


def label(name: bytes) -> str:
    """A function name as a label value: UTF-8, with any other byte escaped (never merged)."""
    return name.decode("utf-8", "backslashreplace")


def histogram_buckets(latencies: Latencies) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs of ``latencies``, ending with ``+Inf``."""
    out: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*LATENCY_BUCKETS, float("inf")), latencies.counts, strict=True):
        running += count
        out.append(("+Inf" if bound == float("inf") else repr(bound), running))
    return out


@attrs.define(eq=False)
class CoreCollector(Collector):
    """Builds the job server's metric families from the core at each scrape.

    :ivar core: the server state read.
    :ivar backlog: the store's writes not yet answered, or None without a store.
    """

    core: JobServerCore
    backlog: Callable[[], int | None] = lambda: None

    def collect(self) -> Iterator[Metric]:
        """Every family: counters, gauges, histograms and the build info."""
        yield from self._counters()
        yield from self._gauges()
        yield from self._histograms()
        info = GaugeMetricFamily(
            "gearmanpy_build_info", "gearmanpy's version (always 1).", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info

    def _counters(self) -> Iterator[Metric]:
        core = self.core
        functions = list(core.functions.values())
        for field in counter_fields():
            total = CounterMetricFamily(f"gearmanpy_jobs_{field}", counter_help(field))
            total.add_metric([], getattr(core.counters, field))
            yield total
            if field in SERVER_WIDE_COUNTERS:
                continue
            text = counter_help(field) + " Per function."
            if field == "submitted":
                family = CounterMetricFamily(
                    "gearmanpy_function_jobs_submitted",
                    text,
                    labels=["function", "priority", "mode"],
                )
                for f in functions:
                    for kind, n in enumerate(f.submitted_by):
                        family.add_metric(
                            [label(f.name), PRIORITY_NAMES[kind // 2], MODE_NAMES[kind % 2]], n
                        )
            else:
                family = CounterMetricFamily(
                    f"gearmanpy_function_jobs_{field}", text, labels=["function"]
                )
                for f in functions:
                    family.add_metric([label(f.name)], getattr(f.counters, field))
            yield family

    def _gauges(self) -> Iterator[Metric]:
        core = self.core
        queued = GaugeMetricFamily(
            "gearmanpy_function_queued",
            "Jobs waiting in a function's queue, per priority.",
            labels=["function", "priority"],
        )
        per_function = {
            "running": GaugeMetricFamily(
                "gearmanpy_function_running", "Jobs a worker holds.", labels=["function"]
            ),
            "scheduled": GaugeMetricFamily(
                "gearmanpy_function_scheduled",
                "Epoch jobs waiting for their time.",
                labels=["function"],
            ),
            "workers": GaugeMetricFamily(
                "gearmanpy_function_workers",
                "Workers registered for a function (one per CAN_DO, as in status).",
                labels=["function"],
            ),
        }
        for f in core.functions.values():
            name = label(f.name)
            for p, q in enumerate(f.queues):
                queued.add_metric([name, PRIORITY_NAMES[p]], len(q))
            per_function["running"].add_metric([name], f.running)
            per_function["scheduled"].add_metric([name], f.scheduled)
            per_function["workers"].add_metric([name], len(f.workers))
        yield queued
        yield from per_function.values()
        peers = core.peers
        for name, text, value in (
            ("connections", "Open connections (clients, workers, admin users).", len(peers)),
            ("workers", "Connections registered for at least one function.", _workers(peers)),
            ("clients_waiting", "Connections awaiting a foreground result.", _waiting(peers)),
            ("jobs", "Live jobs (pending, scheduled, queued, running).", len(core.jobs)),
            ("payload_bytes", "Payload bytes of the live jobs.", core.held.payload_bytes),
        ):
            gauge = GaugeMetricFamily(f"gearmanpy_{name}", text)
            gauge.add_metric([], value)
            yield gauge
        backlog = self.backlog()
        if backlog is not None:
            gauge = GaugeMetricFamily(
                "gearmanpy_store_backlog", "Background jobs sent to the store, not yet durable."
            )
            gauge.add_metric([], backlog)
            yield gauge

    def _histograms(self) -> Iterator[Metric]:
        # (metric name, help, the Function attribute holding its Latencies)
        kinds = [
            ("queue_wait", "Time a job waited in the queue before a worker took it.", "waited"),
            ("run", "Time from a worker taking a job to its final result.", "ran"),
        ]
        if self.core.store is not None:
            kinds.append(("store_ack", "Submission to acknowledgement by the store.", "acked"))
        for name, text, attr in kinds:
            family = HistogramMetricFamily(
                f"gearmanpy_function_{name}_seconds", text, labels=["function"]
            )
            for f in self.core.functions.values():
                latencies: Latencies = getattr(f, attr)
                family.add_metric(
                    [label(f.name)], histogram_buckets(latencies), sum_value=latencies.total
                )
            yield family


def _workers(peers: list[Peer]) -> int:
    """Connections with at least one registration."""
    return sum(1 for p in peers if p.abilities)


def _waiting(peers: list[Peer]) -> int:
    """Connections awaiting a foreground result."""
    return sum(1 for p in peers if p.client_jobs)


def store_backlog(core: JobServerCore) -> Callable[[], int | None]:
    """What reads the store's backlog of ``core`` (None without a store)."""
    # The core keeps its Durability private; the backlog is its only figure read from here.
    return lambda: None if core._durable is None else core._durable.in_flight


def registry(core: JobServerCore) -> CollectorRegistry:
    """A registry with the core's families and the process, platform and GC collectors."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(CoreCollector(core, store_backlog(core)))
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    GCCollector(registry=reg)
    return reg


__all__ = ["COUNTER_HELP", "CoreCollector", "counter_fields", "label", "registry"]
