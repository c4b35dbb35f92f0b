"""The floor under any job server written on Twisted in CPython: the least one can do per job.

It speaks just enough of the binary protocol for ``loadgen.c``'s S1, S2 and S3 (ECHO_REQ,
CAN_DO, SUBMIT_JOB, SUBMIT_JOB_BG, GRAB_JOB, PRE_SLEEP, WORK_COMPLETE) with no validation,
no admin protocol, no priorities, no uniques, one function, and a few lines of Python per
packet, over Twisted's reactor and TCP transports as gearmanpy uses them (its epoll reactor,
TCP_NODELAY, one write per read's replies, and gearmanpy's write-through
:class:`~gearmanpy._transport.SocketWriter`, the compiled one in a compiled install).
What gearmanpy's ratios to gearmand can reach is bounded by this server's: what this one
spends is the reactor's and the transports' cost per event (and CPython's for a few lines),
which no compiling of gearmanpy's own modules removes. A measuring tool, not a server::

    python benchmarks/run.py --scenarios S1,S2,S3 \\
        --server-cmd "floor=python benchmarks/floor_server.py {port}"
"""

from __future__ import annotations

import socket
import struct
import sys
from collections import deque

from twisted.internet import protocol

# The installed gearmanpy's (the venv running this decides the build).
from gearmanpy._transport import SocketWriter, set_nodelay

HEADER = struct.Struct(">4sII")
ECHO_REQ, ECHO_RES = 16, 17
CAN_DO, PRE_SLEEP, NOOP, SUBMIT_JOB, JOB_CREATED = 1, 4, 6, 7, 8
GRAB_JOB, NO_JOB, JOB_ASSIGN, WORK_COMPLETE, SUBMIT_JOB_BG = 9, 10, 11, 13, 18


def packet(ptype: int, body: bytes) -> bytes:
    """One response packet."""
    return HEADER.pack(b"\0RES", ptype, len(body)) + body


NOOP_PACKET = packet(NOOP, b"")
NO_JOB_PACKET = packet(NO_JOB, b"")


class Floor:
    """The whole server's state: one queue, the sleepers, who waits for which handle."""

    def __init__(self) -> None:
        self.queue: deque[tuple[bytes, bytes, bytes]] = deque()  # (handle, function, data)
        self.sleeping: set[FloorProtocol] = set()
        self.waiting: dict[bytes, FloorProtocol] = {}
        self.next = 0

    def handle(self) -> bytes:
        self.next += 1
        return b"H:floor:%d" % self.next


class FloorProtocol(protocol.Protocol):
    """One connection: split packets, act on each, write the replies in one write."""

    def __init__(self, floor: Floor) -> None:
        self.floor = floor
        self.buffer = b""
        self.write = lambda data: None

    def connectionMade(self) -> None:
        set_nodelay(self.transport)
        self.write = SocketWriter(self.transport).write

    def connectionLost(self, reason: object = None) -> None:
        self.floor.sleeping.discard(self)

    def dataReceived(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        at, end, out = 0, len(buf), []
        floor = self.floor
        while end - at >= 12:
            _, ptype, size = HEADER.unpack_from(buf, at)
            if end - at - 12 < size:
                break
            body = buf[at + 12 : at + 12 + size]
            at += 12 + size
            if ptype == SUBMIT_JOB_BG or ptype == SUBMIT_JOB:
                function, _, data_ = body.split(b"\0", 2)
                handle = floor.handle()
                out.append(packet(JOB_CREATED, handle))
                floor.queue.append((handle, function, data_))
                if ptype == SUBMIT_JOB:
                    floor.waiting[handle] = self
                if floor.sleeping:
                    floor.sleeping.pop().write(NOOP_PACKET)
            elif ptype == GRAB_JOB:
                if floor.queue:
                    handle, function, data_ = floor.queue.popleft()
                    out.append(packet(JOB_ASSIGN, b"\0".join((handle, function, data_))))
                else:
                    out.append(NO_JOB_PACKET)
            elif ptype == WORK_COMPLETE:
                client = floor.waiting.pop(body.split(b"\0", 1)[0], None)
                if client is not None:
                    client.write(packet(WORK_COMPLETE, body))
            elif ptype == PRE_SLEEP:
                if floor.queue:
                    out.append(NOOP_PACKET)
                else:
                    floor.sleeping.add(self)
            elif ptype == ECHO_REQ:
                out.append(packet(ECHO_RES, body))
            # CAN_DO: one function, nothing to note.
        self.buffer = buf[at:]
        if out:
            self.write(b"".join(out))


class FloorFactory(protocol.Factory):
    """Every connection shares one :class:`Floor`."""

    def __init__(self) -> None:
        self.floor = Floor()

    def buildProtocol(self, addr: object) -> FloorProtocol:
        return FloorProtocol(self.floor)


def main() -> None:
    """Listen on 127.0.0.1:PORT (argv[1]) until killed."""
    from gearmanpy.reactor import install

    install()  # the epoll reactor twistd gearman runs on
    from twisted.internet import reactor

    port = int(sys.argv[1])
    reactor.listenTCP(port, FloorFactory(), interface="127.0.0.1")  # type: ignore[attr-defined,arg-type]
    print(f"floor server on {socket.gethostname()}:127.0.0.1:{port}", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
