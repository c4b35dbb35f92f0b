"""Hypothesis strategies for the Gearman codec, valid by construction.

Every strategy here builds values that are correct as drawn (style.md §5): a packet gets
exactly ``ARG_COUNTS[type]`` arguments, and every argument but the last has its NULs removed
with ``.map`` rather than rejected with ``.filter``. Sizes are bounded and the strategies are
flat, so a run stays fast and never recurses.
"""

from __future__ import annotations

from hypothesis import strategies as st

from gearmanpy.protocol.admin import MAX_ADMIN_WORDS, AdminCommand
from gearmanpy.protocol.packets import ARG_COUNTS, Magic, Packet, PacketType, encode


def _strip_nul(value: bytes) -> bytes:
    """Remove every NUL, so the value can be a NUL-terminated (non-last) argument."""
    return value.replace(b"\0", b"")


#: An argument that is not the last one: any bytes but NUL.
plain_args = st.binary(max_size=64).map(_strip_nul)

#: The last argument of a packet: any bytes at all, NUL included.
last_args = st.binary(max_size=256)

magics = st.sampled_from(Magic)
packet_types = st.sampled_from(PacketType)


@st.composite
def packets(draw: st.DrawFn, types: st.SearchStrategy[PacketType] = packet_types) -> Packet:
    """A valid packet of any type, with exactly as many arguments as its type takes."""
    ptype = draw(types)
    count = ARG_COUNTS[ptype]
    args: list[bytes] = []
    if count:
        args = [draw(plain_args) for _ in range(count - 1)]
        args.append(draw(last_args))
    return Packet(ptype, tuple(args), draw(magics))


#: Lists of valid packets, short enough to keep each example cheap.
packet_lists = st.lists(packets(), max_size=8)


def _admin_word(value: bytes) -> bytes:
    """Turn arbitrary bytes into one admin word: no space, CR, LF or NUL, never empty."""
    return value.translate(None, b" \r\n\0") or b"x"


#: One word of an admin command line.
admin_words = st.binary(min_size=1, max_size=16).map(_admin_word)


@st.composite
def admin_lines(draw: st.DrawFn) -> tuple[bytes, AdminCommand]:
    """An admin text line as sent on the wire, with the command it must decode to.

    The words are joined by single spaces and the line ends in ``\\n`` or ``\\r\\n``; zero
    words gives an empty line, which decodes to a command without words.
    """
    words = tuple(draw(st.lists(admin_words, max_size=MAX_ADMIN_WORDS)))
    ending = draw(st.sampled_from([b"\n", b"\r\n"]))
    return b" ".join(words) + ending, AdminCommand(words)


@st.composite
def wire_items(draw: st.DrawFn) -> tuple[bytes, Packet | AdminCommand]:
    """Either an encoded binary packet or an admin line, with the event it decodes to."""
    if draw(st.booleans()):
        packet = draw(packets())
        return encode(packet), packet
    return draw(admin_lines())


#: Mixed streams of binary packets and admin lines.
wire_item_lists = st.lists(wire_items(), max_size=8)


def header(magic: bytes, ptype: int, size: int) -> bytes:
    """Build a raw 12-byte header, valid or not."""
    return magic + ptype.to_bytes(4, "big") + size.to_bytes(4, "big")


@st.composite
def headers(draw: st.DrawFn) -> bytes:
    """A 12-byte header whose magic, type and size are each drawn from good and bad values."""
    known = st.sampled_from([b"\0REQ", b"\0RES", b"\0XYZ", b"\0req"])
    magic = draw(known | st.binary(min_size=4, max_size=4))
    ptype = draw(st.integers(0, 45) | st.sampled_from([0x80000000, 0xFFFFFFFF]))
    size = draw(st.integers(0, 300) | st.integers(0, 0xFFFFFFFF))
    return header(magic, ptype, size)


@st.composite
def short_bodies(draw: st.DrawFn) -> bytes:
    """A whole packet of a multi-argument type whose body has too few NUL separators."""
    ptype = draw(st.sampled_from(sorted(t for t, n in ARG_COUNTS.items() if n >= 2)))
    body = b"\0".join(draw(st.lists(plain_args, min_size=1, max_size=ARG_COUNTS[ptype] - 1)))
    return draw(magics).value + ptype.to_bytes(4, "big") + len(body).to_bytes(4, "big") + body


#: Admin lines with more words than any command takes.
wordy_admin_lines = st.lists(admin_words, min_size=6, max_size=8).map(
    lambda words: b" ".join(words) + b"\n"
)


#: Byte chunks that come close to valid input often enough to reach every decoder branch:
#: whole packets, packets cut short, admin lines, stray headers, bodies missing separators,
#: admin lines with too many words, and plain noise.
hostile_chunks = st.one_of(
    st.binary(max_size=64),
    packets().map(encode),
    packets().map(encode).flatmap(lambda b: st.integers(0, len(b)).map(lambda i: b[:i])),
    admin_lines().map(lambda item: item[0]),
    headers(),
    short_bodies(),
    wordy_admin_lines,
    st.binary(min_size=1, max_size=200).map(lambda b: b.replace(b"\n", b"")),
)
