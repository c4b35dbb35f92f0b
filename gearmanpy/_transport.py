# -*- test-case-name: tests.test_outbound -*-
"""Transport helpers shared by server, client and worker connections.

:func:`set_nodelay` turns off Nagle's algorithm. :class:`SocketWriter` sends now instead of
on the next reactor turn.

Why write through: ``transport.write`` only buffers; the bytes leave on a later reactor
iteration, after an ``epoll_ctl`` to watch for writability and another to stop. A Gearman
round trip is a few dozen bytes each way, so that detour costs more than the work itself and
adds latency to every job (``python benchmarks/run.py --scenarios S3`` shows it: the S3
round-trip rate and its p99). When Twisted holds nothing unsent for the connection, the
writer hands the bytes to the socket at once and gives Twisted only what the kernel did not
take, so ordering and flow control stay Twisted's.

It uses only Twisted's public interfaces: the socket from ``ISystemHandle.getHandle``, and
``IConsumer.registerProducer`` with the writer as a pull producer, which Twisted calls
(``resumeProducing``) each time its own buffer for the connection has drained. So the
writer knows without reading Twisted's private buffer fields whether sending directly keeps
the byte order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import IPullProducer
from zope.interface import implementer


@implementer(IPullProducer)
class SocketWriter:
    """Writes one connection's bytes: straight to the socket while Twisted's buffer is empty.

    Only plain stream connections (TCP, UNIX) write through; TLS and test transports get
    plain ``transport.write``. Close the connection with :meth:`close` (or :meth:`abort`),
    which unregisters the writer first: a registered producer keeps Twisted from closing the
    connection, and Twisted tells the writer of an abort only on its next turn.

    The writer must be the connection's only writer: a ``transport.write`` made beside it
    could be overtaken by a later direct send. And since it is the transport's producer, the
    transport takes no other producer, and ``loseWriteConnection`` (a half-close, which
    gearmanpy never uses) would wait for ever.
    """

    __slots__ = ("_transport", "_socket", "_idle")

    def __init__(self, transport: Any) -> None:
        """:param transport: the connection's transport, already connected."""
        self._transport = transport
        self._socket: Any = None
        #: Twisted holds nothing unsent: a direct send keeps the order.
        self._idle = False
        if isinstance(transport, tcp.Connection):
            self._socket = transport.getHandle()
            # A pull producer is resumed at once, and again whenever the buffer drains.
            transport.registerProducer(self, False)

    def resumeProducing(self) -> None:
        """Twisted's buffer for the connection is empty again (or we just registered)."""
        if self._transport.disconnecting:
            # loseConnection() was called by someone else (ClientService.stopService does):
            # a registered producer would keep the connection open for ever.
            self._idle = False
            self._socket = None
            self._transport.unregisterProducer()
            return
        self._idle = self._socket is not None

    def stopProducing(self) -> None:
        """The connection is gone: never send directly again."""
        self._idle = False
        self._socket = None

    def write(self, data: bytes) -> None:
        """Send ``data`` now if Twisted holds nothing unsent, else queue it behind that."""
        if self._idle:
            try:
                sent = self._socket.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                # A dead connection: let Twisted's own write path find out and report it.
                self._idle = False
                self._transport.write(data)
                return
            if sent == len(data):
                return
            # The kernel took part: Twisted sends the rest, and resumes us once it has.
            self._idle = False
            data = data[sent:]
        self._transport.write(data)

    def close(self) -> None:
        """Send what Twisted still holds, then close the connection."""
        self._detach()
        self._transport.loseConnection()

    def abort(self) -> None:
        """Close the connection at once, dropping whatever is unsent (a reset)."""
        self._detach()
        self._transport.abortConnection()

    def _detach(self) -> None:
        """Never send directly again, and let Twisted close the connection."""
        self._idle = False
        if self._socket is not None:
            self._socket = None
            self._transport.unregisterProducer()


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
