"""The ``stats`` admin command: the server's counters and gauges as ``name value`` lines."""

from __future__ import annotations

from typing import Any

import attrs

from gearmanpy.protocol.admin import AdminCommand
from gearmanpy.server.admin import AdminCommands
from gearmanpy.server.jobs import GRAB_PLAIN, SERVER_WIDE_COUNTERS, JobCounters
from tests.readme import code_block_after
from tests.serverhelpers import RecordingPeer, make_core


class Sink:
    """Keeps what the admin commands send."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def hold(self) -> list[Any]:
        raise AssertionError("admin replies are never held")

    def release(self, slot: list[Any], data: bytes) -> None:
        raise AssertionError("admin replies are never held")

    def stop(self) -> None:
        pass


def stats(commands: AdminCommands) -> list[bytes]:
    """Send ``stats`` from a new admin connection; return the reply's lines."""
    sink = Sink()
    peer = commands.core.connect(sink, lambda: None)
    commands.handle(peer, AdminCommand((b"stats",)))
    commands.core.disconnect(peer)
    (reply,) = sink.sent
    assert reply.endswith(b"\n.\n")
    return reply.split(b"\n")[:-2]


def test_stats_lines() -> None:
    """Gauges, server-wide counters, then each function's; counts match the jobs run."""
    core, _ = make_core()
    client, worker = RecordingPeer(core), RecordingPeer(core)
    worker.can_do(b"rev")
    client.submit(b"rev", b"a")
    client.submit(b"rev", b"b", background=True)
    _, args = worker.grab(GRAB_PLAIN)
    core.work_complete(worker.peer, args[0], b"ok")
    core.cancel(client.submit(b"rev", b"c", background=True))
    lines = stats(AdminCommands(core))
    values = dict(line.split(b" ") for line in lines)
    assert all(v.isdigit() for v in values.values())
    assert values[b"connections"] == b"3" and values[b"workers"] == b"1"
    assert values[b"jobs"] == b"1"
    assert (values[b"submitted"], values[b"completed"], values[b"cancelled"]) == (b"3", b"1", b"1")
    assert values[b"function.rev.queued"] == b"1"
    assert values[b"function.rev.workers"] == b"1"
    assert values[b"function.rev.completed"] == b"1"
    assert values[b"function.rev.submitted"] == b"3"
    assert b"function.rev.cancelled" not in values  # counted server-wide only


def test_every_counter_is_listed() -> None:
    """Each JobCounters field has a server-wide line and, unless server-wide only, a
    per-function one: a counter added to JobCounters appears without a change here."""
    core, _ = make_core()
    core.function(b"f")
    names = {line.split(b" ")[0].decode() for line in stats(AdminCommands(core))}
    for field in attrs.fields(JobCounters):
        assert field.name in names
        assert (f"function.f.{field.name}" in names) == (field.name not in SERVER_WIDE_COUNTERS)


def test_odd_function_names_stay_one_line() -> None:
    """A function name with a newline is escaped: one line per value."""
    core, _ = make_core()
    core.function(b"a\nb")
    lines = stats(AdminCommands(core))
    assert b"function.a\\x0ab.queued 0" in lines


def test_readme_example_matches_the_order() -> None:
    """The README's ``stats`` example names real lines, in the order the server sends them."""
    block = code_block_after("``function.NAME.FIELD``::").splitlines()
    shown = [line.split(" ")[0] for line in block[1:] if line not in ("...", ".")]
    core, _ = make_core()
    core.function(b"reverse")
    names = [line.split(b" ")[0].decode() for line in stats(AdminCommands(core))]
    positions = [names.index(name) for name in shown]
    assert positions == sorted(positions), shown
