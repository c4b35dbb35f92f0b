"""Smoke test for benchmarks/inprocess_bench.py: every shape does the work it claims."""

from __future__ import annotations

import importlib.util
import os

import pytest

_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks", "inprocess_bench.py")
_spec = importlib.util.spec_from_file_location("inprocess_bench", _PATH)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.mark.parametrize(
    ("name", "jobs", "counted", "submitted", "completed", "live"),
    [
        # S1 only queues; S2 drains all but the 16 the workers hold; S3 keeps 16 in flight.
        ("S1", 1000, 1000, 1000, 0, 1000),
        ("S2", 500, 484, 500, 484, 16),
        ("S3", 500, 500, 516, 500, 16),
    ],
)
def test_shape_does_its_work(
    name: str, jobs: int, counted: int, submitted: int, completed: int, live: int
) -> None:
    """The server saw exactly the submissions and completions the shape is meant to drive."""
    seconds, n, core = bench.SCENARIOS[name](jobs)
    assert n == counted and seconds > 0
    assert core.counters.submitted == submitted
    assert core.counters.completed == completed
    assert len(core.jobs) == live
