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

__all__ = ["IJobStore", "Priority", "StoredJob"]


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


class IJobStore(Interface):
    """A durable home for background jobs. Every method returns a Deferred.

    After :meth:`close`, :meth:`add`, :meth:`done`, :meth:`set_retries`, :meth:`replay` and
    :meth:`next_boot` fail with :class:`gearmanpy.errors.StoreError` (a closed store keeps
    nothing and must not pretend to), so a late write shows up as a failure instead of being
    lost silently.
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
