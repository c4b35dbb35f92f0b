# -*- test-case-name: tests.test_tap -*-
"""``twistd gearman``: command-line options and the service they build."""

from __future__ import annotations

import os
from typing import Any

from twisted.python import usage

from gearmanpy.protocol.limits import DEFAULT_MAX_PACKET_SIZE
from gearmanpy.server.admin import AdminCommands
from gearmanpy.server.core import JobServerCore
from gearmanpy.server.handles import default_handle_prefix
from gearmanpy.server.protocol import ServerFactory
from gearmanpy.server.service import GearmanServerService
from gearmanpy.store.interface import IJobStore

#: The embedded default: a durable SQLite queue in the working directory.
DEFAULT_QUEUE = "sqlite:gearmanpy.sqlite"


def _non_negative(name: str, value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise usage.UsageError(f"--{name} takes a whole number, not {value!r}") from None
    if n < 0:
        raise usage.UsageError(f"--{name} must not be negative")
    return n


#: Binary multiples ``--max-queued-bytes`` takes (``512M``, ``2G``).
_SIZE_SUFFIXES = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

#: Bytes of memory a live job costs besides its payload, rounded up: a million queued
#: background jobs with 10-byte payloads grew a core's process by 310 bytes a job.
JOB_OVERHEAD = 512


def _size(name: str, value: str) -> int:
    """A byte count with an optional K/M/G/T (binary) suffix."""
    text = value.strip().upper().removesuffix("B")
    factor = 1
    if text[-1:] in _SIZE_SUFFIXES:
        factor, text = _SIZE_SUFFIXES[text[-1]], text[:-1]
    try:
        n = int(text) * factor
    except ValueError:
        raise usage.UsageError(
            f"--{name} takes a byte count such as 1073741824 or 1G, not {value!r}"
        ) from None
    if n < 0:
        raise usage.UsageError(f"--{name} must not be negative")
    return n


def available_memory() -> int:
    """The memory this process may use: physical memory, or a lower cgroup limit (a
    container's, as Kubernetes and systemd set it)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def default_bounds(memory: int) -> tuple[int, int]:
    """``--max-queued-jobs`` and ``--max-queued-bytes`` when not given: a quarter of
    ``memory`` for payloads and a quarter for the jobs' own bookkeeping, so a full queue
    uses about half of it and the process is never killed for memory by a flood."""
    return memory // 4 // JOB_OVERHEAD, memory // 4


def _max_queue(value: str) -> tuple[bytes, list[int]]:
    """``FUNCTION=N`` or ``FUNCTION=HIGH,NORMAL,LOW`` (as the ``maxqueue`` admin command)."""
    name, sep, limits = value.rpartition("=")
    try:
        numbers = [int(n) for n in limits.split(",")]
    except ValueError:
        numbers = []
    if not sep or not name or len(numbers) not in (1, 3) or min(numbers) < 0:
        raise usage.UsageError(
            f"--max-queue takes FUNCTION=N or FUNCTION=HIGH,NORMAL,LOW, not {value!r}"
        )
    return name.encode("utf-8", "surrogateescape"), numbers * 3 if len(numbers) == 1 else numbers


class Options(usage.Options):
    """Options of ``twistd gearman``."""

    synopsis = "[options]"
    longdesc = (
        "A Gearman job server, wire-compatible with gearmand 1.1. Background jobs are kept "
        f"durable in {DEFAULT_QUEUE} in the working directory unless --queue says otherwise."
    )

    optParameters = [
        ["port", "p", None, "Shorthand for --listen tcp:PORT."],
        ["job-handle-prefix", None, None, "Handles are PREFIX:<n> (default H:<hostname>)."],
        [
            "job-retries",
            "j",
            None,
            "Most runs of a job whose worker is lost or times out; then it fails, as in "
            "gearmand (0 = no limit, the default).",
        ],
        [
            "max-queued-jobs",
            None,
            None,
            "Live jobs the server holds at most; past it, submissions get QUEUE_ERROR "
            f"(0 = no limit; default: a quarter of memory / {JOB_OVERHEAD} bytes).",
        ],
        [
            "max-queued-bytes",
            None,
            None,
            "Payload bytes of live jobs at most, e.g. 2G (0 = no limit; default: a quarter "
            "of memory).",
        ],
        ["worker-wakeup", "w", "0", "Workers woken per queued job (0 = all)."],
        ["max-packet-size", None, str(DEFAULT_MAX_PACKET_SIZE), "Largest packet body accepted."],
        # Output bounds per peer (gearmanpy.server.outbound.OutputLimits says why these).
        [
            "output-soft-limit",
            None,
            None,
            "Bytes of replies a peer may leave unread before the server stops reading from "
            "it until half have drained (default: --max-packet-size + 64 KiB).",
            int,
        ],
        [
            "output-hard-limit",
            None,
            None,
            "Bytes of unread replies past which a peer is dropped after --output-timeout "
            "seconds (default: 4 x the soft limit).",
            int,
        ],
        ["output-timeout", None, 30.0, "Seconds a peer may stay past the hard limit.", float],
        [
            "queue",
            "q",
            DEFAULT_QUEUE,
            "Persistent queue: memory, sqlite:PATH, postgresql://..., redis://...",
        ],
    ]
    optFlags = [
        ["round-robin", "R", "Alternate between a worker's functions."],
        ["exceptions", None, "Every connection starts with the exceptions option on."],
        ["allow-remote-shutdown", None, "Accept the shutdown admin command from any peer."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["max-queue"] = {}

    def opt_max_queue(self, value: str) -> None:
        """maxqueue limits from the start, repeatable: FUNCTION=N or FUNCTION=HIGH,NORMAL,LOW."""
        name, limits = _max_queue(value)
        self["max-queue"][name] = limits

    def opt_listen(self, description: str) -> None:
        """Listen on a Twisted server endpoint (repeatable), e.g. tcp:4730:interface=::."""
        self["listen"].append(description)

    def postOptions(self) -> None:
        """Check the values and fill in the default endpoint."""
        if self["port"] is not None:
            self["listen"].append(f"tcp:{_non_negative('port', self['port'])}")
        if not self["listen"]:
            self["listen"].append("tcp:4730")
        if self["job-retries"] is not None:
            self["job-retries"] = _non_negative("job-retries", self["job-retries"])
        self["worker-wakeup"] = _non_negative("worker-wakeup", self["worker-wakeup"])
        self["max-packet-size"] = _non_negative("max-packet-size", self["max-packet-size"])
        jobs, size = default_bounds(available_memory())
        if self["max-queued-jobs"] is None:
            self["max-queued-jobs"] = jobs
        else:
            self["max-queued-jobs"] = _non_negative("max-queued-jobs", self["max-queued-jobs"])
        if self["max-queued-bytes"] is None:
            self["max-queued-bytes"] = size
        else:
            self["max-queued-bytes"] = _size("max-queued-bytes", self["max-queued-bytes"])
        prefix = self["job-handle-prefix"]
        if prefix is not None and (len(prefix) > 40 or not prefix.isascii() or " " in prefix):
            raise usage.UsageError("--job-handle-prefix: at most 40 ASCII characters, no spaces")


def make_store(url: str, reactor: Any) -> IJobStore | None:
    """The store for ``--queue URL``; None for ``memory`` (no persistence at all)."""
    if url == "memory":
        return None
    from gearmanpy.store.url import store_from_url

    try:
        return store_from_url(url, reactor)
    except ValueError as e:
        raise usage.UsageError(f"--queue: {e}") from None


def _makeService(options: Options, reactor: Any) -> GearmanServerService:
    """Build (but do not start) the server service with an explicit reactor."""
    store = make_store(options["queue"], reactor)
    prefix = options["job-handle-prefix"]
    core = JobServerCore(
        clock=reactor,
        store=store,
        handle_prefix=prefix.encode("ascii") if prefix else default_handle_prefix(),
        job_retries=options["job-retries"],
        worker_wakeup=options["worker-wakeup"],
        round_robin=bool(options["round-robin"]),
        exceptions=bool(options["exceptions"]),
        max_queued_jobs=options["max-queued-jobs"],
        max_queued_bytes=options["max-queued-bytes"],
        max_queues=dict(options["max-queue"]),
    )
    admin = AdminCommands(core, allow_remote_shutdown=bool(options["allow-remote-shutdown"]))
    from gearmanpy.server.outbound import OutputLimits

    try:
        limits = OutputLimits.for_packet_size(
            options["max-packet-size"],
            options["output-soft-limit"],
            options["output-hard-limit"],
            options["output-timeout"],
        )
    except ValueError as e:
        raise usage.UsageError(f"--output-*: {e}") from None
    factory = ServerFactory(
        core,
        options["max-packet-size"],
        admin,
        coalesce_writes=True,
        output_limits=limits,
        release_memory=True,
    )
    return GearmanServerService(core, factory, list(options["listen"]), reactor)


def makeService(options: Options) -> GearmanServerService:
    """Build the ``twistd gearman`` service on the global reactor.

    Unless a reactor is already installed (``twistd --reactor`` installs one before this
    runs), the leaner :class:`gearmanpy.reactor.GearmanReactor` is installed first.
    """
    import sys

    if "twisted.internet.reactor" not in sys.modules:
        try:
            from gearmanpy.reactor import install
        except ImportError:  # no epoll on this platform: Twisted's default will do
            pass
        else:
            install()
    from twisted.internet import reactor

    tune_gc()
    return _makeService(options, reactor)


#: Allocations between young-generation collections in the server process (CPython: 700).
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Make CPython's cyclic garbage collector run far less often in the server process.

    A queue of a million jobs is a million long-lived objects, and with the default
    thresholds the collector scans them again and again as new jobs arrive, which costs a
    large share of the server's throughput (``python benchmarks/run.py --scenarios S1,S4``
    with the thresholds reset to CPython's shows it). Jobs are freed by reference counting when they
    end (the core breaks its own cycles), so the collector has little to find; it still runs,
    just every 50,000 allocations instead of every 700. Only ``twistd gearman`` calls this,
    never the library.
    """
    import gc

    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()
