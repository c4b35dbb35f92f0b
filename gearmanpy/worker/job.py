# -*- test-case-name: tests.test_worker -*-
"""A job as a worker's function sees it (:class:`WorkerJob`): what it carries, and how it
reports progress and partial results back to the clients waiting on it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.logger import Logger

from gearmanpy._connection import to_bytes
from gearmanpy.protocol.packets import Packet, PacketType, request
from gearmanpy.protocol.text import show

if TYPE_CHECKING:
    from gearmanpy.worker._worker import WorkerProtocol


class WorkerJob:
    """A job handed to a registered function.

    :ivar handle: the server's job handle.
    :ivar function: the function name.
    :ivar unique: the unique key the client gave (empty if none).
    :ivar data: the payload.
    :ivar reducer: a reduce job's reducer function (empty for other jobs).
    :ivar attempt: which attempt this is (1 the first time), from a gearmanpy server; None
        from a server that does not tell (gearmand).
    """

    log = Logger()

    def __init__(
        self,
        connection: WorkerProtocol,
        handle: bytes,
        function: str,
        unique: bytes,
        data: bytes,
        call: Callable[..., object] | None = None,
        reducer: bytes = b"",
        attempt: int | None = None,
    ) -> None:
        """:param call: how to reach the reactor thread (``callFromThread`` for thread jobs)."""
        self.handle = handle
        self.function = function
        self.unique = unique
        self.data = data
        self.reducer = reducer
        self.attempt = attempt
        self._connection = connection
        self._call = call
        self._finished = False
        self._timed_out = False

    def __repr__(self) -> str:
        """Name the function and handle, for logs."""
        return f"<WorkerJob {self.function} handle={show(self.handle)}>"

    def send_data(self, data: bytes | str) -> None:
        """Send a partial result (WORK_DATA) to the waiting clients."""
        self._send(request(PacketType.WORK_DATA, self.handle, to_bytes(data, "data")))

    def send_warning(self, data: bytes | str) -> None:
        """Send a warning (WORK_WARNING) to the waiting clients."""
        self._send(request(PacketType.WORK_WARNING, self.handle, to_bytes(data, "data")))

    def send_status(self, numerator: int, denominator: int) -> None:
        """Report progress (WORK_STATUS): ``numerator`` of ``denominator`` done."""
        self._send(
            request(
                PacketType.WORK_STATUS,
                self.handle,
                str(int(numerator)).encode("ascii"),
                str(int(denominator)).encode("ascii"),
            )
        )

    def _send(self, packet: Packet) -> None:
        """Send a packet for this job, from whichever thread the function runs in."""
        if self._call is not None:
            self._call(self._send_now, packet)
        else:
            self._send_now(packet)

    def _send_now(self, packet: Packet) -> None:
        """Send in the reactor thread; drop it if the job ended or its connection is gone."""
        if self._timed_out:
            self.log.debug(
                "{job}: {ptype} after its time limit, dropped", job=self, ptype=packet.type.name
            )
            return
        if self._finished:
            self.log.warn(
                "{job}: {ptype} after the job ended, dropped", job=self, ptype=packet.type.name
            )
            return
        self._connection.send_for_job(packet)


__all__ = ["WorkerJob"]
