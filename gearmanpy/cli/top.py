"""``gearmanpy top``: a live view of the queues of one or several servers.

It polls each server's admin ``status`` (so gearmand works as well as gearmanpy) once per
``--interval`` and shows every function's queued and running jobs, its workers, and how
fast its jobs in hand (queued + running) grow or shrink per second. On a terminal: a full
screen redrawn in place; ``s`` changes the sort order, ``q`` quits (Ctrl-C too). Off a
terminal, or with ``--once``, it prints one table and exits (status 1 with ``--once`` if a
server could not be asked).
"""

from __future__ import annotations

import os
import sys
import termios
import time
import tty
from collections.abc import Callable
from typing import Any

import attrs
import click
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from zope.interface import implementer

from gearmanpy._connection import ClientTLS
from gearmanpy.admin import AdminClient, FunctionStatus
from gearmanpy.cli.common import describe_error, run, servers_option, tls_options
from gearmanpy.cli.output import console

#: The sort orders ``s`` cycles through, and the key of each (largest first but names).
SORTS: dict[str, Callable[[Row], Any]] = {
    "queued": lambda r: (-r.status.queued, r.status.name),
    "running": lambda r: (-r.status.running, r.status.name),
    "workers": lambda r: (-r.status.workers, r.status.name),
    "rate": lambda r: (-abs(r.rate or 0.0), r.status.name),
    "name": lambda r: (r.status.name, r.server),
}


@attrs.frozen
class Row:
    """One function on one server, with the change of its jobs in hand per second."""

    server: str
    status: FunctionStatus
    rate: float | None


@attrs.define
class Rates:
    """Remembers each function's last total, to turn two polls into a rate."""

    last: dict[tuple[str, str], tuple[float, int]] = attrs.Factory(dict)

    def rows(self, server: str, statuses: list[FunctionStatus], now: float) -> list[Row]:
        """Rows for one server's poll at ``now``: the rate since its previous poll."""
        rows = []
        for status in statuses:
            key = (server, status.name)
            previous = self.last.get(key)
            rate = None
            if previous is not None and now > previous[0]:
                rate = (status.total - previous[1]) / (now - previous[0])
            self.last[key] = (now, status.total)
            rows.append(Row(server, status, rate))
        return rows


def render(rows: list[Row], errors: dict[str, str], sort: str, several: bool, clock: str) -> Group:
    """The screen: a header line, the table, and a line per unreachable server."""
    table = Table(box=None, header_style="bold reverse", expand=False, pad_edge=False)
    if several:
        table.add_column("SERVER", no_wrap=True)
    table.add_column("FUNCTION", no_wrap=True)
    for name in ("QUEUED", "RUNNING", "WORKERS", "CHANGE/s"):
        table.add_column(name, justify="right", no_wrap=True)
    for row in sorted(rows, key=SORTS[sort]):
        s = row.status
        rate = "" if row.rate is None else f"{row.rate:+.1f}"
        cells = [s.name, str(s.queued), str(s.running), str(s.workers), rate]
        table.add_row(*([row.server] if several else []), *cells)
    head = Text(f"gearmanpy top  {clock}  sort: {sort}  (s: sort, q: quit)", style="bold")
    lines = [
        Text(why if server in why else f"{server}: {why}", style="red")
        for server, why in errors.items()
    ]
    return Group(head, table, *lines)


@implementer(IReadDescriptor)
class Keys:
    """Key presses on a terminal's stdin, one character at a time, to ``on_key``."""

    def __init__(self, on_key: Callable[[str], None]) -> None:
        """:param on_key: called with each character typed."""
        self.on_key = on_key

    def fileno(self) -> int:
        """Standard input's descriptor."""
        return sys.stdin.fileno()

    def doRead(self) -> None:
        """Read what was typed."""
        data = os.read(self.fileno(), 64)
        for char in data.decode("utf-8", "ignore"):
            self.on_key(char)

    def connectionLost(self, reason: Failure) -> None:
        """Standard input closed: no more keys."""

    def logPrefix(self) -> str:
        """For Twisted's log."""
        return "keys"


class Top:
    """The poll loop and the screen."""

    def __init__(
        self, reactor: Any, servers: list[str], sort: str, timeout: float,
        tls: ClientTLS | None = None,
    ) -> None:  # fmt: skip
        """One admin client per server."""
        self.reactor = reactor
        self.admins = [AdminClient(s, timeout=timeout, tls=tls) for s in servers]
        self.sort = sort
        self.rates = Rates()
        self.done: Deferred[None] = Deferred()

    def poll(self) -> Deferred[Group]:
        """Ask every server for its status; fires with the screen to show."""
        asks = [admin.status() for admin in self.admins]

        def show(results: list[tuple[bool, Any]]) -> Group:
            now = time.monotonic()
            rows: list[Row] = []
            errors: dict[str, str] = {}
            for admin, (ok, value) in zip(self.admins, results, strict=True):
                if ok:
                    rows += self.rates.rows(admin.name, value, now)
                else:
                    errors[admin.name] = describe_error(value.value)
            stamp = time.strftime("%H:%M:%S")
            return render(rows, errors, self.sort, len(self.admins) > 1, stamp)

        return DeferredList(asks, consumeErrors=True).addCallback(show)  # type: ignore[arg-type]

    def key(self, char: str) -> None:
        """``q`` quits, ``s`` moves to the next sort order."""
        if char in "qQ":
            if not self.done.called:
                self.done.callback(None)
        elif char in "sS":
            names = list(SORTS)
            self.sort = names[(names.index(self.sort) + 1) % len(names)]

    async def close(self) -> None:
        """Close the admin connections."""
        for admin in self.admins:
            await admin.close()


async def live(top: Top, interval: float) -> None:
    """Redraw in place until ``q``; the terminal is put back as it was."""
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd) if sys.stdin.isatty() else None
    keys = Keys(top.key)
    if saved is not None:
        tty.setcbreak(fd)
        top.reactor.addReader(keys)
    screen = Live(console=console(), screen=True, auto_refresh=False)
    screen.start()

    async def tick() -> None:
        screen.update(await top.poll(), refresh=True)

    loop = LoopingCall(lambda: Deferred.fromCoroutine(tick()))
    loop.clock = top.reactor
    loop.start(interval)
    try:
        await top.done
    finally:
        if loop.running:
            loop.stop()
        screen.stop()
        if saved is not None:
            top.reactor.removeReader(keys)
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


EPILOG = """\b
Examples:
  gearmanpy top
  gearmanpy top -s gm1:4730 -s gm2:4730 --sort name
  gearmanpy top --once              # print one table and exit
"""


@click.command("top", epilog=EPILOG)
@servers_option
@click.option(
    "--interval",
    "-i",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option(
    "--sort",
    type=click.Choice(list(SORTS)),
    default="queued",
    show_default=True,
    help="Sort order (press s to change it).",
)
@click.option("--once", is_flag=True, help="Print one table and exit.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds to wait for a server's reply.",
)
@tls_options
def top(
    servers: list[str], interval: float, sort: str, once: bool, timeout: float,
    tls: ClientTLS | None,
) -> None:  # fmt: skip
    """Watch the queues of one or several job servers (gearmanpy or gearmand), live."""

    async def main(reactor: Any) -> int:
        view = Top(reactor, servers, sort, timeout, tls)
        try:
            if once or not sys.stdout.isatty():
                screen = await view.poll()
                console().print(screen)
                return 0 if not once or len(screen.renderables) == 2 else 1
            await live(view, interval)
            return 0
        finally:
            await view.close()

    run(main)


__all__ = ["Rates", "Row", "Top", "render", "top"]
