"""Tests for gearmanpy.config: the --config TOML file, and twistd gearman --config."""

from __future__ import annotations

import pytest
from twisted.python import usage

from gearmanpy.config import ConfigError, duration, load, parse
from gearmanpy.server.core import HIGH
from gearmanpy.tap import Options

EXAMPLE = """
[defaults]
attempts = 3
backoff = "10s"
backoff_max = "1h"

[functions."resize_*"]
attempts = 5
timeout = "2m"
on_timeout = "fail"
max_running = 4
rate = 10
keep_results = "1d"

[dead_set]
max_jobs = 100
max_age = "7d"

[[recurring]]
name = "nightly-report"
cron = "0 3 * * *"
function = "report"
payload = "all"
unique = "nightly-report"
priority = "high"
"""


def test_example_file() -> None:
    """The module docstring's example reads as documented."""
    config = parse(EXAMPLE)
    resize = config.policies.for_function(b"resize_thumb")
    assert (resize.attempts, resize.backoff, resize.backoff_max) == (5, 10.0, 3600.0)
    assert (resize.timeout, resize.on_timeout, resize.max_running) == (120.0, "fail", 4)
    assert (resize.rate, resize.keep_results) == (10, 86400.0)
    assert config.policies.for_function(b"other").attempts == 3
    assert (config.dead_max_jobs, config.dead_max_age) == (100, 7 * 86400.0)
    (job,) = config.recurring
    assert (job.name, job.function, job.payload, job.priority) == (
        "nightly-report",
        b"report",
        b"all",
        HIGH,
    )


def test_empty_file_is_gearmand_behaviour() -> None:
    """No settings: no retries, the dead set on with its default bounds."""
    config = parse("")
    assert config.policies.for_function(b"f").attempts is None
    assert config.dead_max_jobs == 10_000


@pytest.mark.parametrize(
    "text, message",
    [
        ("[defaults]\nretries = 3", "defaults: unknown policy setting 'retries'"),
        ("[defaults]\nattempts = 0", "defaults: attempts must be an integer >= 1"),
        ('[functions.f]\ntimeout = "soon"', "functions.f.timeout: expected a duration"),
        ("[function.f]\n", "unknown table [function]"),
        ("[dead_set]\nmax_jobs = -1", "dead_set.max_jobs: expected an integer >= 0"),
        ('[[recurring]]\nname = "r"\nfunction = "f"', "recurring[0].cron: required"),
        (
            '[[recurring]]\nname = "r"\ncron = "bogus"\nfunction = "f"',
            "recurring 'r': bad cron expression 'bogus'",
        ),
        ("x = [", "configuration: "),
    ],
)
def test_errors_name_the_place(text: str, message: str) -> None:
    """Each mistake is a ConfigError saying where it is."""
    with pytest.raises(ConfigError) as e:
        parse(text)
    assert message in str(e.value)


def test_durations() -> None:
    assert [duration(v, "x") for v in (90, 1.5, "250ms", "2m", "1.5h", "7d")] == [
        90.0,
        1.5,
        0.25,
        120.0,
        5400.0,
        604800.0,
    ]


def test_missing_file(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load("/nonexistent/gearmanpy.toml")


def test_tap_option(tmp_path: object) -> None:
    """--config reads the file with the options; a bad one is a usage error naming it."""
    import pathlib

    good = pathlib.Path(str(tmp_path)) / "good.toml"
    good.write_text(EXAMPLE)
    options = Options()
    options.parseOptions(["--queue", "memory", "--config", str(good)])
    assert options["server-config"].policies.for_function(b"resize_x").attempts == 5
    bad = pathlib.Path(str(tmp_path)) / "bad.toml"
    bad.write_text("[defaults]\nattempts = 'many'\n")
    with pytest.raises(usage.UsageError, match="--config: defaults: attempts must be"):
        Options().parseOptions(["--queue", "memory", "--config", str(bad)])
