# -*- test-case-name: tests.test_endpoints -*-
"""Write-through for Twisted TCP transports: send now instead of on the next reactor turn.

``transport.write`` only buffers; the bytes leave on a later reactor iteration, after an
``epoll_ctl`` to watch for writability and another to stop. A Gearman round trip is a few
dozen bytes each way, so that detour costs more than the work itself (and adds latency to
every job). When nothing is already buffered, :func:`write_through` hands the bytes to the
socket at once and buffers only what the kernel did not take, so ordering and flow control
stay Twisted's.
"""

from __future__ import annotations

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
