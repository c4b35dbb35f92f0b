"""In-memory helpers for server tests: a core on a Clock and peers that record what they get."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from gearmanpy.protocol.packets import Packet, PacketDecoder, PacketType
from gearmanpy.server.core import JobServerCore
from gearmanpy.server.jobs import Peer
from gearmanpy.server.outbound import Outbound
from gearmanpy.store.interface import DeadJob, IJobStore, KeptResult, StoredJob

P = PacketType


class RecordingPeer:
    """A fake connection: keeps every packet the core sends it, decoded."""

    def __init__(self, core: JobServerCore, ip: bytes = b"127.0.0.1", trusted: bool = True):
        """Connect a new fake peer to ``core``."""
        self.core = core
        self.decoder = PacketDecoder(allow_admin=False)
        self.raw: list[bytes] = []
        self.packets: list[Packet] = []
        self.closed = False
        self.peer: Peer = core.connect(
            Outbound(self._write), self._close, ip=ip, fd=len(core.peers) + 10, trusted=trusted
        )

    def _write(self, data: bytes) -> None:
        self.raw.append(data)
        self.packets.extend(self.decoder.feed(data))  # type: ignore[arg-type]

    def _close(self) -> None:
        self.closed = True

    def take(self) -> list[tuple[PacketType, tuple[bytes, ...]]]:
        """Return (type, args) of everything received since the last call, and forget it."""
        out = [(p.type, p.args) for p in self.packets]
        self.packets = []
        return out

    # Conveniences mirroring the packets a client or worker sends.

    def submit(self, name: bytes, data: bytes = b"x", unique: bytes = b"", **kw: Any) -> bytes:
        """Submit a job and return the handle from JOB_CREATED (fails on anything else)."""
        self.core.submit(self.peer, name, unique, data, **kw)
        got = self.take()
        assert got and got[-1][0] == P.JOB_CREATED, got
        return got[-1][1][0]

    def can_do(self, *names: bytes) -> None:
        """Register for functions."""
        for n in names:
            self.core.can_do(self.peer, n)

    def grab(self, kind: int = 1) -> tuple[PacketType, tuple[bytes, ...]]:
        """GRAB and return the single reply."""
        self.core.grab(self.peer, kind)
        got = self.take()
        assert len(got) == 1, got
        return got[0]

    def disconnect(self) -> None:
        """Drop the connection."""
        self.core.disconnect(self.peer)


def make_core(**kw: Any) -> tuple[JobServerCore, Clock]:
    """A core with a fixed handle prefix and a Clock at t=1000."""
    clock = Clock()
    clock.advance(1000)
    kw.setdefault("handle_prefix", b"H:test")
    return JobServerCore(clock=clock, **kw), clock


@implementer(IJobStore)
class SlowStore:
    """A store whose ``add`` Deferreds the test fires by hand, late and in any order, and
    that records the failure policy's calls (which succeed at once)."""

    def __init__(self) -> None:
        self.adds: list[tuple[StoredJob, Deferred[None]]] = []
        self.done_keys: list[str] = []
        self.retries: dict[str, int] = {}
        #: The failure policy's calls, in order: (method name, arguments...).
        self.calls: list[tuple[Any, ...]] = []

    def open(self) -> Deferred[None]:
        return succeed(None)

    def add(self, job: StoredJob) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.adds.append((job, d))
        return d

    def done(self, key: str) -> Deferred[None]:
        self.done_keys.append(key)
        return succeed(None)

    def set_retries(self, key: str, retries: int) -> Deferred[None]:
        self.retries[key] = retries
        return succeed(None)

    def reschedule(self, key: str, when: int, retries: int, error: bytes) -> Deferred[None]:
        self.calls.append(("reschedule", key, when, retries, error))
        return succeed(None)

    def bury(self, dead: DeadJob) -> Deferred[None]:
        self.calls.append(("bury", dead))
        return succeed(None)

    def unbury(self, key: str, job: StoredJob) -> Deferred[None]:
        self.calls.append(("unbury", key, job))
        return succeed(None)

    def drop_dead(self, keys: list[str]) -> Deferred[None]:
        self.calls.append(("drop_dead", keys))
        return succeed(None)

    def dead(self) -> Deferred[list[DeadJob]]:
        return succeed([])

    def keep_result(self, key: str | None, result: KeptResult) -> Deferred[None]:
        self.calls.append(("keep_result", key, result))
        return succeed(None)

    def drop_results(self, handles: list[bytes]) -> Deferred[None]:
        self.calls.append(("drop_results", handles))
        return succeed(None)

    def results(self) -> Deferred[list[KeptResult]]:
        return succeed([])

    def claim_tick(self, name: str, tick: int, job: StoredJob) -> Deferred[bool]:
        self.calls.append(("claim_tick", name, tick, job))
        return succeed(True)

    def replay(self) -> Deferred[list[StoredJob]]:
        return succeed([])

    def next_boot(self) -> Deferred[int]:
        return succeed(1)

    def close(self) -> Deferred[None]:
        return succeed(None)


class SlowTransport(StringTransport):
    """A StringTransport that, like a Twisted connection whose peer is slow to read, pauses
    its streaming producer once more than ``room`` bytes wait to be sent, and resumes it
    when the test lets the peer read them (:meth:`drain`)."""

    def __init__(self, room: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.room = room
        self.full = False

    def write(self, data: bytes) -> None:
        """Take ``data``; pause the producer if the bytes waiting no longer fit."""
        super().write(data)
        if not self.full and self.producer is not None and len(self.value()) > self.room:
            self.full = True
            self.producer.pauseProducing()

    def drain(self, size: int | None = None) -> bytes:
        """The peer reads ``size`` bytes (all by default); the producer is resumed once
        everything waiting has been read, as Twisted resumes it."""
        data = self.value()
        taken = data if size is None else data[:size]
        self.clear()
        self.io.write(data[len(taken) :])
        if self.full and not self.value():
            self.full = False
            assert self.producer is not None
            self.producer.resumeProducing()
        return taken
