# -*- test-case-name: tests.test_outbound -*-
"""Transport helpers shared by server, client and worker connections.

:func:`set_nodelay` turns off Nagle's algorithm. :class:`SocketWriter` sends now instead of
on the next reactor turn, and counts what the peer has not taken yet. :func:`openssl_reason`
says why a TLS handshake failed (for the server's log and the client's error alike).

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

Why count: a peer that sends requests and never reads their replies would make the server
hold every reply for it. While Twisted holds bytes for the connection, later writes wait in
the writer's own queue and are handed to Twisted :data:`HANDOFF` bytes at a time, at each
drain; so :attr:`SocketWriter.unsent` (queued, plus handed since the last drain) is known
at every drain, and a watcher is told when it passes the levels it set (the server stops
reading from such a peer, :class:`gearmanpy.server.outbound.OutputGuard`). The count costs
nothing while the kernel takes every write, the common case; and Twisted never holds a
slow peer's megabytes in one buffer it would copy into a single string to send.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import IPullProducer, IPushProducer
from zope.interface import implementer

#: Most bytes (whole writes, joined) handed to Twisted at one drain: big enough that the
#: drains cost nothing next to the sending, small enough that Twisted copies little.
HANDOFF = 256 * 1024

#: A watcher's level that is never reached.
NEVER = sys.maxsize


def openssl_reason(error: BaseException) -> str:
    """Why a TLS operation failed, in OpenSSL's words (an ``OpenSSL.SSL.Error`` carries a
    list of (library, function, reason)): ``certificate verify failed``; for any other
    error, its message on one line."""
    args = getattr(error, "args", ())
    if args and isinstance(args[0], list):
        reasons = [str(e[2]) for e in args[0] if isinstance(e, tuple) and len(e) == 3 and e[2]]
        if reasons:
            return "; ".join(dict.fromkeys(reasons))
    return " ".join(str(error).split()) or type(error).__name__


def _unwatched(writer: SocketWriter) -> None:
    """The watcher of a writer nobody watches (its levels are never reached)."""


@implementer(IPullProducer, IPushProducer)
class SocketWriter:
    """Writes one connection's bytes: straight to the socket while Twisted's buffer is empty.

    Plain stream connections (TCP, UNIX) write through, registered with Twisted as a pull
    producer. Other transports (TLS, in-memory test transports) get ``transport.write``;
    when watched, the writer registers with them as a streaming producer instead, and
    queues what it writes while the transport has paused it. Close the connection with
    :meth:`close` (or :meth:`abort`), which unregisters the writer first: a registered
    producer keeps Twisted from closing the connection, and Twisted tells the writer of an
    abort only on its next turn.

    The writer must be the connection's only writer: a ``transport.write`` made beside it
    could be overtaken by a later direct send. And since it is the transport's producer, the
    transport takes no other producer, and ``loseWriteConnection`` (a half-close, which
    gearmanpy never uses) would wait for ever.

    :ivar unsent: bytes written here that the kernel has not taken, as far as the writer
        knows: those in its queue, plus those handed to Twisted since Twisted's buffer last
        drained (on a streaming transport: since the transport paused the writer).
    :ivar above: the watcher is called once :attr:`unsent` grows past this...
    :ivar below: ...or falls to this or less; the watcher sets both anew.
    """

    __slots__ = (
        "_transport",
        "_socket",
        "_idle",
        "_open",
        "_queue",
        "_handed",
        "_registered",
        "_watch",
        "unsent",
        "above",
        "below",
    )

    def __init__(self, transport: Any, watch: Callable[[SocketWriter], None] | None = None) -> None:
        """
        :param transport: the connection's transport, already connected.
        :param watch: called with the writer when :attr:`unsent` passes :attr:`above` or
            falls to :attr:`below`; without it the levels are never reached, and on a
            transport that is not a socket the writer is plain ``transport.write``.
        """
        self._transport = transport
        self._socket: Any = None
        #: Twisted holds nothing unsent and nothing is queued: a direct send keeps the order.
        self._idle = False
        #: Streaming transports only: not paused, so nothing is queued (but while
        #: :meth:`resumeProducing` hands the queue over): hand over at once.
        self._open = False
        #: Writes waiting behind what Twisted holds; None: plain ``transport.write``.
        self._queue: deque[bytes] | None = None
        #: Bytes handed to Twisted that it has not reported sent.
        self._handed = 0
        self._registered = False
        self._watch = watch or _unwatched
        self.unsent = 0
        self.above = NEVER
        self.below = -1
        if isinstance(transport, tcp.Connection):
            self._socket = transport.getHandle()
            self._queue = deque()
            self._registered = True
            # A pull producer is resumed at once, and again whenever the buffer drains.
            transport.registerProducer(self, False)
        elif watch is not None:
            self._queue = deque()
            self._open = True
            self._registered = True
            # Paused when the transport's buffer is full, resumed when it drained.
            transport.registerProducer(self, True)

    # -- writing ------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send ``data`` now if Twisted holds nothing unsent, else queue it behind that."""
        if self._idle:
            try:
                sent = self._socket.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                # A dead connection: let Twisted's own write path find out and report it.
                sent = 0
            if sent == len(data):
                return
            # The kernel took part: Twisted sends the rest, and resumes us once it has.
            self._idle = False
            self._hand(data[sent:] if sent else data)
            return
        if self._open:
            self._transport.write(data)
            if not self._open:
                # That write filled the transport's buffer: count it until it drains.
                self._handed += len(data)
                self.unsent += len(data)
                if self.unsent > self.above:
                    self._watch(self)
            return
        queue = self._queue
        if queue is None:
            self._transport.write(data)
        else:
            queue.append(data)
            self.unsent += len(data)
            if self.unsent > self.above:
                self._watch(self)

    def _hand(self, data: bytes) -> None:
        """Give ``data`` to Twisted (its buffer was empty) and count it until it drains."""
        self._handed = len(data)
        self.unsent += len(data)
        self._transport.write(data)
        if self.unsent > self.above:
            self._watch(self)

    def _take(self) -> bytes:
        """The next queued writes, joined, up to :data:`HANDOFF` bytes (at least one write)."""
        queue = self._queue
        assert queue
        data = queue.popleft()
        if not queue or len(data) >= HANDOFF:
            return data
        parts = [data]
        size = len(data)
        while queue and size < HANDOFF:
            data = queue.popleft()
            parts.append(data)
            size += len(data)
        return b"".join(parts)

    # -- Twisted's calls ----------------------------------------------------------------

    def resumeProducing(self) -> None:
        """Twisted's buffer for the connection is empty again (or we just registered), or
        (a streaming transport) has room again: hand over what waits."""
        if self._transport.disconnecting:
            # loseConnection() was called by someone else (ClientService.stopService does):
            # a registered producer would keep the connection open for ever.
            self._detach()
            return
        self.unsent -= self._handed
        self._handed = 0
        queue = self._queue
        if self._socket is not None:
            self._idle = True
            while queue and self._idle:
                data = self._take()
                self.unsent -= len(data)
                self.write(data)
        elif queue is not None:
            self._open = True
            while queue and self._open:
                data = self._take()
                self._transport.write(data)
                if not self._open:
                    self._handed = len(data)
                else:
                    self.unsent -= len(data)
        if self.unsent <= self.below:
            self._watch(self)

    def pauseProducing(self) -> None:
        """A streaming transport's buffer is full: queue what comes until it resumes us."""
        self._open = False

    def stopProducing(self) -> None:
        """The connection is gone: forget what waits; later writes go to the transport,
        which drops them."""
        self._idle = self._open = self._registered = False
        self._socket = None
        self._drop()
        self._queue = None

    # -- closing ------------------------------------------------------------------------

    def close(self) -> None:
        """Send what is queued and what Twisted still holds, then close the connection."""
        self._detach()
        self._transport.loseConnection()

    def abort(self) -> None:
        """Close the connection at once, dropping whatever is unsent (a reset)."""
        self._drop()
        self._detach()
        self._transport.abortConnection()

    def _drop(self) -> None:
        """Forget the queued writes (the connection is gone or being reset)."""
        if self._queue:
            self._queue.clear()
        self.unsent = self._handed = 0

    def _detach(self) -> None:
        """Never send directly again, hand Twisted what is queued, and let it close the
        connection."""
        self._idle = self._open = False
        self._socket = None
        queue = self._queue
        if queue:
            self._transport.writeSequence(list(queue))
            queue.clear()
        self._queue = None
        self.unsent = self._handed = 0
        if self._registered:
            self._registered = False
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
