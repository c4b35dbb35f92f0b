# -*- test-case-name: tests.test_client -*-
"""One client connection: requests waiting for their answers, and jobs by handle.

gearmand answers a connection's requests in order (protocol.md §2, §6.2), so
:class:`ClientProtocol` keeps them in a FIFO of :class:`Pending` records and checks each
answer against the oldest; results of accepted foreground jobs arrive by job handle at any
time. When the connection is lost every unanswered request fails with
:class:`~gearmanpy.errors.RequestLost` and every accepted job with
:class:`~gearmanpy.errors.JobLost`.

Package-internal: :class:`Pending` and :func:`fail_entry`, which the :class:`Client` facade
uses to queue requests; they are not part of the public API.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from gearmanpy._connection import PacketProtocol
from gearmanpy._transport import openssl_reason
from gearmanpy.client.events import Job, JobStatus, WorkData, WorkStatus, WorkWarning
from gearmanpy.errors import (
    JobException,
    JobFailed,
    JobLost,
    ProtocolError,
    RequestLost,
    ServerError,
)
from gearmanpy.protocol.packets import Packet, PacketType
from gearmanpy.protocol.text import show


def _int(value: bytes) -> int:
    """Parse an ASCII decimal field the way gearmand writes it; junk reads as 0."""
    try:
        return int(value)
    except ValueError:
        return 0


def fail_entry(entry: Pending, failure: Failure) -> None:
    """Fail one pending request (its job, or its Deferred), unless it was given up.

    Package-internal: the facade also fails requests no server could take.
    """
    if entry.cancelled:
        return
    if entry.job is not None:
        entry.job._finish(failure)
    elif entry.deferred is not None and not entry.deferred.called:
        entry.deferred.errback(failure)


@attrs.define(eq=False)
class Pending:
    """A request waiting for its answer on one connection (package-internal: the facade
    makes one per request).

    :ivar expect: the packet types that answer it (ERROR always may).
    :ivar deferred: fired with the answer (or a failure); ``None`` for a foreground submit,
        whose job gets the answer instead.
    :ivar job: the foreground job this submit belongs to, or ``None``.
    :ivar cancelled: the caller gave up; the answer is consumed and ignored.
    """

    expect: tuple[PacketType, ...]
    deferred: Deferred[Any] | None = None
    job: Job | None = None
    cancelled: bool = False


class ClientProtocol(PacketProtocol):
    """One client connection: a FIFO of requests awaiting answers, and jobs by handle."""

    log = Logger()

    def __init__(self) -> None:
        """Start with nothing outstanding."""
        super().__init__()
        self._pending: deque[Pending] = deque()
        # handle -> [jobs, index of the job that gets the next copy of a packet]. The same
        # connection joining one job twice gets every packet twice (protocol.md §3.3); the
        # copies are dealt out one per job.
        self._jobs: dict[bytes, list[Any]] = {}
        self._lost = False

    # -- sending -------------------------------------------------------------------------

    def send_request(self, packet: Packet, entry: Pending) -> None:
        """Send ``packet`` and queue ``entry`` for its answer.

        If the connection is already gone the entry fails at once.
        """
        if self._lost or self.transport is None:
            fail_entry(entry, Failure(RequestLost("the connection is closed")))
            return
        self._pending.append(entry)
        self.sendPacket(packet)

    def forget_job(self, job: Job) -> None:
        """Stop routing packets to ``job`` (after a timeout or cancellation)."""
        if job.handle is None:
            return
        slot = self._jobs.get(job.handle)
        if slot is None:
            return
        jobs = slot[0]
        if job in jobs:
            jobs.remove(job)
        if not jobs:
            del self._jobs[job.handle]
        else:
            slot[1] %= len(jobs)

    # -- answers to requests -----------------------------------------------------------

    def _answer(self, packet: Packet) -> Pending:
        """Pop the oldest pending request, checking that ``packet`` can answer it."""
        if not self._pending:
            raise _OrderError(f"{packet.type.name} with no request outstanding")
        entry = self._pending[0]
        if packet.type is not PacketType.ERROR and packet.type not in entry.expect:
            raise _OrderError(
                f"{packet.type.name} does not answer the oldest request "
                f"(expected {'/'.join(t.name for t in entry.expect)})"
            )
        return self._pending.popleft()

    def packet_JOB_CREATED(self, packet: Packet) -> None:
        """A submit was accepted: wire the job to its handle, or fire the BG Deferred."""
        entry = self._answer(packet)
        handle = packet.args[0]
        if entry.cancelled:
            return
        if entry.job is not None:
            job = entry.job
            slot = self._jobs.setdefault(handle, [[], 0])
            slot[0].append(job)
            job._forget = lambda: self.forget_job(job)
            job._created(handle)
        elif entry.deferred is not None and not entry.deferred.called:
            entry.deferred.callback(handle)

    def packet_ERROR(self, packet: Packet) -> None:
        """The server refused the oldest request."""
        entry = self._answer(packet)
        code, text = packet.args
        if entry.expect == (PacketType.OPTION_RES,):
            self.log.warn(
                "Server refused OPTION_REQ: {code} {text}; WORK_EXCEPTION will arrive as WORK_FAIL",
                code=show(code),
                text=show(text),
            )
        fail_entry(entry, Failure(ServerError(code, text)))

    def packet_STATUS_RES(self, packet: Packet) -> None:
        """Answer to GET_STATUS."""
        entry = self._answer(packet)
        handle, known, running, num, den = packet.args
        self._fire(entry, JobStatus(handle, known == b"1", running == b"1", _int(num), _int(den)))

    def packet_STATUS_RES_UNIQUE(self, packet: Packet) -> None:
        """Answer to GET_STATUS_UNIQUE."""
        entry = self._answer(packet)
        unique, known, running, num, den, clients = packet.args
        self._fire(
            entry,
            JobStatus(unique, known == b"1", running == b"1", _int(num), _int(den), _int(clients)),
        )

    def packet_ECHO_RES(self, packet: Packet) -> None:
        """Answer to ECHO_REQ."""
        self._fire(self._answer(packet), packet.args[0])

    def packet_OPTION_RES(self, packet: Packet) -> None:
        """Answer to OPTION_REQ."""
        self._fire(self._answer(packet), packet.args[0])

    def _fire(self, entry: Pending, value: object) -> None:
        """Fire a non-submit request's Deferred, unless the caller gave up on it."""
        if not entry.cancelled and entry.deferred is not None and not entry.deferred.called:
            entry.deferred.callback(value)

    # -- job results, matched by handle --------------------------------------------------

    def _job_for(self, handle: bytes, final: bool) -> Job | None:
        """Return the job that gets this copy of a result packet; drop it if ``final``."""
        slot = self._jobs.get(handle)
        if slot is None:
            # A job we forgot (timeout/cancel) or a coalesced duplicate: nothing waits.
            self.log.debug("Result for unknown handle {handle} ignored", handle=show(handle))
            return None
        jobs, index = slot
        job: Job = jobs[index]
        if final:
            jobs.pop(index)
            if not jobs:
                del self._jobs[handle]
                return job
        slot[1] = (index + (0 if final else 1)) % len(jobs)
        return job

    def packet_WORK_DATA(self, packet: Packet) -> None:
        """A partial result."""
        job = self._job_for(packet.args[0], False)
        if job is not None:
            job._event(WorkData(packet.args[1]))

    def packet_WORK_WARNING(self, packet: Packet) -> None:
        """A warning."""
        job = self._job_for(packet.args[0], False)
        if job is not None:
            job._event(WorkWarning(packet.args[1]))

    def packet_WORK_STATUS(self, packet: Packet) -> None:
        """A progress report."""
        handle, num, den = packet.args
        job = self._job_for(handle, False)
        if job is not None:
            job._event(WorkStatus(_int(num), _int(den)))

    def packet_WORK_COMPLETE(self, packet: Packet) -> None:
        """The job succeeded."""
        job = self._job_for(packet.args[0], True)
        if job is not None:
            job._finish(packet.args[1])

    def packet_WORK_FAIL(self, packet: Packet) -> None:
        """The job failed. gearmand may add a NUL after the handle (protocol.md §3.7)."""
        handle = packet.args[0].split(b"\0", 1)[0]
        job = self._job_for(handle, True)
        if job is not None:
            job._finish(Failure(JobFailed(f"the worker failed job {show(handle)}")))

    def packet_WORK_EXCEPTION(self, packet: Packet) -> None:
        """The worker raised; the payload describes the exception."""
        job = self._job_for(packet.args[0], True)
        if job is not None:
            job._finish(Failure(JobException(packet.args[1])))

    # -- loss ----------------------------------------------------------------------------

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Fail everything outstanding: unanswered requests, then accepted jobs."""
        self._lost = True
        pending, self._pending = self._pending, deque()
        jobs, self._jobs = self._jobs, {}
        # OpenSSL's reason when TLS ended it (TLS 1.3: the server refused our certificate
        # after our side of the handshake was over): "tlsv13 alert certificate required".
        why = openssl_reason(reason.value) if reason.value is not None else "connection lost"
        for entry in pending:
            fail_entry(
                entry, Failure(RequestLost(f"connection lost before the server answered: {why}"))
            )
        for handle, (slot_jobs, _) in jobs.items():
            for job in slot_jobs:
                job._finish(
                    Failure(
                        JobLost(
                            f"connection lost after the server accepted job {show(handle)}; "
                            f"its outcome is unknown: {why}"
                        )
                    )
                )

    @property
    def lost(self) -> bool:
        """Whether this connection has closed."""
        return self._lost


class _OrderError(ProtocolError):
    """Raised by a handler when the server breaks the request/answer order."""


__all__ = ["ClientProtocol"]
