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
* **Bounded per peer.** A peer that does not read its replies would make the server hold
  them all. An :class:`OutputGuard` watches what its writer holds
  (:attr:`~gearmanpy._transport.SocketWriter.unsent`): past the soft limit the server stops
  reading from that peer, so its own requests stop making more replies, and reads again
  once half of it has drained; a peer that stays past the hard limit (replies other peers
  cause keep coming while it is paused: WORK_DATA and WORK_COMPLETE for its jobs, NOOPs)
  for ``timeout`` seconds is dropped. Other peers never wait for it. See
  :class:`OutputLimits` for the defaults and why.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from gearmanpy._transport import NEVER, SocketWriter
from gearmanpy.protocol.limits import DEFAULT_MAX_PACKET_SIZE

#: A reserved place in a connection's reply order: a one-element list, filled on release.
Slot = list[Any]


class Outbound:
    """One connection's replies, in order, written as few times as possible.

    :ivar closed: set by :meth:`stop` (and :meth:`close`); nothing is sent after it.
    """

    __slots__ = ("_write", "_lose", "_abort", "_coalescer", "_batch", "_held", "closed")

    def __init__(
        self,
        write: Callable[[bytes], None],
        coalescer: TurnCoalescer | None = None,
        lose: Callable[[], None] | None = None,
        abort: Callable[[], None] | None = None,
    ) -> None:
        """
        :param write: sends bytes to the peer (a :class:`SocketWriter`'s ``write``, or a
            recorder in tests).
        :param coalescer: if given, replies no connection's input caused leave at the end of
            the reactor turn, in one write; else they leave at once.
        :param lose: closes the connection once what it is owed is written.
        :param abort: closes the connection at once, dropping what is unsent.
        """
        self._write = write
        self._lose = lose
        self._abort = abort
        self._coalescer = coalescer
        #: Replies collected during input or until the end of the turn; None: not collecting.
        self._batch: list[bytes] | None = None
        #: Replies behind a held slot, in order; None when nothing is held.
        self._held: deque[Slot] | None = None
        self.closed = False

    @classmethod
    def for_transport(
        cls,
        transport: Any,
        coalescer: TurnCoalescer | None = None,
        guard: OutputGuard | None = None,
    ) -> Outbound:
        """The outbound side of a connected transport, watched by ``guard`` if given."""
        writer = SocketWriter(transport, guard)
        if guard is not None:
            guard.watch(writer)
        return cls(writer.write, coalescer, writer.close, writer.abort)

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

    def abort(self) -> None:
        """Stop, and close the connection at once: nothing collected or unsent goes out
        (made without ``abort``: closed with ``lose``)."""
        self.stop()
        self._batch = None
        abort, self._abort, self._lose = self._abort or self._lose, None, None
        if abort is not None:
            abort()


#: What the soft limit allows beyond one max-size packet: a read's worth of small replies.
SOFT_MARGIN = 64 * 1024
#: Unsent output past which a peer is no longer read from: one max-size packet with room to
#: spare, so one big reply alone never pauses it.
DEFAULT_SOFT_LIMIT = DEFAULT_MAX_PACKET_SIZE + SOFT_MARGIN
#: Seconds a peer may stay past the hard limit before it is dropped.
DEFAULT_HARD_TIMEOUT = 30.0


@attrs.frozen
class OutputLimits:
    """How much unsent output one peer may make the server hold (:class:`OutputGuard`).

    The defaults follow the largest packet the server accepts, ``max_packet_size``
    (:meth:`for_packet_size`; 16 MiB unless configured):

    * ``soft``, a max-size packet plus 64 KiB: a peer is paused only when it is a full
      packet behind, which a peer that reads never is for long; the kernel's socket buffers
      (a few MiB more) keep the link busy while it drains. It bounds what a peer's own
      requests can pile up: ninety-six 1 MiB ECHO_REQs cost about 16 MiB, not 96.
    * reading resumes at ``soft // 2``: not at every drained chunk, so a slow reader is not
      paused and resumed hundreds of times a second.
    * ``hard``, four times ``soft``: room for replies other peers cause while the peer is
      paused (a worker's WORK_DATA stream to a slow client, a few max-size results).
    * ``timeout``, 30 seconds past ``hard``: a peer that is slow for a moment (a GC pause,
      a congested link) survives it, one that stopped reading is dropped.
    """

    # Plain defaults, not attrs.field(...): the compiled build (mypyc) checks a class-body
    # value against its annotation, which a field() object is not.
    soft: int = DEFAULT_SOFT_LIMIT
    hard: int = 4 * DEFAULT_SOFT_LIMIT
    timeout: float = DEFAULT_HARD_TIMEOUT

    def __attrs_post_init__(self) -> None:
        if self.soft <= 0:
            raise ValueError(f"the soft output limit must be positive, not {self.soft}")
        if self.hard < self.soft:
            raise ValueError(
                f"the hard output limit ({self.hard}) is below the soft one ({self.soft})"
            )
        if not self.timeout > 0:
            raise ValueError(f"the output timeout must be positive, not {self.timeout}")

    @classmethod
    def for_packet_size(
        cls,
        max_packet_size: int,
        soft: int | None = None,
        hard: int | None = None,
        timeout: float = DEFAULT_HARD_TIMEOUT,
    ) -> OutputLimits:
        """The limits for a server accepting packets up to ``max_packet_size``; ``soft``
        and ``hard`` default as the class says (``hard`` at least four times ``soft``)."""
        if soft is None:
            soft = max_packet_size + SOFT_MARGIN
        if hard is None:
            hard = 4 * soft
        return cls(soft, hard, timeout)

    @property
    def resume(self) -> int:
        """Unsent output at or below which a paused peer is read from again."""
        return self.soft // 2


class OutputGuard:
    """Back-pressure for one connection, driven by its writer's unsent byte count.

    Called by the :class:`~gearmanpy._transport.SocketWriter` only when the count crosses
    the level the guard last set, so a connection whose replies leave at once costs
    nothing. ``pause`` and ``resume`` stop and restart reading from the peer; ``drop`` gets
    the unsent count when the peer stayed past the hard limit for ``limits.timeout``.
    """

    __slots__ = ("_limits", "_clock", "_pause", "_resume", "_drop", "_timer", "paused")

    def __init__(
        self,
        limits: OutputLimits,
        clock: IReactorTime,
        pause: Callable[[], None],
        resume: Callable[[], None],
        drop: Callable[[int], None],
    ) -> None:
        """:param clock: runs the hard-limit timer."""
        self._limits = limits
        self._clock = clock
        self._pause = pause
        self._resume = resume
        self._drop = drop
        self._timer: IDelayedCall | None = None
        #: Reading from the peer is paused.
        self.paused = False

    def watch(self, writer: SocketWriter) -> None:
        """Start watching ``writer``: tell the guard once it holds more than ``soft``."""
        writer.above = self._limits.soft
        writer.below = -1

    def __call__(self, writer: SocketWriter) -> None:
        """The writer's count crossed a level: pause, resume, start or stop the timer."""
        limits = self._limits
        unsent = writer.unsent
        if unsent > limits.soft:
            if not self.paused:
                self.paused = True
                self._pause()
        elif self.paused and unsent <= limits.resume:
            self.paused = False
            self._resume()
        if unsent > limits.hard:
            if self._timer is None:
                self._timer = self._clock.callLater(limits.timeout, self._expire, writer)
        elif self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.paused:
            writer.above, writer.below = limits.soft, -1
        elif self._timer is None:
            writer.above, writer.below = limits.hard, limits.resume
        else:
            writer.above, writer.below = NEVER, limits.hard

    def _expire(self, writer: SocketWriter) -> None:
        """The peer stayed past the hard limit for the whole timeout."""
        self._timer = None
        self._drop(writer.unsent)

    def stop(self) -> None:
        """The connection is gone: no timer may fire for it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


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


__all__ = ["OutputGuard", "OutputLimits", "Outbound", "Slot", "TurnCoalescer"]
