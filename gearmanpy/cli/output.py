"""How the subcommands print rows: an aligned table for people, JSON for scripts."""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Sequence
from typing import Any

import attrs
import click
from rich.console import Console
from rich.table import Table


def console(stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr): colours only on a terminal, and off a terminal
    wide enough that a table's rows are never folded."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(file=stream, stderr=stderr)
    return Console(file=stream, width=10_000, no_color=True, highlight=False, soft_wrap=True)


def cell(value: object) -> str:
    """One value as table text: lists joined with spaces, booleans as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (tuple, list)):
        return " ".join(str(v) for v in value)
    return str(value)


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], title: str | None = None
) -> None:
    """Print rows under headers, aligned (numbers right-aligned), on stdout."""
    table = Table(title=title, box=None, header_style="bold", pad_edge=False)
    numeric = [bool(rows) and all(isinstance(r[i], int) for r in rows) for i in range(len(headers))]
    for header, right in zip(headers, numeric, strict=True):
        table.add_column(header, justify="right" if right else "left", no_wrap=True)
    for row in rows:
        table.add_row(*(cell(v) for v in row))
    console().print(table)


def to_json(value: Any) -> Any:
    """attrs rows (and lists of them) as plain JSON values; times in ISO 8601."""
    if attrs.has(type(value)):
        return {k: to_json(v) for k, v in attrs.asdict(value, recurse=False).items()}
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


def print_json(value: Any) -> None:
    """Print ``value`` as one JSON document on stdout."""
    click.echo(json.dumps(to_json(value), ensure_ascii=True))


__all__ = ["cell", "console", "print_json", "print_table", "to_json"]
