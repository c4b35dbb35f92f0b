# -*- test-case-name: tests.test_policy_admin -*-
"""The failure policy's admin commands, which gearmand does not have.

``show dead [FUNCTION]``, ``show scheduled [FUNCTION]``, ``show recurring``,
``show result HANDLE`` (or ``show result FUNCTION UNIQUE``), ``show policy FUNCTION``: lists
of tab-separated lines ending with ``.``, as ``show jobs`` ends. ``retry dead
HANDLE|FUNCTION|all``, ``drop dead HANDLE|FUNCTION|all``, ``cancel unique FUNCTION UNIQUE``,
``policy set PATTERN NAME=VALUE...`` and ``policy reset PATTERN``: ``OK`` or ``ERR ...``.
The commands that change something need the ``admin`` permission on the function they act on
(by default: loopback and unix-socket peers, as ``shutdown``; server/acl.py).

Times are UTC in ISO 8601 (``2026-12-02T22:10:00Z``); text fields have control characters
escaped (``\\xNN``), so every row stays one line; a kept result's data is base64.
"""

from __future__ import annotations

import base64
import datetime
from typing import TYPE_CHECKING, Any

from gearmanpy.protocol import admin as fmt
from gearmanpy.protocol.text import show
from gearmanpy.server.acl import ADMIN
from gearmanpy.server.core import JobServerCore
from gearmanpy.server.jobs import Peer
from gearmanpy.server.policy import SETTINGS
from gearmanpy.server.recurring import RecurringJobs
from gearmanpy.store.interface import KeptResult

_PRIORITY_NAMES = (b"high", b"normal", b"low")


def dead_function(core: JobServerCore, what: bytes) -> bytes | None:
    """The function ``retry dead``/``drop dead`` act on, for the permission check: a dead
    job's function, the function named, or None (``all``: every function)."""
    if what == b"all":
        return None
    dead = core.dead.jobs.get(what)
    return dead.job.function if dead is not None else what


def when(t: float) -> bytes:
    """Unix time ``t`` as ISO 8601 UTC, to the second (``-`` for none)."""
    if not t:
        return b"-"
    stamp = datetime.datetime.fromtimestamp(t, datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ").encode("ascii")


def field(value: bytes) -> bytes:
    """A text field of a row: control characters (tab, newline) escaped."""
    return show(value).encode("utf-8")


def rows(lines: list[list[bytes]]) -> bytes:
    """Tab-separated rows, then ``.``."""
    return b"".join(b"\t".join(r) + b"\n" for r in lines) + b".\n"


def _value(text: str) -> Any:
    """A policy value from ``NAME=VALUE`` text: a number if it reads as one."""
    if text.lower() in ("none", "null", ""):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class PolicyCommands:
    """The failure policy's admin commands (mixed into ``AdminCommands``)."""

    core: JobServerCore
    #: The recurring jobs' timers (``show recurring``), if the server has any.
    recurring: RecurringJobs | None = None

    if TYPE_CHECKING:

        def refusal(self, peer: Peer, permission: str, name: bytes | None = None) -> bytes | None:
            """The ERR line if ``peer`` may not use ``permission`` on ``name`` (AdminCommands')."""

    def show_policy_state(self, peer: Peer, words: list[bytes], args: tuple[bytes, ...]) -> bytes:
        """``show dead|scheduled|recurring|result|policy ...``, or ERR for anything else."""
        what, rest = words[0], args[1:]
        if what == b"dead" and len(rest) <= 1:
            return self._show_dead(rest[0] if rest else None)
        if what == b"scheduled" and len(rest) <= 1:
            return self._show_scheduled(rest[0] if rest else None)
        if what == b"recurring" and not rest:
            return self._show_recurring()
        if what == b"result" and len(rest) in (1, 2):
            return self._show_result(rest)
        if what == b"policy" and len(rest) == 1:
            policy = self.core.policies.for_function(rest[0])
            settings = policy.settings()
            return rows([[n.encode(), str(settings[n]).encode()] for n in SETTINGS])
        return fmt.error(b"UNKNOWN_SHOW_ARGUMENTS")

    def _show_dead(self, function: bytes | None) -> bytes:
        """One row per dead job: handle, function, unique, attempts, failed at, error."""
        return rows(
            [
                [
                    field(d.job.handle),
                    field(d.job.function),
                    field(d.job.unique),
                    b"%d" % d.job.retries,
                    when(d.failed_at),
                    field(d.error),
                ]
                for d in self.core.dead.of_function(function)
            ]
        )

    def _show_scheduled(self, function: bytes | None) -> bytes:
        """One row per waiting job: handle, function, unique, due, priority, attempts, error."""
        return rows(
            [
                [
                    field(j.handle),
                    field(j.function.name),
                    field(j.unique),
                    when(j.when),
                    _PRIORITY_NAMES[j.priority],
                    b"%d" % j.retries,
                    field(j.error) if j.error else b"-",
                ]
                for j in self.core.scheduled_jobs(function)
            ]
        )

    def _show_recurring(self) -> bytes:
        """One row per recurring job: name, cron, function, unique, next tick."""
        found = self.recurring.rows() if self.recurring is not None else []
        return rows(
            [
                [
                    field(job.name.encode()),
                    field(job.cron.encode()),
                    field(job.function),
                    field(job.unique),
                    when(tick),
                ]
                for job, tick in found
            ]
        )

    def _show_result(self, rest: tuple[bytes, ...]) -> bytes:
        """``show result HANDLE`` or ``show result FUNCTION UNIQUE``: a kept result."""
        kept = self.core.kept
        result = kept.get(rest[0]) if len(rest) == 1 else kept.by_unique(rest[0], rest[1])
        if result is None:
            return fmt.error(b"NO_RESULT", b"no+result+is+kept+for+that+job")
        return format_result(result)

    def admin_retry(self, peer: Peer, args: tuple[bytes, ...]) -> bytes:
        """``retry dead HANDLE|FUNCTION|all``: queue dead jobs again."""
        if len(args) != 2 or args[0].lower() != b"dead":
            return fmt.invalid_arguments(b"retry")
        refused = self.refusal(peer, ADMIN, dead_function(self.core, args[1]))
        if refused is not None:
            return refused
        if not self.core.retry_dead(args[1]):
            return fmt.error(b"NO_DEAD_JOB", b"no+dead+job+matches")
        return fmt.ok()

    def drop_dead_command(self, peer: Peer, what: bytes) -> bytes:
        """``drop dead HANDLE|FUNCTION|all``: forget dead jobs."""
        refused = self.refusal(peer, ADMIN, dead_function(self.core, what))
        if refused is not None:
            return refused
        if not self.core.drop_dead(what):
            return fmt.error(b"NO_DEAD_JOB", b"no+dead+job+matches")
        return fmt.ok()

    def cancel_unique_command(self, peer: Peer, function: bytes, unique: bytes) -> bytes:
        """``cancel unique FUNCTION UNIQUE``: cancel the live job with that unique."""
        refused = self.refusal(peer, ADMIN, function)
        if refused is not None:
            return refused
        if self.core.cancel_unique(function, unique):
            return fmt.ok()
        return fmt.error(b"UNKNOWN_JOB")

    def admin_policy(self, peer: Peer, args: tuple[bytes, ...]) -> bytes:
        """``policy set PATTERN NAME=VALUE...`` and ``policy reset PATTERN``."""
        change = self.policy_change(peer, args)
        if isinstance(change, bytes):
            return change
        pattern, settings = change
        if settings is None:
            if not self.core.reset_policy(pattern):
                return NO_POLICY
            return fmt.ok()
        try:
            self.core.set_policy(pattern, settings)
        except (ValueError, TypeError) as e:
            return bad_policy(e)
        return fmt.ok()

    def policy_change(
        self, peer: Peer, args: tuple[bytes, ...]
    ) -> tuple[str, dict[str, Any] | None] | bytes:
        """``policy set|reset`` read and its permission checked: (pattern, the settings to set,
        None for a reset), or the ERR reply."""
        if len(args) < 2 or args[0].lower() not in (b"set", b"reset"):
            return fmt.invalid_arguments(b"policy")
        pattern = args[1].decode("utf-8", "surrogateescape")
        exact = args[1] if not any(c in pattern for c in "*?[") else None
        refused = self.refusal(peer, ADMIN, exact)  # a glob needs admin on every function
        if refused is not None:
            return refused
        if args[0].lower() == b"reset":
            if len(args) != 2:
                return fmt.invalid_arguments(b"policy")
            return pattern, None
        settings: dict[str, Any] = {}
        for word in args[2:]:
            name, sep, value = word.decode("utf-8", "replace").partition("=")
            if not sep:
                return fmt.invalid_arguments(b"policy")
            settings[name] = _value(value)
        if not settings:
            return fmt.invalid_arguments(b"policy")
        return pattern, settings


#: ``policy reset`` of a pattern without a run-time change.
NO_POLICY = fmt.error(b"NO_POLICY", b"no+run-time+change+for+that+pattern")


def bad_policy(e: Exception) -> bytes:
    """The ERR reply to ``policy set`` with a setting the policy refuses."""
    return fmt.error(b"BAD_POLICY", str(e).replace(" ", "+").encode("utf-8", "replace"))


def format_result(r: KeptResult) -> bytes:
    """A kept result as ``name<TAB>value`` rows (the data in base64), then ``.``."""
    return rows(
        [
            [b"handle", field(r.handle)],
            [b"function", field(r.function)],
            [b"unique", field(r.unique)],
            [b"outcome", r.outcome.encode("ascii")],
            [b"attempts", b"%d" % r.attempts],
            [b"status", b"%d/%d" % (r.numerator, r.denominator)],
            [b"submitted", when(r.submitted_at)],
            [b"started", when(r.started_at)],
            [b"finished", when(r.finished_at)],
            [b"expires", when(r.expires_at)],
            [b"data", base64.b64encode(r.data)],
        ]
    )


__all__ = ["NO_POLICY", "PolicyCommands", "bad_policy", "format_result", "rows", "when"]
