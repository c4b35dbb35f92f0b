# -*- test-case-name: tests.test_tap -*-
"""``twistd gearman``: command-line options and the service they build."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.python import usage

from gearmanpy._version import __version__
from gearmanpy.config import ConfigError, ServerConfig
from gearmanpy.config import load as load_config
from gearmanpy.process import (
    LogFilter,
    TwistdService,
    _json_log,
    exit_nonzero,
    tune_gc,
)
from gearmanpy.protocol.limits import DEFAULT_MAX_PACKET_SIZE
from gearmanpy.server.acl import ANYONE, Acl, AclError, check_pattern
from gearmanpy.server.admin import AdminCommands, Verbosity
from gearmanpy.server.core import JobServerCore
from gearmanpy.server.handles import MAX_PREFIX_SIZE, default_handle_prefix
from gearmanpy.server.outbound import OutputLimits
from gearmanpy.server.protocol import ConnectionBounds, ServerFactory
from gearmanpy.server.recurring import RecurringJobs
from gearmanpy.server.service import GearmanServerService, ReloadOnHangup
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
        [
            "job-handle-prefix",
            None,
            None,
            f"Handles are PREFIX:<boot>-<n> (default H:<hostname>; at most {MAX_PREFIX_SIZE} "
            "characters).",
        ],
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
        # The HTTP listener and the log format (gearmanpy.web; README "Observability").
        [
            "http",
            None,
            None,
            "Serve the dashboard, /metrics and the JSON API on this Twisted endpoint, e.g. "
            "tcp:8080:interface=127.0.0.1 (off by default).",
        ],
        [
            "http-token-file",
            None,
            None,
            "File holding the token the dashboard's actions need (cancel a job); without "
            "it, actions are accepted from loopback only.",
        ],
        ["log-format", None, "text", "text, or json: one JSON object per line."],
        [
            "config",
            None,
            None,
            "A TOML file with the failure policy per function (retries, backoff, timeouts, "
            "throttles, kept results), the dead set's bounds and recurring jobs.",
        ],
        [
            "log-level",
            None,
            "info",
            "Least severe of gearmanpy's messages to log: debug, info, warn, error, critical "
            "(or gearmand's FATAL, ALERT, CRITICAL, ERROR, WARNING, NOTICE, INFO, DEBUG).",
        ],
        # Security (README: "Securing a deployment"); the --ssl-* names are gearmand's.
        ["ssl-certificate", None, None, "The server's TLS certificate (PEM, chain after it)."],
        ["ssl-key", None, None, "The private key of --ssl-certificate (PEM)."],
        [
            "ssl-ca-file",
            None,
            None,
            "CA certificates (PEM): TLS clients must present a certificate signed by one.",
        ],
        [
            "ssl-client-cert",
            None,
            "required",
            "With --ssl-ca-file: required (the default) or optional (a client without a "
            "certificate is known by its address only).",
        ],
        [
            "acl",
            None,
            None,
            "Permissions file (TOML), re-read on SIGHUP; default: anyone may "
            "submit, register and read status, admin is for loopback and unix peers.",
        ],
        ["max-connections", None, "0", "Connections open at once at most (0 = no limit)."],
        [
            "handshake-timeout",
            None,
            "10",
            "Seconds a TLS peer may take to finish its handshake (0 = no limit).",
        ],
        [
            "idle-timeout",
            None,
            "0",
            "Seconds a peer may stay connected before sending anything (0 = no limit).",
        ],
        # The cluster (README "Running a cluster"; gearmanpy.server.cluster).
        ["node-name", None, None, "This node's name in the cluster (default: HOST:PORT)."],
        ["cluster-poll", None, 1.0, "Seconds between polls of the cluster's queue.", float],
        ["cluster-lease", None, 10.0, "Seconds a node's lease lasts without renewal.", float],
    ]
    optFlags = [
        ["round-robin", "R", "Alternate between a worker's functions."],
        ["exceptions", None, "Every connection starts with the exceptions option on."],
        [
            "allow-remote-shutdown",
            None,
            "Accept the admin commands (shutdown, verbose LEVEL, cancel, drop, create, "
            "maxqueue) from any peer, as --admin-from anyone.",
        ],
        [
            "ssl",
            None,
            "Every tcp: listener speaks TLS (needs --ssl-certificate and --ssl-key).",
        ],
        [
            "cluster",
            None,
            "Share background jobs with the other nodes on the same --queue postgresql://.",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["max-queue"] = {}
        self["admin-from"] = []

    def opt_admin_from(self, who: str) -> None:
        """Also give admin to this identity, repeatable: a CIDR, an IP, cert:NAME, anyone."""
        try:
            self["admin-from"].append(check_pattern(who))
        except ValueError as e:
            raise usage.UsageError(f"--admin-from: {e}") from None

    def opt_max_queue(self, value: str) -> None:
        """maxqueue limits from the start, repeatable: FUNCTION=N or FUNCTION=HIGH,NORMAL,LOW."""
        name, limits = _max_queue(value)
        self["max-queue"][name] = limits

    def opt_listen(self, description: str) -> None:
        """Listen on a Twisted server endpoint (repeatable), e.g. tcp:4730:interface=::, or
        tls:4731 (TLS with --ssl-certificate and --ssl-key)."""
        if description.startswith("tls:"):  # a TLS listener (gearmanpy.server.tls)
            _check_endpoint("tcp:" + description[len("tls:") :])
        else:
            _check_endpoint(description)
        self["listen"].append(description)

    def opt_version(self) -> None:
        """Print gearmanpy's version and exit."""
        print(f"gearmanpy {__version__}")
        sys.exit(0)

    def postOptions(self) -> None:
        """Check the values and fill in the default endpoint."""
        if self["port"] is not None:
            port = _non_negative("port", self["port"])
            if port > 65535:
                raise usage.UsageError("--port must be at most 65535")
            self["listen"].append(f"tcp:{port}")
        if not self["listen"]:
            self["listen"].append("tcp:4730")
        self["store"] = _store_factory(self["queue"])
        if self["cluster"]:
            self._cluster()
        elif self["node-name"] is not None:
            raise usage.UsageError("--node-name is for a --cluster node")
        self["server-config"] = _server_config(self["config"])
        self._check_web()
        try:
            self["verbosity"] = Verbosity(self["log-level"])
        except ValueError as e:
            raise usage.UsageError(f"--log-level: {e}") from None
        if self["job-retries"] is not None:
            self["job-retries"] = _non_negative("job-retries", self["job-retries"])
        self["worker-wakeup"] = _non_negative("worker-wakeup", self["worker-wakeup"])
        self["max-packet-size"] = _non_negative("max-packet-size", self["max-packet-size"])
        try:
            self["output-limits"] = OutputLimits.for_packet_size(
                self["max-packet-size"],
                self["output-soft-limit"],
                self["output-hard-limit"],
                self["output-timeout"],
            )
        except ValueError as e:
            raise usage.UsageError(f"--output-*: {e}") from None
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
        if prefix is not None and (
            len(prefix) > MAX_PREFIX_SIZE or not prefix.isascii() or " " in prefix
        ):
            raise usage.UsageError(
                f"--job-handle-prefix: at most {MAX_PREFIX_SIZE} ASCII characters, no spaces"
            )
        self._security()

    def _cluster(self) -> None:
        """Check the cluster's options and build its store instead of the plain one."""
        url = self["queue"]
        if not url.lower().startswith(("postgresql://", "postgres://")):
            raise usage.UsageError("--cluster needs --queue postgresql://...")
        for name in ("cluster-poll", "cluster-lease"):
            if not 0 < self[name] <= 3600:
                raise usage.UsageError(f"--{name} must be more than 0 and at most 3600 seconds")
        name = self["node-name"]
        if name is None:
            import socket

            endpoint = self["listen"][0].split(":")
            name = socket.gethostname() + (f":{endpoint[1]}" if len(endpoint) > 1 else "")
        if not name or len(name) > 200 or not name.isprintable():
            raise usage.UsageError("--node-name: 1 to 200 printable characters")
        self["node-name"] = name
        from gearmanpy.store.pg_cluster import ClusterStore

        lease = self["cluster-lease"]
        self["store"] = lambda reactor: ClusterStore(url, reactor, node_name=name, lease=lease)

    def _check_web(self) -> None:
        """Check --http (an endpoint), --http-token-file (read now) and --log-format."""
        if self["http"] is not None:
            _check_endpoint(self["http"], "http")
        self["http-token"] = None
        if self["http-token-file"] is not None:
            if self["http"] is None:
                raise usage.UsageError("--http-token-file needs --http")
            from gearmanpy.web.auth import read_token

            try:
                self["http-token"] = read_token(self["http-token-file"])
            except ValueError as e:
                raise usage.UsageError(f"--http-token-file: {e}") from None
        if self["log-format"] not in ("text", "json"):
            raise usage.UsageError(f"--log-format takes text or json, not {self['log-format']!r}")

    def _security(self) -> None:
        """Check the TLS files, read the permissions and the connection bounds."""
        self["bounds"] = ConnectionBounds(
            _non_negative("max-connections", self["max-connections"]),
            _seconds("handshake-timeout", self["handshake-timeout"]),
            _seconds("idle-timeout", self["idle-timeout"]),
        )
        admin_from = list(self["admin-from"])
        if self["allow-remote-shutdown"]:
            admin_from.append(ANYONE)
        try:
            self["access"] = Acl(source=self["acl"], admin_from=admin_from)
        except AclError as e:
            raise usage.UsageError(f"--acl: {e}") from None
        self["tls"] = None
        wants_tls = self["ssl"] or any(d.startswith("tls:") for d in self["listen"])
        if self["ssl-certificate"] is None or self["ssl-key"] is None:
            if wants_tls or self["ssl-ca-file"]:
                raise usage.UsageError(
                    "TLS (--ssl, --listen tls:..., --ssl-ca-file) needs --ssl-certificate "
                    "and --ssl-key"
                )
            return
        try:
            from gearmanpy.server.tls import ServerTLS, TLSConfigError, TLSFiles
        except ImportError as e:
            raise usage.UsageError(
                f"TLS needs pyOpenSSL ({e}): pip install 'gearmanpy[tls]'"
            ) from None
        try:
            files = TLSFiles(
                self["ssl-certificate"],
                self["ssl-key"],
                self["ssl-ca-file"],
                self["ssl-client-cert"],
            )
            self["tls"] = ServerTLS(files)
        except TLSConfigError as e:
            raise usage.UsageError(str(e)) from None
        if not wants_tls:
            raise usage.UsageError(
                "--ssl-certificate given, but no listener speaks TLS: add --ssl, or "
                "--listen tls:PORT"
            )


def _seconds(name: str, value: str) -> float:
    """A non-negative number of seconds."""
    try:
        n = float(value)
    except ValueError:
        raise usage.UsageError(f"--{name} takes a number of seconds, not {value!r}") from None
    if not n >= 0 or n == float("inf"):
        raise usage.UsageError(f"--{name} must be a non-negative number of seconds")
    return n


def _check_endpoint(description: str, option: str = "listen") -> None:
    """Parse ``description`` as a server endpoint now, so a bad one is a usage error."""
    from twisted.internet.endpoints import serverFromString

    try:
        serverFromString(None, description)  # parsing needs no reactor; listening will
    except Exception as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise usage.UsageError(f"--{option} {description!r}: {reason}") from None


def _store_factory(url: str) -> Callable[[Any], IJobStore] | None:
    """What builds the store for ``--queue URL`` (None for ``memory``: no persistence at all),
    with the whole URL checked."""
    if url == "memory":
        return None
    from gearmanpy.store.url import store_factory

    try:
        return store_factory(url)
    except ValueError as e:
        raise usage.UsageError(f"--queue: {e}") from None


def _makeService(
    options: Options,
    reactor: Any,
    on_failure: Callable[[str], None] | None = None,
    raise_early: bool = False,
) -> GearmanServerService:
    """Build (but do not start) the server service with an explicit reactor.

    :param on_failure: and :param raise_early: as :class:`GearmanServerService` takes them.
    """
    config: ServerConfig = options["server-config"]
    core = _core(options, reactor, config)
    admin = AdminCommands(
        core,
        options["verbosity"],
        allow_remote_shutdown=bool(options["allow-remote-shutdown"]),
        acl=options["access"],
    )
    recurring = RecurringJobs(core, reactor, config.recurring) if config.recurring else None
    admin.recurring = recurring
    server = ServerFactory(
        core,
        options["max-packet-size"],
        admin,
        coalesce_writes=True,
        output_limits=options["output-limits"],
        release_memory=True,
        acl=options["access"],
        bounds=options["bounds"],
    )
    http: list[tuple[str, Any]] = []
    if options.get("http"):
        from gearmanpy.web.app import build

        site = build(core, reactor, options.get("http-token"), _redacted(options["queue"]))
        http.append((options["http"], site))
    return GearmanServerService(
        core,
        server,
        list(options["listen"]),
        reactor,
        queue=_redacted(options["queue"]),
        on_failure=on_failure,
        raise_early=raise_early,
        recurring=recurring,
        http=http,
        tls=options["tls"],
        tls_everywhere=bool(options["ssl"]),
        acl=options["access"],
    )


def _core(options: Options, reactor: Any, config: ServerConfig) -> JobServerCore:
    """The server's core as the options and the configuration file say."""
    factory = options["store"]
    prefix = options["job-handle-prefix"]
    return JobServerCore(
        clock=reactor,
        store=factory(reactor) if factory is not None else None,
        handle_prefix=prefix.encode("ascii") if prefix else default_handle_prefix(),
        job_retries=options["job-retries"],
        worker_wakeup=options["worker-wakeup"],
        round_robin=bool(options["round-robin"]),
        exceptions=bool(options["exceptions"]),
        max_queued_jobs=options["max-queued-jobs"],
        max_queued_bytes=options["max-queued-bytes"],
        max_queues=dict(options["max-queue"]),
        policies=config.policies,
        dead=config.dead_set(),
    )


def _server_config(path: str | None) -> ServerConfig:
    """The configuration file's settings (defaults without ``--config``).

    :raises usage.UsageError: naming what is wrong in the file.
    """
    if path is None:
        return ServerConfig()
    try:
        return load_config(path)
    except ConfigError as e:
        raise usage.UsageError(f"--config: {e}") from None


def _redacted(url: str) -> str:
    """``url`` with any password replaced by ``***``, for log lines."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def makeService(options: Options) -> MultiService:
    """Build the ``twistd gearman`` service on the global reactor: the log filter, then the
    server.

    Unless a reactor is already installed (``twistd --reactor`` installs one before this
    runs), the leaner :class:`gearmanpy.reactor.GearmanReactor` is installed first. Under
    twistd (``options.parent`` is twistd's own options), a failed start exits non-zero; in
    daemon mode a failure found before the reactor runs (an endpoint that cannot listen) is
    raised, so twistd reports it to the parent, which exits 1.
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
    twistd = options.parent
    foreground = twistd is None or bool(twistd.get("nodaemon", True))
    server = _makeService(
        options,
        reactor,
        on_failure=exit_nonzero(foreground) if twistd is not None else None,
        raise_early=not foreground,
    )
    top = TwistdService()
    json_to = _json_log(twistd, foreground) if options["log-format"] == "json" else None
    LogFilter(options["verbosity"], json_to=json_to).setServiceParent(top)
    server.setServiceParent(top)
    if options["cluster"]:
        _cluster_service(options, server, reactor).setServiceParent(top)
    ReloadOnHangup(server, reactor).setServiceParent(top)
    return top


def _cluster_service(options: Options, server: GearmanServerService, reactor: Any) -> Any:
    """The node of a ``--cluster`` server: it claims the shared jobs for the core, and
    LISTENs for new ones once the server accepts connections (stopped before the store); its
    recurring jobs tick by the database's clock, read when the store opens and at each lease
    tick; its workers are published for every node's ``workers``; ``maxqueue`` and ``policy``
    change the settings every node shares."""
    from gearmanpy.server.cluster import ClusterNode, ClusterService
    from gearmanpy.server.cluster_admin import ClusterAdmin
    from gearmanpy.server.cluster_clock import DatabaseClock
    from gearmanpy.server.cluster_dead import DeadSweeper
    from gearmanpy.server.cluster_settings import ClusterSettings
    from gearmanpy.server.cluster_workers import WorkerBoard
    from gearmanpy.store.pg_cluster import NotifyListener

    store: Any = server.core.store  # the ClusterStore that Options._cluster built
    clock = DatabaseClock(reactor)
    store.on_clock = clock.learn
    if server.recurring is not None:
        server.recurring.clock = clock
        clock.subscribe(server.recurring.retime)
    node = ClusterNode(
        server.core, store, reactor, poll=options["cluster-poll"], lease=options["cluster-lease"]
    )
    node.install()
    if server.recurring is not None:
        server.recurring.shared = node.claim_tick  # runs go into the shared queue
    settings = ClusterSettings(server.core, store, reactor, options["cluster-lease"] / 3)
    store.on_settings = settings.apply  # before the node takes any submission
    admin = ClusterAdmin(server.factory.admin, store, settings)
    server.factory.admin = admin  # type: ignore[assignment]
    for _, site in server.http:  # the dashboard's dead set is the cluster's too
        site.views.cluster = admin.dead  # type: ignore[attr-defined]
    listener = NotifyListener(
        options["queue"],
        store.channel,
        reactor,
        node.heard,
        node.events,
        node.joined,
        settings.refresh,
    )
    board = WorkerBoard(server.core, store, reactor, options["node-name"])
    sweeper = DeadSweeper(server.core, store, reactor)  # bounds the shared dead set
    return ClusterService(node, server.whenReady, listener, board, settings, sweeper)
