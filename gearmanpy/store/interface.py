# -*- test-case-name: tests.test_store -*-
"""The persistent queue contract that every backend implements.

The server calls :meth:`IJobStore.add` for every background job and sends JOB_CREATED only
after the returned Deferred fires, so a store must fire it only once the job is durable. It
calls :meth:`IJobStore.done` when the job completes, fails for good or is cancelled, and
:meth:`IJobStore.replay` once at start-up before it accepts connections, right after
:meth:`IJobStore.next_boot`, whose number goes into every job handle of that start.
"""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred
from zope.interface import Interface

from gearmanpy.protocol.packets import Priority

__all__ = ["DeadJob", "IJobStore", "KeptResult", "Priority", "StoredJob"]


@attrs.frozen
class StoredJob:
    """A background job as a store keeps it.

    :ivar key: the store's identity for the job, chosen by the server and unique across
        restarts (never the unique, which may be empty or repeat once a job is done).
    :ivar function: the function name.
    :ivar unique: the unique ID, possibly empty; replay restores it so coalescing works.
    :ivar priority: the queue the job goes back to.
    :ivar data: the payload, any bytes, possibly empty.
    :ivar when: Unix time the job may run from (SUBMIT_JOB_EPOCH), 0 for at once.
    :ivar retries: how often the job has been requeued after losing its worker.
    :ivar reducer: the reducer name of a background reduce job, else empty.
    :ivar handle: the job handle its submitter was given, so a restart keeps it; empty for
        rows written before gearmanpy kept handles (they get a new one at replay).
    """

    key: str
    function: bytes
    unique: bytes
    priority: Priority
    data: bytes
    when: int = 0
    retries: int = 0
    reducer: bytes = b""
    handle: bytes = b""
    #: Unix time the job was first accepted (0 for rows written before it was kept).
    submitted_at: float = 0.0
    #: The last attempt's error while the job waits to be retried, else empty.
    error: bytes = b""


@attrs.frozen
class DeadJob:
    """A background job that used up its attempts, kept for an operator (``show dead``).

    :ivar job: the job as it was queued (``job.key`` is the dead row's key too, and
        ``job.retries`` the number of attempts made).
    :ivar error: the last attempt's error: WORK_EXCEPTION's text, ``worker lost``,
        ``timeout`` or ``failed`` (WORK_FAIL).
    :ivar failed_at: Unix time of the last failure.
    """

    job: StoredJob
    error: bytes
    failed_at: float


@attrs.frozen
class KeptResult:
    """The final outcome of a background job, kept for a while (``show result``).

    :ivar handle: the job's handle, by which it is looked up (one result per handle).
    :ivar outcome: ``complete``, ``fail`` or ``exception``.
    :ivar data: WORK_COMPLETE's result, WORK_EXCEPTION's text, or empty.
    :ivar numerator: the last WORK_STATUS numerator (0 if none came).
    :ivar expires_at: Unix time after which the result is forgotten.
    """

    handle: bytes
    function: bytes
    unique: bytes
    outcome: str
    data: bytes
    numerator: int
    denominator: int
    attempts: int
    submitted_at: float
    started_at: float
    finished_at: float
    expires_at: float


class IJobStore(Interface):
    """A durable home for background jobs. Every method returns a Deferred.

    After :meth:`close`, every method but :meth:`close` fails with
    :class:`gearmanpy.errors.StoreError` (a closed store keeps nothing and must not pretend
    to), so a late write shows up as a failure instead of being lost silently.
    """

    def open() -> Deferred[None]:
        """Connect to or create the storage; fires when it is ready, fails if it cannot be."""

    def add(job: StoredJob) -> Deferred[None]:
        """Persist ``job``.

        Fires with None once the job is durable (committed and, where the backend offers it,
        synced to disk). Fails with :class:`gearmanpy.errors.StoreError` if it cannot be kept;
        the server then refuses the job instead of acknowledging it.
        """

    def done(key: str) -> Deferred[None]:
        """Forget the job stored under ``key``; fires once that is durable.

        Forgetting a key that is not stored is not an error.
        """

    def set_retries(key: str, retries: int) -> Deferred[None]:
        """Record that the job under ``key`` has been requeued ``retries`` times."""

    def replay() -> Deferred[list[StoredJob]]:
        """Fire with every stored job, in the order they were added."""

    def reschedule(key: str, when: int, retries: int, error: bytes) -> Deferred[None]:
        """Record that the job under ``key`` waits to be retried from Unix time ``when``,
        after ``retries`` attempts, the last of which failed with ``error``."""

    def bury(dead: DeadJob) -> Deferred[None]:
        """Move a job to the dead set: in one transaction, forget the queued row
        ``dead.job.key`` and keep ``dead`` under the same key."""

    def unbury(key: str, job: StoredJob) -> Deferred[None]:
        """Bring a dead job back (``retry dead``): in one transaction, forget the dead row
        ``key`` and add ``job`` (under its own, new key) to the queue."""

    def drop_dead(keys: list[str]) -> Deferred[None]:
        """Forget the dead rows under ``keys`` (missing ones are not an error)."""

    def dead() -> Deferred[list[DeadJob]]:
        """Fire with every dead job, oldest failure first (read once at start-up)."""

    def keep_result(key: str | None, result: KeptResult) -> Deferred[None]:
        """A background job ended: in one transaction, forget its queued row ``key`` (if
        not None) and keep ``result``, replacing any result kept for the same handle."""

    def drop_results(handles: list[bytes]) -> Deferred[None]:
        """Forget the results kept for ``handles`` (expired; missing ones are not an error)."""

    def results() -> Deferred[list[KeptResult]]:
        """Fire with every kept result, in the order they were kept (read at start-up)."""

    def claim_tick(name: str, tick: int, job: StoredJob) -> Deferred[bool]:
        """Submit recurring job ``name``'s run for ``tick`` (Unix time) at most once.

        In one transaction: if no tick at or after ``tick`` is recorded for ``name``, record
        ``tick``, add ``job`` to the queue and fire True; otherwise change nothing and fire
        False (an earlier start, or another server on the same database, submitted it).
        """

    def next_boot() -> Deferred[int]:
        """Fire with a number larger than any this store fired with before: the server's
        boot component, so its job handles never repeat across restarts.

        The number is durable before the Deferred fires (a crash cannot hand it out again),
        and servers sharing one database each get their own.
        """

    def close() -> Deferred[None]:
        """Finish pending writes and release the storage; fires when done.

        Calling it again once it has fired is not an error.
        """
