"""Tests for :mod:`gearmanpy.protocol.packets`: encoding and the incremental decoder.

The properties follow style.md §5; the explicit cases pin protocol.md §1.1-1.4. The helpers
mirror h11's ``tr``: every stream is decoded whole, byte at a time, and in arbitrary pieces.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from gearmanpy.errors import (
    AdminCommandError,
    AdminLineTooLong,
    BadMagic,
    MalformedPacket,
    PacketTooLarge,
    ProtocolError,
    UnknownPacketType,
)
from gearmanpy.protocol.admin import AdminCommand
from gearmanpy.protocol.packets import (
    ARG_COUNTS,
    DEFAULT_MAX_LINE_LENGTH,
    DEFAULT_MAX_PACKET_SIZE,
    HEADER_SIZE,
    Event,
    Magic,
    Packet,
    PacketDecoder,
    PacketType,
    encode,
    encode_raw,
    request,
    response,
)
from tests.strategies import (
    admin_lines,
    header,
    hostile_chunks,
    packet_lists,
    packets,
    plain_args,
    wire_item_lists,
)

P = PacketType

ZERO_ARG_TYPES = sorted(t for t, n in ARG_COUNTS.items() if n == 0)
MULTI_ARG_TYPES = sorted(t for t, n in ARG_COUNTS.items() if n >= 2)


def decode_whole(data: bytes, **kwargs: int) -> tuple[list[Event], PacketDecoder]:
    """Feed ``data`` in one call; return the events and the decoder."""
    decoder = PacketDecoder(**kwargs)  # type: ignore[arg-type]
    return decoder.feed(data), decoder


def decode_pieces(pieces: list[bytes], **kwargs: int) -> tuple[list[Event], PacketDecoder]:
    """Feed each piece in its own call; return all events and the decoder."""
    decoder = PacketDecoder(**kwargs)  # type: ignore[arg-type]
    events: list[Event] = []
    for piece in pieces:
        events.extend(decoder.feed(piece))
    return events, decoder


def bytewise(data: bytes) -> list[bytes]:
    """Cut ``data`` into one-byte pieces."""
    return [data[i : i + 1] for i in range(len(data))]


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """Cut ``data`` at the given offsets (any order, duplicates allowed)."""
    bounds = [0, *sorted(points), len(data)]
    return [data[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def tr(data: bytes, expected: list[Event], **kwargs: int) -> None:
    """Assert ``data`` decodes to ``expected`` whole, byte at a time and with trailing data."""
    events, decoder = decode_whole(data, **kwargs)
    assert events == expected
    assert decoder.buffered() == b""
    events, decoder = decode_pieces(bytewise(data), **kwargs)
    assert events == expected
    assert decoder.buffered() == b""
    trailing = b"\0RE"
    events, decoder = decode_whole(data + trailing, **kwargs)
    assert events == expected
    assert decoder.buffered() == trailing


# --- properties -------------------------------------------------------------------------


@given(packets())
@example(request(P.NOOP))
@example(request(P.GRAB_JOB))
@example(response(P.NO_JOB))
@example(request(P.SUBMIT_JOB, b"reverse", b"", b""))
@example(request(P.SUBMIT_JOB, b"f", b"u", b"\0a\0\0b\0"))
@example(request(P.ECHO_REQ, b"\0"))
@example(response(P.JOB_ASSIGN, b"H:" + b"h" * 62, b"f", b"payload"))
@example(response(P.JOB_ASSIGN_UNIQ, b"H:vm:2", b"f", b"", b"p"))
@example(request(P.SUBMIT_JOB_SCHED, b"f", b"u", b"1", b"2", b"3", b"4", b"5", b"x\0y"))
def test_round_trip(packet: Packet) -> None:
    """Decoding the encoding of any valid packet gives back exactly that packet."""
    data = encode(packet)
    assert data[:4] == packet.magic.value
    assert int.from_bytes(data[4:8], "big") == packet.type
    assert int.from_bytes(data[8:12], "big") == len(data) - HEADER_SIZE
    tr(data, [packet])


@given(packet_lists, st.data())
def test_split_anywhere(items: list[Packet], data: st.DataObject) -> None:
    """A stream of packets cut at arbitrary points decodes the same as the whole stream."""
    stream = b"".join(map(encode, items))
    points = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    events, decoder = decode_pieces(cut(stream, points))
    assert events == items
    assert decoder.buffered() == b""


@given(wire_item_lists)
def test_byte_at_a_time(items: list[tuple[bytes, Event]]) -> None:
    """Feeding a mixed stream one byte per call gives the same events as feeding it whole."""
    stream = b"".join(raw for raw, _ in items)
    whole, _ = decode_whole(stream)
    assert decode_pieces(bytewise(stream))[0] == whole == [event for _, event in items]


@given(packet_lists, packets(), st.data())
def test_incomplete_tail_stays_buffered(
    complete: list[Packet], last: Packet, data: st.DataObject
) -> None:
    """A packet cut short yields nothing and is kept in full until the rest arrives."""
    raw_last = encode(last)
    split = data.draw(st.integers(1, len(raw_last) - 1))
    head, rest = raw_last[:split], raw_last[split:]
    decoder = PacketDecoder()
    assert decoder.feed(b"".join(map(encode, complete)) + head) == complete
    assert decoder.buffered() == head
    assert decoder.feed(b"") == []
    assert decoder.buffered() == head
    assert decoder.feed(rest) == [last]
    assert decoder.buffered() == b""


@given(admin_lines(), st.data())
def test_incomplete_admin_line_stays_buffered(
    line: tuple[bytes, AdminCommand], data: st.DataObject
) -> None:
    """An admin line without its newline yields nothing and is kept until the newline."""
    raw, command = line
    split = data.draw(st.integers(1, len(raw) - 1)) if len(raw) > 1 else 0
    decoder = PacketDecoder()
    if split:
        assert decoder.feed(raw[:split]) == []
        assert decoder.buffered() == raw[:split]
    assert decoder.feed(raw[split:]) == [command]
    assert decoder.buffered() == b""


@given(wire_item_lists, st.data())
def test_admin_and_binary_interleave_in_order(
    items: list[tuple[bytes, Event]], data: st.DataObject
) -> None:
    """Admin lines and binary packets mixed on one connection decode in arrival order."""
    stream = b"".join(raw for raw, _ in items)
    points = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    events, decoder = decode_pieces(cut(stream, points))
    assert events == [event for _, event in items]
    assert decoder.buffered() == b""


@given(
    st.lists(hostile_chunks, max_size=10),
    st.integers(0, 300),
    st.integers(1, 100),
    st.booleans(),
)
def test_arbitrary_bytes_raise_only_protocol_errors(
    chunks: list[bytes], max_packet_size: int, max_line_length: int, allow_admin: bool
) -> None:
    """Any input either decodes or raises a ProtocolError, and the buffer stays within limits."""
    decoder = PacketDecoder(max_packet_size, max_line_length, allow_admin)
    for chunk in chunks:
        try:
            events = decoder.feed(chunk)
        except ProtocolError:
            with pytest.raises(ProtocolError):
                decoder.feed(b"\0REQ")
            return
        assert all(isinstance(e, (Packet, AdminCommand)) for e in events)
        pending = decoder.buffered()
        if pending[:1] == b"\0":
            assert len(pending) < max_packet_size + HEADER_SIZE
        else:
            assert len(pending) < max_line_length


@given(packets(), st.integers(-3, 3))
@example(request(P.ECHO_REQ, b"x" * 100), 0)
@example(request(P.ECHO_REQ, b"x" * 100), -1)
@example(request(P.NOOP), 0)
def test_size_limit(packet: Packet, slack: int) -> None:
    """A body of exactly the limit decodes; one byte more fails on the header alone."""
    data = encode(packet)
    size = len(data) - HEADER_SIZE
    limit = size + slack
    assume(limit >= 0)
    decoder = PacketDecoder(max_packet_size=limit)
    if slack >= 0:
        events = decoder.feed(data[:HEADER_SIZE])
        assert events == ([packet] if size == 0 else [])
        assert events + decoder.feed(data[HEADER_SIZE:]) == [packet]
    else:
        with pytest.raises(PacketTooLarge):
            decoder.feed(data[:HEADER_SIZE])


@given(st.sampled_from(ZERO_ARG_TYPES), st.binary(min_size=1, max_size=64), packets())
@example(P.GRAB_JOB, b"abc", request(P.SUBMIT_JOB, b"f", b"", b"x"))
def test_body_of_zero_arg_type_is_ignored(ptype: PacketType, body: bytes, after: Packet) -> None:
    """A body on a type without arguments is skipped by its size and framing stays in sync."""
    data = header(b"\0REQ", ptype, len(body)) + body + encode(after)
    tr(data, [request(ptype), after])


@given(st.sampled_from(MULTI_ARG_TYPES), st.data())
def test_too_few_arguments_is_malformed(ptype: PacketType, data: st.DataObject) -> None:
    """A body with fewer NULs than its type needs raises MalformedPacket at that packet."""
    count = ARG_COUNTS[ptype]
    args = data.draw(st.lists(plain_args, min_size=1, max_size=count - 1))
    body = b"\0".join(args)
    before = request(P.NOOP)
    after = request(P.ECHO_REQ, b"\0" * 10)
    with pytest.raises(MalformedPacket) as info:
        stream = encode(before) + header(b"\0REQ", ptype, len(body)) + body + encode(after)
        PacketDecoder().feed(stream)
    assert info.value.events == [before]


@given(packets(), st.integers(-2, 2).filter(bool))
def test_encode_rejects_wrong_argument_count(packet: Packet, delta: int) -> None:
    """encode() refuses a packet with more or fewer arguments than its type takes."""
    count = len(packet.args) + delta
    assume(count >= 0)
    args = (packet.args + (b"a", b"b"))[:count]
    with pytest.raises(ValueError):
        encode(Packet(packet.type, args, packet.magic))


@given(st.sampled_from(MULTI_ARG_TYPES), st.data())
def test_encode_rejects_nul_in_non_last_argument(ptype: PacketType, data: st.DataObject) -> None:
    """encode() refuses a NUL in any argument but the last, which would shift the others."""
    count = ARG_COUNTS[ptype]
    args = [b"a"] * count
    where = data.draw(st.integers(0, count - 2))
    args[where] = data.draw(st.binary(max_size=8)) + b"\0" + data.draw(st.binary(max_size=8))
    with pytest.raises(ValueError):
        encode(request(ptype, *args))


# --- exact bytes from protocol.md -------------------------------------------------------


def test_job_assign_with_empty_payload_bytes() -> None:
    """JOB_ASSIGN for H:vm:1, f and an empty payload has the body ``H:vm:1\\0f\\0`` (size 9)."""
    data = encode(response(P.JOB_ASSIGN, b"H:vm:1", b"f", b""))
    assert data == b"\0RES" + b"\0\0\0\x0b" + b"\0\0\0\x09" + b"H:vm:1\0f\0"


def test_job_assign_uniq_with_empty_unique_bytes() -> None:
    """An empty unique in JOB_ASSIGN_UNIQ is an empty argument: ``H:vm:2\\0f\\0\\0p``."""
    data = encode(response(P.JOB_ASSIGN_UNIQ, b"H:vm:2", b"f", b"", b"p"))
    assert data == header(b"\0RES", 31, 11) + b"H:vm:2\0f\0\0p"
    tr(data, [response(P.JOB_ASSIGN_UNIQ, b"H:vm:2", b"f", b"", b"p")])


@pytest.mark.parametrize("ptype", [P.NOOP, P.GRAB_JOB, P.NO_JOB, P.PRE_SLEEP])
def test_zero_arg_packets_are_bare_headers(ptype: PacketType) -> None:
    """A packet without arguments is a header with size 0 and nothing after it."""
    assert encode(request(ptype)) == header(b"\0REQ", ptype, 0)
    tr(header(b"\0RES", ptype, 0), [response(ptype)])


def test_request_and_response_set_magic() -> None:
    """request() builds \\0REQ packets and response() builds \\0RES packets."""
    assert request(P.CAN_DO, b"f") == Packet(P.CAN_DO, (b"f",), Magic.REQ)
    assert response(P.JOB_CREATED, b"H:x:1") == Packet(P.JOB_CREATED, (b"H:x:1",), Magic.RES)


def test_encode_raw_matches_encode() -> None:
    """encode_raw() frames arguments exactly as encode() does, without checking them."""
    packet = request(P.SUBMIT_JOB_BG, b"f", b"u", b"\0data")
    assert encode_raw(b"\0REQ", P.SUBMIT_JOB_BG, packet.args) == encode(packet)


def test_nul_in_single_plain_argument_is_kept() -> None:
    """CAN_DO ``a\\0bc`` decodes to the four-byte function name ``a\\0bc``."""
    tr(header(b"\0REQ", P.CAN_DO, 4) + b"a\0bc", [request(P.CAN_DO, b"a\0bc")])


def test_extra_nuls_belong_to_last_argument() -> None:
    """NULs past the last separator stay in the last argument (WORK_STATUS ``h\\0n\\0d\\0x``)."""
    body = b"h\0" + b"1\0" + b"2\0x"
    expected = request(P.WORK_STATUS, b"h", b"1", b"2\0x")
    tr(header(b"\0REQ", P.WORK_STATUS, len(body)) + body, [expected])


def test_res_magic_on_any_type_decodes() -> None:
    """The decoder reports the magic and leaves direction checks to the protocol."""
    tr(encode(response(P.SUBMIT_JOB, b"f", b"", b"x")), [response(P.SUBMIT_JOB, b"f", b"", b"x")])


def test_empty_feed_yields_nothing() -> None:
    """Feeding no bytes returns no events, before and in the middle of a packet."""
    decoder = PacketDecoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\0RE") == []
    assert decoder.feed(b"") == []
    assert decoder.buffered() == b"\0RE"


# --- errors from protocol.md §1.3-1.4 ---------------------------------------------------


@pytest.mark.parametrize("magic", [b"\0XYZ", b"\0req", b"\0RE\0", b"\0\0\0\0"])
def test_bad_magic(magic: bytes) -> None:
    """A header with magic other than \\0REQ/\\0RES raises BadMagic."""
    with pytest.raises(BadMagic):
        PacketDecoder().feed(header(magic, P.NOOP, 0))


@pytest.mark.parametrize("magic", [b"\0XYZ", b"\0req"])
def test_bad_magic_detected_before_whole_header(magic: bytes) -> None:
    """A wrong magic is rejected as soon as its four bytes are in, byte by byte too."""
    with pytest.raises(BadMagic):
        PacketDecoder().feed(magic)
    decoder = PacketDecoder()
    with pytest.raises(BadMagic):
        for byte in bytewise(magic):
            decoder.feed(byte)


@pytest.mark.parametrize("ptype", [0, 43, 44, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF])
@pytest.mark.parametrize("magic", [b"\0REQ", b"\0RES"])
def test_unknown_packet_type(magic: bytes, ptype: int) -> None:
    """Type 0, type 43 and above, and types with the top bit set raise UnknownPacketType."""
    with pytest.raises(UnknownPacketType):
        PacketDecoder().feed(header(magic, ptype, 0))


def test_unknown_type_rejected_before_body() -> None:
    """An unknown type is rejected on the header, without waiting for its body."""
    with pytest.raises(UnknownPacketType):
        PacketDecoder().feed(header(b"\0REQ", 43, 100))


def test_default_limit_exactly_is_accepted() -> None:
    """A header announcing exactly the default maximum body size is accepted and buffered."""
    decoder = PacketDecoder()
    data = header(b"\0REQ", P.ECHO_REQ, DEFAULT_MAX_PACKET_SIZE)
    assert decoder.feed(data) == []
    assert decoder.buffered() == data


@pytest.mark.parametrize("size", [DEFAULT_MAX_PACKET_SIZE + 1, 0xFFFFFFF0, 0xFFFFFFFF])
def test_oversize_rejected_on_header(size: int) -> None:
    """A header announcing more than the limit raises PacketTooLarge before any body arrives."""
    decoder = PacketDecoder()
    with pytest.raises(PacketTooLarge):
        decoder.feed(header(b"\0REQ", P.ECHO_REQ, size))
    assert decoder.buffered() == b""


def test_full_size_packet_in_64k_chunks() -> None:
    """A body of exactly the default limit, fed in 64 KiB chunks, decodes to one packet."""
    payload = b"\0x" * (DEFAULT_MAX_PACKET_SIZE // 2)
    data = encode(request(P.ECHO_REQ, payload))
    chunk = 64 * 1024
    events, decoder = decode_pieces([data[i : i + chunk] for i in range(0, len(data), chunk)])
    assert events == [request(P.ECHO_REQ, payload)]
    assert decoder.buffered() == b""


def test_missing_nuls_do_not_desynchronise() -> None:
    """SUBMIT_JOB with body ``abc`` raises MalformedPacket without reading past its size."""
    # gearmand would take the following packet's NULs (protocol.md §1.4); the decoder stops
    # at the announced size, so the error surfaces exactly when the bad body is complete.
    bad = header(b"\0REQ", P.SUBMIT_JOB, 3) + b"abc"
    following = encode(request(P.SUBMIT_JOB, b"f", b"u", b"x"))
    decoder = PacketDecoder()
    assert decoder.feed(bad[:-1]) == []
    with pytest.raises(MalformedPacket):
        decoder.feed(bad[-1:])
    with pytest.raises(MalformedPacket) as info:
        PacketDecoder().feed(encode(request(P.NOOP)) + bad + following)
    assert info.value.events == [request(P.NOOP)]


@pytest.mark.parametrize("body", [b"abc", b"", b"f\0u"], ids=["no-nul", "empty", "one-nul"])
def test_submit_job_needs_two_nuls(body: bytes) -> None:
    """SUBMIT_JOB needs both separators; ``f\\0u\\0`` (empty payload) is the shortest valid body."""
    with pytest.raises(MalformedPacket):
        PacketDecoder().feed(header(b"\0REQ", P.SUBMIT_JOB, len(body)) + body)
    assert PacketDecoder().feed(header(b"\0REQ", P.SUBMIT_JOB, 4) + b"f\0u\0") == [
        request(P.SUBMIT_JOB, b"f", b"u", b"")
    ]


def test_admin_line_at_limit_and_over() -> None:
    """A line of exactly the limit (newline included) decodes; one byte more is too long."""
    line = b"x" * (DEFAULT_MAX_LINE_LENGTH - 1) + b"\n"
    assert PacketDecoder().feed(line) == [AdminCommand((b"x" * (DEFAULT_MAX_LINE_LENGTH - 1),))]
    with pytest.raises(AdminLineTooLong):
        PacketDecoder().feed(b"x" + line)


def test_admin_line_without_newline_over_limit() -> None:
    """A line that reaches the limit without a newline raises at once, even byte by byte."""
    decoder = PacketDecoder(max_line_length=16)
    assert decoder.feed(b"y" * 15) == []
    assert decoder.buffered() == b"y" * 15
    with pytest.raises(AdminLineTooLong):
        decoder.feed(b"y")
    with pytest.raises(AdminLineTooLong):
        PacketDecoder().feed(b"status" * 2000)


def test_admin_six_words() -> None:
    """An admin line of six words raises AdminCommandError; five words decode."""
    assert PacketDecoder().feed(b"a b c d e\n") == [AdminCommand((b"a", b"b", b"c", b"d", b"e"))]
    with pytest.raises(AdminCommandError):
        PacketDecoder().feed(b"a b c d e f\n")


def test_admin_refused_when_not_allowed() -> None:
    """A decoder for clients and workers treats a non-NUL first byte as bad magic."""
    with pytest.raises(BadMagic):
        PacketDecoder(allow_admin=False).feed(b"status\n")
    assert PacketDecoder(allow_admin=False).feed(encode(response(P.NOOP))) == [response(P.NOOP)]


@pytest.mark.parametrize(
    "bad",
    [
        header(b"\0XYZ", P.NOOP, 0),
        header(b"\0REQ", 43, 0),
        header(b"\0REQ", P.ECHO_REQ, DEFAULT_MAX_PACKET_SIZE + 1),
        header(b"\0REQ", P.SUBMIT_JOB, 3) + b"abc",
        b"a b c d e f\n",
        b"z" * DEFAULT_MAX_LINE_LENGTH,
    ],
    ids=["magic", "type", "size", "malformed", "six-words", "long-line"],
)
def test_events_before_error_are_on_exception(bad: bytes) -> None:
    """Events decoded from the same chunk before an error are on the exception's ``events``."""
    can_do, grab = request(P.CAN_DO, b"f"), request(P.GRAB_JOB)
    good = [can_do, AdminCommand((b"status",)), grab]
    stream = encode(can_do) + b"status\r\n" + encode(grab)
    decoder = PacketDecoder()
    assert decoder.feed(stream[:5]) == []
    with pytest.raises(ProtocolError) as info:
        decoder.feed(stream[5:] + bad)
    assert info.value.events == good


def test_error_is_final_and_events_not_repeated() -> None:
    """After an error every feed raises again, without handing out the old events twice."""
    decoder = PacketDecoder()
    with pytest.raises(BadMagic) as first:
        decoder.feed(encode(request(P.NOOP)) + b"\0XYZ")
    assert first.value.events == [request(P.NOOP)]
    with pytest.raises(BadMagic) as second:
        decoder.feed(encode(request(P.NOOP)))
    assert second.value.events == []
    assert decoder.buffered() == b""


def test_error_codes_for_error_packets() -> None:
    """Each decoder error carries the gearmand error code to send back in an ERROR packet."""
    assert BadMagic("x").code == b"INVALID_MAGIC"
    assert UnknownPacketType("x").code == b"INVALID_COMMAND"
    assert PacketTooLarge("x").code == b"ARGUMENT_TOO_LARGE"
    assert all(
        issubclass(cls, ProtocolError)
        for cls in (
            BadMagic,
            UnknownPacketType,
            PacketTooLarge,
            MalformedPacket,
            AdminLineTooLong,
            AdminCommandError,
        )
    )


# --- dispatch: request packets straight to their handler ----------------------------------


def dispatch_all(pieces: list[bytes], **kwargs: int) -> tuple[list[Event], PacketDecoder]:
    """Feed ``pieces`` through :meth:`PacketDecoder.dispatch`; rebuild the events it handed over.

    Requests come back through the per-type handler table, so the list shows whether each
    event went the direct way (a ``Packet`` with REQ magic) or through ``other``.
    """
    decoder = PacketDecoder(**kwargs)  # type: ignore[arg-type]
    out: list[Event] = []
    table = [
        (lambda args, t=t: out.append(Packet(P(t), tuple(args), Magic.REQ))) if t else None
        for t in range(max(P) + 1)
    ]
    for piece in pieces:
        decoder.dispatch(piece, table, out.append)  # type: ignore[arg-type]
    return out, decoder


@given(wire_item_lists, st.data())
def test_dispatch_matches_feed(items: list[tuple[bytes, Event]], data: st.DataObject) -> None:
    """``dispatch`` hands over the same events in the same order as ``feed``, however cut."""
    stream = b"".join(raw for raw, _ in items)
    points = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    events, decoder = dispatch_all(cut(stream, points))
    assert events == [event for _, event in items]
    assert decoder.buffered() == b""


@given(wire_item_lists, st.data())
def test_batched_runs_match_feed(items: list[tuple[bytes, Event]], data: st.DataObject) -> None:
    """With batched types, runs of them arrive as lists, and flattened give ``feed``'s events."""
    batched = data.draw(st.sets(st.sampled_from(sorted(PacketType)), max_size=8))
    stream = b"".join(raw for raw, _ in items)
    points = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    decoder = PacketDecoder(batched=batched)
    out: list[Event] = []

    def handler(t: int) -> Any:
        def handle(args: Any) -> None:
            if t in batched:
                assert isinstance(args, list) and args, "a run is a non-empty list"
                out.extend(Packet(P(t), tuple(a), Magic.REQ) for a in args)
            else:
                out.append(Packet(P(t), tuple(args), Magic.REQ))

        return handle

    table = [handler(t) for t in range(max(P) + 1)]
    for piece in cut(stream, points):
        decoder.dispatch(piece, table, out.append)
    assert out == [event for _, event in items]


def test_batched_run_is_one_call_and_ends_at_another_event() -> None:
    """Consecutive batched requests make one call; any other event hands the run over first."""
    decoder = PacketDecoder(batched={P.SUBMIT_JOB_BG, P.SUBMIT_JOB})
    calls: list[tuple[str, object]] = []
    table = [
        (lambda args, t=t: calls.append((P(t).name, [tuple(a) for a in args])))
        if t in (P.SUBMIT_JOB_BG, P.SUBMIT_JOB)
        else (lambda args, t=t: calls.append((P(t).name, tuple(args))))
        for t in range(max(P) + 1)
    ]
    bg = [encode(request(P.SUBMIT_JOB_BG, b"f", b"", b"%d" % i)) for i in range(3)]
    stream = (
        bg[0]
        + bg[1]
        + encode(request(P.SUBMIT_JOB, b"f", b"", b"fg"))
        + bg[2]
        + encode(request(P.ECHO_REQ, b"e"))
        + b"status\n"
        + bg[0]
    )
    decoder.dispatch(stream + b"\0REQ\0\0", table, lambda e: calls.append(("other", e)))
    assert calls == [
        ("SUBMIT_JOB_BG", [(b"f", b"", b"0"), (b"f", b"", b"1")]),
        ("SUBMIT_JOB", [(b"f", b"", b"fg")]),
        ("SUBMIT_JOB_BG", [(b"f", b"", b"2")]),
        ("ECHO_REQ", (b"e",)),
        ("other", AdminCommand((b"status",))),
        ("SUBMIT_JOB_BG", [(b"f", b"", b"0")]),  # handed over before waiting on the tail
    ]


def test_batched_run_comes_before_an_error() -> None:
    """A bad header after a run: the run is handed over, then the error is raised."""
    decoder = PacketDecoder(batched={P.SUBMIT_JOB_BG})
    runs: list[int] = []
    table = [lambda args: runs.append(len(args))] * (max(P) + 1)
    packet = encode(request(P.SUBMIT_JOB_BG, b"f", b"", b"x"))
    with pytest.raises(BadMagic):
        decoder.dispatch(packet * 3 + b"\0XYZ" + b"\0" * 8, table, lambda e: None)
    assert runs == [3]


def test_stop_in_a_run_handler_drops_the_rest() -> None:
    """A run handler that stops the decoder is the last thing called."""
    decoder = PacketDecoder(batched={P.SUBMIT_JOB_BG})
    seen: list[object] = []

    def run(args: Any) -> None:
        seen.append(len(args))
        decoder.stop()

    table: list[Any] = [lambda args: seen.append("other")] * (max(P) + 1)
    table[P.SUBMIT_JOB_BG] = run
    packet = encode(request(P.SUBMIT_JOB_BG, b"f", b"", b"x"))
    decoder.dispatch(packet * 2 + encode(request(P.GRAB_JOB)) + packet, table, seen.append)
    assert seen == [2]


def test_dispatch_routes_requests_to_the_table_and_the_rest_to_other() -> None:
    """REQ packets go to ``requests[type]``; RES packets and admin lines to ``other``."""
    decoder = PacketDecoder()
    direct: list[tuple[int, tuple[bytes, ...]]] = []
    rest: list[Event] = []
    table = [lambda args, t=t: direct.append((t, tuple(args))) for t in range(max(P) + 1)]
    stream = (
        encode(request(P.SUBMIT_JOB_BG, b"f", b"", b"x"))
        + encode(response(P.NOOP))
        + b"status\n"
        + encode(request(P.GRAB_JOB))
    )
    decoder.dispatch(stream, table, rest.append)
    assert direct == [(P.SUBMIT_JOB_BG, (b"f", b"", b"x")), (P.GRAB_JOB, ())]
    assert rest == [response(P.NOOP), AdminCommand((b"status",))]
    # The single-packet fast path routes the same way.
    decoder.dispatch(encode(request(P.ECHO_REQ, b"e")), table, rest.append)
    decoder.dispatch(encode(response(P.ECHO_RES, b"e")), table, rest.append)
    assert direct[-1] == (P.ECHO_REQ, (b"e",))
    assert rest[-1] == response(P.ECHO_RES, b"e")


def test_stop_drops_the_rest_of_the_chunk_and_later_input() -> None:
    """A handler that stops the decoder is the last one called, for this chunk and after."""
    decoder = PacketDecoder()
    seen: list[int] = []

    def handler(t: int) -> Any:
        def handle(args: tuple[bytes, ...]) -> None:
            seen.append(t)
            if t == P.CANT_DO:
                decoder.stop()

        return handle

    table = [handler(t) for t in range(max(P) + 1)]
    stream = b"".join(
        encode(p) for p in (request(P.CAN_DO, b"f"), request(P.CANT_DO, b"f"), request(P.GRAB_JOB))
    )
    decoder.dispatch(stream + b"\0RE", table, lambda event: seen.append(-1))
    decoder.dispatch(encode(request(P.PRE_SLEEP)), table, lambda event: seen.append(-1))
    assert seen == [P.CAN_DO, P.CANT_DO]
    assert decoder.buffered() == b""


def test_dispatch_error_comes_after_the_events_before_it() -> None:
    """Events before a bad header are handed over first; the error is final."""
    decoder = PacketDecoder()
    rest: list[Event] = []
    with pytest.raises(BadMagic):
        decoder.dispatch(encode(response(P.NOOP)) + b"\0XYZ" + b"\0" * 8, None, rest.append)
    assert rest == [response(P.NOOP)]
    with pytest.raises(BadMagic):
        decoder.dispatch(encode(response(P.NOOP)), None, rest.append)
    assert rest == [response(P.NOOP)]
