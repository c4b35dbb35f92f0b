"""``gearmanpy submit``: submit jobs from the shell, like ``gearman -f``, binary-safe.

In the foreground the result goes to stdout as it came (WORK_DATA too, as it arrives), and
a job that fails, raises or times out exits non-zero with the reason on stderr. WORK_STATUS
is drawn as a progress bar when stderr is a terminal, else printed as ``status N/D`` lines.
"""

from __future__ import annotations

import datetime
import sys
from typing import Any

import click

from gearmanpy._connection import ClientTLS
from gearmanpy.cli.common import FAILED, TIMED_OUT, CliError, run, servers_option, tls_options
from gearmanpy.cli.progress import StatusDisplay
from gearmanpy.client import Client, Job
from gearmanpy.errors import JobException, JobFailed, JobTimeout
from gearmanpy.protocol.packets import Priority

_PRIORITIES = {"high": Priority.HIGH, "normal": Priority.NORMAL, "low": Priority.LOW}


def parse_when(text: str) -> float:
    """``--at``: a Unix time, or an ISO 8601 date and time (local time if no zone given).

    :raises CliError: for anything else.
    """
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"--at wants a Unix time or an ISO 8601 time, not {text!r}") from None
    if when.tzinfo is None:
        when = when.astimezone()
    return when.timestamp()


def _outcome(error: BaseException) -> tuple[str, int]:
    """The stderr line and exit status for a job that ended without a result."""
    if isinstance(error, JobFailed):
        return "the job failed (WORK_FAIL)", FAILED
    if isinstance(error, JobException):
        return f"the job raised an exception: {error}", FAILED
    if isinstance(error, JobTimeout):
        return f"timed out: {error}", TIMED_OUT
    return str(error) or type(error).__name__, FAILED


def _write(data: bytes) -> None:
    """Write bytes to stdout now (binary-safe, unbuffered for streaming)."""
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


async def _foreground(client: Client, function: str, data: bytes, options: dict[str, Any]) -> int:
    """Run one foreground job: stream its data, show its progress, print its result."""
    job: Job = client.submit(
        function,
        data,
        unique=options["unique"],
        priority=options["priority"],
        timeout=options["timeout"],
    )
    display = StatusDisplay(function)
    job.on_data(display.data)
    job.on_warning(display.warning)
    job.on_status(display.status)
    try:
        result = await job
    except Exception as e:
        display.close()
        message, code = _outcome(e)
        click.echo(f"gearmanpy: error: {message}", err=True)
        return code
    display.close()
    _write(result)
    return 0


async def _broadcast(client: Client, function: str, data: bytes, options: dict[str, Any]) -> int:
    """``--broadcast``: every worker's reply as ``WORKER<TAB>RESULT`` on stdout as it comes
    (a failed or lost delivery on stderr), then the summary on stderr; exit status 1 unless
    every delivery completed."""
    job = client.broadcast(
        function,
        data,
        unique=options["unique"],
        priority=options["priority"],
        timeout=options["timeout"],
    )
    try:
        async for reply in job:
            if reply.ok:
                _write(reply.worker + b"\t" + reply.data + b"\n")
            else:
                worker, why = (v.decode("utf-8", "replace") for v in (reply.worker, reply.data))
                click.echo(f"gearmanpy: {worker}: {why}", err=True)
        summary = await job
    except Exception as e:
        message, code = _outcome(e)
        click.echo(f"gearmanpy: error: {message}", err=True)
        return code
    click.echo(
        f"broadcast: {summary.completed} completed, {summary.failed} failed, "
        f"{summary.lost} lost, {summary.total} workers",
        err=True,
    )
    return 0 if summary.completed == summary.total else FAILED


async def _lines(client: Client, function: str, data: bytes, options: dict[str, Any]) -> int:
    """``--lines``: one job per input line, all at once; results in input order, one a line."""
    lines = data.splitlines()
    jobs = [
        client.submit(
            function,
            line,
            unique=options["unique"],
            priority=options["priority"],
            timeout=options["timeout"],
        )
        for line in lines
    ]
    code = 0
    for job in jobs:
        try:
            result = await job
        except Exception as e:
            message, status = _outcome(e)
            click.echo(
                f"gearmanpy: error: {job.data.decode('utf-8', 'replace')}: {message}", err=True
            )
            code = code or status
            continue
        _write(result + b"\n")
    return code


async def _background(client: Client, function: str, data: bytes, options: dict[str, Any]) -> int:
    """Submit in the background (``--at``: at that time); print the handle."""
    for payload in data.splitlines() if options["lines"] else [data]:
        if options["at"] is not None:
            d = client.submit_at(
                options["at"],
                function,
                payload,
                unique=options["unique"],
                timeout=options["timeout"],
            )
        else:
            d = client.submit_background(
                function,
                payload,
                unique=options["unique"],
                priority=options["priority"],
                timeout=options["timeout"],
            )
        handle = await d
        click.echo(handle.decode("utf-8", "replace"))
    return 0


EPILOG = """\b
Examples:
  echo hello | gearmanpy submit reverse
  gearmanpy submit reverse hello
  gearmanpy submit --background --priority high resize photo.jpg
  gearmanpy submit --at 2030-01-01T09:00 report monthly
  gearmanpy submit --lines reverse < words.txt
  gearmanpy submit --broadcast cache_drop user:42   # every worker of a broadcast function
"""


@click.command("submit", epilog=EPILOG)
@servers_option
@click.argument("function")
@click.argument("data", required=False)
@click.option("--background", "-b", is_flag=True, help="Do not wait; print the job handle.")
@click.option(
    "--priority", "-p", type=click.Choice(list(_PRIORITIES)), default="normal", show_default=True
)
@click.option("--unique", "-u", help="A unique key: jobs with the same one coalesce.")
@click.option("--at", "at", metavar="TIME", help="Run at TIME (Unix time or ISO 8601); implies -b.")
@click.option(
    "--timeout",
    "-t",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds to wait for the result (or the handle).",
)
@click.option("--lines", "-n", is_flag=True, help="Submit one job per input line.")
@tls_options
@click.option(
    "--broadcast",
    is_flag=True,
    help="FUNCTION is a broadcast one (gearmanpy): print each worker's reply, then a summary.",
)
def submit(
    servers: list[str],
    function: str,
    data: str | None,
    background: bool,
    priority: str,
    unique: str | None,
    at: str | None,
    timeout: float | None,
    lines: bool,
    broadcast: bool,
    tls: ClientTLS | None,
) -> None:
    """Submit a job to FUNCTION with DATA (or stdin); print its result on stdout."""
    payload = (
        data.encode("utf-8", "surrogateescape") if data is not None else sys.stdin.buffer.read()
    )
    if unique is not None and len(unique.encode()) > 63:
        raise CliError("--unique is at most 63 bytes")
    if lines and unique is not None:
        raise CliError("--lines and --unique cannot be used together (every job would coalesce)")
    options = {
        "unique": unique,
        "priority": _PRIORITIES[priority],
        "timeout": timeout,
        "lines": lines,
        "at": parse_when(at) if at is not None else None,
    }
    if broadcast and lines:
        raise CliError("--broadcast and --lines cannot be used together")
    if options["at"] is not None and priority != "normal":
        raise CliError("--at jobs have no priority (SUBMIT_JOB_EPOCH)")

    async def main(reactor: Any) -> int:
        client = Client(servers, timeout=timeout, tls=tls)
        try:
            if background or options["at"] is not None:
                return await _background(client, function, payload, options)
            if broadcast:
                return await _broadcast(client, function, payload, options)
            if lines:
                return await _lines(client, function, payload, options)
            return await _foreground(client, function, payload, options)
        finally:
            await client.stop()

    run(main)


__all__ = ["parse_when", "submit"]
