# -*- test-case-name: tests.test_admin_text -*-
"""The admin text protocol: parse command lines and format replies byte-exact with gearmand.

gearmand 1.1.20's replies differ in their line endings (``OK\\r\\n`` against ``OK x\\n``
against list replies ending ``.\\n``); clients such as gearadmin, Perl's Gearman::Client and
python-gearman were written against those exact bytes, so they are reproduced here
(protocol.md §4). Nothing here imports Twisted.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from gearmanpy.errors import AdminCommandError

#: gearmand closes the connection on a sixth word; so do we.
MAX_ADMIN_WORDS = 5


@attrs.frozen
class AdminCommand:
    """One admin text line split into words, as gearmand splits it.

    :ivar words: the words, case preserved; ``name`` is the first one lowercased.
    """

    words: tuple[bytes, ...]

    @property
    def name(self) -> bytes:
        """The command word, lowercased (gearmand's commands are case-insensitive)."""
        return self.words[0].lower() if self.words else b""

    @property
    def args(self) -> tuple[bytes, ...]:
        """The words after the command word."""
        return self.words[1:]


def parse_admin_line(line: bytes) -> AdminCommand:
    """Split one admin line (without its ``\\n``) into an :class:`AdminCommand`.

    One ``\\r`` before the newline is dropped. Words are separated by spaces; a run of spaces
    counts as one separator and a leading space yields an empty first word. TAB is not a
    separator.

    :raises AdminCommandError: if the line has more than :data:`MAX_ADMIN_WORDS` words.
    """
    if line.endswith(b"\r"):
        line = line[:-1]
    words = [w for w in line.split(b" ") if w]
    if line.startswith(b" "):
        words.insert(0, b"")
    if len(words) > MAX_ADMIN_WORDS:
        raise AdminCommandError(f"admin command with {len(words)} words (at most 5)")
    return AdminCommand(tuple(words))


def format_command(*words: bytes) -> bytes:
    """Encode an admin command line the way gearadmin sends it (``\\r\\n``-terminated)."""
    return b" ".join(words) + b"\r\n"


def ok() -> bytes:
    """The bare success reply of commands that change state."""
    return b"OK\r\n"


def ok_value(value: bytes) -> bytes:
    """The one-line success reply carrying a value (``version``, ``getpid``, ``verbose``)."""
    return b"OK " + value + b"\n"


def error(code: bytes, text: bytes | None = None) -> bytes:
    """An ``ERR`` reply, with an optional text after the code."""
    if text is None:
        return b"ERR " + code + b"\r\n"
    return b"ERR " + code + b" " + text + b"\r\n"


def unknown_command(word: bytes) -> bytes:
    """gearmand's reply to an unknown command word (no separator before the word)."""
    return error(b"UNKNOWN_COMMAND", b"Unknown+server+command" + word.split(b"\0", 1)[0])


def invalid_arguments(command: bytes) -> bytes:
    """gearmand's reply to a known command given the wrong number of words."""
    return error(
        b"INVALID_ARGUMENTS",
        b"An+incomplete+set+of+arguments+was+sent+to+this+command+" + command,
    )


def invalid_arguments_line(message: bytes) -> bytes:
    """The reply to an admin line that cannot be parsed (too many words): ``message`` with
    ``+`` for spaces, as gearmand writes its texts; the connection then closes."""
    return error(b"INVALID_ARGUMENTS", message.replace(b" ", b"+"))


def format_status(rows: Iterable[tuple[bytes, int, int, int]]) -> bytes:
    """``status``: ``NAME\\tTOTAL\\tRUNNING\\tWORKERS`` per function, then ``.``."""
    return (
        b"".join(
            b"%s\t%d\t%d\t%d\n" % (name, total, running, workers)
            for name, total, running, workers in rows
        )
        + b".\n"
    )


def format_priority_status(rows: Iterable[tuple[bytes, int, int, int, int]]) -> bytes:
    """``prioritystatus``: ``NAME\\tHIGH\\tNORMAL\\tLOW\\tWORKERS`` per function, then ``.``."""
    return (
        b"".join(
            b"%s\t%d\t%d\t%d\t%d\n" % (name, high, normal, low, workers)
            for name, high, normal, low, workers in rows
        )
        + b".\n"
    )


def format_workers(rows: Iterable[tuple[int, bytes, bytes, Iterable[bytes]]]) -> bytes:
    """``workers``: ``FD IP ID :`` and `` FUNC`` per registration, per connection, then ``.``."""
    lines = []
    for fd, ip, client_id, functions in rows:
        lines.append(b"%d %s %s :%s\n" % (fd, ip, client_id, b"".join(b" " + f for f in functions)))
    return b"".join(lines) + b".\n"


def format_show_jobs(rows: Iterable[tuple[bytes, int, bool, bool]]) -> bytes:
    """``show jobs``: ``HANDLE\\tRETRIES\\tIGNORED\\tPERSISTED`` per job, then ``.``."""
    return (
        b"".join(
            b"%s\t%d\t%d\t%d\n" % (handle, retries, int(ignored), int(persisted))
            for handle, retries, ignored, persisted in rows
        )
        + b".\n"
    )


def format_show_unique_jobs(uniques: Iterable[bytes]) -> bytes:
    """``show unique jobs``: one unique per line (empty for none), then ``.``."""
    return b"".join(u + b"\n" for u in uniques) + b".\n"


def format_list(lines: Iterable[bytes]) -> bytes:
    """A generic list reply: one line each, then ``.``."""
    return b"".join(line + b"\n" for line in lines) + b".\n"


__all__ = [
    "MAX_ADMIN_WORDS",
    "AdminCommand",
    "error",
    "format_command",
    "format_list",
    "format_priority_status",
    "format_show_jobs",
    "format_show_unique_jobs",
    "format_status",
    "format_workers",
    "invalid_arguments",
    "invalid_arguments_line",
    "ok",
    "ok_value",
    "parse_admin_line",
    "unknown_command",
]
