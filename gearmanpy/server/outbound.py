# -*- test-case-name: tests.test_outbound -*-
"""The server's one way out: reply order, held slots, per-turn coalescing, the socket write.

Every byte the job server sends goes through one :class:`Outbound` per connection, and only
it writes to a transport (through :class:`~gearmanpy._transport.SocketWriter`). The core
hands it already-encoded replies (made by :mod:`gearmanpy.protocol.replies`); it decides
when they leave:

* **In order.** A background submission is answered only once the store has made it durable,
  but the replies after it must not overtake it: :meth:`Outbound.hold` reserves the next
  place in the order, and every later reply waits behind it until :meth:`Outbound.release`
  fills it.
* **One write per burst of input.** While the connection's own input is being handled
  (:meth:`Outbound.begin_input` .. :meth:`Outbound.end_input`), replies are collected and
  written once at the end, so a pipelined burst of requests costs one ``send``.
* **One write per reactor turn for the rest.** Replies that no connection's input caused (a
  store commit acknowledging thousands of jobs, a timer waking many workers) are collected
  per connection and written at the end of the turn by a :class:`TurnCoalescer`. Replies
  caused by another connection's input (a worker's WORK_COMPLETE for a client) leave at
  once: measured, delaying those only adds latency.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime

from gearmanpy._transport import SocketWriter

#: A reserved place in a connection's reply order: a one-element list, filled on release.
Slot = list[Any]


class Outbound:
    """One connection's replies, in order, written as few times as possible.

    :ivar closed: set by :meth:`stop` (and :meth:`close`); nothing is sent after it.
    """

    __slots__ = ("_write", "_lose", "_coalescer", "_batch", "_held", "closed")

    def __init__(
        self,
        write: Callable[[bytes], None],
        coalescer: TurnCoalescer | None = None,
        lose: Callable[[], None] | None = None,
    ) -> None:
        """
        :param write: sends bytes to the peer (a :class:`SocketWriter`'s ``write``, or a
            recorder in tests).
        :param coalescer: if given, replies no connection's input caused leave at the end of
            the reactor turn, in one write; else they leave at once.
        :param lose: closes the connection once what it is owed is written.
        """
        self._write = write
        self._lose = lose
        self._coalescer = coalescer
        #: Replies collected during input or until the end of the turn; None: not collecting.
        self._batch: list[bytes] | None = None
        #: Replies behind a held slot, in order; None when nothing is held.
        self._held: deque[Slot] | None = None
        self.closed = False

    @classmethod
    def for_transport(cls, transport: Any, coalescer: TurnCoalescer | None = None) -> Outbound:
        """The outbound side of a connected transport."""
        writer = SocketWriter(transport)
        return cls(writer.write, coalescer, writer.close)

    def send(self, data: bytes) -> None:
        """Send one encoded reply after every reply before it; nothing once stopped.

        The core calls this for every reply, so the common cases come first.
        """
        if self.closed:
            return
        held = self._held
        if held is None:
            batch = self._batch
            if batch is not None:
                batch.append(data)
            else:
                coalescer = self._coalescer
                if coalescer is not None and not coalescer.handling_input:
                    self._batch = [data]
                    coalescer.mark(self)
                else:
                    self._write(data)
        else:
            held.append([data])

    def hold(self) -> Slot:
        """Reserve the next place in the reply order; fill it with :meth:`release`."""
        slot: Slot = [None]
        if self.closed:
            return slot  # filled by release() and never sent
        if self._held is None:
            self._held = deque()
        self._held.append(slot)
        return slot

    def release(self, slot: Slot, data: bytes) -> None:
        """Fill a reserved place and send every reply that no longer waits."""
        slot[0] = data
        held = self._held
        if held is None:
            return
        ready = []
        while held and held[0][0] is not None:
            ready.append(held.popleft()[0])
        # Send them as replies with nothing held in front, then hold the rest again.
        self._held = None
        for reply in ready:
            self.send(reply)
        if held:
            self._held = held

    def begin_input(self) -> None:
        """The connection's own input is being handled: collect replies until
        :meth:`end_input`."""
        if self._batch is None:
            self._batch = []
        if self._coalescer is not None:
            self._coalescer.handling_input += 1

    def end_input(self) -> None:
        """The input is handled: write what it caused, in one write."""
        if self._coalescer is not None:
            self._coalescer.handling_input -= 1
        self.flush()

    def flush(self) -> None:
        """Write the collected replies now."""
        batch = self._batch
        self._batch = None
        if batch:
            self._write(batch[0] if len(batch) == 1 else b"".join(batch))

    def stop(self) -> None:
        """Send nothing more: the core has let go of the peer. Replies already collected
        still go out on the next :meth:`flush`; replies waiting for the store never do."""
        self.closed = True
        self._held = None

    def close(self, last: bytes | None = None) -> None:
        """Stop, write what the peer is already owed, and close the connection.

        :param last: a reply that goes out after those, whatever waits for the store: the
            ERROR telling the peer why it is dropped (held replies are dropped with it).
        """
        self.stop()
        if last is not None:
            if self._batch is None:
                self._batch = [last]
            else:
                self._batch.append(last)
        self.flush()
        if self._lose is not None:
            lose, self._lose = self._lose, None
            lose()


class TurnCoalescer:
    """Writes replies that no connection's input caused at the end of the reactor turn.

    A store commit acknowledges thousands of background jobs at once, and a timer may wake
    many workers; sent one by one, each reply would cost a ``send`` system call. Collected
    here, every connection gets one write per reactor turn however many replies it is owed.
    """

    def __init__(self, clock: IReactorTime) -> None:
        """:param clock: schedules the flush (``callLater(0, ...)``)."""
        self._clock = clock
        self._dirty: list[Outbound] = []
        self._call: Any = None
        #: How many connections are inside their input handling right now (0 or 1).
        self.handling_input = 0

    def mark(self, outbound: Outbound) -> None:
        """Remember that ``outbound`` has replies collected; flush at the end of the turn."""
        self._dirty.append(outbound)
        if self._call is None:
            self._call = self._clock.callLater(0, self.flush)

    def flush(self) -> None:
        """Write what every marked connection is owed."""
        self._call = None
        dirty, self._dirty = self._dirty, []
        for outbound in dirty:
            outbound.flush()


__all__ = ["Outbound", "Slot", "TurnCoalescer"]
