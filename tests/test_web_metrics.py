"""The Prometheus collectors: counters, gauges and histograms read from a core driven by
fake peers on a Clock, and the exposition checked by promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import attrs
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gearmanpy.server.core import HIGH, LOW
from gearmanpy.server.jobs import GRAB_PLAIN, LATENCY_BUCKETS, SERVER_WIDE_COUNTERS, JobCounters
from gearmanpy.web.metrics import COUNTER_HELP, counter_fields, registry
from tests.readme import code_block_after
from tests.serverhelpers import P, RecordingPeer, SlowStore, make_core


def value(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    """One sample's value (None if absent)."""
    return reg.get_sample_value(name, labels)


def run_jobs() -> tuple[CollectorRegistry, object]:
    """A core where ``rev`` completed 2 jobs, failed 1, and has 2 queued (one high); ``sum``
    has a worker and no jobs; one submission coalesced."""
    core, clock = make_core()
    client, worker, idle = RecordingPeer(core), RecordingPeer(core), RecordingPeer(core)
    worker.can_do(b"rev")
    idle.can_do(b"sum")
    client.submit(b"rev", b"a")
    client.submit(b"rev", b"b", unique=b"u1")
    core.submit(client.peer, b"rev", b"u1", b"b")  # joins the live job u1
    client.submit(b"rev", b"c", background=True)
    clock.advance(2)  # the first three jobs wait 2 s
    for result in ("complete", "complete", "fail"):
        kind, args = worker.grab(GRAB_PLAIN)
        assert kind == P.JOB_ASSIGN
        clock.advance(0.3)  # each runs 0.3 s
        if result == "complete":
            core.work_complete(worker.peer, args[0], b"done")
        else:
            core.work_fail(worker.peer, args[0])
    client.submit(b"rev", b"d", priority=HIGH)
    client.submit(b"rev", b"e", priority=LOW, background=True)
    client.take()
    return registry(core), core


def test_counters_match_the_jobs_run() -> None:
    """Per function and server-wide: submitted (by priority and mode), completed, failed,
    coalesced."""
    reg, _ = run_jobs()
    assert value(reg, "gearmanpy_function_jobs_completed_total", function="rev") == 2
    assert value(reg, "gearmanpy_function_jobs_failed_total", function="rev") == 1
    assert value(reg, "gearmanpy_function_jobs_coalesced_total", function="rev") == 1
    assert value(reg, "gearmanpy_jobs_completed_total") == 2
    assert value(reg, "gearmanpy_jobs_submitted_total") == 5
    submitted = {
        (p, m): value(
            reg, "gearmanpy_function_jobs_submitted_total", function="rev", priority=p, mode=m
        )
        for p in ("high", "normal", "low")
        for m in ("foreground", "background")
    }
    assert submitted == {
        ("high", "foreground"): 1,
        ("high", "background"): 0,
        ("normal", "foreground"): 2,
        ("normal", "background"): 1,
        ("low", "foreground"): 0,
        ("low", "background"): 1,
    }
    assert value(reg, "gearmanpy_function_jobs_completed_total", function="sum") == 0


def test_gauges() -> None:
    """Queued per priority, running, workers, connections, clients waiting, live jobs."""
    reg, _ = run_jobs()
    assert value(reg, "gearmanpy_function_queued", function="rev", priority="high") == 1
    assert value(reg, "gearmanpy_function_queued", function="rev", priority="normal") == 0
    assert value(reg, "gearmanpy_function_queued", function="rev", priority="low") == 1
    assert value(reg, "gearmanpy_function_workers", function="sum") == 1
    assert value(reg, "gearmanpy_function_running", function="rev") == 0
    assert value(reg, "gearmanpy_connections") == 3
    assert value(reg, "gearmanpy_workers") == 2
    assert value(reg, "gearmanpy_clients_waiting") == 1  # the high foreground job
    assert value(reg, "gearmanpy_jobs") == 2
    assert value(reg, "gearmanpy_store_backlog") is None  # no store


def test_histograms_count_wait_and_run_times() -> None:
    """Three jobs waited 2 s, 2.3 s and 2.6 s and ran 0.3 s each: the buckets say so."""
    reg, _ = run_jobs()
    wait = "gearmanpy_function_queue_wait_seconds"
    assert value(reg, wait + "_count", function="rev") == 3
    assert value(reg, wait + "_sum", function="rev") == pytest.approx(2 + 2.3 + 2.6)
    assert value(reg, wait + "_bucket", function="rev", le="1.0") == 0
    assert value(reg, wait + "_bucket", function="rev", le="2.5") == 2
    assert value(reg, wait + "_bucket", function="rev", le="5.0") == 3
    assert value(reg, wait + "_bucket", function="rev", le="+Inf") == 3
    run = "gearmanpy_function_run_seconds"
    assert value(reg, run + "_sum", function="rev") == pytest.approx(0.9)
    assert value(reg, run + "_bucket", function="rev", le="0.25") == 0
    assert value(reg, run + "_bucket", function="rev", le="0.5") == 3
    assert value(reg, "gearmanpy_function_store_ack_seconds_count", function="rev") is None


def test_store_ack_latency_and_backlog() -> None:
    """With a store: a write in flight is the backlog; its answer is an ack latency."""
    store = SlowStore()
    core, _ = make_core(store=store)
    client = RecordingPeer(core)
    core.submit(client.peer, b"rev", b"", b"x", background=True)
    core.submit(client.peer, b"rev", b"", b"y", background=True)
    reg = registry(core)
    assert value(reg, "gearmanpy_store_backlog") == 2
    store.adds[0][1].callback(None)
    assert value(reg, "gearmanpy_store_backlog") == 1
    assert value(reg, "gearmanpy_function_store_ack_seconds_count", function="rev") == 1
    store.adds[1][1].errback(RuntimeError("disk full"))
    assert value(reg, "gearmanpy_store_backlog") == 0
    assert value(reg, "gearmanpy_function_store_ack_seconds_count", function="rev") == 1


def test_every_counter_field_has_a_family() -> None:
    """Each JobCounters field is a server-wide counter, and a per-function one unless the
    core counts it server-wide only; each has its own help text."""
    reg, _ = run_jobs()
    names = {m.name for m in reg.collect()}
    for field in counter_fields():
        assert f"gearmanpy_jobs_{field}" in names
        assert (f"gearmanpy_function_jobs_{field}" in names) == (field not in SERVER_WIDE_COUNTERS)
        assert field in COUNTER_HELP


def test_a_new_counter_shows_up_without_a_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """A field added to JobCounters (as the failure policy adds ``retried``) is exported."""

    @attrs.define(eq=False, slots=True)
    class WithRetried(JobCounters):
        retried: int = 0

    monkeypatch.setattr("gearmanpy.web.metrics.JobCounters", WithRetried)
    core, _ = make_core(counters=WithRetried(retried=4))
    f = core.function(b"rev")
    f.counters = WithRetried(retried=3)
    reg = registry(core)
    assert value(reg, "gearmanpy_jobs_retried_total") == 4
    assert value(reg, "gearmanpy_function_jobs_retried_total", function="rev") == 3


def test_label_values_are_function_names_only() -> None:
    """No handle or unique ever becomes a label: the label sets stay bounded."""
    reg, core = run_jobs()
    text = generate_latest(reg).decode()
    assert "H:test" not in text and "u1" not in text
    assert 'gearmanpy_build_info{version="' in text


def test_function_names_are_escaped_not_merged() -> None:
    """A name that is not UTF-8, or holds quotes and newlines, is a distinct valid label."""
    core, _ = make_core()
    core.function(b"a\xff")
    core.function(b'q"\n')
    text = generate_latest(registry(core)).decode()
    assert 'function="a\\\\xff"' in text
    assert 'function="q\\"\\n"' in text


def test_process_collectors_are_included() -> None:
    """CPU, memory, open fds (prometheus-client's process collector) are exported."""
    reg, _ = run_jobs()
    assert (value(reg, "process_open_fds") or 0) > 0
    assert value(reg, "process_resident_memory_bytes")


def test_bucket_bounds_are_sorted() -> None:
    """The bisect in Latencies.observe needs ascending bounds."""
    assert list(LATENCY_BUCKETS) == sorted(set(LATENCY_BUCKETS))


def test_promtool_accepts_the_exposition() -> None:
    """``promtool check metrics`` (Debian's prometheus package) finds no problem."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed; scripts/debian-packages lists prometheus")
    reg, _ = run_jobs()
    text = generate_latest(reg)
    run = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True)
    assert run.returncode == 0, run.stdout.decode() + run.stderr.decode()
    assert run.stdout.decode().strip() == "" and run.stderr.decode().strip() == ""


def test_readme_scrape_config_is_valid(tmp_path: Path) -> None:
    """The README's Prometheus scrape config passes ``promtool check config``."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed; scripts/debian-packages lists prometheus")
    config = tmp_path / "prometheus.yml"
    config.write_text(code_block_after("A Prometheus scrape config::"))
    run = subprocess.run([promtool, "check", "config", str(config)], capture_output=True)
    assert run.returncode == 0, run.stdout.decode() + run.stderr.decode()
    assert "gearmanpy" in config.read_text()
