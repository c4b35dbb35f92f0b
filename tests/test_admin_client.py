"""The admin API (gearmanpy.admin) against an in-memory gearmanpy server, and its parsers
against gearmand's captured replies (protocol.md §4.3); tests/interop/test_cli.py runs it
against the real gearmand."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import directlyProvides

from gearmanpy.admin import (
    AdminClient,
    AdminProtocol,
    FunctionStatus,
    JobInfo,
    PriorityStatus,
    WorkerInfo,
    parse_jobs,
    parse_status,
    parse_workers,
)
from gearmanpy.errors import AdminError, JobTimeout, NoServersAvailable, ProtocolError, RequestLost
from gearmanpy.testing import MemoryGearman


def result(gearman: MemoryGearman, d: Deferred[Any]) -> Any:
    """Move the bytes and return what ``d`` fired with (raising its failure)."""
    out: list[Any] = []
    d.addBoth(out.append)
    gearman.flush()
    assert out, "no reply"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


@pytest.fixture
def gearman() -> Any:
    """An in-memory server with a worker, a queued background job and an admin client."""
    g = MemoryGearman()
    worker = g.worker(client_id="my worker")
    worker.register("rev", lambda job: job.data[::-1])
    worker.register("cut", lambda job: job.data[:1])
    g.flush()
    g.client().submit_background("queued", b"x", unique="u1")
    g.flush()
    yield g
    g.stop()


def admin_of(gearman: MemoryGearman, **kwargs: Any) -> AdminClient:
    """An admin client of the in-memory server."""
    return AdminClient(gearman.endpoint(), reactor=gearman.reactor, **kwargs)


def test_list_commands(gearman: MemoryGearman) -> None:
    """Each list command's rows, typed, pipelined on one connection."""
    admin = admin_of(gearman)
    status, workers, jobs, uniques, priorities = (
        admin.status(),
        admin.workers(),
        admin.show_jobs(),
        admin.show_unique_jobs(),
        admin.priority_status(),
    )
    assert sorted(result(gearman, status), key=lambda r: r.name) == [
        FunctionStatus("cut", 0, 0, 1),
        FunctionStatus("queued", 1, 0, 0),
        FunctionStatus("rev", 0, 0, 1),
    ]
    rows = result(gearman, workers)
    mine = [r for r in rows if r.client_id == "my worker"]
    assert len(mine) == 1 and sorted(mine[0].functions) == ["cut", "rev"]
    assert [r.handle for r in result(gearman, jobs)] == ["H:memory:1"]
    assert result(gearman, uniques) == ["u1"]
    assert PriorityStatus("queued", 0, 1, 0, 0) in result(gearman, priorities)


def test_one_line_commands(gearman: MemoryGearman) -> None:
    """version, getpid, verbose, create/drop function, maxqueue; ERR raises AdminError."""
    admin = admin_of(gearman)
    assert "gearmanpy" in result(gearman, admin.version())
    assert result(gearman, admin.getpid()) > 0
    assert result(gearman, admin.verbose()) in {"ERROR", "WARNING", "INFO", "DEBUG", "NOTICE"}
    assert result(gearman, admin.create_function("made")) is None
    assert FunctionStatus("made", 0, 0, 0) in result(gearman, admin.status())
    assert result(gearman, admin.drop_function("made")) is None
    assert result(gearman, admin.maxqueue("queued", 5)) is None
    with pytest.raises(AdminError) as e:
        result(gearman, admin.cancel_job("H:memory:999"))
    assert e.value.code == b"UNKNOWN_JOB" and str(e.value) == "UNKNOWN_JOB"
    with pytest.raises(AdminError) as e:
        result(gearman, admin.drop_function("rev"))
    assert str(e.value) == "there are still connected workers or executing clients"
    assert result(gearman, admin.cancel_job("H:memory:1")) is None
    assert result(gearman, admin.show_jobs()) == []


def test_generic_commands(gearman: MemoryGearman) -> None:
    """command() and command_ok() carry commands without a method of their own; an unknown
    one is an AdminError with gearmand's text, spaces restored."""
    admin = admin_of(gearman)
    assert b"queued\t1\t0\t0" in result(gearman, admin.command("status"))
    assert result(gearman, admin.command_ok("maxqueue rev")) == b""
    with pytest.raises(AdminError) as e:
        result(gearman, admin.command("show nothing"))
    assert e.value.code == b"UNKNOWN_SHOW_ARGUMENTS"
    with pytest.raises(AdminError) as e:
        result(gearman, admin.command_ok("frobnicate"))
    assert str(e.value) == "UNKNOWN_COMMAND: Unknown server commandfrobnicate"
    with pytest.raises(ValueError):
        admin.command("status\nworkers")
    with pytest.raises(ValueError):
        admin.cancel_job("two words")


def test_reconnects_after_loss(gearman: MemoryGearman) -> None:
    """A lost connection fails what waits with RequestLost; the next command reconnects."""
    admin = admin_of(gearman)
    assert result(gearman, admin.status())
    endpoint = admin._spec
    pending = admin.status()
    gearman.disconnect(endpoint)  # type: ignore[arg-type]
    with pytest.raises(RequestLost):
        result(gearman, pending)
    assert result(gearman, admin.status())


def test_timeout_drops_the_connection() -> None:
    """No reply in time: JobTimeout, and the connection is dropped so that a late reply is
    never taken for the next command's."""
    clock = Clock()
    proto = AdminProtocol()
    transport = StringTransport()
    proto.makeConnection(transport)

    class Endpoint:
        def connect(self, factory: Any) -> Deferred[Any]:
            return Deferred.fromCoroutine(_proto())

    async def _proto() -> AdminProtocol:
        return proto

    endpoint = Endpoint()
    directlyProvides(endpoint, IStreamClientEndpoint)
    admin = AdminClient(endpoint, reactor=clock, timeout=2)  # type: ignore[arg-type]
    admin._proto = proto
    out: list[Any] = []
    admin.status().addBoth(out.append)
    assert transport.value() == b"status\r\n"
    clock.advance(2)
    assert isinstance(out[0], Failure) and out[0].check(JobTimeout)
    assert proto.lost


def test_unreachable_server() -> None:
    """A refused connection is NoServersAvailable naming the server."""

    class Refusing:
        def connect(self, factory: Any) -> Deferred[Any]:
            return fail(ConnectionRefusedError("refused"))

    endpoint = Refusing()
    directlyProvides(endpoint, IStreamClientEndpoint)
    admin = AdminClient(endpoint, reactor=Clock())  # type: ignore[arg-type]
    out: list[Any] = []
    admin.status().addBoth(out.append)
    assert out[0].check(NoServersAvailable)
    assert "cannot reach endpoint#0: refused" in str(out[0].value)


def test_parses_gearmand_samples() -> None:
    """gearmand's captured bytes (protocol.md §4.3), client ids with spaces included."""
    assert parse_status([b"lgrev\t0\t0\t0", b"mqa\t9\t0\t0"]) == [
        FunctionStatus("lgrev", 0, 0, 0),
        FunctionStatus("mqa", 9, 0, 0),
    ]
    assert parse_workers([b"38 127.0.0.1 my worker id :", b"40 127.0.0.1 - : pC pB pA"]) == [
        WorkerInfo(38, "127.0.0.1", "my worker id", ()),
        WorkerInfo(40, "127.0.0.1", "-", ("pC", "pB", "pA")),
    ]
    assert parse_jobs([b"H:vm:1\t0\t0\t1", b"H:vm:2\t1\t0\t0"]) == [
        JobInfo("H:vm:1", 0, False, True),
        JobInfo("H:vm:2", 1, False, False),
    ]
    assert FunctionStatus("x", 5, 2, 1).queued == 3
    with pytest.raises(ProtocolError):
        parse_status([b"name\tnot-a-number\t0\t0"])
    with pytest.raises(ProtocolError):
        parse_workers([b"garbage"])


def test_err_list_reply_and_crlf() -> None:
    """An ERR line instead of a list ends that reply only; ``\\r\\n`` endings are stripped;
    bytes split anywhere are put back together."""
    proto = AdminProtocol()
    proto.makeConnection(StringTransport())
    first = proto.send(b"show x", True).deferred
    second = proto.send(b"status", True).deferred
    out: list[Any] = []
    first.addBoth(out.append)
    second.addBoth(out.append)
    for byte in b"ERR UNKNOWN_SHOW_ARGUMENTS\r\nf\t1\t0\t0\r\n.\n":
        proto.dataReceived(bytes([byte]))
    assert out[0].check(AdminError) and out[0].value.code == b"UNKNOWN_SHOW_ARGUMENTS"
    assert out[1] == [b"f\t1\t0\t0"]
