# -*- test-case-name: tests.test_packets -*-
"""Gearman binary packets: types, encoding, and an incremental sans-I/O decoder.

The decoder takes bytes in any fragmentation and returns whole :class:`Packet` values and
admin text commands in the order they arrived. It checks every header before it buffers a
body, so a peer can never make it hold more than one packet of ``max_packet_size`` bytes.
Nothing here imports Twisted.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Collection, Sequence
from typing import Any, NamedTuple

from gearmanpy.errors import (
    AdminLineTooLong,
    BadMagic,
    MalformedPacket,
    PacketTooLarge,
    ProtocolError,
    UnknownPacketType,
)
from gearmanpy.protocol.admin import AdminCommand, parse_admin_line
from gearmanpy.protocol.limits import DEFAULT_MAX_LINE_LENGTH, DEFAULT_MAX_PACKET_SIZE
from gearmanpy.protocol.text import show

HEADER_SIZE = 12
_HEADER = struct.Struct(">III")


class Magic(bytes, enum.Enum):
    """The four bytes that open every binary packet and say which way it travels."""

    REQ = b"\0REQ"
    RES = b"\0RES"


_MAGIC_REQ_INT = int.from_bytes(Magic.REQ.value, "big")
_MAGIC_RES_INT = int.from_bytes(Magic.RES.value, "big")
# Enum members cached as plain module constants: attribute access on an Enum class is slow.
_REQ = Magic.REQ
_RES = Magic.RES
# tuple.__new__ skips NamedTuple's Python-level __new__ (``python benchmarks/codec_bench.py``
# shows the decoding rate it buys).
_new = tuple.__new__


class Priority(enum.IntEnum):
    """Job priority, numbered as gearmand's persistent queues number it (0 runs first)."""

    HIGH = 0
    NORMAL = 1
    LOW = 2


class PacketType(enum.IntEnum):
    """Every binary packet type, numbered and named as protocol.md §2 names them."""

    CAN_DO = 1
    CANT_DO = 2
    RESET_ABILITIES = 3
    PRE_SLEEP = 4
    UNUSED = 5
    NOOP = 6
    SUBMIT_JOB = 7
    JOB_CREATED = 8
    GRAB_JOB = 9
    NO_JOB = 10
    JOB_ASSIGN = 11
    WORK_STATUS = 12
    WORK_COMPLETE = 13
    WORK_FAIL = 14
    GET_STATUS = 15
    ECHO_REQ = 16
    ECHO_RES = 17
    SUBMIT_JOB_BG = 18
    ERROR = 19
    STATUS_RES = 20
    SUBMIT_JOB_HIGH = 21
    SET_CLIENT_ID = 22
    CAN_DO_TIMEOUT = 23
    ALL_YOURS = 24
    WORK_EXCEPTION = 25
    OPTION_REQ = 26
    OPTION_RES = 27
    WORK_DATA = 28
    WORK_WARNING = 29
    GRAB_JOB_UNIQ = 30
    JOB_ASSIGN_UNIQ = 31
    SUBMIT_JOB_HIGH_BG = 32
    SUBMIT_JOB_LOW = 33
    SUBMIT_JOB_LOW_BG = 34
    SUBMIT_JOB_SCHED = 35
    SUBMIT_JOB_EPOCH = 36
    SUBMIT_REDUCE_JOB = 37
    SUBMIT_REDUCE_JOB_BACKGROUND = 38
    GRAB_JOB_ALL = 39
    JOB_ASSIGN_ALL = 40
    GET_STATUS_UNIQUE = 41
    STATUS_RES_UNIQUE = 42


P = PacketType

#: How many arguments each type carries. All but the last are NUL-terminated on the wire
#: and may not contain NUL; the last one is bounded by the packet size and may.
ARG_COUNTS: dict[PacketType, int] = {
    P.CAN_DO: 1,
    P.CANT_DO: 1,
    P.RESET_ABILITIES: 0,
    P.PRE_SLEEP: 0,
    P.UNUSED: 0,
    P.NOOP: 0,
    P.SUBMIT_JOB: 3,
    P.JOB_CREATED: 1,
    P.GRAB_JOB: 0,
    P.NO_JOB: 0,
    P.JOB_ASSIGN: 3,
    P.WORK_STATUS: 3,
    P.WORK_COMPLETE: 2,
    P.WORK_FAIL: 1,
    P.GET_STATUS: 1,
    P.ECHO_REQ: 1,
    P.ECHO_RES: 1,
    P.SUBMIT_JOB_BG: 3,
    P.ERROR: 2,
    P.STATUS_RES: 5,
    P.SUBMIT_JOB_HIGH: 3,
    P.SET_CLIENT_ID: 1,
    P.CAN_DO_TIMEOUT: 2,
    P.ALL_YOURS: 0,
    P.WORK_EXCEPTION: 2,
    P.OPTION_REQ: 1,
    P.OPTION_RES: 1,
    P.WORK_DATA: 2,
    P.WORK_WARNING: 2,
    P.GRAB_JOB_UNIQ: 0,
    P.JOB_ASSIGN_UNIQ: 4,
    P.SUBMIT_JOB_HIGH_BG: 3,
    P.SUBMIT_JOB_LOW: 3,
    P.SUBMIT_JOB_LOW_BG: 3,
    P.SUBMIT_JOB_SCHED: 8,
    P.SUBMIT_JOB_EPOCH: 4,
    P.SUBMIT_REDUCE_JOB: 5,
    P.SUBMIT_REDUCE_JOB_BACKGROUND: 5,
    P.GRAB_JOB_ALL: 0,
    P.JOB_ASSIGN_ALL: 5,
    P.GET_STATUS_UNIQUE: 1,
    P.STATUS_RES_UNIQUE: 6,
}

MAX_TYPE = max(PacketType)

# Flat lookup tables indexed by the wire number, for the decoder's hot loop.
_TYPES: list[PacketType | None] = [None] * (MAX_TYPE + 1)
_ARGC: list[int] = [0] * (MAX_TYPE + 1)
for _t in PacketType:
    _TYPES[_t] = _t
    _ARGC[_t] = ARG_COUNTS[_t]
del _t


class Packet(NamedTuple):
    """One binary packet: its type, its arguments, and which way it travels.

    A ``NamedTuple`` rather than a frozen attrs class: it is built once per packet on the
    hottest path of the server, and a tuple is several times cheaper to create.
    """

    type: PacketType
    args: tuple[bytes, ...] = ()
    magic: Magic = Magic.REQ


def request(ptype: PacketType, *args: bytes) -> Packet:
    """Build a packet sent to a server (``\\0REQ``)."""
    return Packet(ptype, args, Magic.REQ)


def response(ptype: PacketType, *args: bytes) -> Packet:
    """Build a packet sent by a server (``\\0RES``)."""
    return Packet(ptype, args, Magic.RES)


#: Packs a big-endian 32-bit size (or type) field.
pack_size = struct.Struct(">I").pack


def head(magic: bytes, ptype: int) -> bytes:
    """The first eight bytes of a packet: magic and type (pre-compute them for hot paths)."""
    return magic + pack_size(ptype)


def frame(packet_head: bytes, args: Sequence[bytes]) -> bytes:
    """Frame ``args`` behind a pre-computed :func:`head`, without checking them."""
    body = b"\0".join(args)
    return packet_head + pack_size(len(body)) + body


def encode_raw(magic: bytes, ptype: int, args: Sequence[bytes]) -> bytes:
    """Frame ``args`` without checking them: the hot path for arguments known to be valid."""
    return frame(head(magic, ptype), args)


def encode(packet: Packet) -> bytes:
    """Return the wire bytes of ``packet``.

    :raises ValueError: if the argument count does not match the type, or an argument other
        than the last contains NUL (it would shift every later argument).
    """
    ptype, args, magic = packet
    if len(args) != ARG_COUNTS[ptype]:
        raise ValueError(f"{ptype.name} takes {ARG_COUNTS[ptype]} arguments, got {len(args)}")
    for arg in args[:-1]:
        if b"\0" in arg:
            raise ValueError(f"{ptype.name}: only the last argument may contain NUL")
    return encode_raw(magic.value, ptype, args)


#: What the decoder yields: a binary packet or a parsed admin text command.
Event = Packet | AdminCommand


class PacketDecoder:
    """Incremental decoder for one direction of one connection.

    Feed it bytes as they arrive; it returns the whole events they complete. After it raises
    a :class:`ProtocolError` the stream is unusable and the connection should be closed.
    """

    def __init__(
        self,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        allow_admin: bool = True,
        batched: Collection[int] = (),
    ) -> None:
        """
        :param max_packet_size: largest body accepted; a bigger header is an error at once.
        :param max_line_length: largest admin text line, newline included.
        :param allow_admin: whether a non-NUL first byte starts an admin line (servers) or
            is an error (clients and workers, which only ever receive binary packets).
        :param batched: request types whose consecutive packets :meth:`dispatch` hands over
            together, as one list of argument lists (a pipelined run of submissions).
        """
        self.max_packet_size = max_packet_size
        self.max_line_length = max_line_length
        self.allow_admin = allow_admin
        self._buffer = bytearray()
        # Total buffered length below which another parse attempt cannot succeed: lets a
        # large body arrive in many chunks without re-scanning or copying it each time.
        self._need = 0
        self._error: ProtocolError | None = None
        self._stopped = False
        self._batched: list[bool] | None = (
            [t in batched for t in range(MAX_TYPE + 1)] if batched else None
        )
        #: Stopped or failed: the fast path is off.
        self._halted = False

    def buffered(self) -> bytes:
        """Return the bytes received but not yet part of a whole event (for tests)."""
        return bytes(self._buffer)

    def feed(self, data: bytes) -> list[Event]:
        """Consume ``data`` and return the events it completes, in order.

        :raises ProtocolError: on the first invalid header, body or line; events decoded
            before it from this chunk are on the exception's ``events`` attribute.
        """
        events: list[Event] = []
        try:
            self.dispatch(data, None, events.append)
        except ProtocolError as e:
            e.events = events
            raise
        return events

    def stop(self) -> None:
        """Discard the rest of the current chunk and everything fed later.

        For a handler of :meth:`dispatch` whose connection is going away: nothing after the
        packet that ended it may be acted on.
        """
        self._stopped = True
        self._halted = True
        self._buffer.clear()

    # Long: the per-packet hot path; its single-packet fast path is written out because a
    # call per packet would cost more than the parse (python benchmarks/codec_bench.py).
    def dispatch(
        self,
        data: bytes,
        requests: Sequence[Callable[[Any], object]] | None,
        other: Callable[[Event], object],
    ) -> None:
        """Consume ``data`` and hand over each event it completes, in order, at once.

        A request packet (``\\0REQ``) of type ``T`` goes to ``requests[T](args)``; every
        other event (a response packet, an admin line) to ``other(event)``; with
        ``requests=None`` everything goes to ``other``. Calling a handler directly spares a
        server the packet object and the event list per request; the arguments it gets may
        be a list rather than a tuple. Consecutive requests of a type the decoder was built
        with in ``batched`` go over as one call with the list of their arguments, handed
        over before any other event (or the end of ``data``, or an error) that follows them.
        After a handler calls :meth:`stop`, the rest of ``data`` is dropped.

        :raises ProtocolError: on the first invalid header, body or line, after every event
            before it was handed over.
        """
        if self._halted or self._buffer:
            if self._error is not None:
                # A fresh exception: the first one's events were already handed out.
                raise type(self._error)(str(self._error))
            if self._stopped:
                return
        else:
            n = len(data)
            if n >= HEADER_SIZE:
                # Fast path: exactly one whole packet (a request/reply round trip).
                magic, ptype, size = _HEADER.unpack_from(data)
                if (
                    n == HEADER_SIZE + size
                    and 0 < ptype <= MAX_TYPE
                    and size <= self.max_packet_size
                ):
                    argc = _ARGC[ptype]
                    args: Sequence[bytes]
                    if argc == 0:
                        args = ()
                    elif argc == 1:
                        args = (data[HEADER_SIZE:],)
                    else:
                        args = data[HEADER_SIZE:].split(b"\0", argc - 1)
                    if len(args) == argc:
                        if magic == _MAGIC_REQ_INT:
                            if requests is not None:
                                if self._batched is not None and self._batched[ptype]:
                                    requests[ptype]([args])
                                else:
                                    requests[ptype](args)
                                return
                            other(_new(Packet, (_TYPES[ptype], tuple(args), _REQ)))
                            return
                        if magic == _MAGIC_RES_INT:
                            other(_new(Packet, (_TYPES[ptype], tuple(args), _RES)))
                            return
        buf = self._buffer
        if buf:
            buf += data
            if len(buf) < self._need:
                return
            data = bytes(buf)
            buf.clear()
        try:
            pos = self._parse(data, requests, other)
        except ProtocolError as e:
            self._error = e
            self._halted = True
            raise
        if pos < len(data) and not self._stopped:
            buf += memoryview(data)[pos:]

    # Long: the decoder's loop over a chunk, with runs of batched requests; one function so
    # that its locals stay locals for every packet (python benchmarks/codec_bench.py).
    def _parse(
        self,
        data: bytes,
        requests: Sequence[Callable[[Any], object]] | None,
        other: Callable[[Event], object],
    ) -> int:
        """Decode whole events from ``data`` and hand them over; return where the rest starts.

        Arguments of a request handed to ``requests`` may be a list (cheaper than a tuple);
        a :class:`Packet` always carries a tuple.
        """
        pos = 0
        n = len(data)
        unpack = _HEADER.unpack_from
        argcs = _ARGC
        limit = self.max_packet_size
        direct = _MAGIC_REQ_INT if requests is not None else -1
        batched = self._batched if requests is not None else None
        # A run of consecutive batched requests of one type, not handed over yet.
        run: list[Sequence[bytes]] | None = None
        run_type = 0
        args: Sequence[bytes]
        try:
            while pos < n:
                if data[pos]:
                    if run is not None:
                        pending, run = run, None
                        requests[run_type](pending)  # type: ignore[index]
                        if self._stopped:
                            return n
                    after = self._admin_line(data, pos, other)
                    if after < 0:
                        return pos
                    pos = after
                else:
                    end = pos + HEADER_SIZE
                    if end > n:
                        self._check_partial_magic(data[pos:n])
                        # Until the magic is complete, look again at every byte so that a bad
                        # magic fails the same way however the header is fragmented.
                        self._need = n - pos + 1 if n - pos < 4 else HEADER_SIZE
                        return pos
                    magic, ptype, size = unpack(data, pos)
                    if magic != _MAGIC_REQ_INT and magic != _MAGIC_RES_INT:
                        raise BadMagic(f"bad packet magic {show(data[pos : pos + 4])}")
                    if not 0 < ptype <= MAX_TYPE:
                        raise UnknownPacketType(f"unknown packet type {ptype}")
                    if size > limit:
                        raise PacketTooLarge(
                            f"packet body of {size} bytes exceeds the limit of {limit}"
                        )
                    start = end
                    end += size
                    if end > n:
                        self._need = end - pos
                        return pos
                    argc = argcs[ptype]
                    if argc == 0:
                        args = ()
                    elif argc == 1:
                        args = (data[start:end],)
                    else:
                        args = data[start:end].split(b"\0", argc - 1)
                        if len(args) != argc:
                            raise MalformedPacket(
                                f"{_TYPES[ptype].name} needs {argc} arguments, "  # type: ignore[union-attr]
                                f"got {len(args)}"
                            )
                    pos = end
                    starts_run = False
                    if magic == direct and batched is not None and batched[ptype]:
                        if run is not None and ptype == run_type:
                            run.append(args)
                            continue
                        starts_run = True
                    if run is not None:
                        pending, run = run, None
                        requests[run_type](pending)  # type: ignore[index]
                        if self._stopped:
                            return n
                    if starts_run:
                        run = [args]
                        run_type = ptype
                        continue
                    if magic == direct:
                        requests[ptype](args)  # type: ignore[index]
                    else:
                        magic_value = _REQ if magic == _MAGIC_REQ_INT else _RES
                        other(_new(Packet, (_TYPES[ptype], tuple(args), magic_value)))
                if self._stopped:
                    return n
            self._need = 0
            return pos
        finally:
            # Whatever ended the loop (the data, an incomplete tail, a bad header), the run
            # decoded before it is handed over first.
            if run is not None and not self._stopped:
                requests[run_type](run)  # type: ignore[index]

    def _admin_line(self, data: bytes, pos: int, other: Callable[[Event], object]) -> int:
        """Hand over the admin line at ``pos``; return where the next event starts, or -1
        if the line is not complete yet."""
        if not self.allow_admin:
            raise BadMagic(f"expected a binary packet, got byte {show(data[pos : pos + 1])}")
        nl = data.find(b"\n", pos)
        if nl < 0:
            if len(data) - pos >= self.max_line_length:
                raise AdminLineTooLong(f"admin line longer than {self.max_line_length} bytes")
            self._need = len(data) - pos + 1
            return -1
        if nl + 1 - pos > self.max_line_length:
            raise AdminLineTooLong(f"admin line longer than {self.max_line_length} bytes")
        other(parse_admin_line(data[pos:nl]))
        return nl + 1

    @staticmethod
    def _check_partial_magic(head: bytes) -> None:
        """Reject a partial header whose magic is already wrong, instead of waiting on it."""
        k = min(len(head), 4)
        if head[:k] != Magic.REQ.value[:k] and head[:k] != Magic.RES.value[:k]:
            raise BadMagic(f"bad packet magic {show(head[:k])}")


__all__ = [
    "ARG_COUNTS",
    "DEFAULT_MAX_LINE_LENGTH",
    "DEFAULT_MAX_PACKET_SIZE",
    "Event",
    "HEADER_SIZE",
    "Magic",
    "Packet",
    "PacketDecoder",
    "PacketType",
    "Priority",
    "ProtocolError",
    "encode",
    "encode_raw",
    "frame",
    "head",
    "pack_size",
    "request",
    "response",
]
