"""Tests for :mod:`gearmanpy.protocol.admin`: parsing rules and byte-exact replies.

Parsing follows protocol.md §4.1; every reply is compared with the bytes gearmand 1.1.20 sent
in the captures of §4.2-4.3.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gearmanpy.errors import AdminCommandError
from gearmanpy.protocol import admin
from gearmanpy.protocol.admin import parse_admin_line
from tests.strategies import admin_words

# --- parsing (§4.1) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, words",
    [
        (b"status", (b"status",)),
        (b"status\r", (b"status",)),
        (b"show jobs", (b"show", b"jobs")),
        (b"show   unique    jobs", (b"show", b"unique", b"jobs")),
        (b" status", (b"", b"status")),
        (b"   status", (b"", b"status")),
        (b"status\tx", (b"status\tx",)),
        (b"\tstatus", (b"\tstatus",)),
        (b"", ()),
        (b"\r", ()),
        (b"status\r\r", (b"status\r",)),
        (b"cancel job H:vm:1", (b"cancel", b"job", b"H:vm:1")),
        (b"maxqueue f 1 2 3", (b"maxqueue", b"f", b"1", b"2", b"3")),
    ],
    ids=[
        "one-word",
        "crlf",
        "two-words",
        "space-runs",
        "leading-space",
        "leading-spaces",
        "tab-not-separator",
        "leading-tab",
        "empty",
        "cr-only",
        "one-cr-removed",
        "cancel",
        "five-words",
    ],
)
def test_parse_words(line: bytes, words: tuple[bytes, ...]) -> None:
    """An admin line splits into words by the rules of protocol.md §4.1."""
    assert parse_admin_line(line).words == words


@pytest.mark.parametrize("word", [b"status", b"STATUS", b"Status", b"sTaTuS"])
def test_command_name_is_case_insensitive(word: bytes) -> None:
    """The command name is the first word lowercased; the words keep their case."""
    command = parse_admin_line(word + b" Foo")
    assert command.name == b"status"
    assert command.words == (word, b"Foo")
    assert command.args == (b"Foo",)


def test_empty_line_has_empty_name() -> None:
    """An empty line parses to a command with no words and an empty name."""
    command = parse_admin_line(b"")
    assert command.name == b""
    assert command.args == ()


def test_leading_space_gives_empty_command_word() -> None:
    """A leading space makes the command word empty, so the line is an unknown command."""
    command = parse_admin_line(b" status")
    assert command.name == b""
    assert command.args == (b"status",)


@pytest.mark.parametrize("line", [b"a b c d e f", b"a b c d e f g", b" a b c d e"])
def test_six_words_rejected(line: bytes) -> None:
    """A sixth word (the empty word of a leading space included) raises AdminCommandError."""
    with pytest.raises(AdminCommandError):
        parse_admin_line(line)


@given(
    st.lists(admin_words, min_size=1, max_size=5),
    st.lists(st.integers(1, 4), min_size=5, max_size=5),
    st.sampled_from([b"", b"\r"]),
)
def test_parse_joined_words(words: list[bytes], gaps: list[int], ending: bytes) -> None:
    """Words joined by runs of spaces, with or without a final CR, parse back to the words."""
    line = words[0]
    for word, gap in zip(words[1:], gaps[: len(words) - 1], strict=True):
        line += b" " * gap + word
    command = parse_admin_line(line + ending)
    assert command.words == tuple(words)
    assert command.name == words[0].lower()


def test_format_command_uses_crlf() -> None:
    """Commands are sent the way gearadmin sends them: space-joined, ending ``\\r\\n``."""
    assert admin.format_command(b"cancel", b"job", b"H:x:1") == b"cancel job H:x:1\r\n"
    assert parse_admin_line(admin.format_command(b"status")[:-1]).words == (b"status",)


# --- replies, byte-exact with the captures of §4.3 --------------------------------------


def test_status_sample() -> None:
    """``status`` -> ``lgrev\\t0\\t0\\t0\\nmqa\\t9\\t0\\t0\\n.\\n``."""
    rows = [(b"lgrev", 0, 0, 0), (b"mqa", 9, 0, 0)]
    assert admin.format_status(rows) == b"lgrev\t0\t0\t0\nmqa\t9\t0\t0\n.\n"


def test_status_empty() -> None:
    """A server without functions answers ``status`` with the terminator line alone."""
    assert admin.format_status([]) == b".\n"


def test_priority_status_sample() -> None:
    """``prioritystatus`` -> ``p\\t2\\t2\\t2\\t0\\n.\\n``."""
    assert admin.format_priority_status([(b"p", 2, 2, 2, 0)]) == b"p\t2\t2\t2\t0\n.\n"


def test_workers_sample() -> None:
    """``workers`` -> ``38 127.0.0.1 my worker id :\\n39 127.0.0.1 - :\\n.\\n``."""
    rows: list[tuple[int, bytes, bytes, list[bytes]]] = [
        (38, b"127.0.0.1", b"my worker id", []),
        (39, b"127.0.0.1", b"-", []),
    ]
    assert admin.format_workers(rows) == b"38 127.0.0.1 my worker id :\n39 127.0.0.1 - :\n.\n"


def test_workers_with_functions() -> None:
    """Each registration follows the colon after one space: ``40 127.0.0.1 - : pC pB pA``."""
    rows = [(40, b"127.0.0.1", b"-", [b"pC", b"pB", b"pA"])]
    assert admin.format_workers(rows) == b"40 127.0.0.1 - : pC pB pA\n.\n"


def test_show_jobs_sample() -> None:
    """``show jobs`` -> ``H:vm:1\\t0\\t0\\t1\\nH:vm:2\\t1\\t0\\t0\\n.\\n``."""
    rows = [(b"H:vm:1", 0, False, True), (b"H:vm:2", 1, False, False)]
    assert admin.format_show_jobs(rows) == b"H:vm:1\t0\t0\t1\nH:vm:2\t1\t0\t0\n.\n"


def test_show_unique_jobs_sample() -> None:
    """``show unique jobs`` -> ``\\n\\nu1\\n.\\n`` (jobs without a unique give empty lines)."""
    assert admin.format_show_unique_jobs([b"", b"", b"u1"]) == b"\n\nu1\n.\n"


def test_format_list() -> None:
    """A generic list reply is one line per item, then ``.``."""
    assert admin.format_list([b"a", b"b c"]) == b"a\nb c\n.\n"
    assert admin.format_list([]) == b".\n"


def test_cancel_unknown_job_sample() -> None:
    """``cancel job H:x:1`` for an unknown handle -> ``ERR UNKNOWN_JOB\\r\\n``."""
    assert admin.error(b"UNKNOWN_JOB") == b"ERR UNKNOWN_JOB\r\n"


def test_ok_sample() -> None:
    """``maxqueue abc 5`` -> ``OK\\r\\n``."""
    assert admin.ok() == b"OK\r\n"


def test_version_sample() -> None:
    """``version`` -> ``OK 1.1.20+ds\\n`` (one-line values end in a bare ``\\n``)."""
    assert admin.ok_value(b"1.1.20+ds") == b"OK 1.1.20+ds\n"
    assert admin.ok_value(b"12345") == b"OK 12345\n"


def test_unknown_command_sample() -> None:
    """``foo`` -> ``ERR UNKNOWN_COMMAND Unknown+server+commandfoo\\r\\n`` (no separator)."""
    assert admin.unknown_command(b"foo") == b"ERR UNKNOWN_COMMAND Unknown+server+commandfoo\r\n"


@pytest.mark.parametrize(
    "word, reply",
    [
        (b"", b"ERR UNKNOWN_COMMAND Unknown+server+command\r\n"),
        (b"show", b"ERR UNKNOWN_COMMAND Unknown+server+commandshow\r\n"),
        (b"cancel", b"ERR UNKNOWN_COMMAND Unknown+server+commandcancel\r\n"),
        (b"shutdown", b"ERR UNKNOWN_COMMAND Unknown+server+commandshutdown\r\n"),
        (b"ab\0cd", b"ERR UNKNOWN_COMMAND Unknown+server+commandab\r\n"),
    ],
    ids=["empty", "show", "cancel", "shutdown", "nul-cut"],
)
def test_unknown_command_variants(word: bytes, reply: bytes) -> None:
    """The unknown-command reply appends the word, cut at the first NUL (§4.2)."""
    assert admin.unknown_command(word) == reply


@pytest.mark.parametrize("command", [b"create", b"drop", b"maxqueue"])
def test_invalid_arguments(command: bytes) -> None:
    """A known command with the wrong arity gets gearmand's INVALID_ARGUMENTS reply."""
    assert admin.invalid_arguments(command) == (
        b"ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+"
        + command
        + b"\r\n"
    )


@pytest.mark.parametrize(
    "args, reply",
    [
        ((b"UNKNOWN_ERROR",), b"ERR UNKNOWN_ERROR\r\n"),
        ((b"UNKNOWN_SHOW_ARGUMENTS",), b"ERR UNKNOWN_SHOW_ARGUMENTS\r\n"),
        ((b"function", b"not found"), b"ERR function not found\r\n"),
        (
            (b"there", b"are still connected workers or executing clients"),
            b"ERR there are still connected workers or executing clients\r\n",
        ),
    ],
    ids=["unknown-error", "show-args", "drop-not-found", "drop-busy"],
)
def test_error_replies(args: tuple[bytes, ...], reply: bytes) -> None:
    """ERR replies end in ``\\r\\n`` and put one space between the code and any text."""
    assert admin.error(*args) == reply
