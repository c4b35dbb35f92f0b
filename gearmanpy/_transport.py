# -*- test-case-name: tests.test_endpoints -*-
"""Transport helpers shared by server, client and worker connections.

:func:`set_nodelay` turns off Nagle's algorithm. :func:`write_through` sends now instead of
on the next reactor turn:

``transport.write`` only buffers; the bytes leave on a later reactor iteration, after an
``epoll_ctl`` to watch for writability and another to stop. A Gearman round trip is a few
dozen bytes each way, so that detour costs more than the work itself (and adds latency to
every job). When nothing is already buffered, :func:`write_through` hands the bytes to the
socket at once and buffers only what the kernel did not take, so ordering and flow control
stay Twisted's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import tcp


def write_through(transport: Any, data: bytes) -> None:
    """Send ``data`` on ``transport`` now if it is an idle TCP/UNIX connection, else buffer it.

    Only plain stream connections qualify: TLS and test transports fall back to ``write``.
    """
    if (
        isinstance(transport, tcp.Connection)
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnected
        and not transport._tempDataBuffer
        and len(transport.dataBuffer) == transport.offset
    ):
        try:
            sent = transport.socket.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            # A dead connection: let Twisted's own write path find out and report it.
            transport.write(data)
            return
        if sent < len(data):
            transport.write(data[sent:])
        return
    transport.write(data)


def set_nodelay(transport: Any) -> None:
    """Turn on ``TCP_NODELAY`` on ``transport`` (or the TCP transport under a TLS one).

    Gearman is a request/response protocol of small packets: Nagle's algorithm would hold
    each one back waiting for an ACK. Transports that are not TCP are left alone.
    """
    seen = 0
    while transport is not None and seen < 4:
        setter: Callable[[bool], None] | None = getattr(transport, "setTcpNoDelay", None)
        if setter is not None:
            try:
                setter(True)
            except Exception:  # a unix socket, or an already-closed socket
                pass
            return
        transport = getattr(transport, "transport", None)
        seen += 1
