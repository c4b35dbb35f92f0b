"""Start a real redis-server and a real PostgreSQL on free loopback ports, for the store tests.

Each server lives in its own temporary directory and is stopped by its own process id.
PostgreSQL refuses to run as root, so when the tests run as root its files belong to, and its
processes run as, the unprivileged system user ``gearmanpy-pg`` (created if missing). A
missing binary is a failure, not a skip: a silently skipped backend proves nothing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import ClassVar, TypeVar

import attrs

from tests.procs import free_port, stop_process, tail, wait_for_port

__all__ = ["free_port", "start_postgres", "start_redis"]

REDIS_SERVER = "/usr/bin/redis-server"
PG_BIN = "/usr/lib/postgresql/15/bin"
PG_USER = "gearmanpy-pg"

_Server = TypeVar("_Server", bound="DatabaseServer")


class DatabaseServerError(Exception):
    """A database binary is missing, initdb failed, or the server never got ready.

    (A server that dies or never listens fails :func:`tests.procs.wait_for_port` first.)
    """


def _require(path: str) -> str:
    """``path`` if it is an executable, else raise DatabaseServerError."""
    if not os.access(path, os.X_OK):
        raise DatabaseServerError(f"{path} is not installed")
    return path


@attrs.define(eq=False)
class DatabaseServer:
    """What the Redis and PostgreSQL servers share: a port, a directory, one process."""

    #: The signal that shuts the server down cleanly.
    stop_signal: ClassVar[int] = signal.SIGTERM

    port: int
    workdir: str
    process: subprocess.Popen[bytes] | None = attrs.field(default=None, kw_only=True)

    def prepare(self) -> None:
        """Set up the data directory before the first start (nothing by default)."""

    def start(self) -> None:
        """(Re)start the server on the same port and data directory."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server with ``stop_signal`` (SIGKILL if it takes over 20 s)."""
        stop_process(self.process, self.stop_signal, timeout=20)
        self.process = None

    def destroy(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _first_start(server: _Server) -> _Server:
    """Prepare and start a new server; if that fails, destroy it and re-raise."""
    try:
        server.prepare()
        server.start()
    except BaseException:
        server.destroy()
        raise
    return server


@attrs.define(eq=False)
class RedisServer(DatabaseServer):
    """A redis-server with ``appendonly yes`` and ``appendfsync always`` in a temp dir.

    :meth:`stop` sends SIGTERM: it finishes its AOF and exits.
    """

    @property
    def url(self) -> str:
        """The ``--queue`` URL of this server, database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """(Re)start the server on the same port and data directory."""
        log = os.path.join(self.workdir, "redis.log")
        self.process = subprocess.Popen(
            [
                _require(REDIS_SERVER),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", self.workdir,
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--save", "",
                "--daemonize", "no",
                "--logfile", log,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port, self.process, 20, log=log)
        self._wait_loaded(log)

    def _wait_loaded(self, log: str) -> None:
        """Wait until PING answers PONG (not ``-LOADING`` while the AOF is replayed)."""
        deadline = time.monotonic() + 20
        while True:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
            if time.monotonic() > deadline:
                raise DatabaseServerError(f"redis-server never finished loading: {tail(log)}")
            time.sleep(0.05)


def start_redis() -> RedisServer:
    """Start a persistent redis-server on a free loopback port."""
    return _first_start(RedisServer(free_port(), tempfile.mkdtemp(prefix="gearmanpy-redis-")))


def _pg_account() -> tuple[int, int] | None:
    """The (uid, gid) PostgreSQL runs as: ``gearmanpy-pg`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
            check=True,
        )
        entry = pwd.getpwnam(PG_USER)
    return entry.pw_uid, entry.pw_gid


@attrs.define(eq=False)
class PostgresServer(DatabaseServer):
    """A throwaway PostgreSQL cluster (trust auth on loopback, database ``postgres``).

    :meth:`stop` is a fast shutdown (SIGINT): sessions are cut, the server exits cleanly.
    """

    stop_signal: ClassVar[int] = signal.SIGINT

    account: tuple[int, int] | None

    @property
    def datadir(self) -> str:
        """The cluster's data directory."""
        return os.path.join(self.workdir, "data")

    @property
    def url(self) -> str:
        """The ``--queue`` URL of this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def uid(self) -> int | None:
        """The user id PostgreSQL runs as (None: ours)."""
        return None if self.account is None else self.account[0]

    @property
    def gid(self) -> int | None:
        """The group id PostgreSQL runs as (None: ours)."""
        return None if self.account is None else self.account[1]

    def prepare(self) -> None:
        """Create the cluster (initdb)."""
        log = os.path.join(self.workdir, "initdb.log")
        with open(log, "wb") as out:
            result = subprocess.run(
                [
                    _require(os.path.join(PG_BIN, "initdb")),
                    "-D", self.datadir,
                    "-U", "postgres",
                    "--auth=trust",
                    "-E", "UTF8",
                    "--no-locale",
                    "--no-sync",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                user=self.uid,
                group=self.gid,
            )  # fmt: skip
        if result.returncode != 0:
            raise DatabaseServerError(f"initdb failed: {tail(log)}")

    def start(self) -> None:
        """(Re)start the server on the same port and data directory (fsync on)."""
        log = os.path.join(self.workdir, "postgres.log")
        out = open(log, "ab")
        try:
            self.process = subprocess.Popen(
                [
                    _require(os.path.join(PG_BIN, "postgres")),
                    "-D", self.datadir,
                    "-p", str(self.port),
                    "-k", self.workdir,
                    "-c", "listen_addresses=127.0.0.1",
                    "-c", "fsync=on",
                    "-c", "synchronous_commit=on",
                    "-c", "shared_buffers=32MB",
                    "-c", "max_connections=20",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                user=self.uid,
                group=self.gid,
            )  # fmt: skip
        finally:
            out.close()
        wait_for_port(self.port, self.process, 30, log=log)
        self._wait_ready(log)

    def _wait_ready(self, log: str) -> None:
        """Wait until the server accepts a real login (not just the TCP connection)."""
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError as e:
                if time.monotonic() > deadline:
                    raise DatabaseServerError(f"PostgreSQL never became ready: {tail(log)}") from e
                time.sleep(0.1)


def start_postgres() -> PostgresServer:
    """Create and start a PostgreSQL cluster on a free loopback port."""
    account = _pg_account()
    workdir = tempfile.mkdtemp(prefix="gearmanpy-pg-")
    if account is not None:
        os.chown(workdir, *account)
    os.chmod(workdir, 0o700)
    return _first_start(PostgresServer(free_port(), workdir, account))
