# -*- test-case-name: tests.test_server_fuzz -*-
"""Fuzz tests of :class:`gearmanpy.server.protocol.ServerProtocol` on ``StringTransport``.

Arbitrary bytes, mutated valid streams and random fragmentations go into ``dataReceived``; the
only thing asserted is orderly behaviour: nothing escapes ``dataReceived``, nothing is logged as
an error, a stream the server gives up on ends with an ERROR packet (or an ``ERR`` line) before
``transport.disconnecting`` turns True, and other connections on the same core keep working.
Explicit tests pin the rows of protocol.md §1.4 and §1.3, and regression tests pin the bugs
the fuzzers found.
"""

from __future__ import annotations

from typing import cast

from hypothesis import example, given
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gearmanpy.protocol.packets import (
    ARG_COUNTS,
    Packet,
    PacketDecoder,
    PacketType,
    encode,
    request,
    response,
)
from gearmanpy.server.admin import AdminCommands, status_rows
from gearmanpy.server.core import JobServerCore
from gearmanpy.server.protocol import NOT_EXPECTED, SUBMITS, ServerFactory
from tests.strategies import header, hostile_chunks, packets

P = PacketType
SMALL_MAX = 64


class RecordingTransport(StringTransport):
    """A StringTransport that splits each write into replies and notes how many had been
    sent when the close was asked."""

    def __init__(self, replies: list[bytes]) -> None:
        super().__init__()
        self.replies = replies
        self.closed_at: int | None = None

    def write(self, data: bytes) -> None:
        self.replies.extend(split_replies(bytes(data)))
        super().write(data)

    def loseConnection(self) -> None:
        if self.closed_at is None:
            self.closed_at = len(self.replies)
        super().loseConnection()


def split_replies(write: bytes) -> list[bytes]:
    """The replies one write holds: each binary packet, and each admin text line.

    The server writes the replies to one ``dataReceived`` in one write; the checks here are
    about each reply, so the recording takes the write apart (by the packets' own lengths),
    which works whatever the connection's Outbound is (a compiled class in one build).
    """
    out: list[bytes] = []
    at = 0
    while at < len(write):
        if write.startswith(b"\0RES", at) and len(write) - at >= 12:
            end = at + 12 + int.from_bytes(write[at + 8 : at + 12], "big")
        else:
            newline = write.find(b"\n", at)
            binary = write.find(b"\0RES", at)
            ends = [i for i in (newline + 1 if newline >= 0 else -1, binary) if i > at]
            end = min(ends) if ends else len(write)
        out.append(write[at:end])
        at = end
    return out


class Conn:
    """One server connection over a RecordingTransport, recording each reply it sends.

    The protocol batches the replies to one ``dataReceived`` into one write; the transport
    splits writes into replies (:func:`split_replies`). No store is involved, so no reply is
    ever held.
    """

    def __init__(self, factory: ServerFactory) -> None:
        self.protocol = factory.buildProtocol(None)
        self.replies: list[bytes] = []
        self.transport = RecordingTransport(self.replies)
        self.protocol.makeConnection(self.transport)
        assert self.protocol.peer is not None
        self.seen = 0

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def new_packets(self) -> list[Packet]:
        """Binary packets sent since the last call (admin text replies are skipped)."""
        out: list[Packet] = []
        for w in self.replies[self.seen :]:
            if is_binary(w):
                out.extend(decode(w))
        self.seen = len(self.replies)
        return out

    def lose(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))


def is_binary(write: bytes) -> bool:
    """Whether a write is a binary reply (admin replies are text)."""
    return write.startswith(b"\0RES")


def is_error_reply(write: bytes) -> bool:
    """An ERROR packet or an admin ``ERR`` line."""
    if is_binary(write):
        return [p.type for p in decode(write)] == [P.ERROR]
    return write.startswith(b"ERR ") and write.endswith(b"\r\n")


def decode(data: bytes) -> list[Packet]:
    """Decode binary replies."""
    return cast(list[Packet], PacketDecoder(allow_admin=False).feed(data))


def make_factory(max_packet_size: int | None = None) -> ServerFactory:
    core = JobServerCore(Clock(), handle_prefix=b"H:t")
    # The fuzzed peers are remote (StringTransport's 192.168.1.1): let them reach every admin
    # command, as a loopback peer may, so the mutating ones are fuzzed too.
    admin = AdminCommands(core, allow_remote_shutdown=True)
    if max_packet_size is None:
        return ServerFactory(core, admin=admin)
    return ServerFactory(core, max_packet_size=max_packet_size, admin=admin)


def req(ptype: PacketType, *args: bytes) -> bytes:
    return encode(request(ptype, *args))


# -- strategies for valid request streams --------------------------------------------------

_funcs = st.sampled_from([b"f", b"g"])
_submits = st.sampled_from(sorted(SUBMITS))
_admin = st.sampled_from(
    [
        b"status\n",
        b"prioritystatus\n",
        b"workers\r\n",
        b"show jobs\n",
        b"show unique jobs\n",
        b"version\n",
        b"getpid\n",
        b"verbose\n",
        b"cancel job H:t:1\n",
        b"maxqueue f 3\n",
        b"create function f\r\n",
        b"drop function g\n",
        b"STATUS\n",
        b"nope\n",
        b"\n",
    ]
)
#: One valid request: binary packets a client or worker sends, or an admin line.
valid_requests = st.one_of(
    st.builds(
        lambda t, f, u, d: req(t, f, u, d),
        _submits,
        _funcs,
        st.sampled_from([b"", b"-", b"u"]),
        st.binary(max_size=8),
    ),
    st.builds(
        lambda f, e: req(P.SUBMIT_JOB_EPOCH, f, b"", e, b"x"),
        _funcs,
        st.sampled_from([b"0", b"5", b"junk", b"99999999999999999999"]),
    ),
    st.builds(lambda f: req(P.CAN_DO, f), _funcs),
    st.builds(lambda f: req(P.CANT_DO, f), _funcs),
    st.builds(
        lambda f, t: req(P.CAN_DO_TIMEOUT, f, t),
        _funcs,
        st.sampled_from([b"1000", b"0", b"9" * 25]),
    ),
    st.sampled_from(
        [
            req(P.GRAB_JOB),
            req(P.GRAB_JOB_UNIQ),
            req(P.GRAB_JOB_ALL),
            req(P.PRE_SLEEP),
            req(P.RESET_ABILITIES),
            req(P.ECHO_REQ, b"e\0cho"),
            req(P.GET_STATUS, b"H:t:1"),
            req(P.GET_STATUS_UNIQUE, b"u"),
            req(P.OPTION_REQ, b"exceptions"),
            req(P.SET_CLIENT_ID, b"me"),
            req(P.WORK_STATUS, b"H:t:1", b"1", b"2"),
            req(P.WORK_COMPLETE, b"H:t:1", b"done"),
            req(P.WORK_FAIL, b"H:t:2"),
            req(P.WORK_EXCEPTION, b"H:t:3", b"boom"),
            req(P.WORK_DATA, b"H:t:1", b"d"),
        ]
    ),
    _admin,
    packets().map(lambda p: encode(request(p.type, *p.args))),
)
valid_streams = st.lists(valid_requests, min_size=1, max_size=12).map(b"".join)

_mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "insert", "delete"]), st.integers(0, 2**16), st.integers(0, 255)
    ),
    min_size=1,
    max_size=4,
)


def mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    """Flip, insert or delete single bytes of ``data``."""
    buf = bytearray(data)
    for op, pos, value in mutations:
        if op == "insert":
            buf.insert(pos % (len(buf) + 1), value)
        elif buf:
            i = pos % len(buf)
            if op == "flip":
                buf[i] ^= value or 1
            else:
                del buf[i]
    return bytes(buf)


def fragment(data: bytes, cuts: list[int]) -> list[bytes]:
    """Cut ``data`` at the given offsets (taken modulo its length, sorted)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


class ServerFuzzTests(SynchronousTestCase):
    """Arbitrary and mutated input never breaks the server, only the offending connection."""

    def feed(self, conn: Conn, chunks: list[bytes]) -> None:
        """Deliver chunks as a TCP transport would: nothing more once the close is asked for."""
        for chunk in chunks:
            if conn.transport.disconnecting:
                break
            conn.send(chunk)

    def assert_orderly(self, conn: Conn) -> None:
        """No logged errors; binary replies parse; a close comes right after an ERROR reply."""
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(b"".join(conn.replies), conn.transport.value())
        for w in conn.replies:
            if is_binary(w):
                decoder = PacketDecoder(allow_admin=False)
                self.assertEqual(len(decoder.feed(w)), 1)
                self.assertEqual(decoder.buffered(), b"")
        t = conn.transport
        if t.disconnecting:
            self.assertIsNotNone(t.closed_at)
            assert t.closed_at is not None
            self.assertGreater(t.closed_at, 0, "closed without any reply")
            last = conn.replies[t.closed_at - 1]
            self.assertTrue(is_error_reply(last), last)
            self.assertEqual(conn.replies[t.closed_at :], [], "replies after the close")
        else:
            self.assertIsNone(t.closed_at)

    def assert_others_work(self, factory: ServerFactory) -> None:
        """A new client submits a job and a new worker completes it, on the same core."""
        client, worker = Conn(factory), Conn(factory)
        worker.send(req(P.CAN_DO, b"alive"))
        client.send(req(P.SUBMIT_JOB, b"alive", b"", b"ping"))
        [created] = client.new_packets()
        self.assertEqual(created.type, P.JOB_CREATED)
        handle = created.args[0]
        worker.send(req(P.GRAB_JOB))
        self.assertEqual(worker.new_packets(), [response(P.JOB_ASSIGN, handle, b"alive", b"ping")])
        worker.send(req(P.WORK_COMPLETE, handle, b"pong"))
        self.assertEqual(client.new_packets(), [response(P.WORK_COMPLETE, handle, b"pong")])
        self.assertEqual(worker.new_packets(), [])
        for conn in (client, worker):
            self.assertFalse(conn.transport.disconnecting)
            conn.lose()
        for _, total, running, workers in status_rows(factory.core):
            self.assertTrue(total >= 0 and running >= 0 and workers >= 0)
        self.assertEqual(self.flushLoggedErrors(), [])

    def run_fuzz(self, chunks: list[bytes], max_packet_size: int | None = None) -> Conn:
        factory = make_factory(max_packet_size)
        bystander = Conn(factory)
        bystander.send(req(P.CAN_DO, b"f"))
        conn = Conn(factory)
        self.feed(conn, chunks)
        self.assert_orderly(conn)
        conn.lose()
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertFalse(bystander.transport.disconnecting)
        self.assert_others_work(factory)
        return conn

    @given(st.lists(st.binary(max_size=64) | hostile_chunks, max_size=8))
    @example([b"\0RES" + b"\0" * 8 + b"\xff"])
    @example([b"\0REQ\0\0\0\x07\0\0\0\x03abc", b"\n"])
    def test_arbitrary_bytes(self, chunks: list[bytes]) -> None:
        """Arbitrary chunks: orderly reaction, and the core still serves others."""
        self.run_fuzz(chunks)

    @given(st.lists(st.binary(max_size=64) | hostile_chunks, max_size=8))
    def test_arbitrary_bytes_small_limit(self, chunks: list[bytes]) -> None:
        """The same with a 64-byte packet limit, so oversize headers come up often."""
        self.run_fuzz(chunks, max_packet_size=SMALL_MAX)

    @given(valid_streams, _mutations, st.lists(st.integers(0, 2**16), max_size=6))
    def test_mutated_streams(
        self, stream: bytes, mutations: list[tuple[str, int, int]], cuts: list[int]
    ) -> None:
        """A valid request stream with bytes flipped, inserted or deleted, in random pieces."""
        self.run_fuzz(fragment(mutate(stream, mutations), cuts))

    @given(valid_streams, st.lists(st.integers(0, 2**16), max_size=8))
    def test_valid_stream_any_fragmentation(self, stream: bytes, cuts: list[int]) -> None:
        """A valid stream is never dropped, and its replies do not depend on fragmentation."""
        whole = self.run_fuzz([stream])
        pieces = self.run_fuzz(fragment(stream, cuts))
        bytewise = self.run_fuzz([stream[i : i + 1] for i in range(len(stream))])
        for conn in (whole, pieces, bytewise):
            self.assertIsNone(conn.transport.closed_at)
        self.assertEqual(pieces.transport.value(), whole.transport.value())
        self.assertEqual(bytewise.transport.value(), whole.transport.value())


class MalformedInputTests(SynchronousTestCase):
    """protocol.md §1.3/§1.4 row by row: ERROR then close, or ERROR and carry on, never a crash."""

    def setUp(self) -> None:
        self.factory = make_factory(SMALL_MAX)
        self.conn = Conn(self.factory)

    def tearDown(self) -> None:
        self.conn.lose()
        self.assertEqual(self.flushLoggedErrors(), [])

    def assert_error_then_close(self, code: bytes) -> None:
        t = self.conn.transport
        self.assertTrue(t.disconnecting)
        self.assertEqual(t.closed_at, len(self.conn.replies))
        [packet] = decode(self.conn.replies[-1])
        self.assertEqual((packet.type, packet.args[0]), (P.ERROR, code))
        self.assertEqual(b"".join(self.conn.replies), t.value())

    def assert_still_open(self) -> None:
        self.assertFalse(self.conn.transport.disconnecting)
        self.conn.new_packets()
        self.conn.send(req(P.ECHO_REQ, b"ping"))
        self.assertEqual(self.conn.new_packets(), [response(P.ECHO_RES, b"ping")])

    def test_bad_magic(self) -> None:
        """``\\0XYZ`` and ``\\0req`` magic: ERROR INVALID_MAGIC, then close."""
        for magic in (b"\0XYZ", b"\0req"):
            self.conn.lose()
            self.conn = Conn(self.factory)
            self.conn.send(header(magic, P.ECHO_REQ, 0))
            self.assert_error_then_close(b"INVALID_MAGIC")

    def test_bad_magic_byte_at_a_time(self) -> None:
        """A bad magic is caught as soon as its bytes arrive, one at a time."""
        sent = 0
        for byte in header(b"\0RXQ", P.ECHO_REQ, 0)[:4]:
            if self.conn.transport.disconnecting:
                break
            self.conn.send(bytes([byte]))
            sent += 1
        self.assertEqual(sent, 3)
        self.assert_error_then_close(b"INVALID_MAGIC")

    def test_response_magic_on_request(self) -> None:
        """``\\0RES`` on a request with a valid type: ERROR INVALID_MAGIC, then close."""
        self.conn.send(encode(response(P.ECHO_REQ, b"x")))
        self.assert_error_then_close(b"INVALID_MAGIC")

    def test_invalid_types(self) -> None:
        """Types 0, 43, 0x80000000 and 0xFFFFFFFF: ERROR then close, never a crash."""
        for ptype in (0, 43, 0x80000000, 0xFFFFFFFF):
            self.conn.lose()
            self.conn = Conn(self.factory)
            self.conn.send(header(b"\0REQ", ptype, 0))
            self.assert_error_then_close(b"INVALID_COMMAND")

    def test_missing_nuls(self) -> None:
        """SUBMIT_JOB body ``abc`` (no NULs): ERROR then close; later bytes are not parsed."""
        self.conn.send(header(b"\0REQ", P.SUBMIT_JOB, 3) + b"abc" + req(P.ECHO_REQ, b"x"))
        self.assert_error_then_close(b"INVALID_PACKET")
        self.assertEqual(self.factory.core.jobs, {})

    def test_oversize_header(self) -> None:
        """A header announcing more than max_packet_size: ERROR before the body is sent."""
        self.conn.send(header(b"\0REQ", P.SUBMIT_JOB, SMALL_MAX + 1))
        self.assert_error_then_close(b"ARGUMENT_TOO_LARGE")

    def test_size_at_limit_is_accepted(self) -> None:
        """A body of exactly max_packet_size bytes is accepted."""
        body = b"e" * SMALL_MAX
        self.conn.send(req(P.ECHO_REQ, body))
        self.assertEqual(self.conn.new_packets(), [response(P.ECHO_RES, body)])

    def test_response_only_types(self) -> None:
        """Each type a client must not send: ERROR INVALID_COMMAND, the connection stays open."""
        for ptype in sorted(NOT_EXPECTED):
            args = tuple(b"a" for _ in range(ARG_COUNTS[ptype]))
            self.conn.send(encode(request(ptype, *args)))
            self.assertEqual(
                self.conn.new_packets(),
                [response(P.ERROR, b"INVALID_COMMAND", b"Command not expected")],
                ptype.name,
            )
            self.assert_still_open()

    def test_can_do_timeout_overflow(self) -> None:
        """CAN_DO_TIMEOUT with an overflowing number: no crash, and a job still runs."""
        self.conn.lose()
        self.factory = make_factory()
        self.conn = Conn(self.factory)
        for timeout in (b"9" * 20, b"9" * 21, b"9" * 5000, b"-" + b"9" * 30):
            self.conn.send(req(P.CAN_DO_TIMEOUT, b"f", timeout))
        client = Conn(self.factory)
        client.send(req(P.SUBMIT_JOB, b"f", b"", b"x"))
        [created] = client.new_packets()
        self.conn.send(req(P.GRAB_JOB))
        self.assertEqual(
            self.conn.new_packets(), [response(P.JOB_ASSIGN, created.args[0], b"f", b"x")]
        )
        cast(Clock, self.factory.core.clock).advance(10**9)
        self.assert_still_open()
        client.lose()

    def test_epoch_overflow(self) -> None:
        """SUBMIT_JOB_EPOCH with an epoch beyond 64 bits: an ERROR, no job, no crash."""
        self.conn.send(req(P.SUBMIT_JOB_EPOCH, b"f", b"", b"9" * 20, b"x"))
        [packet] = self.conn.new_packets()
        self.assertEqual(packet.type, P.ERROR)
        self.assertEqual(self.factory.core.jobs, {})
        self.conn.send(req(P.SUBMIT_JOB_EPOCH, b"f", b"", b"-" + b"9" * 20, b"x"))
        [packet] = self.conn.new_packets()
        self.assertEqual(packet.type, P.ERROR)

    def test_six_word_admin_line(self) -> None:
        """An admin line with 6 words: an ERR line, then close."""
        self.conn.send(b"a b c d e f\n")
        t = self.conn.transport
        self.assertTrue(t.disconnecting)
        self.assertEqual(t.closed_at, len(self.conn.replies))
        self.assertTrue(is_error_reply(self.conn.replies[-1]), self.conn.replies[-1])

    def test_long_admin_line(self) -> None:
        """A 9000-byte admin line: an error reply, then close, however it is cut."""
        for pieces in ([b"s" * 9000], [b"s" * 4500, b"s" * 4500], [b"s" * 9000 + b"\n"]):
            self.conn.lose()
            self.conn = Conn(self.factory)
            for piece in pieces:
                self.conn.send(piece)
            self.assert_error_then_close(b"ARGUMENT_TOO_LARGE")


class ServerFuzzBugTests(SynchronousTestCase):
    """Regression tests for bugs the fuzz tests found."""

    def setUp(self) -> None:
        self.factory = make_factory()
        self.conn = Conn(self.factory)

    def test_maxqueue_huge_number(self) -> None:
        """``maxqueue f <5000 digits>``: a reply, no exception out of dataReceived."""
        self.conn.send(b"create function f\n")
        self.conn.send(b"maxqueue f " + b"1" * 5000 + b"\n")
        self.assertTrue(self.conn.transport.value().endswith(b"OK\r\n"))

    def test_epoch_with_5000_digits(self) -> None:
        """SUBMIT_JOB_EPOCH with a 5000-digit epoch gets an ERROR, nothing is logged."""
        self.conn.send(req(P.SUBMIT_JOB_EPOCH, b"f", b"", b"9" * 5000, b"x"))
        errors = self.flushLoggedErrors()
        self.assertEqual([p.type for p in self.conn.new_packets()], [P.ERROR])
        self.assertEqual(errors, [])

    def test_work_status_with_5000_digits(self) -> None:
        """WORK_STATUS with a 5000-digit numerator is stored or refused, never a crash."""
        client = Conn(self.factory)
        client.send(req(P.SUBMIT_JOB, b"f", b"", b"x"))
        [created] = client.new_packets()
        self.conn.send(req(P.CAN_DO, b"f") + req(P.GRAB_JOB))
        self.conn.send(req(P.WORK_STATUS, created.args[0], b"7" * 5000, b"1"))
        errors = self.flushLoggedErrors()
        self.assertFalse(self.conn.transport.disconnecting)
        self.assertEqual(errors, [])

    def test_one_error_packet_per_failure(self) -> None:
        """A ``\\0RES`` packet then garbage in one chunk: exactly one ERROR, then close."""
        self.conn.send(encode(response(P.ECHO_REQ, b"x")) + header(b"\0REQ", 99, 0))
        t = self.conn.transport
        self.assertEqual(t.closed_at, len(self.conn.replies))
        self.assertEqual([p.type for p in self.conn.new_packets()], [P.ERROR])
