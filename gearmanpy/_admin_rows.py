"""The rows of the admin text protocol's replies, parsed: gearadmin's commands (``status``,
``prioritystatus``, ``workers``, ``show jobs``) and gearmanpy's own (the dead set, scheduled
and recurring jobs, kept results, policies, ``stats``).

Kept apart from :mod:`gearmanpy.admin` (which re-exports every name) so that the connection
and the parsing can each be read on their own.
"""

from __future__ import annotations

import base64
import binascii
import datetime

import attrs

from gearmanpy.errors import ProtocolError
from gearmanpy.protocol.text import show


def text(value: bytes) -> str:
    """Server bytes as text that encodes back to the same bytes (``surrogateescape``)."""
    return value.decode("utf-8", "surrogateescape")


@attrs.frozen
class FunctionStatus:
    """A ``status`` row: ``total`` jobs (queued + running), ``running``, ``workers``."""

    name: str
    total: int
    running: int
    workers: int

    @property
    def queued(self) -> int:
        """Jobs waiting for a worker (gearmand's TOTAL counts the running ones too)."""
        return max(0, self.total - self.running)


@attrs.frozen
class PriorityStatus:
    """A ``prioritystatus`` row: queued jobs per priority, and the workers."""

    name: str
    high: int
    normal: int
    low: int
    workers: int


@attrs.frozen
class WorkerInfo:
    """A ``workers`` row: one connection (workers, clients and admin connections alike).

    :ivar client_id: its SET_CLIENT_ID, or ``"-"`` if it sent none (as gearmand prints it).
    :ivar functions: the functions it registered, in the server's order.
    """

    fd: int
    ip: str
    client_id: str
    functions: tuple[str, ...]


@attrs.frozen
class JobInfo:
    """A ``show jobs`` row: ``ignored`` (cancelled or orphaned), ``persisted`` (stored)."""

    handle: str
    retries: int
    ignored: bool
    persisted: bool


def _fields(line: bytes, count: int, what: str) -> list[bytes]:
    """Split a TAB-separated row into at least ``count`` fields (later extra fields ignored).

    :raises ProtocolError: if there are fewer, or a numeric field (all but the first) is not
        a number.
    """
    fields = line.split(b"\t")
    if len(fields) < count or not all(f.isdigit() for f in fields[1:count]):
        raise ProtocolError(f"unexpected {what} line from the server: {show(line)}")
    return fields[:count]


def parse_status(lines: list[bytes]) -> list[FunctionStatus]:
    """Parse a ``status`` reply's lines (without the final ``.``)."""
    rows = []
    for line in lines:
        name, total, running, workers = _fields(line, 4, "status")
        rows.append(FunctionStatus(text(name), int(total), int(running), int(workers)))
    return rows


def parse_priority_status(lines: list[bytes]) -> list[PriorityStatus]:
    """Parse a ``prioritystatus`` reply's lines."""
    rows = []
    for line in lines:
        name, high, normal, low, workers = _fields(line, 5, "prioritystatus")
        rows.append(PriorityStatus(text(name), int(high), int(normal), int(low), int(workers)))
    return rows


def parse_workers(lines: list[bytes]) -> list[WorkerInfo]:
    """Parse a ``workers`` reply: ``FD IP ID : F1 F2...`` (the ID may hold spaces)."""
    rows = []
    for line in lines:
        fd, _, rest = line.partition(b" ")
        ip, _, rest = rest.partition(b" ")
        client_id, colon, functions = rest.partition(b" :")
        if (
            not fd.lstrip(b"-").isdigit()
            or not colon
            or (functions and not functions.startswith(b" "))
        ):
            raise ProtocolError(f"unexpected workers line from the server: {show(line)}")
        names = tuple(text(f) for f in functions.split(b" ") if f)
        rows.append(WorkerInfo(int(fd), text(ip), text(client_id), names))
    return rows


def parse_jobs(lines: list[bytes]) -> list[JobInfo]:
    """Parse a ``show jobs`` reply."""
    rows = []
    for line in lines:
        handle, retries, ignored, persisted = _fields(line, 4, "show jobs")
        rows.append(JobInfo(text(handle), int(retries), ignored != b"0", persisted != b"0"))
    return rows


# -- gearmanpy's own commands: the failure policy, kept results, stats --------------------------


def _time(value: bytes) -> datetime.datetime | None:
    """A gearmanpy row's ISO 8601 UTC time (``-`` for none) as an aware datetime."""
    if value in (b"", b"-"):
        return None
    return datetime.datetime.strptime(value.decode("ascii"), "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.UTC
    )


@attrs.frozen
class DeadJob:
    """A ``show dead`` row: a background job that used up its attempts, and why it failed."""

    handle: str
    function: str
    unique: str
    attempts: int
    failed_at: datetime.datetime | None
    error: str


@attrs.frozen
class ScheduledJob:
    """A ``show scheduled`` row: an epoch job or a retry waiting for its time.

    :ivar error: the last attempt's error for a retry, ``None`` for a job never run.
    """

    handle: str
    function: str
    unique: str
    due: datetime.datetime | None
    priority: str
    attempts: int
    error: str | None


@attrs.frozen
class RecurringJob:
    """A ``show recurring`` row: a configured cron job and when it next submits."""

    name: str
    cron: str
    function: str
    unique: str
    next_run: datetime.datetime | None


@attrs.frozen
class KeptResult:
    """``show result``: a background job's kept outcome (``keep_results`` policy).

    :ivar outcome: ``complete``, ``failed``, ``exception``, ``dead`` or ``cancelled``.
    :ivar data: the result (WORK_COMPLETE's data, or the exception text).
    """

    handle: str
    function: str
    unique: str
    outcome: str
    attempts: int
    numerator: int
    denominator: int
    submitted: datetime.datetime | None
    started: datetime.datetime | None
    finished: datetime.datetime | None
    expires: datetime.datetime | None
    data: bytes


def _columns(line: bytes, count: int, what: str) -> list[bytes]:
    """A TAB-separated gearmanpy row of exactly ``count`` fields."""
    fields = line.split(b"\t")
    if len(fields) != count:
        raise ProtocolError(f"unexpected {what} line from the server: {show(line)}")
    return fields


def parse_dead(lines: list[bytes]) -> list[DeadJob]:
    """Parse a ``show dead`` reply: handle, function, unique, attempts, failed at, error."""
    rows = []
    for line in lines:
        handle, function, unique, attempts, failed, error = _columns(line, 6, "show dead")
        rows.append(
            DeadJob(text(handle), text(function), text(unique), int(attempts),
                    _time(failed), text(error))
        )  # fmt: skip
    return rows


def parse_scheduled(lines: list[bytes]) -> list[ScheduledJob]:
    """Parse a ``show scheduled`` reply: handle, function, unique, due, priority, attempts,
    last error (``-`` for none)."""
    rows = []
    for line in lines:
        handle, function, unique, due, prio, attempts, error = _columns(line, 7, "show scheduled")
        rows.append(
            ScheduledJob(text(handle), text(function), text(unique), _time(due), text(prio),
                         int(attempts), None if error == b"-" else text(error))
        )  # fmt: skip
    return rows


def parse_recurring(lines: list[bytes]) -> list[RecurringJob]:
    """Parse a ``show recurring`` reply: name, cron, function, unique, next run."""
    rows = []
    for line in lines:
        name, cron, function, unique, due = _columns(line, 5, "show recurring")
        rows.append(RecurringJob(text(name), text(cron), text(function), text(unique), _time(due)))
    return rows


def parse_result(lines: list[bytes]) -> KeptResult:
    """Parse a ``show result`` reply (one ``NAME<TAB>VALUE`` line per field)."""
    f = {name: value for name, _, value in (line.partition(b"\t") for line in lines)}
    try:
        numerator, _, denominator = f[b"status"].partition(b"/")
        return KeptResult(
            text(f[b"handle"]), text(f[b"function"]), text(f[b"unique"]),
            text(f[b"outcome"]), int(f[b"attempts"]), int(numerator), int(denominator),
            _time(f[b"submitted"]), _time(f[b"started"]), _time(f[b"finished"]),
            _time(f[b"expires"]), base64.b64decode(f[b"data"], validate=True),
        )  # fmt: skip
    except (KeyError, ValueError, binascii.Error) as e:
        raise ProtocolError(f"unexpected show result reply from the server: {e}") from None


def parse_settings(lines: list[bytes]) -> dict[str, str]:
    """Parse a ``show policy`` reply: ``NAME<TAB>VALUE`` per setting."""
    return dict(text(line).partition("\t")[::2] for line in lines)


def parse_stats(lines: list[bytes]) -> dict[str, str]:
    """Parse a ``stats`` reply: ``NAME VALUE`` per counter or gauge."""
    return dict(text(line).partition(" ")[::2] for line in lines)


__all__ = [
    "DeadJob",
    "FunctionStatus",
    "JobInfo",
    "KeptResult",
    "PriorityStatus",
    "RecurringJob",
    "ScheduledJob",
    "WorkerInfo",
    "parse_dead",
    "parse_jobs",
    "parse_priority_status",
    "parse_recurring",
    "parse_result",
    "parse_scheduled",
    "parse_settings",
    "parse_stats",
    "parse_status",
    "parse_workers",
]
