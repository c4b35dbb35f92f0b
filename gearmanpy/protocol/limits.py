# -*- test-case-name: tests.test_packets -*-
"""The protocol's size limits, one constant each, as gearmand 1.1.20 enforces them.

protocol.md §1.3 lists them. Every room (codec, server, client, worker) takes its limits from
here, so a limit means the same thing everywhere. Nothing here imports Twisted.
"""

from __future__ import annotations

#: Default cap on a packet body: room for a 10 MiB job plus its function and unique.
DEFAULT_MAX_PACKET_SIZE = 16 * 1024 * 1024

#: Default cap on one admin text line, newline included (gearmand's receive buffer).
DEFAULT_MAX_LINE_LENGTH = 8192

#: Longest unique (or reducer) a server accepts. gearmand accepts 64 bytes but keeps 63
#: (quirk 4); gearmanpy's server keeps all 64, so a 64-byte unique coalesces.
MAX_UNIQUE_SIZE = 64

#: Longest unique every server keeps whole, gearmand included: the client refuses longer
#: ones, so a unique coalesces whichever server it reaches.
PORTABLE_UNIQUE_SIZE = 63

#: Longest job handle: gearmand's 64-byte buffer holds 63 bytes and a NUL. A longer handle
#: names no job (GET_STATUS answers "unknown"; gearmand does not answer at all).
MAX_HANDLE_SIZE = 63

#: Longest SET_CLIENT_ID kept; longer ids are cut, as gearmand cuts them.
MAX_CLIENT_ID_SIZE = 127

__all__ = [
    "DEFAULT_MAX_LINE_LENGTH",
    "DEFAULT_MAX_PACKET_SIZE",
    "MAX_CLIENT_ID_SIZE",
    "MAX_HANDLE_SIZE",
    "MAX_UNIQUE_SIZE",
    "PORTABLE_UNIQUE_SIZE",
]
