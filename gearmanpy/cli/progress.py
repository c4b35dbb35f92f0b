"""A foreground job's WORK_STATUS and WORK_WARNING on stderr: a progress bar a person sees
on a terminal, plain lines in a log or a pipe."""

from __future__ import annotations

import sys

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from gearmanpy.cli.output import console


class StatusDisplay:
    """Shows one job's progress on stderr; the bar appears with the first WORK_STATUS."""

    def __init__(self, function: str, terminal: bool | None = None) -> None:
        """:param terminal: draw a bar (default: when stderr is a terminal)."""
        self._function = function
        self._terminal = sys.stderr.isatty() if terminal is None else terminal
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        #: Data went to the terminal without a line end: the bar must start below it.
        self._open_line = False

    def status(self, numerator: int, denominator: int) -> None:
        """A WORK_STATUS: move the bar, or print ``status N/D``."""
        if not self._terminal:
            click.echo(f"status {numerator}/{denominator}", err=True)
            return
        if self._progress is None:
            if self._open_line:
                sys.stdout.write("\n")
                sys.stdout.flush()
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                console=console(stderr=True),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self._function, total=max(denominator, 1))
        assert self._task is not None
        self._progress.update(self._task, completed=numerator, total=max(denominator, 1))
        self._progress.refresh()

    def data(self, data: bytes) -> None:
        """A WORK_DATA chunk for stdout: raw bytes, unless the bar is drawn on the same
        terminal; then as text through the bar's console, which keeps it above the bar."""
        if self._progress is not None and sys.stdout.isatty():
            sys.stdout.write(data.decode("utf-8", "replace"))
            sys.stdout.flush()
            return
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        if data and sys.stdout.isatty():
            self._open_line = not data.endswith(b"\n")

    def warning(self, data: bytes) -> None:
        """A WORK_WARNING: one ``warning: ...`` line on stderr (above the bar)."""
        text = f"warning: {data.decode('utf-8', 'replace')}"
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            click.echo(text, err=True)

    def close(self) -> None:
        """The job ended: leave the bar as it last was, and the cursor below it."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


__all__ = ["StatusDisplay"]
