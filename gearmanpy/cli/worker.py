"""``gearmanpy worker``: run a command per job (``gearman -w``), or Python functions.

* ``gearmanpy worker -f NAME [-f ...] -- COMMAND [ARGS]`` runs COMMAND once per job with the
  payload on its stdin and returns its stdout; a non-zero exit status sends WORK_FAIL, as
  ``gearman -w`` does. Each run takes a thread of the reactor's pool (``--concurrency``).
* ``gearmanpy worker [NAME=]MODULE:CALLABLE ...`` imports the callables (plain,
  Deferred-returning or ``async def``; or a module attribute holding a
  :class:`~gearmanpy.Worker`, whose registrations are taken over) and registers them.

Either way the worker reconnects on its own, and SIGTERM or SIGINT drains it: no new job
is taken, running ones get ``--grace`` seconds to finish (their results are sent), then it
exits 0.
"""

from __future__ import annotations

import importlib
import inspect
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import attrs
import click
from twisted.internet.defer import Deferred
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from gearmanpy._connection import ClientTLS
from gearmanpy.cli.common import CliError, run, servers_option, tls_options
from gearmanpy.errors import JobFailed
from gearmanpy.worker import Worker, WorkerJob

log = Logger()


@attrs.frozen
class Registration:
    """A function to register: its name, the callable, and whether it runs in a thread."""

    name: str
    func: Callable[[WorkerJob], Any]
    thread: bool = False
    timeout: float | None = None


def command_function(argv: list[str]) -> Callable[[WorkerJob], bytes]:
    """A job function that runs ``argv`` with the payload on stdin and returns its stdout;
    a non-zero exit status (or a signal) fails the job (WORK_FAIL). Its stderr is ours."""

    def run_command(job: WorkerJob) -> bytes:
        done = subprocess.run(argv, input=job.data, stdout=subprocess.PIPE, check=False)
        if done.returncode != 0:
            raise JobFailed(f"{argv[0]} exited with status {done.returncode}")
        return done.stdout

    return run_command


def load(spec: str, threads: bool) -> list[Registration]:
    """Import ``[NAME=]MODULE:ATTRIBUTE`` (the current directory first on the path).

    :raises CliError: if it cannot be imported or is not a callable or Worker.
    """
    name, eq, target = spec.rpartition("=")
    module_name, colon, attribute = target.partition(":")
    if not colon or not module_name or not attribute:
        raise CliError(f"{spec!r} is not MODULE:CALLABLE (or NAME=MODULE:CALLABLE)")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        value: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise CliError(f"cannot import {module_name}: {e}") from None
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise CliError(f"{module_name} has no attribute {attribute!r}") from None
    if isinstance(value, Worker):
        if eq:
            raise CliError(f"{spec!r}: a Worker's functions keep their own names")
        return [
            Registration(f.name.decode("utf-8", "surrogateescape"), f.func, f.thread, f.timeout)
            for f in value.functions.values()
        ]
    if not callable(value):
        raise CliError(f"{target} is neither a function nor a Worker")
    plain = not inspect.iscoroutinefunction(value)
    return [Registration(name or attribute.rsplit(".", 1)[-1], value, threads and plain)]


def _start_logging(verbose: bool) -> None:
    """Log the worker's events to stderr (info and up; debug with ``--verbose``)."""
    predicate = LogLevelFilterPredicate(
        defaultLogLevel=LogLevel.debug if verbose else LogLevel.info
    )
    # "Starting factory ..." on every reconnection says nothing a person needs.
    predicate.setLogLevelForNamespace("gearmanpy.worker._worker._WorkerFactory", LogLevel.warn)
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


EPILOG = """\b
Examples:
  gearmanpy worker -f reverse -- rev
  gearmanpy worker -f wc -f count --concurrency 4 -- wc -l
  gearmanpy worker tasks:resize                     # registers "resize"
  gearmanpy worker thumb=tasks:make_thumbnail tasks:worker --concurrency 8
"""


@click.command("worker", epilog=EPILOG, context_settings={"allow_interspersed_args": False})
@servers_option
@click.option(
    "--function",
    "-f",
    "functions",
    multiple=True,
    metavar="NAME",
    help="With a COMMAND after --: the function names it serves (repeatable).",
)
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Jobs run at once.",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds running jobs get to finish after SIGTERM/SIGINT.",
)
@click.option("--threads", is_flag=True, help="Run plain Python functions in threads.")
@click.option("--id", "client_id", help="The worker's id, as `gearmanpy admin workers` shows.")
@click.option("--verbose", "-v", is_flag=True, help="Log every job.")
@click.argument(
    "targets", nargs=-1, required=True, metavar="COMMAND... | [NAME=]MODULE:CALLABLE..."
)
@tls_options
def worker(
    servers: list[str],
    functions: tuple[str, ...],
    concurrency: int,
    grace: float,
    threads: bool,
    client_id: str | None,
    verbose: bool,
    targets: tuple[str, ...],
    tls: ClientTLS | None,
) -> None:
    """Serve jobs: run COMMAND per job (after -f NAME and --), or Python functions."""
    if functions:
        if shutil.which(targets[0]) is None:
            raise CliError(f"command not found: {targets[0]}")
        func = command_function(list(targets))
        registrations = [Registration(name, func, thread=True) for name in functions]
    else:
        registrations = [r for spec in targets for r in load(spec, threads)]
        if not registrations:
            raise CliError("nothing to register")

    async def main(reactor: Any) -> int:
        _start_logging(verbose)
        if any(r.thread for r in registrations):
            reactor.suggestThreadPoolSize(max(concurrency, 10))
        pool = Worker(
            servers, concurrency=concurrency, grace_period=grace, client_id=client_id, tls=tls
        )
        for r in registrations:
            pool.register(r.name, r.func, thread=r.thread, timeout=r.timeout)
        reactor.addSystemEventTrigger("before", "shutdown", pool.stopService)
        pool.startService()
        log.info(
            "Worker ready: {functions} on {servers}, concurrency {n}",
            functions=" ".join(r.name for r in registrations),
            servers=" ".join(servers),
            n=concurrency,
        )
        await Deferred()  # until SIGTERM/SIGINT stops the reactor (after the drain)
        return 0

    run(main)


__all__ = ["Registration", "command_function", "load", "worker"]
