# -*- test-case-name: tests.test_client -*-
"""The Gearman client: submit jobs to one or more servers and collect their results.

Quick start::

    from gearmanpy import Client

    async def main(reactor):
        client = Client(["127.0.0.1:4730"])
        job = client.submit("reverse", b"hello")
        async for event in job:          # WorkData / WorkWarning / WorkStatus as they come
            print(event)
        print(await job)                 # b"olleh"
        await client.stop()

Design:

* One :class:`~twisted.application.internet.ClientService` per server keeps a connection
  up, reconnecting with jittered exponential backoff. Its ``prepareConnection`` hook sends
  ``OPTION_REQ exceptions`` so WORK_EXCEPTION payloads reach us.
* Each connection (:class:`ClientProtocol`) keeps a FIFO of requests waiting for their
  answer (gearmand answers in order, protocol.md §2, §6.2) and a map from job handle to the
  foreground jobs waiting for results.
* When a connection is lost, every request still waiting for its answer fails with
  :class:`~gearmanpy.errors.RequestLost` (the request is *not* resent elsewhere: a submit
  may already have created a job) and every accepted foreground job fails with
  :class:`~gearmanpy.errors.JobLost`. Every Deferred fires exactly once.
* A job with a unique key goes to the server picked by consistent hashing of the key, so
  coalescing works across servers; other requests go round-robin. A server whose last
  connection attempt failed is skipped until it reconnects; if no server can be reached
  the request fails at once with :class:`~gearmanpy.errors.NoServersAvailable`.

Modules, one concern each:

* :mod:`gearmanpy.client.events`: :class:`Job` and what it yields (:class:`WorkData`,
  :class:`WorkWarning`, :class:`WorkStatus`), and :class:`JobStatus`.
* :mod:`gearmanpy.client.protocol`: :class:`ClientProtocol`, the wire side of a connection.
* :mod:`gearmanpy.client.routing`: the hash ring, each server's health, and the search for a
  ready connection.
* :mod:`gearmanpy.client.broadcast`: :class:`BroadcastJob` (``Client.broadcast``), its
  :class:`Reply` per worker and :class:`Summary`.
* :mod:`gearmanpy.client._client`: the :class:`Client` facade.
"""

from gearmanpy.client._client import Client
from gearmanpy.client.broadcast import BroadcastJob, Reply, Summary
from gearmanpy.client.events import Job, JobEvent, JobStatus, WorkData, WorkStatus, WorkWarning
from gearmanpy.client.protocol import ClientProtocol
from gearmanpy.protocol.packets import Priority

__all__ = [
    "BroadcastJob",
    "Client",
    "ClientProtocol",
    "Job",
    "JobEvent",
    "JobStatus",
    "Priority",
    "Reply",
    "Summary",
    "WorkData",
    "WorkStatus",
    "WorkWarning",
]
