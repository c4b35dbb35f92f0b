# -*- test-case-name: tests.test_worker -*-
"""The worker pool (:class:`Worker`), its connections and the jobs it runs; see the package's
docstring for the design."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from gearmanpy._connection import (
    DEFAULT_CONNECT_TIMEOUT,
    ClientTLS,
    LazyReactor,
    PacketProtocol,
    ReentrantClientService,
    ServerSpec,
    awaitable,
    client_endpoint,
    copy_deferred,
    default_retry_policy,
    server_key,
    server_list,
    to_bytes,
)
from gearmanpy.errors import JobFailed
from gearmanpy.protocol.packets import Packet, PacketType, request
from gearmanpy.protocol.text import show
from gearmanpy.worker.cycle import CycleCore, new_cycle
from gearmanpy.worker.job import WorkerJob

#: Longest exception description sent in WORK_EXCEPTION.
MAX_EXCEPTION_TEXT = 1024

#: What a registered function may return (or its Deferred/coroutine may produce).
Result = bytes | bytearray | memoryview | str | None
WorkFunction = Callable[["WorkerJob"], Any]


@attrs.define(eq=False)
class _Function:
    """A registered function and how to run it."""

    name: bytes
    func: WorkFunction
    timeout: float | None
    thread: bool


@attrs.define(eq=False)
class _Attempt:
    """One running attempt at a job: what frees its slot and how to stop it at its time limit.

    :ivar done: fired when the slot is freed (the outcome was sent, or the time limit passed).
    :ivar started: the reactor time at JOB_ASSIGN, when the server's CAN_DO_TIMEOUT timer starts.
    :ivar deferred: the function's Deferred, once the call has returned one.
    :ivar timer: the time-limit timer, for a function registered with a timeout.
    """

    done: Deferred[None]
    started: float
    deferred: Deferred[Any] | None = None
    timer: IDelayedCall | None = None


class WorkerProtocol(PacketProtocol):
    """One worker connection: registers functions and runs the grab/sleep cycle."""

    log = Logger()

    def __init__(self, worker: Worker, server: str) -> None:
        """:param worker: the pool that owns the slots; :param server: its name, for logs."""
        super().__init__()
        self.worker = worker
        self.server = server
        self._cycle = new_cycle(CycleCore(self.sendPacket))
        self.lost = False
        #: The attempt number a gearmanpy server announced for the next JOB_ASSIGN.
        self._attempt: int | None = None
        self._asked_attempts = False

    def register_all(self) -> None:
        """Ask for attempt numbers (OPTION_REQ ``attempts``, which only gearmanpy servers
        know), then send SET_CLIENT_ID and one CAN_DO/CAN_DO_TIMEOUT per function."""
        self._asked_attempts = True
        self.sendPacket(request(PacketType.OPTION_REQ, b"attempts"))
        if self.worker.client_id is not None:
            self.sendPacket(request(PacketType.SET_CLIENT_ID, self.worker.client_id))
        for function in self.worker.functions.values():
            self.can_do(function)

    def can_do(self, function: _Function) -> None:
        """Register one function on this connection."""
        if function.timeout is not None:
            millis = max(1, int(function.timeout * 1000))
            self.sendPacket(
                request(PacketType.CAN_DO_TIMEOUT, function.name, str(millis).encode("ascii"))
            )
        else:
            self.sendPacket(request(PacketType.CAN_DO, function.name))

    def can_grab(self) -> bool:
        """Whether this connection is awake (not grabbing, not asleep) and still open.

        Only registered connections are in the worker's list (see ``Worker._prepare``)."""
        return not self.lost and self._cycle.awake()

    def grab(self) -> bool:
        """Ask for a job (the worker has reserved a slot); return whether GRAB was sent."""
        return self._cycle.grab()

    def send_for_job(self, packet: Packet) -> None:
        """Send a WORK_* packet unless the connection is gone (the job was requeued)."""
        if self.lost:
            self.log.info(
                "Connection to {server} lost; {ptype} dropped (the server requeued the job)",
                server=self.server,
                ptype=packet.type.name,
            )
            return
        self.sendPacket(packet)

    def packet_NO_JOB(self, packet: Packet) -> None:
        """Nothing to do: go to sleep until a NOOP."""
        self._cycle.no_job()
        self.worker._grab_answered()

    def packet_NOOP(self, packet: Packet) -> None:
        """A job may be waiting: wake up and grab when a slot is free."""
        if self._cycle.noop():
            self.worker._kick()

    def packet_JOB_ASSIGN_ALL(self, packet: Packet) -> None:
        """A reduce job, with its reducer: run it in the slot reserved for this GRAB."""
        handle, function, unique, reducer, data = packet.args
        self._assigned(handle, function, unique, data, reducer)

    def packet_JOB_ASSIGN_UNIQ(self, packet: Packet) -> None:
        """A job: run it in the slot reserved for this GRAB."""
        handle, function, unique, data = packet.args
        self._assigned(handle, function, unique, data)

    def packet_JOB_ASSIGN(self, packet: Packet) -> None:
        """A job without a unique key (a server that ignores GRAB_JOB_ALL)."""
        handle, function, data = packet.args
        self._assigned(handle, function, b"", data)

    def _assigned(
        self, handle: bytes, function: bytes, unique: bytes, data: bytes, reducer: bytes = b""
    ) -> None:
        """Hand an assigned job to the worker."""
        self._cycle.assigned()
        attempt, self._attempt = self._attempt, None
        self.worker._job_assigned(self, handle, function, unique, data, reducer, attempt)

    def packet_ERROR(self, packet: Packet) -> None:
        """The server complained (e.g. JOB_NOT_FOUND for a job it requeued after a timeout)."""
        code, text = packet.args
        if code == b"UNKNOWN_OPTION" and self._asked_attempts:
            self._asked_attempts = False  # gearmand: no attempt numbers, and nothing wrong
            return
        self.log.warn(
            "Server {server} sent ERROR {code}: {text}",
            server=self.server,
            code=show(code),
            text=show(text),
        )

    def packet_OPTION_RES(self, packet: Packet) -> None:
        """``attempt=N`` before a JOB_ASSIGN (a gearmanpy server, once asked); any other is
        tolerated, as libgearman does."""
        (option,) = packet.args
        if option == b"attempts":
            self._asked_attempts = False
        elif option.startswith(b"attempt="):
            number = option[8:]
            self._attempt = int(number) if number.isdigit() else None

    def packet_ECHO_RES(self, packet: Packet) -> None:
        """Tolerated."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Release a pending GRAB's slot; running jobs finish but their results are dropped."""
        self.lost = True
        self.worker._connection_lost(self, reason, self._cycle.lost())


class _WorkerFactory(Factory):
    """Builds the connections to one server."""

    def __init__(self, worker: Worker, server: str) -> None:
        """:param server: the server's name, for logs."""
        self.worker = worker
        self.server = server

    def buildProtocol(self, addr: Any) -> WorkerProtocol:
        """Make one worker connection."""
        proto = WorkerProtocol(self.worker, self.server)
        proto.factory = self
        return proto


class Worker(LazyReactor, MultiService):
    """A pool of ``concurrency`` job slots over one or more Gearman servers.

    It is a Twisted service: ``setServiceParent`` it into an application, or call
    :meth:`startService` in a running reactor. :meth:`stopService` stops taking jobs, lets
    running jobs finish for up to ``grace_period`` seconds, then disconnects (the server
    requeues whatever is still running).

    :param servers: ``"host:port"`` strings, client endpoint strings or endpoint objects.
    :param concurrency: the most jobs held at once (running jobs + GRABs in flight).
    :param client_id: sent as SET_CLIENT_ID on each connection (shown by ``workers``).
    :param reactor: the reactor (also the clock); the global one if ``None``.
    :param thread_pool: pool for ``thread=True`` functions (default: the reactor's).
    :param grace_period: seconds :meth:`stopService` waits for running jobs.
    :param retry_policy: ClientService retry policy (default: jittered backoff 0.5s-30s).
    :param connect_timeout: seconds a ``host:port`` connection attempt may take.
    :param tls: speak TLS to the ``host:port`` servers, verifying each server's certificate
        and host name (:class:`~gearmanpy.ClientTLS`; it may carry a client certificate).
    """

    log = Logger()

    def __init__(
        self,
        servers: Sequence[ServerSpec] | ServerSpec,
        *,
        concurrency: int = 1,
        client_id: str | bytes | None = None,
        reactor: Any = None,
        thread_pool: Any = None,
        grace_period: float = 30.0,
        retry_policy: Callable[[int], float] | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        tls: ClientTLS | None = None,
    ) -> None:
        """Record the configuration; nothing connects until the service starts."""
        super().__init__()
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._specs = server_list(servers, "Worker")
        self.concurrency = concurrency
        self.client_id = to_bytes(client_id, "client_id") if client_id is not None else None
        self._reactor_arg = reactor
        self._thread_pool = thread_pool
        self.grace_period = grace_period
        self._connect_timeout = connect_timeout
        self._tls = tls
        self._retry_policy = retry_policy or default_retry_policy()
        self.functions: dict[bytes, _Function] = {}
        self._connections: list[WorkerProtocol] = []
        self._running: dict[WorkerJob, _Attempt] = {}
        self._grabs = 0
        self._stopping = False
        #: While a stop is under way: fires when it is done.
        self._stopped: Deferred[None] | None = None
        self._built = False

    # -- registration --------------------------------------------------------------------

    def register(
        self,
        name: str | bytes,
        func: WorkFunction | None = None,
        *,
        timeout: float | None = None,
        thread: bool = False,
    ) -> Any:
        """Register ``func`` under ``name``; without ``func``, return a decorator.

        :param timeout: seconds allowed per job, sent as CAN_DO_TIMEOUT (the server requeues
            a job that runs longer; gearmand raises limits under 1s to 1s). The worker
            enforces it too: at the limit it cancels the function's Deferred or coroutine
            (a plain or thread function's late result is discarded), frees the slot, and
            sends nothing more for that attempt. Against gearmand, give a worker with timed
            functions ``concurrency=1``: gearmand keeps one timer per connection and a
            PRE_SLEEP from a free slot cancels it, so it would never requeue the job the
            worker gave up (measured on 1.1.20: the client waited until its own timeout).
        :param thread: run a plain (blocking) function in the thread pool.
        :return: ``func`` (so it works as a decorator).
        """
        if func is None:
            return lambda f: self.register(name, f, timeout=timeout, thread=thread)
        key = to_bytes(name, "name")
        if b"\0" in key:
            raise ValueError("function name must not contain NUL")
        function = _Function(key, func, timeout, thread)
        self.functions[key] = function
        for connection in self._connections:
            connection.can_do(function)
        self._kick()
        return func

    def unregister(self, name: str | bytes) -> None:
        """Stop taking jobs for ``name`` (CANT_DO on every connection)."""
        key = to_bytes(name, "name")
        if self.functions.pop(key, None) is None:
            return
        for connection in self._connections:
            connection.sendPacket(request(PacketType.CANT_DO, key))

    # -- lifecycle -----------------------------------------------------------------------

    def startService(self) -> None:
        """Connect to every server (ClientService each) and start taking jobs (not while a
        stop is under way)."""
        if self.running or self._stopped is not None:
            return
        self._stopping = False
        if not self._built:
            self._built = True
            for index, spec in enumerate(self._specs):
                name = server_key(spec, index)
                service = ReentrantClientService(
                    client_endpoint(self._reactor, spec, self._connect_timeout, self._tls),
                    _WorkerFactory(self, name),
                    retryPolicy=self._retry_policy,
                    clock=self._reactor,
                    prepareConnection=self._prepare,
                )
                service.setServiceParent(self)
        super().startService()

    def stopService(self) -> Deferred[None]:  # type: ignore[override]
        """Stop grabbing, wait up to ``grace_period`` for running jobs, then disconnect.

        Callable from anywhere (a job function, a callback of another stop): every call
        during one stop gets a Deferred that fires when that stop is done.
        """
        if self._stopped is not None:
            return copy_deferred(self._stopped)
        if not self.running:
            return awaitable(succeed(None))
        self._stopping = True
        self.log.info("Worker stopping; waiting for {n} running job(s)", n=len(self._running))
        waiting: Deferred[None] = Deferred()
        stopped: Deferred[None] = Deferred()
        self._stopped = stopped

        def stop_waiting(_: object = None) -> None:
            if not waiting.called:
                waiting.callback(None)

        DeferredList([attempt.done for attempt in self._running.values()]).addCallback(stop_waiting)
        timer = self._reactor.callLater(self.grace_period, stop_waiting)

        def disconnect(_: object) -> Deferred[None]:
            if timer.active():
                timer.cancel()
            if self._running:
                self.log.warn(
                    "{n} job(s) still running after the {grace}s grace period; disconnecting "
                    "(the server requeues them)",
                    n=len(self._running),
                    grace=self.grace_period,
                )
            for attempt in self._running.values():
                # Their results are dropped with the connection: no time limit to enforce.
                if attempt.timer is not None and attempt.timer.active():
                    attempt.timer.cancel()
            return MultiService.stopService(self)  # type: ignore[return-value]

        def done(_: object) -> None:
            self._stopped = None
            stopped.callback(None)

        waiting.addBoth(disconnect).addBoth(done)
        return copy_deferred(stopped)

    def _prepare(self, proxy: Any) -> None:
        """A new connection: register every function, then start grabbing on it."""
        proto: WorkerProtocol = proxy.unwrap()
        proto.register_all()
        # A new connection has never grabbed: it goes to the front of the round-robin.
        self._connections.insert(0, proto)
        self.log.info("Worker connected to {server}", server=proto.server)
        self._kick()

    # -- slots -----------------------------------------------------------------------------

    @property
    def busy(self) -> int:
        """How many slots are taken: running jobs plus GRABs awaiting an answer."""
        return len(self._running) + self._grabs

    def _kick(self) -> None:
        """Send GRABs on awake connections, round-robin, while slots are free."""
        if self._stopping or not self.functions:
            return
        while self.busy < self.concurrency:
            # The connection that grabbed longest ago goes first: each grabbing connection
            # moves to the back of the list, so every server gets its turn.
            for conn in self._connections:
                if conn.can_grab():
                    break
            else:
                return
            self._connections.remove(conn)
            self._connections.append(conn)
            if conn.grab():
                self._grabs += 1

    def _grab_answered(self) -> None:
        """A GRAB got NO_JOB: its slot is free again."""
        self._grabs -= 1
        self._kick()

    def _job_assigned(
        self,
        conn: WorkerProtocol,
        handle: bytes,
        function: bytes,
        unique: bytes,
        data: bytes,
        reducer: bytes = b"",
        number: int | None = None,
    ) -> None:
        """A GRAB got a job: the reserved slot now runs it."""
        self._grabs -= 1
        if self._stopping:
            # Leave it: the server requeues it when we disconnect.
            self.log.info(
                "Job {handle} assigned while stopping; left for requeue", handle=show(handle)
            )
            return
        registered = self.functions.get(function)
        name = show(function)
        if registered is None:
            self.log.warn(
                "Job {handle} for unregistered function {name}: WORK_FAIL",
                handle=show(handle),
                name=name,
            )
            conn.send_for_job(request(PacketType.WORK_FAIL, handle))
            self._kick()
            return
        call = self._reactor.callFromThread if registered.thread else None
        job = WorkerJob(conn, handle, name, unique, data, call, reducer, number)
        attempt = _Attempt(Deferred(), self._reactor.seconds())
        self._running[job] = attempt
        if registered.timeout is not None:
            attempt.timer = self._reactor.callLater(
                registered.timeout, self._time_limit, job, registered.timeout
            )
        d = self._run(registered, job)
        if job._timed_out:
            d.cancel()  # the limit passed during the call (it advanced a test clock)
        else:
            attempt.deferred = d
        d.addBoth(self._finished, job, conn, registered.timeout)
        self._kick()

    def _time_limit(self, job: WorkerJob, timeout: float) -> None:
        """The job ran past its CAN_DO_TIMEOUT: cancel it, send nothing more, free its slot.

        The server requeues the job on its own timer, so anything sent for this attempt now
        would be stale: gearmand answers it with ERROR JOB_NOT_FOUND, and the job may
        already run elsewhere (or here again, as a new, independent attempt).
        """
        attempt = self._running.pop(job, None)
        if attempt is None:
            return
        job._timed_out = job._finished = True
        if attempt.timer is not None and attempt.timer.active():
            attempt.timer.cancel()
        attempt.timer = None
        self.log.warn(
            "{job} ran past its {timeout}s time limit: cancelled, nothing sent (the server "
            "requeues it)",
            job=job,
            timeout=timeout,
        )
        if attempt.deferred is not None:
            attempt.deferred.cancel()
        attempt.done.callback(None)
        self._kick()

    def _run(self, function: _Function, job: WorkerJob) -> Deferred[Any]:
        """Call the function its way: thread pool, Deferred, coroutine or plain."""
        if function.thread:
            pool = self._thread_pool or self._reactor.getThreadPool()
            return deferToThreadPool(self._reactor, pool, function.func, job)

        def call() -> Any:
            result = function.func(job)
            if inspect.isawaitable(result) and not isinstance(result, Deferred):
                return Deferred.fromCoroutine(_await(result))
            return result

        return maybeDeferred(call)

    def _finished(
        self, outcome: Any, job: WorkerJob, conn: WorkerProtocol, timeout: float | None
    ) -> None:
        """Turn the outcome into WORK_COMPLETE / WORK_FAIL / WORK_EXCEPTION; free the slot.

        An attempt past its time limit sends nothing: a plain function that blocked the
        reactor past it returns before the timer can fire, so the elapsed time is checked too.
        """
        attempt = self._running.get(job)
        if attempt is not None and timeout is not None:
            if self._reactor.seconds() - attempt.started >= timeout:
                self._time_limit(job, timeout)
        if job._timed_out:
            self.log.debug("{job}: outcome after its time limit discarded", job=job)
            return
        assert attempt is not None
        packet: Packet
        if isinstance(outcome, Failure):
            if outcome.check(JobFailed):
                packet = request(PacketType.WORK_FAIL, job.handle)
            else:
                # The function's own error, reported to the client: not a bug in the worker.
                self.log.warn("{job} raised {error}", job=job, error=show(describe(outcome)))
                self.log.debug("{traceback}", traceback=outcome.getTraceback())
                packet = request(PacketType.WORK_EXCEPTION, job.handle, describe(outcome))
        else:
            try:
                packet = request(PacketType.WORK_COMPLETE, job.handle, _result_bytes(outcome))
            except TypeError as e:
                self.log.error("{job}: {error}", job=job, error=e)
                packet = request(PacketType.WORK_EXCEPTION, job.handle, f"TypeError: {e}".encode())
        if attempt.timer is not None and attempt.timer.active():
            attempt.timer.cancel()
        conn.send_for_job(packet)
        job._finished = True
        del self._running[job]
        attempt.done.callback(None)
        self._kick()

    def _connection_lost(self, conn: WorkerProtocol, reason: Failure, grabbing: bool) -> None:
        """Forget a closed connection; a GRAB in flight on it (``grabbing``) frees its slot."""
        if conn in self._connections:
            self._connections.remove(conn)
            self.log.info(
                "Worker lost {server}: {why}", server=conn.server, why=reason.getErrorMessage()
            )
        if grabbing:
            self._grabs -= 1
        self._kick()


async def _await(awaitable: Awaitable[Any]) -> Any:
    """Wrap any awaitable in a coroutine for :meth:`Deferred.fromCoroutine`."""
    return await awaitable


def _result_bytes(value: Result) -> bytes:
    """Convert a function's return value to the WORK_COMPLETE payload.

    :raises TypeError: for a value that is not bytes-like, ``str`` or ``None``.
    """
    if value is None:
        return b""
    return to_bytes(value, "a worker function's return value")


def describe(failure: Failure) -> bytes:
    """Return the short ``"Type: message"`` description sent in WORK_EXCEPTION."""
    exc = failure.value
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    data = text.encode("utf-8", "replace")
    return data[:MAX_EXCEPTION_TEXT]


__all__ = ["Worker", "WorkerJob", "WorkerProtocol"]
