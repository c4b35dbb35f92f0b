# -*- test-case-name: tests.test_tap -*-
"""``twistd gearman``: command-line options and the service they build."""

from __future__ import annotations

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
            "Requeues allowed after a worker is lost or times out before the job fails "
            "(0 = none; default unlimited).",
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
