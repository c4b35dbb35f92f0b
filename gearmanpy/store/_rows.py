# -*- test-case-name: tests.test_store,tests.test_store_policy -*-
"""The rows the SQL and Redis stores write and read: one place for the column order of jobs,
dead jobs and kept results, and for how a batch of writes becomes SQL statements.

A write op (see :mod:`gearmanpy.store._writer`) becomes one or more *steps*, each a named
statement with one parameter row; :func:`sql_runs` groups consecutive ops with the same op
and gives each step of that op the rows of the whole run, so a backend runs one statement
per step and run (``executemany`` in SQLite, one array statement in PostgreSQL). Within a run,
every op's first step runs before any op's second: that is the same as running them one by
one because the steps of one op touch different tables, or the same row last-wins (a dead
row or result replaced twice keeps the last one).
"""

from __future__ import annotations

from typing import Any

from gearmanpy.store._writer import (
    ADD,
    BURY,
    CLAIM,
    DONE,
    DROP_DEAD,
    DROP_RESULTS,
    KEEP_RESULT,
    RESCHEDULE,
    RETRIES,
    UNBURY,
)
from gearmanpy.store.interface import DeadJob, KeptResult, Priority, StoredJob

#: The job columns of the SQL stores' queue table, in the order of :func:`job_row` and of
#: :func:`job_from_row`.
COLUMNS = (
    "job_key, function, unique_id, priority, data, when_to_run, retries, reducer, handle,"
    " submitted_at, error"
)

#: The dead table's columns: a job's, then the last error and the time of failure.
DEAD_COLUMNS = f"{COLUMNS}, last_error, failed_at"

#: The kept results table's columns, in the order of :func:`result_row`.
RESULT_COLUMNS = (
    "handle, function, unique_id, outcome, data, numerator, denominator, attempts,"
    " submitted_at, started_at, finished_at, expires_at"
)

#: The statements a step may name (each backend has its SQL for every one of them):
#: ``add`` (a job row, upserted), ``done`` (``(key,)``, delete a queued row), ``retries``
#: (``(retries, key)``), ``reschedule`` (``(when, retries, error, key)``), ``undead``
#: (``(key,)``, delete a dead row), ``bury`` (a dead row, upserted), ``unresult``
#: (``(handle,)``), ``result`` (a result row, upserted) and ``claim`` (``(index, name, tick,
#: *job row)``: run one by one, since each answers; ``index`` is the op's place in the batch).
STEPS = ("add", "done", "retries", "reschedule", "undead", "bury", "unresult", "result", "claim")


def job_row(job: StoredJob) -> tuple[Any, ...]:
    """A job as the parameters of :data:`COLUMNS`."""
    return (
        job.key,
        job.function,
        job.unique,
        int(job.priority),
        job.data,
        job.when,
        job.retries,
        job.reducer,
        job.handle,
        float(job.submitted_at),
        job.error,
    )


def job_from_row(row: Any) -> StoredJob:
    """A row of :data:`COLUMNS` as a job.

    The key is a string; the binary fields may be any bytes-like object and the numbers ints,
    floats or their decimal digits as bytes (as Redis returns them); a handle, time or error
    may be None (a row written before it was kept).
    """
    key, function, unique, priority, data, when, retries, reducer, handle, submitted, error = row
    return StoredJob(
        key=key,
        function=bytes(function),
        unique=bytes(unique),
        priority=Priority(int(priority)),
        data=bytes(data),
        when=int(when),
        retries=int(retries),
        reducer=bytes(reducer),
        handle=bytes(handle or b""),
        submitted_at=float(submitted or 0),
        error=bytes(error or b""),
    )


def dead_row(dead: DeadJob) -> tuple[Any, ...]:
    """A dead job as the parameters of :data:`DEAD_COLUMNS`."""
    return (*job_row(dead.job), dead.error, float(dead.failed_at))


def dead_from_row(row: Any) -> DeadJob:
    """A row of :data:`DEAD_COLUMNS` as a dead job."""
    *job, error, failed_at = row
    return DeadJob(job=job_from_row(job), error=bytes(error), failed_at=float(failed_at))


def result_row(result: KeptResult) -> tuple[Any, ...]:
    """A kept result as the parameters of :data:`RESULT_COLUMNS`."""
    return (
        result.handle,
        result.function,
        result.unique,
        result.outcome,
        result.data,
        result.numerator,
        result.denominator,
        result.attempts,
        float(result.submitted_at),
        float(result.started_at),
        float(result.finished_at),
        float(result.expires_at),
    )


def result_from_row(row: Any) -> KeptResult:
    """A row of :data:`RESULT_COLUMNS` as a kept result (text may come back as bytes)."""
    handle, function, unique, outcome, data, num, den, attempts, sub, start, fin, exp = row
    return KeptResult(
        handle=bytes(handle),
        function=bytes(function),
        unique=bytes(unique),
        outcome=bytes(outcome).decode() if isinstance(outcome, bytes | memoryview) else outcome,
        data=bytes(data),
        numerator=int(num),
        denominator=int(den),
        attempts=int(attempts),
        submitted_at=float(sub),
        started_at=float(start),
        finished_at=float(fin),
        expires_at=float(exp),
    )


def by_failure(dead: list[DeadJob]) -> list[DeadJob]:
    """``dead`` (in the order it was buried) with the oldest failure first."""
    return sorted(dead, key=lambda d: d.failed_at)


def steps_for(index: int, op: str, args: tuple[Any, ...]) -> list[tuple[str, tuple[Any, ...]]]:
    """The steps of one write op, in the order they must run."""
    if op == ADD:
        return [("add", job_row(args[0]))]
    if op == DONE:
        return [("done", (args[0],))]
    if op == RETRIES:
        key, retries = args
        return [("retries", (retries, key))]
    if op == RESCHEDULE:
        key, when, retries, error = args
        return [("reschedule", (when, retries, error, key))]
    if op == BURY:
        dead: DeadJob = args[0]
        key = dead.job.key
        # The dead row is deleted first, so a replaced one goes to the end of the order.
        return [("done", (key,)), ("undead", (key,)), ("bury", dead_row(dead))]
    if op == UNBURY:
        key, job = args
        return [("undead", (key,)), ("add", job_row(job))]
    if op == DROP_DEAD:
        return [("undead", (key,)) for key in args[0]]
    if op == KEEP_RESULT:
        key, result = args
        steps = [] if key is None else [("done", (key,))]
        return [*steps, ("unresult", (result.handle,)), ("result", result_row(result))]
    if op == DROP_RESULTS:
        return [("unresult", (handle,)) for handle in args[0]]
    if op == CLAIM:
        name, tick, job = args
        return [("claim", (index, name, tick, *job_row(job)))]
    raise ValueError(f"unknown store operation {op!r}")


def sql_runs(ops: list[tuple[str, tuple[Any, ...]]]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The steps of ``ops`` as (statement, parameter rows), one per step and run of
    consecutive ops with the same op, in order (see the module docstring)."""
    runs: list[tuple[str, list[tuple[Any, ...]]] | dict[str, list[tuple[Any, ...]]]] = []
    last = None
    rows: list[tuple[Any, ...]] = []
    by_step: dict[str, list[tuple[Any, ...]]] = {}
    for index, (op, args) in enumerate(ops):
        if op != last:
            last = op
            if op == ADD or op == DONE:
                rows = []
                runs.append(("add" if op == ADD else "done", rows))
            else:
                by_step = {}
                runs.append(by_step)
        # Adds and dones, the hot path, have one step each, built here.
        if op == ADD:
            rows.append(job_row(args[0]))
        elif op == DONE:
            rows.append((args[0],))
        else:
            for step, row in steps_for(index, op, args):
                by_step.setdefault(step, []).append(row)
    out: list[tuple[str, list[tuple[Any, ...]]]] = []
    for run in runs:
        if isinstance(run, dict):
            out.extend(run.items())
        else:
            out.append(run)
    return out
