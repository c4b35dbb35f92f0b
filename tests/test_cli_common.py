"""The command line's pieces that need no server: servers from --server and
GEARMAN_SERVERS, --help on every subcommand, one-line errors for bad arguments, --at
times, the worker's imports and command runner, and top's rates and screen."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gearmanpy.admin import FunctionStatus
from gearmanpy.cli import main
from gearmanpy.cli.common import DEFAULT_SERVER, CliError, parse_servers
from gearmanpy.cli.output import console, to_json
from gearmanpy.cli.submit import parse_when
from gearmanpy.cli.top import Rates, render
from gearmanpy.cli.worker import command_function, load
from gearmanpy.errors import JobFailed


def test_servers_from_options_env_or_default() -> None:
    """--server wins over GEARMAN_SERVERS (libgearman's comma-separated list), which wins
    over the default; endpoint strings pass whole."""
    assert parse_servers((), None) == [DEFAULT_SERVER]
    assert parse_servers((), "a:1, b") == ["a:1", "b"]
    assert parse_servers(("c:2",), "a:1") == ["c:2"]
    assert parse_servers(("a,b:3", "[::1]:4"), None) == ["a", "b:3", "[::1]:4"]
    assert parse_servers(("unix:path=/run/g.sock",), None) == ["unix:path=/run/g.sock"]
    with pytest.raises(CliError, match="bad port"):
        parse_servers(("host:99999",), None)


def test_every_subcommand_has_help_with_examples() -> None:
    """--help works everywhere and shows examples (server's is twistd's own, see interop)."""
    runner = CliRunner()
    for args in (
        [],
        ["submit"],
        ["worker"],
        ["admin"],
        ["admin", "status"],
        ["admin", "maxqueue"],
        ["top"],
    ):
        out = runner.invoke(main, [*args, "--help"])
        assert out.exit_code == 0, out.output
        assert "Usage:" in out.output
        if len(args) == 1 or not args:
            assert "Examples" in out.output or "Quick start" in out.output, args


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit", "-s", "h:0", "f", "x"], "bad port in server address 'h:0'"),
        (["submit", "--at", "soon", "f", "x"], "--at wants a Unix time or an ISO 8601 time"),
        (["submit", "--lines", "-u", "k", "f", "x"], "--lines and --unique cannot be used"),
        (["submit", "--at", "1", "-p", "high", "f", "x"], "--at jobs have no priority"),
        (["admin", "--raw", "--json", "status"], "--raw and --json cannot be used together"),
        (["admin", "maxqueue", "f", "1", "2", "3", "4"], "at most three limits"),
        (["submit", "--broadcast", "--lines", "f", "x"], "--broadcast and --lines cannot be"),
        (["admin", "result"], "give a HANDLE, or --function and --unique"),
        (["admin", "result", "-f", "f"], "give a HANDLE, or --function and --unique"),
        (["admin", "policy-set", "f", "attempts"], "each setting is NAME=VALUE"),
        (["admin", "policy-set", "f", "a=1", "b=2", "c=3", "d=4"], "at most three"),
        (["admin", "dead", "two words"], "FUNCTION must be one word"),
        (["admin", "--ssl-key", "k.pem", "status"], "--ssl-key needs --ssl-certificate"),
        (["submit", "--ssl-ca-file", "/no/ca.pem", "f", "x"], "cannot read the TLS ca file"),
        (["top", "--ssl-certificate", "/no/c.pem"], "cannot read the TLS certificate"),
        (["worker", "-f", "x", "--", "no-such-command-here"], "command not found"),
        (["worker", "nocolon"], "is not MODULE:CALLABLE"),
        (["worker", "no_such_module_xyz:f"], "cannot import no_such_module_xyz"),
    ],
)
def test_bad_arguments_are_one_line(args: list[str], message: str) -> None:
    """A user mistake: exit status non-zero, one line on stderr, no traceback."""
    out = CliRunner().invoke(main, args, input=b"")
    assert out.exit_code != 0
    assert message in out.output
    assert "Traceback" not in out.output
    lines = [line for line in out.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("gearmanpy: error: "), out.output


def test_at_times() -> None:
    """--at takes a Unix time or ISO 8601, local time when no zone is given."""
    assert parse_when("1700000000") == 1700000000.0
    assert parse_when("2030-01-01T00:00:00+00:00") == 1893456000.0
    local = datetime.datetime(2030, 1, 1, 9, 0).astimezone().timestamp()
    assert parse_when("2030-01-01T09:00") == local


def test_worker_loads_functions_and_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MODULE:CALLABLE registers under the callable's name, NAME=... renames it, async
    functions never go to threads, and a Worker attribute hands over its registrations."""
    (tmp_path / "jobs_mod.py").write_text(
        "from gearmanpy import Worker\n"
        "def rev(job): return job.data[::-1]\n"
        "async def later(job): return b'x'\n"
        "worker = Worker(['127.0.0.1:1'])\n"
        "worker.register('up', lambda job: job.data.upper(), timeout=5)\n"
        "value = 3\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    [rev] = load("jobs_mod:rev", threads=True)
    assert (rev.name, rev.thread) == ("rev", True)
    [later] = load("again=jobs_mod:later", threads=True)
    assert (later.name, later.thread) == ("again", False)
    [up] = load("jobs_mod:worker", threads=False)
    assert (up.name, up.timeout) == ("up", 5)
    with pytest.raises(CliError, match="neither a function nor a Worker"):
        load("jobs_mod:value", threads=False)
    with pytest.raises(CliError, match="has no attribute"):
        load("jobs_mod:missing", threads=False)


class _Job:
    """Just what the command runner reads."""

    def __init__(self, data: bytes) -> None:
        self.data = data


def test_command_function() -> None:
    """The payload goes to stdin, stdout comes back; a non-zero status is WORK_FAIL."""
    assert command_function(["rev"])(_Job(b"abc\n")) == b"cba\n"  # type: ignore[arg-type]
    with pytest.raises(JobFailed, match="exited with status 3"):
        command_function(["sh", "-c", "exit 3"])(_Job(b""))  # type: ignore[arg-type]


def test_top_rates_and_screen() -> None:
    """The change per second comes from two polls; rows sort as asked; an unreachable
    server gets its own line."""
    rates = Rates()
    first = rates.rows("s1", [FunctionStatus("a", 10, 2, 1), FunctionStatus("b", 1, 0, 1)], 100.0)
    assert [r.rate for r in first] == [None, None]
    second = rates.rows("s1", [FunctionStatus("a", 4, 2, 1), FunctionStatus("b", 3, 0, 1)], 102.0)
    assert [r.rate for r in second] == [-3.0, 1.0]
    screen = console()
    with screen.capture() as captured:
        screen.print(render(second, {"s2": "cannot reach s2: refused"}, "queued", True, "12:00"))
    text = captured.get().splitlines()
    assert text[0].startswith("gearmanpy top  12:00  sort: queued")
    assert text[1].split() == ["SERVER", "FUNCTION", "QUEUED", "RUNNING", "WORKERS", "CHANGE/s"]
    assert text[2].split() == ["s1", "b", "3", "0", "1", "+1.0"]
    assert text[3].split() == ["s1", "a", "2", "2", "1", "-3.0"]
    assert text[4] == "cannot reach s2: refused"


def test_json_rows() -> None:
    """--json writes rows as plain objects."""
    assert to_json([FunctionStatus("a", 1, 0, 2)]) == [
        {"name": "a", "total": 1, "running": 0, "workers": 2}
    ]
