"""A raw Gearman worker for the cluster's Jepsen-style test (tests/interop/test_cluster_jepsen.py).

Usage: python jepsen_worker.py PORT LOG FUNCTION...

Connects to 127.0.0.1:PORT, registers FUNCTIONs, and runs jobs one at a time: for each one it
appends ``<function> <hex(workload)>`` to LOG (O_APPEND, one write, before it answers), sleeps
0-100 ms (so that kills land mid-job), and answers WORK_COMPLETE with the workload. It sleeps
with PRE_SLEEP between jobs and grabs again after a NOOP or a second. Prints ``ready`` once
registered; exits when the server's connection ends (the test's driver restarts it).
"""

from __future__ import annotations

import os
import random
import select
import socket
import sys

from gearmanpy.protocol.packets import PacketDecoder, PacketType, encode, request


def main() -> int:
    """Run the worker until the connection ends."""
    port, log, *functions = sys.argv[1:]
    sock = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    decoder = PacketDecoder(allow_admin=False)
    pending: list = []

    def send(ptype: PacketType, *args: bytes) -> None:
        sock.sendall(encode(request(ptype, *args)))

    def recv(timeout: float) -> object | None:
        while not pending:
            if not select.select([sock], [], [], timeout)[0]:
                return None
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            pending.extend(decoder.feed(data))
        return pending.pop(0)

    for name in functions:
        send(PacketType.CAN_DO, name.encode())
    print("ready", flush=True)
    try:
        while True:
            send(PacketType.GRAB_JOB_UNIQ)
            packet = recv(10.0)
            if packet is None:
                return 1
            if packet.type == PacketType.NO_JOB:  # type: ignore[attr-defined]
                send(PacketType.PRE_SLEEP)
                recv(1.0)  # a NOOP, or a second passed
                continue
            if packet.type != PacketType.JOB_ASSIGN_UNIQ:  # type: ignore[attr-defined]
                continue
            handle, function, _unique, data = packet.args  # type: ignore[attr-defined]
            os.write(fd, function + b" " + data.hex().encode() + b"\n")
            random_pause = random.random() * 0.1
            if random_pause:
                select.select([], [], [], random_pause)
            send(PacketType.WORK_COMPLETE, handle, data)
    except (ConnectionError, OSError):
        return 1


if __name__ == "__main__":
    sys.exit(main())
