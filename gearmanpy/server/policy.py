# -*- test-case-name: tests.test_policy -*-
"""Per-function failure policy: retries with backoff, timeouts, throttles and kept results.

A :class:`FunctionPolicy` says what the server does with one function's jobs when they fail
or time out, how many of them may run at once or start per second, and how long a
background job's result is kept. :class:`Policies` finds the policy of a function name: the
defaults, then every glob rule that matches in the order given, then a rule for exactly that
name, each overriding the settings it names. With no rules at all every function gets
:data:`DEFAULT`, which keeps gearmand's behaviour on the wire.

These are plain values (no configuration file, no I/O): :mod:`gearmanpy.config` reads the
TOML file into them, and the admin ``policy`` command changes them at run time.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs

#: What a timeout does to a background job: count as a failed attempt and retry (if
#: attempts remain), or fail it at once (to the dead set).
TIMEOUT_OUTCOMES = ("retry", "fail")


def _non_negative(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    """attrs validator: a number that is finite and not negative."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{attribute.name} must be a number, not {value!r}")
    if value < 0 or not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, not {value!r}")


def _at_least_one(_: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    """attrs validator: an integer of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an integer >= 1, not {value!r}")


def _integer(_: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    """attrs validator: an integer of at least 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{attribute.name} must be an integer >= 0, not {value!r}")


@attrs.frozen
class FunctionPolicy:
    """What the server does with one function's jobs (the defaults are gearmand's ways).

    :ivar attempts: how many times a background job runs at most before it goes to the dead
        set; with None (not configured) a failed background job goes to the dead set at
        once, and a lost worker's job is requeued at once as gearmand does (``--job-retries``
        bounds it). Foreground jobs keep gearmand's behaviour whatever this says.
    :ivar backoff: seconds before the first retry; each later retry waits ``backoff_factor``
        times longer, at most ``backoff_max``, spread by +/- ``jitter`` (a fraction).
    :ivar timeout: run-time limit in seconds for workers that did not send CAN_DO_TIMEOUT
        (0: none).
    :ivar on_timeout: ``retry`` (a timeout is a failed attempt, as a lost worker is) or
        ``fail`` (a timed-out background job goes to the dead set; a foreground job fails).
    :ivar max_running: jobs of the function that may run at once (0: no limit).
    :ivar rate: jobs of the function that may start per second (0: no limit), with bursts
        of up to ``burst`` jobs (0: one second's worth).
    :ivar keep_results: seconds a background job's final result is kept (0: not kept).
    :ivar broadcast: a submission goes to every worker of the function (server/broadcast.py).
    """

    attempts: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_at_least_one)
    )
    backoff: float = attrs.field(default=1.0, validator=_non_negative)
    backoff_factor: float = attrs.field(default=2.0, validator=_non_negative)
    backoff_max: float = attrs.field(default=3600.0, validator=_non_negative)
    jitter: float = attrs.field(default=0.1, validator=_non_negative)
    timeout: float = attrs.field(default=0.0, validator=_non_negative)
    on_timeout: str = attrs.field(default="retry", validator=attrs.validators.in_(TIMEOUT_OUTCOMES))
    max_running: int = attrs.field(default=0, validator=_integer)
    rate: float = attrs.field(default=0.0, validator=_non_negative)
    burst: int = attrs.field(default=0, validator=_integer)
    keep_results: float = attrs.field(default=0.0, validator=_non_negative)
    broadcast: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))

    def __attrs_post_init__(self) -> None:
        if self.jitter > 1:
            raise ValueError(f"jitter must be a fraction from 0 to 1, not {self.jitter!r}")

    def delay(self, failures: int, random: Callable[[], float]) -> float:
        """Seconds before the retry that follows the ``failures``-th failed attempt."""
        base = min(self.backoff_max, self.backoff * self.backoff_factor ** max(0, failures - 1))
        return max(0.0, base * (1 + self.jitter * (2 * random() - 1)))

    def throttled(self) -> bool:
        """Whether assignment is limited (a running cap or a rate)."""
        return bool(self.max_running or self.rate)

    def capacity(self) -> float:
        """The size of the rate's token bucket: ``burst``, or one second's worth (at least 1)."""
        return float(self.burst or max(1.0, self.rate))

    def settings(self) -> dict[str, Any]:
        """The settings by name, as the admin ``policy`` command shows them."""
        return attrs.asdict(self)


#: The policy of a function nobody configured.
DEFAULT = FunctionPolicy()

#: The settings a rule may name.
SETTINGS = tuple(a.name for a in attrs.fields(FunctionPolicy))


def check_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of one rule, checked: known names and values a policy accepts.

    :raises ValueError: naming the first unknown setting or bad value.
    """
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown policy setting {unknown[0]!r} (known: {', '.join(SETTINGS)})")
    attrs.evolve(DEFAULT, **settings)  # raises ValueError for a bad value
    return dict(settings)


@attrs.define(eq=False)
class Policies:
    """The policy rules: defaults, and overrides by function name or glob; and on top of the
    configured ones, the changes made at run time (``policy set``), which ``policy reset``
    takes back.

    :ivar defaults: settings every function starts from (over :data:`DEFAULT`).
    :ivar rules: overrides by pattern, in the order given; a pattern with ``*``, ``?`` or
        ``[`` is a glob (:mod:`fnmatch`, case-sensitive), any other an exact name.
    """

    defaults: dict[str, Any] = attrs.field(factory=dict)
    rules: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    #: Run-time changes by pattern (``*``: the defaults), applied over the configuration.
    _changed: dict[str, dict[str, Any]] = attrs.field(init=False, factory=dict)
    _cache: dict[bytes, FunctionPolicy] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        check_settings(self.defaults)
        for settings in self.rules.values():
            check_settings(settings)

    def for_function(self, name: bytes) -> FunctionPolicy:
        """The policy of function ``name``: the defaults (configured, then changed), the
        configured rules that match (globs, then its exact name), then the changed ones."""
        policy = self._cache.get(name)
        if policy is None:
            text = name.decode("utf-8", "surrogateescape")
            merged = {**self.defaults, **self._changed.get("*", {})}
            for layer in (self.rules, self._changed):
                for pattern, settings in layer.items():
                    if pattern != "*" and _is_glob(pattern) and fnmatch.fnmatchcase(text, pattern):
                        merged.update(settings)
                merged.update(layer.get(text, {}) if not _is_glob(text) else {})
            policy = attrs.evolve(DEFAULT, **merged) if merged else DEFAULT
            if len(self._cache) < 100_000:
                self._cache[name] = policy
        return policy

    def set(self, pattern: str, settings: Mapping[str, Any]) -> None:
        """Change ``settings`` for ``pattern`` at run time (``*`` alone: the defaults).

        :raises ValueError: for an unknown setting or a bad value (nothing is changed).
        """
        changed = {**self._changed.get(pattern, {}), **settings}
        base = self.defaults if pattern == "*" else self.rules.get(pattern, {})
        check_settings({**base, **changed})
        self._changed[pattern] = changed
        self._cache.clear()

    def reset(self, pattern: str) -> bool:
        """Take back the run-time changes for ``pattern`` (``*``: to the defaults), back to
        the configured policy; False if there were none."""
        had = self._changed.pop(pattern, None) is not None
        self._cache.clear()
        return had


def _is_glob(pattern: str) -> bool:
    """Whether ``pattern`` is a glob rather than one function's name."""
    return any(c in pattern for c in "*?[")


@attrs.define(eq=False, slots=True)
class Throttle:
    """A function's assignment limits as they stand: its running cap and a token bucket.

    The bucket holds up to ``burst`` tokens (one second's worth of ``rate`` if 0), refills at
    ``rate`` per second, and each assignment takes one; with no rate it is always full.
    """

    max_running: int
    rate: float
    capacity: float
    tokens: float
    stamp: float

    @classmethod
    def of(cls, policy: FunctionPolicy, now: float, rate: bool = True) -> Throttle | None:
        """The throttle ``policy`` asks for, full at ``now``; None if it asks for none.
        Without ``rate`` (a cluster's claims take the tokens), its running cap alone."""
        if not policy.throttled() or not (rate or policy.max_running):
            return None
        capacity = policy.capacity()
        return cls(policy.max_running, policy.rate if rate else 0.0, capacity, capacity, now)

    def allows(self, running: int, now: float) -> bool:
        """Whether one more job may start now, with ``running`` jobs running."""
        if self.max_running and running >= self.max_running:
            return False
        if not self.rate:
            return True
        self._refill(now)
        return self.tokens >= 1.0

    def take(self, now: float) -> None:
        """Count one job started (the caller checked :meth:`allows`)."""
        if self.rate:
            self._refill(now)
            self.tokens -= 1.0

    def wait(self, now: float) -> float:
        """Seconds until the bucket holds a token again (0 if it holds one, or no rate)."""
        if not self.rate:
            return 0.0
        self._refill(now)
        return max(0.0, (1.0 - self.tokens) / self.rate)

    def _refill(self, now: float) -> None:
        """Add the tokens earned since the last look."""
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now


__all__ = [
    "DEFAULT",
    "SETTINGS",
    "TIMEOUT_OUTCOMES",
    "FunctionPolicy",
    "Policies",
    "Throttle",
    "check_settings",
]
