"""Bytes from the wire as text, for log lines and messages.

Handles, function names, client ids, addresses and error texts are bytes on the wire; shown
with ``repr`` they read ``b'H:host:1'``. :func:`show` is the one way the codec, the server,
the client and the worker turn them into text.
"""

from __future__ import annotations

#: Control characters (NUL, newline, ESC...) as ``\xNN``: a log line stays one line.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}


def show(value: bytes | None) -> str:
    """``value`` as UTF-8 text, undecodable bytes and control characters as ``\\xNN``, never
    a ``b'...'`` repr; ``None`` as ``-``."""
    if value is None:
        return "-"
    return value.decode("utf-8", "backslashreplace").translate(_CONTROL)


__all__ = ["show"]
