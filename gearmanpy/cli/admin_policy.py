"""``gearmanpy admin``'s commands for gearmanpy's own admin protocol: the dead set, scheduled
and recurring jobs, kept results, the failure policy, ``stats`` and the permissions (``acl``).

gearmand has none of them (it answers ``ERR UNKNOWN_COMMAND``, printed as one line). They
print and take options as gearadmin's commands do (:mod:`.admin`): a table, ``--raw`` lines
or ``--json``.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Callable

import click

from gearmanpy._admin_rows import text
from gearmanpy.admin import (
    AdminClient,
    DeadJob,
    KeptResult,
    RecurringJob,
    ScheduledJob,
    parse_dead,
    parse_recurring,
    parse_scheduled,
    parse_settings,
    parse_stats,
)
from gearmanpy.cli.admin import ListCommand, Options, each_server, ok_command, one_word, show_list
from gearmanpy.cli.common import CliError
from gearmanpy.cli.output import print_json, print_table


def _when(value: datetime.datetime | None) -> str:
    """A row's time as the server wrote it (ISO 8601 UTC, ``-`` for none)."""
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else "-"


def _dead_row(r: DeadJob) -> tuple[object, ...]:
    return (r.handle, r.function, r.unique, r.attempts, _when(r.failed_at), r.error)


def _scheduled_row(r: ScheduledJob) -> tuple[object, ...]:
    return (r.handle, r.function, r.unique, _when(r.due), r.priority, r.attempts, r.error or "-")


def _recurring_row(r: RecurringJob) -> tuple[object, ...]:
    return (r.name, r.cron, r.function, r.unique, _when(r.next_run))


DEAD = ListCommand(
    "show dead",
    parse_dead,
    ("HANDLE", "FUNCTION", "UNIQUE", "ATTEMPTS", "FAILED", "ERROR"),
    _dead_row,
    "The dead set (of FUNCTION, or all): failed background jobs, oldest first.",
)
SCHEDULED = ListCommand(
    "show scheduled",
    parse_scheduled,
    ("HANDLE", "FUNCTION", "UNIQUE", "DUE", "PRIORITY", "ATTEMPTS", "LAST ERROR"),
    _scheduled_row,
    "Jobs waiting for their time (of FUNCTION, or all): epoch jobs and retries, soonest first.",
)
RECURRING = ListCommand(
    "show recurring",
    parse_recurring,
    ("NAME", "CRON", "FUNCTION", "UNIQUE", "NEXT RUN"),
    _recurring_row,
    "The configured recurring jobs and when each next submits.",
)
STATS = ListCommand(
    "stats",
    lambda lines: list(parse_stats(lines).items()),
    ("NAME", "VALUE"),
    lambda item: item,
    "The server's counters and gauges, then each function's.",
)
POLICY = ListCommand(
    "show policy",
    lambda lines: list(parse_settings(lines).items()),
    ("SETTING", "VALUE"),
    lambda item: item,
    "The failure policy in force for FUNCTION, setting by setting.",
)


def _with(command: str, *words: tuple[str | None, str]) -> str:
    """``command`` and its given argument words (each checked to be one word)."""
    return " ".join([command, *(one_word(w, what) for w, what in words if w is not None)])


@click.command("dead", help=DEAD.help)
@click.argument("function", required=False)
@click.pass_obj
def dead(options: Options, function: str | None) -> None:
    show_list(options, DEAD, _with(DEAD.line, (function, "FUNCTION")))


@click.command("scheduled", help=SCHEDULED.help)
@click.argument("function", required=False)
@click.pass_obj
def scheduled(options: Options, function: str | None) -> None:
    show_list(options, SCHEDULED, _with(SCHEDULED.line, (function, "FUNCTION")))


@click.command("recurring", help=RECURRING.help)
@click.pass_obj
def recurring(options: Options) -> None:
    show_list(options, RECURRING)


@click.command("stats", help=STATS.help)
@click.pass_obj
def stats(options: Options) -> None:
    show_list(options, STATS)


@click.command("policy", help=POLICY.help)
@click.argument("function")
@click.pass_obj
def policy(options: Options, function: str) -> None:
    show_list(options, POLICY, _with(POLICY.line, (function, "FUNCTION")))


@click.command("retry-dead")
@click.argument("what", metavar="HANDLE|FUNCTION|all")
@click.pass_obj
def retry_dead(options: Options, what: str) -> None:
    """Queue dead jobs again (one by handle, a function's, or all), attempts reset."""
    ok_command(options, _with("retry dead", (what, "HANDLE|FUNCTION|all")))


@click.command("drop-dead")
@click.argument("what", metavar="HANDLE|FUNCTION|all")
@click.pass_obj
def drop_dead(options: Options, what: str) -> None:
    """Forget dead jobs (one by handle, a function's, or all)."""
    ok_command(options, _with("drop dead", (what, "HANDLE|FUNCTION|all")))


@click.command("cancel-unique")
@click.argument("function")
@click.argument("unique")
@click.pass_obj
def cancel_unique(options: Options, function: str, unique: str) -> None:
    """Cancel a job by function and unique (a scheduled one too)."""
    ok_command(options, _with("cancel unique", (function, "FUNCTION"), (unique, "UNIQUE")))


@click.command("policy-set")
@click.argument("pattern")
@click.argument("settings", nargs=-1, required=True, metavar="NAME=VALUE...")
@click.pass_obj
def policy_set(options: Options, pattern: str, settings: tuple[str, ...]) -> None:
    """Change the policy of the functions matching PATTERN (a glob) until restart or reset;
    at most three settings per command."""
    if len(settings) > 3:
        raise CliError("policy-set takes at most three NAME=VALUE settings per command")
    if not all("=" in s for s in settings):
        raise CliError("each setting is NAME=VALUE, e.g. attempts=5")
    words = [(pattern, "PATTERN"), *((s, "NAME=VALUE") for s in settings)]
    ok_command(options, _with("policy set", *words))


@click.command("policy-reset")
@click.argument("pattern")
@click.pass_obj
def policy_reset(options: Options, pattern: str) -> None:
    """Put the functions matching PATTERN back to the configured policy."""
    ok_command(options, _with("policy reset", (pattern, "PATTERN")))


ACL = ListCommand(
    "acl list",
    lambda lines: [tuple(text(f) for f in line.split(b"\t", 2)) for line in lines],
    ("WHO", "PERMISSION", "FUNCTIONS"),
    lambda row: row,
    "The permissions in force (--acl): who may submit, register, read status, administer.",
)


@click.group("acl")
def acl() -> None:
    """Show or change the server's permissions (--acl) at run time; needs ``admin``."""


@acl.command("list", help=ACL.help)
@click.pass_obj
def acl_list(options: Options) -> None:
    show_list(options, ACL)


def _grant_command(verb: str, help: str) -> click.Command:
    """``acl grant`` or ``acl revoke``: WHO PERMISSION GLOB."""

    @click.argument("who")
    @click.argument("permission", type=click.Choice(["submit", "register", "status", "admin"]))
    @click.argument("glob")
    @click.pass_obj
    def command(options: Options, who: str, permission: str, glob: str) -> None:
        words = ((who, "WHO"), (permission, "PERMISSION"), (glob, "GLOB"))
        ok_command(options, _with(f"acl {verb}", *words))

    return click.command(verb, help=help)(command)


acl.add_command(
    _grant_command("grant", "Grant WHO (cert:NAME, an address, a CIDR, loopback, unix) "
                   "PERMISSION on the functions matching GLOB, until the next reload.")
)  # fmt: skip
acl.add_command(_grant_command("revoke", "Take back a grant made with acl grant or the file."))


@acl.command("reload")
@click.pass_obj
def acl_reload(options: Options) -> None:
    """Read the --acl file again (as SIGHUP does), dropping run-time changes."""
    ok_command(options, "acl reload")


def _result_fields(r: KeptResult) -> list[tuple[str, object]]:
    """A kept result as (field, value) rows."""
    return [
        ("handle", r.handle),
        ("function", r.function),
        ("unique", r.unique),
        ("outcome", r.outcome),
        ("attempts", str(r.attempts)),
        ("status", f"{r.numerator}/{r.denominator}"),
        ("submitted", _when(r.submitted)),
        ("started", _when(r.started)),
        ("finished", _when(r.finished)),
        ("expires", _when(r.expires)),
    ]


@click.command("result")
@click.argument("handle", required=False)
@click.option("--function", "-f", help="With --unique: find the result by function and unique.")
@click.option("--unique", "-u", help="The job's unique key (with --function).")
@click.option("--data-only", is_flag=True, help="Print only the result's data (binary-safe).")
@click.pass_obj
def result(
    options: Options, handle: str | None, function: str | None, unique: str | None,
    data_only: bool,
) -> None:  # fmt: skip
    """A background job's kept result (keep_results policy): its outcome, times and data.
    Exit status 1 if no server keeps one."""
    if (handle is None) == (function is None or unique is None):
        raise CliError("give a HANDLE, or --function and --unique")
    found: list[KeptResult] = []

    async def ask(admin: AdminClient) -> None:
        if handle is not None:
            kept = await admin.show_result(one_word(handle, "HANDLE"))
        else:
            assert function is not None and unique is not None
            kept = await admin.show_result(
                function=one_word(function, "FUNCTION"), unique=one_word(unique, "UNIQUE")
            )
        if kept is None:
            return
        found.append(kept)
        if data_only:
            sys.stdout.buffer.write(kept.data)
        elif options.json:
            print_json(kept)
        elif options.raw:
            for name, value in _result_fields(kept):
                click.echo(f"{name}\t{value}")
            click.echo(".")
        else:
            print_table(("FIELD", "VALUE"), [*_result_fields(kept), ("data", _show(kept.data))])

    each_server(options, ask, after=_none_found(found))


def _none_found(found: list[KeptResult]) -> Callable[[], None]:
    """A check run after every server was asked: none kept the result → exit status 1."""

    def check() -> None:
        if not found:
            raise CliError("no result is kept for that job")

    return check


def _show(data: bytes) -> str:
    """Result data for a table: text as it is, binary data as its length."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(data)} bytes, binary: use --data-only>"
    return text if text.isprintable() else repr(text)


#: The subcommands this module adds to ``gearmanpy admin``.
COMMANDS: list[click.Command] = [
    dead,
    retry_dead,
    drop_dead,
    scheduled,
    recurring,
    cancel_unique,
    result,
    policy,
    policy_set,
    policy_reset,
    stats,
    acl,
]

__all__ = ["COMMANDS"]
