"""The Gearman worker: a pool of job slots that takes work from one or more servers.

Quick start::

    from gearmanpy import Worker

    worker = Worker(["127.0.0.1:4730"], concurrency=4)

    @worker.register("reverse")
    def reverse(job):
        return job.data[::-1]

    worker.setServiceParent(application)     # or worker.startService() in a running reactor

A function takes one argument, the :class:`WorkerJob`, and may be a plain function (run in
the reactor thread, or in a thread pool with ``thread=True``), a function returning a
Deferred, or an ``async def`` coroutine. What it returns (``bytes``, ``str`` or ``None``)
becomes WORK_COMPLETE. Raising :class:`~gearmanpy.errors.JobFailed` sends WORK_FAIL; any
other exception sends WORK_EXCEPTION with a short ``"Type: message"`` description (on
gearmand that packet ends the job, so nothing follows it). A function registered with a
``timeout`` is cancelled at its limit and nothing more is sent for that attempt: the server
requeues the job on its own timer, and a reassignment of the same handle is a new attempt.

Per connection the worker runs the grab/sleep cycle of protocol.md §3.5::

    GRAB_JOB_ALL -> JOB_ASSIGN_ALL/_UNIQ (run it)  -> GRAB_JOB_ALL ...
                 -> NO_JOB -> PRE_SLEEP -> ... NOOP -> GRAB_JOB_ALL ...

A GRAB is only sent while a slot is free. The slots are shared by all connections: jobs
running plus GRABs awaiting an answer never exceed ``concurrency``. Each server has its own
:class:`~twisted.application.internet.ClientService`, which reconnects with jittered
backoff; its ``prepareConnection`` hook sends SET_CLIENT_ID and the CAN_DOs again.

The package: ``_worker.py`` holds the pool (:class:`Worker`), its connections
(:class:`WorkerProtocol`) and :class:`WorkerJob`; ``cycle.py`` the grab/sleep state machine.
"""

from gearmanpy.worker._worker import Worker, WorkerJob, WorkerProtocol, describe

__all__ = ["Worker", "WorkerJob", "WorkerProtocol", "describe"]
