# -*- test-case-name: tests.test_core_state -*-
"""Numbers in packet fields and admin words, parsed the way gearmand's C code parses them.

gearmand reads CAN_DO_TIMEOUT, SUBMIT_JOB_EPOCH, WORK_STATUS and ``maxqueue`` numbers with
``strtoll``/``atoi``: leading digits count, junk reads as 0. Matching that keeps peers that
send odd numbers working exactly as on gearmand, without ever parsing an unbounded digit
string. Nothing here imports Twisted.
"""

from __future__ import annotations

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def parse_c_int(value: bytes) -> int | None:
    """Parse leading decimal digits as C's ``strtoll`` does: ``7x`` is 7, ``abc`` is 0.

    Returns None when the number does not fit in a signed 64-bit integer (never parses an
    unbounded digit string).
    """
    value = value.lstrip(b" \t")
    sign = 1
    if value[:1] in (b"-", b"+"):
        sign = -1 if value[:1] == b"-" else 1
        value = value[1:]
    digits = 0
    for ch in value:
        if 48 <= ch <= 57:
            digits += 1
        else:
            break
    if not digits:
        return 0
    if len(value[:digits].lstrip(b"0")) > 19:
        return None
    n = sign * int(value[:digits])
    return n if _INT64_MIN <= n <= _INT64_MAX else None


def atoi(value: bytes) -> int:
    """Parse leading digits as C's ``atoi``, saturating instead of overflowing."""
    n = parse_c_int(value)
    if n is None:
        return _INT64_MIN if value.lstrip(b" \t").startswith(b"-") else _INT64_MAX
    return n


__all__ = ["atoi", "parse_c_int"]
