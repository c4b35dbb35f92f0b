"""``gearmanpy admin``: everything ``gearadmin`` does, against gearmanpy or gearmand.

Each list command prints an aligned table (``--raw``: the server's own lines, as gearadmin
prints them; ``--json``: one JSON document), for each server given. A new admin command
is one entry in :data:`LISTS` (list replies) or one small function below.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import click

from gearmanpy._connection import ClientTLS
from gearmanpy.admin import (
    AdminClient,
    FunctionStatus,
    JobInfo,
    PriorityStatus,
    WorkerInfo,
    parse_jobs,
    parse_priority_status,
    parse_status,
    parse_workers,
)
from gearmanpy.cli.common import CliError, run, servers_option, tls_options
from gearmanpy.cli.output import print_json, print_table


@attrs.frozen
class ListCommand:
    """A list command: its admin line, how to parse its reply, and its table's columns."""

    line: str
    parse: Callable[[list[bytes]], list[Any]]
    headers: tuple[str, ...]
    row: Callable[[Any], tuple[object, ...]]
    help: str


def _status_row(r: FunctionStatus) -> tuple[object, ...]:
    return (r.name, r.queued, r.running, r.workers)


def _priority_row(r: PriorityStatus) -> tuple[object, ...]:
    return (r.name, r.high, r.normal, r.low, r.workers)


def _worker_row(r: WorkerInfo) -> tuple[object, ...]:
    return (r.fd, r.ip, r.client_id, r.functions)


def _job_row(r: JobInfo) -> tuple[object, ...]:
    return (r.handle, r.retries, r.ignored, r.persisted)


#: The list commands, by subcommand name.
LISTS: dict[str, ListCommand] = {
    "status": ListCommand(
        "status",
        parse_status,
        ("FUNCTION", "QUEUED", "RUNNING", "WORKERS"),
        _status_row,
        "Functions with their queued and running jobs and their workers.",
    ),
    "priority-status": ListCommand(
        "prioritystatus",
        parse_priority_status,
        ("FUNCTION", "HIGH", "NORMAL", "LOW", "WORKERS"),
        _priority_row,
        "Queued jobs per function and priority.",
    ),
    "workers": ListCommand(
        "workers",
        parse_workers,
        ("FD", "IP", "CLIENT ID", "FUNCTIONS"),
        _worker_row,
        "Every connection (workers, clients, admin) and the functions it registered.",
    ),
    "jobs": ListCommand(
        "show jobs",
        parse_jobs,
        ("HANDLE", "RETRIES", "IGNORED", "PERSISTED"),
        _job_row,
        "Every job the server holds.",
    ),
    "unique-jobs": ListCommand(
        "show unique jobs",
        lambda lines: [line.decode("utf-8", "surrogateescape") for line in lines],
        ("UNIQUE",),
        lambda u: (u,),
        "The unique key of every job (empty for none).",
    ),
}


@attrs.frozen
class Options:
    """The ``admin`` group's options, shared by its subcommands."""

    servers: list[str]
    raw: bool
    json: bool
    timeout: float
    tls: ClientTLS | None = None


def each_server(
    options: Options,
    ask: Callable[[AdminClient], Awaitable[None]],
    after: Callable[[], None] | None = None,
) -> None:
    """Run ``ask`` against each server in turn, then ``after`` (which may raise a
    :class:`CliError`), then exit 0 (or one line and 1)."""

    async def main(reactor: Any) -> int:
        for server in options.servers:
            admin = AdminClient(server, timeout=options.timeout, tls=options.tls)
            try:
                if len(options.servers) > 1 and not options.json:
                    click.echo(f"# {server}")
                await ask(admin)
            finally:
                await admin.close()
        if after is not None:
            after()
        return 0

    run(main)


def show_list(options: Options, spec: ListCommand, line: str | None = None) -> None:
    """Send a list command (``spec.line``, or ``line`` for one with arguments) to each server
    and print its reply: a table, the raw lines, or JSON."""

    async def ask(admin: AdminClient) -> None:
        lines = await admin.command(line or spec.line)
        if options.raw:
            for reply in lines:
                click.echo(reply.decode("utf-8", "surrogateescape"))
            click.echo(".")
            return
        rows = spec.parse(lines)
        if options.json:
            print_json(rows)
        else:
            print_table(spec.headers, [spec.row(r) for r in rows])

    each_server(options, ask)


def _list_command(name: str, spec: ListCommand) -> click.Command:
    """A click subcommand printing one list reply."""

    @click.pass_obj
    def command(options: Options) -> None:
        show_list(options, spec)

    command.__doc__ = spec.help
    return click.command(name, help=spec.help)(command)


def ok_command(options: Options, line: str, value: bool = False) -> None:
    """Send a one-line command; print its value (or ``OK``) as gearadmin does."""

    async def ask(admin: AdminClient) -> None:
        reply = await admin.command_ok(line)
        text = reply.decode("utf-8", "surrogateescape")
        if options.json:
            print_json({"server": admin.name, "reply": text if value else "OK"})
        elif options.raw and value:
            click.echo(f"OK {text}")
        else:
            click.echo(text if value else "OK")

    each_server(options, ask)


def one_word(value: str, what: str) -> str:
    """An argument that must be one admin word."""
    if not value or any(c in value for c in " \r\n\0"):
        raise CliError(f"{what} must be one word, without spaces: {value!r}")
    return value


EPILOG = """\b
Examples:
  gearmanpy admin status
  gearmanpy admin -s gm1:4730 -s gm2:4730 workers
  gearmanpy admin --json jobs | jq .
  gearmanpy admin cancel H:host:42
  gearmanpy admin maxqueue resize 100
  gearmanpy admin dead                      # gearmanpy's own: the dead set
  gearmanpy admin retry-dead resize
"""


@click.group("admin", epilog=EPILOG)
@servers_option
@click.option("--raw", is_flag=True, help="Print the server's reply lines as they came.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds to wait for each reply.",
)
@tls_options
@click.pass_context
def admin(
    ctx: click.Context, servers: list[str], raw: bool, as_json: bool, timeout: float,
    tls: ClientTLS | None,
) -> None:  # fmt: skip
    """Ask job servers what gearadmin asks (gearmanpy and gearmand alike)."""
    if raw and as_json:
        raise CliError("--raw and --json cannot be used together")
    ctx.obj = Options(servers, raw, as_json, timeout, tls)


for _name, _spec in LISTS.items():
    admin.add_command(_list_command(_name, _spec))


@admin.command()
@click.pass_obj
def version(options: Options) -> None:
    """The server's version."""
    ok_command(options, "version", value=True)


@admin.command()
@click.pass_obj
def getpid(options: Options) -> None:
    """The server's process id."""
    ok_command(options, "getpid", value=True)


@admin.command()
@click.pass_obj
def verbose(options: Options) -> None:
    """The server's log level."""
    ok_command(options, "verbose", value=True)


@admin.command()
@click.argument("handle")
@click.pass_obj
def cancel(options: Options, handle: str) -> None:
    """Cancel a job by handle: its waiting clients get WORK_FAIL."""
    ok_command(options, f"cancel job {one_word(handle, 'HANDLE')}")


@admin.command()
@click.argument("function")
@click.pass_obj
def drop(options: Options, function: str) -> None:
    """Forget a function that no worker serves and no job runs for."""
    ok_command(options, f"drop function {one_word(function, 'FUNCTION')}")


@admin.command()
@click.argument("function")
@click.pass_obj
def create(options: Options, function: str) -> None:
    """Make a function known before any worker or job."""
    ok_command(options, f"create function {one_word(function, 'FUNCTION')}")


@admin.command()
@click.argument("function")
@click.argument("limits", nargs=-1, type=click.IntRange(min=0))
@click.pass_obj
def maxqueue(options: Options, function: str, limits: tuple[int, ...]) -> None:
    """Limit a function's queue: LIMIT for all priorities, or HIGH NORMAL [LOW]; none or 0
    for no limit."""
    if len(limits) > 3:
        raise CliError("maxqueue takes at most three limits (HIGH NORMAL LOW)")
    words = [f"maxqueue {one_word(function, 'FUNCTION')}", *(str(n) for n in limits)]
    ok_command(options, " ".join(words))


@admin.command()
@click.option("--graceful", is_flag=True, help="Let running jobs finish first.")
@click.pass_obj
def shutdown(options: Options, graceful: bool) -> None:
    """Stop the server (gearmanpy only; from loopback or a unix socket)."""
    ok_command(options, "shutdown graceful" if graceful else "shutdown")


__all__ = [
    "LISTS",
    "ListCommand",
    "Options",
    "admin",
    "each_server",
    "ok_command",
    "one_word",
    "show_list",
]
