"""Micro-benchmark of the sans-I/O packet codec: packets per second, encoding and decoding.

Run it from the repository root::

    python benchmarks/codec_bench.py [--count 50000] [--repeat 7] [--payload 100]

It measures the two packets that dominate a busy server: SUBMIT_JOB_BG (client to server,
function ``reverse``, empty unique, a ``--payload``-byte payload) and JOB_CREATED (server to
client, a gearmand-style handle). Encoding is timed through the checked :func:`encode` and
the unchecked :func:`encode_raw`. Decoding feeds one ``PacketDecoder`` the whole stream at
once, and a fresh one the same stream in 64 KiB chunks, as a socket delivers it. Each figure
is the median of ``--repeat`` runs. This is a script, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gearmanpy.protocol.packets import (  # noqa: E402
    Packet,
    PacketDecoder,
    PacketType,
    encode,
    encode_raw,
    request,
    response,
)

CHUNK = 64 * 1024


def median_rate(count: int, repeat: int, run: Callable[[], object]) -> float:
    """Run ``run`` ``repeat`` times and return the median rate in items per second."""
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        timings.append(time.perf_counter() - start)
    return count / statistics.median(timings)


def chunks(data: bytes, size: int = CHUNK) -> list[bytes]:
    """Cut ``data`` into pieces of ``size`` bytes (the last one shorter)."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def bench_encode(packets: list[Packet], repeat: int) -> tuple[float, float]:
    """Return (encode() packets/s, encode_raw() packets/s) for ``packets``."""

    def checked() -> None:
        for packet in packets:
            encode(packet)

    def raw() -> None:
        for ptype, args, magic in packets:
            encode_raw(magic.value, ptype, args)

    return (
        median_rate(len(packets), repeat, checked),
        median_rate(len(packets), repeat, raw),
    )


def bench_decode(packets: list[Packet], repeat: int) -> tuple[float, float]:
    """Return (whole-stream packets/s, 64 KiB-chunk packets/s) for ``packets``."""
    stream = b"".join(map(encode, packets))
    pieces = chunks(stream)
    expected = len(packets)

    def whole() -> None:
        events = PacketDecoder().feed(stream)
        assert len(events) == expected

    def chunked() -> None:
        decoder = PacketDecoder()
        n = 0
        for piece in pieces:
            n += len(decoder.feed(piece))
        assert n == expected

    return (
        median_rate(expected, repeat, whole),
        median_rate(expected, repeat, chunked),
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every measurement and print one line per figure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50_000, help="packets per stream")
    parser.add_argument("--repeat", type=int, default=7, help="runs per figure (median)")
    parser.add_argument("--payload", type=int, default=100, help="SUBMIT_JOB_BG payload bytes")
    args = parser.parse_args(argv)

    payload = (b"0123456789" * (args.payload // 10 + 1))[: args.payload]
    streams = {
        "SUBMIT_JOB_BG": [
            request(PacketType.SUBMIT_JOB_BG, b"reverse", b"", payload) for _ in range(args.count)
        ],
        "JOB_CREATED": [
            response(PacketType.JOB_CREATED, b"H:worker-host.example:%d" % i)
            for i in range(args.count)
        ],
    }
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, "
        f"{args.count} packets per stream, median of {args.repeat}, "
        f"SUBMIT_JOB_BG payload {args.payload} bytes, chunks of {CHUNK} bytes"
    )
    print(f"{'packet':<15} {'operation':<22} {'packets/s':>12} {'MB/s':>8}")
    for name, packets in streams.items():
        wire = sum(len(encode(p)) for p in packets) / len(packets)
        checked, raw = bench_encode(packets, args.repeat)
        whole, chunked = bench_decode(packets, args.repeat)
        for operation, rate in [
            ("encode()", checked),
            ("encode_raw()", raw),
            ("decode whole stream", whole),
            ("decode 64 KiB chunks", chunked),
        ]:
            print(f"{name:<15} {operation:<22} {rate:>12,.0f} {rate * wire / 1e6:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
