"""Tests for the server's way out: :mod:`gearmanpy.server.outbound` and ``SocketWriter``.

:class:`Outbound` and :class:`TurnCoalescer` are tested in memory, with a recording ``write``
and a ``task.Clock``: the explicit cases pin each rule of the module docstring, and a
Hypothesis state machine checks random runs of send, hold, release, input, end of turn, stop
and close against a model of the reply order. :class:`gearmanpy._transport.SocketWriter`
writes to a real socket behind Twisted's back, which only a real connection can prove safe,
so it is tested over a connected TCP pair on 127.0.0.1 with the global reactor (style.md §5's
handful of real-socket tests), and over ``StringTransport`` for the plain path.
"""

from __future__ import annotations

import os
import select
import socket
import struct
from collections.abc import Callable
from typing import Any, cast

import twisted.test
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    clientFromString,
    connectProtocol,
    serverFromString,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gearmanpy._transport import HANDOFF, NEVER, SocketWriter
from gearmanpy.protocol.limits import DEFAULT_MAX_PACKET_SIZE
from gearmanpy.server.outbound import Outbound, OutputGuard, OutputLimits, Slot, TurnCoalescer
from tests.serverhelpers import SlowTransport


class Recorder:
    """Stands in for a connection: keeps every write and counts closes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.lost = 0

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def lose(self) -> None:
        self.lost += 1

    def stream(self) -> bytes:
        """Everything written, in order."""
        return b"".join(self.writes)


def recorded(coalescer: TurnCoalescer | None = None) -> tuple[Outbound, Recorder]:
    """An Outbound writing to a fresh Recorder."""
    rec = Recorder()
    return Outbound(rec.write, coalescer, rec.lose), rec


class OutboundTests(SynchronousTestCase):
    """Order, held slots, input bursts, stop and close, without a coalescer."""

    def setUp(self) -> None:
        self.out, self.rec = recorded()

    def test_replies_leave_at_once_in_order(self) -> None:
        """Outside input every reply is written at once, one write each, in order."""
        for reply in (b"a", b"b", b"c"):
            self.out.send(reply)
        self.assertEqual(self.rec.writes, [b"a", b"b", b"c"])

    def test_hold_makes_later_replies_wait(self) -> None:
        """Replies after a hold wait for its release, then follow the released reply."""
        self.out.send(b"before")
        slot = self.out.hold()
        self.out.send(b"after1")
        self.out.send(b"after2")
        self.assertEqual(self.rec.writes, [b"before"])
        self.out.release(slot, b"held")
        self.assertEqual(self.rec.stream(), b"beforeheldafter1after2")
        self.out.send(b"later")
        self.assertEqual(self.rec.writes[-1], b"later")

    def test_holds_released_out_of_order_keep_reserved_order(self) -> None:
        """Three holds released last, first, middle still leave in the order reserved."""
        s1 = self.out.hold()
        self.out.send(b"x")
        s2 = self.out.hold()
        self.out.send(b"y")
        s3 = self.out.hold()
        self.out.send(b"z")
        self.out.release(s3, b"3")
        self.assertEqual(self.rec.writes, [])
        self.out.release(s1, b"1")
        self.assertEqual(self.rec.stream(), b"1x")
        self.out.release(s2, b"2")
        self.assertEqual(self.rec.stream(), b"1x2y3z")

    def test_input_burst_is_one_write(self) -> None:
        """Replies made between begin_input and end_input leave together in one write."""
        self.out.begin_input()
        for reply in (b"a", b"b", b"c"):
            self.out.send(reply)
        self.assertEqual(self.rec.writes, [])
        self.out.end_input()
        self.assertEqual(self.rec.writes, [b"abc"])

    def test_input_without_replies_writes_nothing(self) -> None:
        """An input that caused no reply costs no write (not even an empty one)."""
        self.out.begin_input()
        self.out.end_input()
        self.assertEqual(self.rec.writes, [])

    def test_hold_inside_input(self) -> None:
        """In a burst, replies before a hold leave at end_input; the rest on release."""
        self.out.begin_input()
        self.out.send(b"a")
        slot = self.out.hold()
        self.out.send(b"c")
        self.out.end_input()
        self.assertEqual(self.rec.writes, [b"a"])
        self.out.begin_input()
        self.out.release(slot, b"b")
        self.out.send(b"d")
        self.out.end_input()
        self.assertEqual(self.rec.writes, [b"a", b"bcd"])

    def test_stop_sends_nothing_new_and_drops_held(self) -> None:
        """After stop() new replies and held ones (released or not) never go out."""
        self.out.send(b"a")
        s1 = self.out.hold()
        self.out.send(b"behind")
        s2 = self.out.hold()
        self.out.stop()
        self.out.send(b"new")
        self.out.release(s1, b"held1")
        self.out.release(s2, b"held2")
        late = self.out.hold()
        self.out.release(late, b"late")
        self.out.flush()
        self.assertEqual(self.rec.writes, [b"a"])
        self.assertTrue(self.out.closed)

    def test_stop_keeps_collected_replies_for_flush(self) -> None:
        """Replies collected before stop() (in a burst) still go out when it is flushed."""
        self.out.begin_input()
        self.out.send(b"a")
        self.out.send(b"b")
        self.out.stop()
        self.out.send(b"c")
        self.out.end_input()
        self.assertEqual(self.rec.writes, [b"ab"])

    def test_close_flushes_then_loses_once(self) -> None:
        """close() writes what was collected, then closes; a second close does nothing."""
        order: list[str] = []
        out = Outbound(
            lambda data: order.append("write " + data.decode()),
            lose=lambda: order.append("lose"),
        )
        out.begin_input()
        out.send(b"a")
        out.send(b"b")
        out.close()
        out.close()
        out.end_input()
        self.assertEqual(order, ["write ab", "lose"])

    def test_close_without_lose(self) -> None:
        """An Outbound made without ``lose`` still stops and flushes on close()."""
        out = Outbound(self.rec.write)
        out.begin_input()
        out.send(b"a")
        out.close()
        out.send(b"b")
        self.assertEqual(self.rec.writes, [b"a"])


class TurnCoalescerTests(SynchronousTestCase):
    """Replies no input caused wait for the end of the turn; others leave at once."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.coalescer = TurnCoalescer(self.clock)
        self.out, self.rec = recorded(self.coalescer)

    def test_replies_outside_input_leave_once_at_end_of_turn(self) -> None:
        """Replies outside any input are written together when the turn ends."""
        other, other_rec = recorded(self.coalescer)
        slot = self.out.hold()
        self.out.send(b"b")
        self.out.release(slot, b"a")
        other.send(b"x")
        self.out.send(b"c")
        self.assertEqual((self.rec.writes, other_rec.writes), ([], []))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0)
        self.assertEqual((self.rec.writes, other_rec.writes), ([b"abc"], [b"x"]))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_replies_during_another_connections_input_leave_at_once(self) -> None:
        """While another connection handles input, replies to this one are written at once."""
        other, other_rec = recorded(self.coalescer)
        other.begin_input()
        self.assertEqual(self.coalescer.handling_input, 1)
        self.out.send(b"a")
        self.out.send(b"b")
        other.send(b"own")
        self.assertEqual(self.rec.writes, [b"a", b"b"])
        self.assertEqual(other_rec.writes, [])
        other.end_input()
        self.assertEqual(self.coalescer.handling_input, 0)
        self.assertEqual(other_rec.writes, [b"own"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reply_during_input_queues_behind_an_unflushed_turn(self) -> None:
        """A reply that would leave at once still waits behind replies due at turn end."""
        other, _ = recorded(self.coalescer)
        self.out.send(b"first")
        other.begin_input()
        self.out.send(b"second")
        other.end_input()
        self.assertEqual(self.rec.writes, [])
        self.clock.advance(0)
        self.assertEqual(self.rec.writes, [b"firstsecond"])

    def test_own_input_flushes_what_the_turn_collected(self) -> None:
        """end_input writes replies collected earlier in the turn along with its own."""
        self.out.send(b"a")
        self.out.begin_input()
        self.out.send(b"b")
        self.out.end_input()
        self.assertEqual(self.rec.writes, [b"ab"])
        self.clock.advance(0)
        self.assertEqual(self.rec.writes, [b"ab"])

    def test_stopped_connection_still_gets_its_turn_flush(self) -> None:
        """Replies collected for the turn before stop() are written when the turn ends."""
        self.out.send(b"a")
        self.out.stop()
        self.out.send(b"b")
        self.clock.advance(0)
        self.assertEqual(self.rec.writes, [b"a"])

    def test_close_writes_now(self) -> None:
        """close() does not wait for the end of the turn."""
        self.out.send(b"a")
        self.out.close()
        self.assertEqual((self.rec.writes, self.rec.lost), ([b"a"], 1))
        self.clock.advance(0)
        self.assertEqual(self.rec.writes, [b"a"])


# --- the model ------------------------------------------------------------------------------

#: Every reply in the machine is six bytes, so a written stream splits back into replies.
TOKEN = 6


class Conn:
    """One Outbound and the model of its reply order.

    ``order`` holds one cell per reply in the order the core made (or reserved) it: a send
    is a filled cell, a hold an empty one until released. What may have been written is the
    filled run at the front; ``final`` freezes that run when the connection is stopped.
    """

    def __init__(self, name: str, coalescer: TurnCoalescer | None) -> None:
        self.name = name.encode()
        self.out, self.rec = recorded(coalescer)
        self.order: list[list[bytes | None]] = []
        self.open_slots: list[tuple[Slot, list[bytes | None]]] = []
        self.final: list[bytes] | None = None
        self.closed = False
        self.count = 0

    def token(self) -> bytes:
        self.count += 1
        return self.name + b"%05d" % self.count

    def record(self, cell: list[bytes | None]) -> None:
        """A reply (or a reserved place) made now; none is sent once stopped."""
        if self.final is None:
            self.order.append(cell)

    def ready(self) -> list[bytes]:
        """The replies that must have left once everything collected is flushed."""
        if self.final is not None:
            return self.final
        out = []
        for cell in self.order:
            if cell[0] is None:
                break
            out.append(cell[0])
        return out

    def written(self) -> list[bytes]:
        data = self.rec.stream()
        assert len(data) % TOKEN == 0, data
        return [data[i : i + TOKEN] for i in range(0, len(data), TOKEN)]

    def caught_up(self) -> bool:
        return self.written() == self.ready()


class OutboundMachine(RuleBasedStateMachine):
    """Two connections' Outbounds driven at random, checked against the model."""

    coalesce = False

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.coalescer = TurnCoalescer(self.clock) if self.coalesce else None
        self.conns = [Conn("a", self.coalescer), Conn("b", self.coalescer)]
        #: The connection whose input is being handled, if any.
        self.inside: Conn | None = None

    conn = st.integers(0, 1)

    def act(self, c: Conn, model: Callable[[], None], action: Callable[[], None]) -> None:
        """Update the model, run a send/hold/release on ``c``, and check when it may write
        (module docstring)."""
        writes, caught_up = len(c.rec.writes), c.caught_up()
        model()
        action()
        if self.inside is c or (self.coalescer is not None and self.inside is None):
            assert len(c.rec.writes) == writes, "wrote outside its burst or before turn end"
        elif caught_up:
            # No coalescer, or another connection's input: nothing may wait.
            assert c.caught_up(), "a reply waited though nothing was in front of it"

    @rule(i=conn)
    def send(self, i: int) -> None:
        """A reply."""
        c = self.conns[i]
        token = c.token()
        self.act(c, lambda: c.record([token]), lambda: c.out.send(token))

    @rule(i=conn)
    def hold(self, i: int) -> None:
        """A reply that waits for the store: a place reserved."""
        c = self.conns[i]
        cell: list[bytes | None] = [None]
        self.act(c, lambda: c.record(cell), lambda: c.open_slots.append((c.out.hold(), cell)))

    @precondition(lambda self: any(c.open_slots for c in self.conns))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        """Any reserved place, of either connection, filled."""
        c = data.draw(st.sampled_from([c for c in self.conns if c.open_slots]))
        slot, cell = c.open_slots.pop(data.draw(st.integers(0, len(c.open_slots) - 1)))
        token = c.token()
        self.act(c, lambda: cell.__setitem__(0, token), lambda: c.out.release(slot, token))

    @precondition(lambda self: self.inside is None)
    @rule(i=conn)
    def begin_input(self, i: int) -> None:
        """A connection's input starts being handled (one at a time)."""
        self.inside = self.conns[i]
        self.inside.out.begin_input()

    @precondition(lambda self: self.inside is not None)
    @rule()
    def end_input(self) -> None:
        """The input is handled: what it caused has left, in one write."""
        c, self.inside = self.inside, None
        assert c is not None
        writes = len(c.rec.writes)
        c.out.end_input()
        assert len(c.rec.writes) <= writes + 1, "a burst costs one write"
        assert c.caught_up()

    @precondition(lambda self: self.inside is None)
    @rule()
    def end_of_turn(self) -> None:
        """The reactor turn ends: every connection has caught up, one write each."""
        writes = [len(c.rec.writes) for c in self.conns]
        self.clock.advance(0)
        for c, before in zip(self.conns, writes, strict=True):
            assert len(c.rec.writes) <= before + 1, "a turn costs one write per connection"
            assert c.caught_up()

    @rule(i=conn)
    def stop(self, i: int) -> None:
        """The core lets go of the peer: what is ready is all that will ever leave."""
        c = self.conns[i]
        c.final = c.ready()
        writes = len(c.rec.writes)
        c.out.stop()
        assert len(c.rec.writes) == writes

    @rule(i=conn)
    def close(self, i: int) -> None:
        """The connection closes: what is ready has left, and it is closed once."""
        c = self.conns[i]
        c.final = c.ready()
        c.closed = True
        c.out.close()
        assert c.caught_up()

    @invariant()
    def stream_follows_the_order(self) -> None:
        """What was written is the front of the reply order, in non-empty writes."""
        for c in self.conns:
            written = c.written()
            assert written == c.ready()[: len(written)]
            assert all(c.rec.writes), "no empty writes"
            assert c.rec.lost == int(c.closed)

    def teardown(self) -> None:
        """Whatever happened, once input and turn end every connection has caught up."""
        if self.inside is not None:
            self.end_input()
        self.clock.advance(0)
        for c in self.conns:
            assert c.caught_up()


class CoalescingOutboundMachine(OutboundMachine):
    """The same with a TurnCoalescer on a Clock shared by both connections."""

    coalesce = True


OutboundStateTests = OutboundMachine.TestCase
CoalescingOutboundStateTests = CoalescingOutboundMachine.TestCase


# --- SocketWriter ---------------------------------------------------------------------------


class StringTransportWriterTests(SynchronousTestCase):
    """On a transport that is not a socket, SocketWriter is plain transport.write."""

    def test_writes_through_transport_without_a_producer(self) -> None:
        """Bytes go to transport.write in order, and no producer is registered."""
        transport = StringTransport()
        writer = SocketWriter(transport)
        self.assertIsNone(transport.producer)
        writer.write(b"one")
        writer.write(b"two")
        self.assertEqual(transport.value(), b"onetwo")
        writer.close()
        self.assertTrue(transport.disconnecting)

    def test_outbound_for_transport(self) -> None:
        """Outbound.for_transport writes and closes through the transport."""
        transport = StringTransport()
        out = Outbound.for_transport(transport)
        out.begin_input()
        out.send(b"a")
        out.send(b"b")
        out.end_input()
        self.assertEqual(transport.value(), b"ab")
        out.close()
        self.assertTrue(transport.disconnecting)


#: Twisted's own test certificate and key (one PEM file), valid until 2123.
SERVER_PEM = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")
#: Socket buffers made small on both ends, so a few MiB cannot fit in the kernel.
SMALL_BUFFER = 64 * 1024
#: Far more than the kernel holds for one connection with those buffers.
LARGE = 4 * 1024 * 1024


class Watched(Protocol):
    """A connection end the test can wait on: for bytes to arrive, and for the close."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.reason: Failure | None = None
        self._byte_waits: list[tuple[int, Deferred[None]]] = []
        self._lost_waits: list[Deferred[None]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self._check()

    def _check(self) -> None:
        for n, d in [w for w in self._byte_waits if len(self.received) >= w[0]]:
            self._byte_waits.remove((n, d))
            d.callback(None)

    def until(self, n: int) -> Deferred[None]:
        """Fire once ``n`` bytes have arrived; fail the test if that takes 10 seconds."""
        d: Deferred[None] = Deferred()
        self._byte_waits.append((n, d))
        self._check()
        return d.addTimeout(10, reactor)

    def closed_soon(self) -> Deferred[None]:
        """Fire once the connection is lost (see ``reason``); fail the test after 5 seconds."""
        d: Deferred[None] = Deferred()
        if self.reason is not None:
            d.callback(None)
            return d
        self._lost_waits.append(d)
        return d.addTimeout(5, reactor)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reason = reason
        waits, self._lost_waits = self._lost_waits, []
        for d in waits:
            d.callback(None)


def tcp_socket(transport: Any) -> socket.socket:
    """The socket under ``transport`` (under its TLS layer, if it has one)."""
    while not isinstance(transport, tcp.Connection):
        transport = transport.transport
    return cast(socket.socket, transport.getHandle())


class Peer(Watched):
    """The far end of the connection, with a small receive buffer."""

    def connectionMade(self) -> None:
        sock = tcp_socket(self.transport)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)


class Accepted(Watched):
    """The server end, with a small send buffer and a SocketWriter, made as the server
    makes its Outbound (:meth:`Outbound.for_transport`)."""

    def __init__(self, made: Deferred[Accepted], watch: WatchRecorder | None = None) -> None:
        super().__init__()
        self.made = made
        self.watch = watch

    def connectionMade(self) -> None:
        sock = tcp_socket(self.transport)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
        self.writer = SocketWriter(self.transport, self.watch)
        if self.watch is not None:
            self.watch.watch(self.writer)
        self.made.callback(self)


def listen(test: TestCase, watch: WatchRecorder | None = None) -> tuple[int, Deferred[Accepted]]:
    """Listen on 127.0.0.1 for one connection; return the port and its Accepted end (its
    writer watched by ``watch``, if given)."""
    made: Deferred[Accepted] = Deferred()
    factory: Any = Factory.forProtocol(lambda: Accepted(made, watch))
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    test.addCleanup(port.stopListening)
    return cast(Any, port.getHost()).port, made


def count_fallbacks(test: TestCase, transport: Any) -> list[bytes]:
    """Record what goes through ``transport.write``, Twisted's buffer.

    This is the public side of whether the writer sent directly; the alternative would be
    reading its private ``_idle``.
    """
    fallbacks: list[bytes] = []
    plain_write = transport.write

    def write(data: bytes) -> None:
        fallbacks.append(data)
        plain_write(data)

    test.patch(transport, "write", write)
    return fallbacks


@inlineCallbacks
def both_closed(server: Accepted, peer: Peer) -> Any:
    """Close both ends if still open and wait for them, for a clean reactor."""
    for end in (server, peer):
        if end.reason is None:
            end.transport.abortConnection()  # type: ignore[union-attr]
    yield server.closed_soon()
    yield peer.closed_soon()


class SocketWriterTests(TestCase):
    """SocketWriter over a real TCP connection on 127.0.0.1."""

    timeout = 30

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        port, made = listen(self)
        self.peer = Peer()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), self.peer)
        self.server: Accepted = yield made
        self.writer = self.server.writer
        self.addCleanup(self.both_closed)
        self.fallbacks = count_fallbacks(self, self.server.transport)

    def both_closed(self) -> Deferred[Any]:
        """Close whatever is still open and wait for both ends, for a clean reactor."""
        return both_closed(self.server, self.peer)

    def pause_peer(self) -> None:
        """The peer stops reading: the kernel's buffers fill up and stay full."""
        self.peer.transport.pauseProducing()  # type: ignore[union-attr]

    def resume_peer(self) -> None:
        self.peer.transport.resumeProducing()  # type: ignore[union-attr]

    @inlineCallbacks
    def test_small_writes_arrive_in_order_sent_directly(self) -> Any:
        """Small writes arrive in order, and none of them goes through Twisted's buffer."""
        chunks = [b"%d," % i for i in range(200)]
        for chunk in chunks:
            self.writer.write(chunk)
        yield self.peer.until(len(b"".join(chunks)))
        self.assertEqual(bytes(self.peer.received), b"".join(chunks))
        self.assertEqual(self.fallbacks, [])

    @inlineCallbacks
    def test_large_write_keeps_order_and_direct_sends_resume(self) -> Any:
        """A write bigger than the socket takes is finished by Twisted with later writes
        queued behind it, and once Twisted's buffer drains the writer sends directly again."""
        big = os.urandom(LARGE)
        self.pause_peer()
        self.writer.write(big)
        self.writer.write(b"tail1")
        self.assertTrue(self.fallbacks, "the kernel took it all: the test proves nothing")
        self.assertTrue(big.endswith(self.fallbacks[0]), "the kernel's part is not a prefix")
        # The tail waits in the writer until Twisted's buffer drains; both are counted.
        self.assertEqual(self.fallbacks[1:], [])
        self.assertEqual(self.writer.unsent, len(self.fallbacks[0]) + 5)
        self.resume_peer()
        yield self.peer.until(LARGE // 2)
        self.writer.write(b"tail2")  # mid-drain: behind what Twisted still holds
        expected = big + b"tail1tail2"
        yield self.peer.until(len(expected))
        self.assertEqual(bytes(self.peer.received), expected)
        # All of it arrived, so Twisted's buffer is empty and Twisted has resumed the writer.
        fallbacks = len(self.fallbacks)
        self.writer.write(b"direct")
        yield self.peer.until(len(expected) + 6)
        self.assertEqual(bytes(self.peer.received), expected + b"direct")
        self.assertEqual(len(self.fallbacks), fallbacks, "not sent directly after the drain")

    @inlineCallbacks
    def test_close_sends_everything_then_closes(self) -> Any:
        """close() with megabytes still in Twisted's buffer delivers them all, then closes."""
        big = os.urandom(LARGE)
        self.pause_peer()
        self.writer.write(big)
        self.writer.write(b"last")
        self.writer.close()
        self.resume_peer()
        yield self.peer.closed_soon()
        self.assertEqual(bytes(self.peer.received), big + b"last")

    @inlineCallbacks
    def test_lose_connection_by_someone_else_closes(self) -> Any:
        """transport.loseConnection() (as ClientService.stopService calls it) closes the
        connection although the writer is registered as a pull producer."""
        self.writer.write(b"bye")
        self.server.transport.loseConnection()  # type: ignore[union-attr]
        yield self.peer.closed_soon()
        self.assertEqual(bytes(self.peer.received), b"bye")

    @inlineCallbacks
    def test_lose_connection_with_data_in_twisteds_buffer_closes(self) -> Any:
        """The same while Twisted still holds megabytes: they arrive, then the close."""
        big = os.urandom(LARGE)
        self.pause_peer()
        self.writer.write(big)
        self.server.transport.loseConnection()  # type: ignore[union-attr]
        self.writer.write(b"more")  # still accepted: Twisted sends it before closing
        self.resume_peer()
        yield self.peer.closed_soon()
        self.assertEqual(bytes(self.peer.received), big + b"more")

    @inlineCallbacks
    def test_write_after_peer_closed_raises_nothing(self) -> Any:
        """Writes after the peer closed, and after the server saw it, raise nothing."""
        self.writer.write(b"hello")
        yield self.peer.until(5)
        self.peer.transport.loseConnection()  # type: ignore[union-attr]
        yield self.peer.closed_soon()
        for _ in range(3):
            self.writer.write(b"x" * 1000)
        yield self.server.closed_soon()
        self.writer.write(b"after")
        self.writer.close()

    # abortConnection() neither sets ``disconnecting`` nor calls stopProducing until
    # connectionLost runs on the next reactor turn, so a writer not told of the abort would
    # still send straight to the socket: aborts go through SocketWriter.abort().
    @inlineCallbacks
    def test_abort_sends_nothing_more(self) -> Any:
        """After the writer's abort() a write reaches the peer no more than a plain
        transport.write would after abortConnection() (Twisted discards it)."""
        self.writer.abort()
        self.writer.write(b"after the abort")
        yield self.peer.closed_soon()
        self.assertEqual(bytes(self.peer.received), b"")


class SocketWriterCountTests(TestCase):
    """Over a real TCP connection, the writer knows what the peer has not taken."""

    timeout = 30

    @inlineCallbacks
    def test_unsent_counted_while_peer_stalls_and_zero_once_read(self) -> Any:
        """While the peer does not read, Twisted holds no more than one handoff and the rest
        waits, counted, in the writer; once the peer reads it all the count is zero, and the
        watcher was told on the way up and on the way down."""
        watcher = WatchRecorder(above=1 << 20, below=0)
        port, made = listen(self, watcher)
        peer = Peer()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), peer)
        server: Accepted = yield made
        self.addCleanup(lambda: both_closed(server, peer))
        handed = count_fallbacks(self, server.transport)
        peer.transport.pauseProducing()  # type: ignore[union-attr]
        piece = os.urandom(64 * 1024)
        for _ in range(LARGE // len(piece)):
            server.writer.write(piece)
        self.assertTrue(handed, "the kernel took it all: the test proves nothing")
        self.assertEqual(len(handed), 1, "writes went to Twisted while it held bytes")
        self.assertLessEqual(len(handed[0]), len(piece))
        self.assertGreater(server.writer.unsent, LARGE - 4 * SMALL_BUFFER)
        self.assertEqual(len(watcher.seen), 1)
        self.assertGreater(watcher.seen[0], 1 << 20)
        peer.transport.resumeProducing()  # type: ignore[union-attr]
        yield peer.until(LARGE)
        self.assertEqual(bytes(peer.received), piece * (LARGE // len(piece)))
        self.assertEqual(server.writer.unsent, 0)
        self.assertEqual(watcher.seen[-1], 0)
        self.assertLessEqual(max(len(d) for d in handed), HANDOFF, "Twisted held too much")


class SocketWriterTLSTests(TestCase):
    """Over real TLS the watched writer is a streaming producer (Twisted's TLS transport
    pauses it when the TCP buffer under it is full) and counts what it queues meanwhile."""

    timeout = 30

    @inlineCallbacks
    def test_counted_while_peer_stalls_then_delivered_in_order(self) -> Any:
        """Most of 4 MiB written to a TLS peer that does not read waits, counted, in the
        writer; once the peer reads, all of it arrives in order and the count is zero."""
        watcher = WatchRecorder(above=1 << 20, below=0)
        made: Deferred[Accepted] = Deferred()
        endpoint = serverFromString(reactor, f"ssl:0:privateKey={SERVER_PEM}:interface=127.0.0.1")
        factory: Any = Factory.forProtocol(lambda: Accepted(made, watcher))
        port = yield endpoint.listen(factory)
        self.addCleanup(port.stopListening)
        peer = Peer()
        client = clientFromString(reactor, f"ssl:host=127.0.0.1:port={port.getHost().port}")
        yield connectProtocol(client, peer)
        server: Accepted = yield made
        self.addCleanup(lambda: both_closed(server, peer))
        server.writer.write(b"hi")
        yield peer.until(2)  # the handshake is done: what follows fills TCP buffers
        peer.transport.pauseProducing()  # type: ignore[union-attr]
        piece = os.urandom(64 * 1024)
        for _ in range(LARGE // len(piece)):
            server.writer.write(piece)
        self.assertGreater(server.writer.unsent, LARGE // 2, "not paused by Twisted's TLS")
        self.assertEqual(len(watcher.seen), 1)
        peer.transport.resumeProducing()  # type: ignore[union-attr]
        yield peer.until(2 + LARGE)
        self.assertEqual(bytes(peer.received), b"hi" + piece * (LARGE // len(piece)))
        self.assertEqual((server.writer.unsent, watcher.seen[-1]), (0, 0))


class SocketWriterResetTests(TestCase):
    """A peer that reset the connection: the socket's own send fails under the writer."""

    timeout = 30

    @inlineCallbacks
    def test_send_on_reset_socket_raises_nothing(self) -> Any:
        """A write on a socket the peer reset falls back to Twisted, which drops the link."""
        port, made = listen(self)
        raw = socket.create_connection(("127.0.0.1", port))
        self.addCleanup(raw.close)
        server: Accepted = yield made
        fallbacks = count_fallbacks(self, server.transport)
        # SO_LINGER 0: close() sends RST at once instead of FIN.
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()
        # Wait, outside the reactor, until the RST has reached the server's socket, so the
        # writes below run before Twisted has noticed anything.
        sock = server.transport.getHandle()  # type: ignore[union-attr]
        self.assertTrue(select.select([sock], [], [], 5)[0], "no RST within 5 s")
        server.writer.write(b"into the void")
        self.assertEqual(fallbacks, [b"into the void"], "the send did not fail")
        server.writer.write(b"again")
        yield server.closed_soon()
        server.writer.write(b"after")
        server.writer.close()


# --- unsent output: the writer's count and the guard ------------------------------------------


class WatchRecorder:
    """A writer's watcher that records ``unsent`` at each call: told once when the count
    passes ``above``, then once when it falls to ``below``, and so on."""

    def __init__(self, above: int, below: int) -> None:
        self.seen: list[int] = []
        self.levels = (above, below)

    def __call__(self, writer: SocketWriter) -> None:
        self.seen.append(writer.unsent)
        above, below = self.levels
        if writer.unsent > above:
            writer.above, writer.below = NEVER, below
        else:
            writer.above, writer.below = above, -1

    def watch(self, writer: SocketWriter) -> SocketWriter:
        writer.above, writer.below = self.levels[0], -1
        return writer


class StreamingWriterTests(SynchronousTestCase):
    """A watched writer on a transport that is not a socket: a streaming producer that
    queues while the transport has paused it, and counts what it holds."""

    def setUp(self) -> None:
        self.transport = SlowTransport(room=10)
        self.watcher = WatchRecorder(above=25, below=0)
        self.writer = self.watcher.watch(SocketWriter(self.transport, self.watcher))

    def test_registers_as_streaming_producer(self) -> None:
        """The writer is the transport's streaming producer; writes pass while it has room."""
        self.assertIs(self.transport.producer, self.writer)
        self.assertTrue(self.transport.streaming)
        self.writer.write(b"12345")
        self.assertEqual((self.transport.value(), self.writer.unsent), (b"12345", 0))

    def test_queues_and_counts_while_paused_then_hands_over_in_order(self) -> None:
        """The write that fills the transport is counted, later ones wait in the writer, and
        the drain hands them over in order and brings the count back to zero."""
        self.writer.write(b"a" * 12)  # fills the transport: paused
        self.assertTrue(self.transport.full)
        self.assertEqual(self.writer.unsent, 12)
        self.writer.write(b"b" * 8)
        self.writer.write(b"c" * 8)
        self.assertEqual(self.transport.value(), b"a" * 12, "a queued write was handed over")
        self.assertEqual(self.writer.unsent, 28)
        self.assertEqual(self.watcher.seen, [28], "not told when the count passed 25")
        self.assertEqual(self.transport.drain(), b"a" * 12)
        # Both queued writes (16 bytes) went out as one, which filled the transport again.
        self.assertEqual(self.transport.value(), b"b" * 8 + b"c" * 8)
        self.assertEqual(self.writer.unsent, 16)
        self.transport.drain()
        self.assertEqual(self.writer.unsent, 0)
        self.assertEqual(self.watcher.seen, [28, 0], "not told when the count fell to 0")
        self.writer.write(b"d")
        self.assertEqual(self.transport.value(), b"d")

    def test_close_hands_over_what_waits(self) -> None:
        """close() gives the transport everything queued before closing it."""
        self.writer.write(b"a" * 12)
        self.writer.write(b"tail")
        self.writer.close()
        self.assertEqual(self.transport.value(), b"a" * 12 + b"tail")
        self.assertIsNone(self.transport.producer)
        self.assertTrue(self.transport.disconnecting)

    def test_abort_drops_what_waits(self) -> None:
        """abort() sends nothing more and forgets the queue."""
        self.writer.write(b"a" * 12)
        self.writer.write(b"tail")
        self.writer.abort()
        self.writer.write(b"after")
        self.assertEqual((self.writer.unsent, self.transport.producer), (0, None))
        self.assertNotIn(b"tail", self.transport.value())
        self.assertTrue(self.transport.disconnected)

    def test_stop_producing_forgets_the_queue(self) -> None:
        """Once Twisted says the connection is gone, nothing is kept for it."""
        self.writer.write(b"a" * 12)
        self.writer.write(b"tail")
        self.writer.stopProducing()
        self.writer.write(b"more")
        self.assertEqual(self.writer.unsent, 0)

    def test_unwatched_writer_on_a_plain_transport_is_plain(self) -> None:
        """Without a watcher nothing is registered or counted (the client's case)."""
        transport = SlowTransport(room=1)
        writer = SocketWriter(transport)
        writer.write(b"abc")
        writer.write(b"def")
        self.assertEqual((transport.value(), writer.unsent), (b"abcdef", 0))
        self.assertIsNone(transport.producer)


class RecordingGuard:
    """An OutputGuard on a Clock whose pause, resume and drop are recorded."""

    def __init__(self, limits: OutputLimits) -> None:
        self.clock = Clock()
        self.events: list[str | int] = []
        self.guard = OutputGuard(
            limits,
            self.clock,
            lambda: self.events.append("pause"),
            lambda: self.events.append("resume"),
            self.events.append,
        )


class OutputGuardTests(SynchronousTestCase):
    """The guard's rules, driven through a real writer on a SlowTransport."""

    def setUp(self) -> None:
        self.limits = OutputLimits(soft=100, hard=400, timeout=30.0)
        self.rec = RecordingGuard(self.limits)
        self.transport = SlowTransport(room=10)
        self.out = Outbound.for_transport(self.transport, guard=self.rec.guard)

    def fill(self, size: int) -> None:
        """Make the peer owe ``size`` more bytes."""
        self.out.send(b"x" * size)

    def test_pause_past_soft_resume_at_half(self) -> None:
        """Past ``soft`` reading pauses once; it resumes only when half has drained."""
        self.fill(60)
        self.assertEqual(self.rec.events, [])
        self.fill(60)
        self.fill(60)
        self.assertEqual(self.rec.events, ["pause"])
        self.assertTrue(self.rec.guard.paused)
        self.transport.drain(1000)  # 60 read; 120 queued, handed over as one write
        self.assertEqual(self.rec.events, ["pause"], "resumed above soft // 2")
        self.transport.drain()
        self.assertEqual(self.rec.events, ["pause", "resume"])
        self.fill(60)
        self.assertEqual(self.rec.events, ["pause", "resume"])

    def test_drop_after_timeout_past_hard(self) -> None:
        """Past ``hard`` for ``timeout`` seconds the peer is dropped, with what it owes."""
        for _ in range(9):
            self.fill(50)
        self.assertEqual(self.rec.events, ["pause"])
        self.rec.clock.advance(29.9)
        self.assertEqual(self.rec.events, ["pause"])
        self.rec.clock.advance(0.1)
        self.assertEqual(self.rec.events, ["pause", 450])
        self.assertEqual(self.rec.clock.getDelayedCalls(), [])

    def test_back_under_hard_in_time_is_not_dropped(self) -> None:
        """A peer that reads enough before the timeout keeps its connection."""
        for _ in range(9):
            self.fill(50)
        self.rec.clock.advance(20)
        self.transport.drain()  # 50 read, 400 handed over: not past hard any more
        self.assertEqual(self.rec.clock.getDelayedCalls(), [])
        self.rec.clock.advance(60)
        self.assertEqual(self.rec.events, ["pause"])
        self.transport.drain()
        self.assertEqual(self.rec.events, ["pause", "resume"])

    def test_stop_cancels_the_timer(self) -> None:
        """A connection that is gone leaves no timer behind."""
        for _ in range(9):
            self.fill(50)
        self.rec.guard.stop()
        self.assertEqual(self.rec.clock.getDelayedCalls(), [])

    def test_outbound_abort_drops_everything(self) -> None:
        """Outbound.abort sends nothing collected or queued and resets the connection."""
        self.fill(50)
        self.out.begin_input()
        self.fill(5)
        self.out.abort()
        self.out.end_input()
        self.out.send(b"later")
        self.assertEqual(self.transport.value(), b"x" * 50)
        self.assertTrue(self.transport.disconnected)


class OutputLimitsTests(SynchronousTestCase):
    """Defaults follow the packet size; nonsense is refused with a clear message."""

    def test_defaults_follow_the_packet_size(self) -> None:
        """soft = a max-size packet + 64 KiB, hard = 4 x soft, 30 s; resume at half."""
        limits = OutputLimits()
        self.assertEqual(limits.soft, DEFAULT_MAX_PACKET_SIZE + 64 * 1024)
        self.assertEqual((limits.hard, limits.timeout), (4 * limits.soft, 30.0))
        self.assertEqual(limits.resume, limits.soft // 2)
        self.assertEqual(OutputLimits.for_packet_size(DEFAULT_MAX_PACKET_SIZE), limits)
        small = OutputLimits.for_packet_size(1000)
        self.assertEqual((small.soft, small.hard), (1000 + 65536, 4 * (1000 + 65536)))
        self.assertEqual(OutputLimits.for_packet_size(1000, soft=10).hard, 40)

    def test_nonsense_refused(self) -> None:
        """Zero or negative limits, hard below soft, a timeout of 0: ValueError."""
        for kwargs in ({"soft": 0}, {"soft": 10, "hard": 9}, {"timeout": 0}, {"timeout": -1}):
            with self.assertRaises(ValueError) as caught:
                OutputLimits.for_packet_size(1000, **kwargs)  # type: ignore[arg-type]
            self.assertIn("output", str(caught.exception))
