# -*- test-case-name: tests.test_config -*-
"""The server's configuration file (``twistd gearman --config gearmanpy.toml``).

TOML, read with the standard library's :mod:`tomllib`. Every table is optional::

    [defaults]                 # every function's policy (gearmanpy.server.policy)
    attempts = 3               # background jobs run at most 3 times, then go dead
    backoff = "10s"            # first retry after 10 s, then 20 s, 40 s...
    backoff_max = "1h"

    [functions."resize_*"]     # a glob, or a function's exact name
    attempts = 5
    timeout = "2m"             # for workers that do not send CAN_DO_TIMEOUT
    on_timeout = "fail"
    max_running = 4
    rate = 10                  # jobs started per second
    keep_results = "1d"

    [functions.invalidate]
    broadcast = true           # every worker of it runs each job (server/broadcast.py)

    [dead_set]
    max_jobs = 10000
    max_age = "7d"

    [[recurring]]
    name = "nightly-report"
    cron = "0 3 * * *"         # minute hour day month weekday, in `timezone` (UTC)
    function = "report"
    payload = "all"
    unique = "nightly-report"
    priority = "normal"        # high, normal or low

Durations are seconds, as a number or a string with a unit (``ms``, ``s``, ``m``, ``h``,
``d``). A mistake is a :class:`ConfigError` whose message names the table and the setting.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

import attrs

from gearmanpy.server.kept import DEFAULT_DEAD_MAX_AGE, DEFAULT_DEAD_MAX_JOBS, DeadSet
from gearmanpy.server.policy import Policies, check_settings
from gearmanpy.server.recurring import RecurringJob

#: Policy settings given in seconds, which may be written as durations.
_DURATIONS = frozenset({"backoff", "backoff_max", "timeout", "keep_results"})
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_TABLES = frozenset({"defaults", "functions", "dead_set", "recurring"})


class ConfigError(ValueError):
    """The configuration file cannot be used; the message says where and why."""


@attrs.frozen
class ServerConfig:
    """What a configuration file sets: the policies, the dead set's bounds, recurring jobs."""

    policies: Policies = attrs.field(factory=Policies)
    dead_max_jobs: int = DEFAULT_DEAD_MAX_JOBS
    dead_max_age: float = DEFAULT_DEAD_MAX_AGE
    recurring: tuple[RecurringJob, ...] = ()

    def dead_set(self) -> DeadSet:
        """An empty dead set with the configured bounds."""
        return DeadSet(max_jobs=self.dead_max_jobs, max_age=self.dead_max_age)


def duration(value: Any, where: str) -> float:
    """Seconds from a number or a string such as ``90``, ``"1.5s"``, ``"10m"``, ``"7d"``."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a duration, not {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    else:
        raise ConfigError(f'{where}: expected a duration such as 30, "30s", "5m", "1d"')
    if seconds < 0:
        raise ConfigError(f"{where}: a duration cannot be negative")
    return seconds


def policy_settings(table: Any, where: str) -> dict[str, Any]:
    """One table of policy settings, checked, with durations in seconds."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table of policy settings")
    settings = {k: duration(v, f"{where}.{k}") if k in _DURATIONS else v for k, v in table.items()}
    try:
        return check_settings(settings)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: {e}") from None


def parse(text: str, source: str = "configuration") -> ServerConfig:
    """A :class:`ServerConfig` from TOML ``text``.

    :raises ConfigError: for a TOML error, an unknown table or setting, or a bad value.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: {e}") from None
    unknown = sorted(set(doc) - _TABLES)
    if unknown:
        raise ConfigError(
            f"{source}: unknown table [{unknown[0]}] (known: {', '.join(sorted(_TABLES))})"
        )
    defaults = policy_settings(doc.get("defaults", {}), "defaults")
    functions = doc.get("functions", {})
    if not isinstance(functions, dict):
        raise ConfigError('functions: expected tables such as [functions."resize_*"]')
    rules = {name: policy_settings(t, f"functions.{name}") for name, t in functions.items()}
    dead = doc.get("dead_set", {})
    if not isinstance(dead, dict) or set(dead) - {"max_jobs", "max_age"}:
        raise ConfigError("dead_set: takes max_jobs and max_age")
    max_jobs = dead.get("max_jobs", DEFAULT_DEAD_MAX_JOBS)
    if isinstance(max_jobs, bool) or not isinstance(max_jobs, int) or max_jobs < 0:
        raise ConfigError("dead_set.max_jobs: expected an integer >= 0 (0: no limit)")
    max_age = duration(dead.get("max_age", DEFAULT_DEAD_MAX_AGE), "dead_set.max_age")
    recurring = doc.get("recurring", [])
    if not isinstance(recurring, list):
        raise ConfigError("recurring: expected [[recurring]] tables")
    jobs = tuple(_recurring(t, i) for i, t in enumerate(recurring))
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ConfigError("recurring: two recurring jobs have the same name")
    return ServerConfig(Policies(defaults, rules), max_jobs, max_age, jobs)


def _recurring(table: Any, index: int) -> RecurringJob:
    """One ``[[recurring]]`` table."""
    where = f"recurring[{index}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    allowed = {"name", "cron", "function", "payload", "unique", "priority", "timezone"}
    extra = sorted(set(table) - allowed)
    if extra:
        raise ConfigError(f"{where}: unknown setting {extra[0]!r}")
    for required in ("name", "cron", "function"):
        if not isinstance(table.get(required), str) or not table[required]:
            raise ConfigError(f"{where}.{required}: required, a non-empty string")
    where = f"recurring {table['name']!r}"
    try:
        return RecurringJob.make(
            name=table["name"],
            cron=table["cron"],
            function=table["function"],
            payload=str(table.get("payload", "")),
            unique=str(table.get("unique", "")),
            priority=str(table.get("priority", "normal")),
            timezone=str(table.get("timezone", "UTC")),
        )
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def load(path: str) -> ServerConfig:
    """Read and parse the configuration file at ``path``.

    :raises ConfigError: if it cannot be read or used.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return parse(text, path)


__all__ = ["ConfigError", "ServerConfig", "duration", "load", "parse", "policy_settings"]
