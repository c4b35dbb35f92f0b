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

import attrs

from tests.interop.conftest import free_port

__all__ = ["free_port", "start_postgres", "start_redis"]

REDIS_SERVER = "/usr/bin/redis-server"
PG_BIN = "/usr/lib/postgresql/15/bin"
PG_USER = "gearmanpy-pg"


class DatabaseServerError(Exception):
    """A database binary is missing or the server would not start."""


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: str, timeout: float) -> None:
    """Block until something accepts on ``port``; raise if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DatabaseServerError(f"server exited with {proc.returncode}: {_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise DatabaseServerError(f"nothing listened on {port} within {timeout}s: {_tail(log)}")


def _tail(path: str) -> str:
    """The end of a log file, for error messages."""
    try:
        with open(path, errors="replace") as f:
            return f.read()[-2000:]
    except OSError:
        return "(no log)"


def _require(path: str) -> str:
    """``path`` if it is an executable, else raise DatabaseServerError."""
    if not os.access(path, os.X_OK):
        raise DatabaseServerError(f"{path} is not installed")
    return path


def _stop(proc: subprocess.Popen[bytes] | None, sig: int) -> None:
    """Send ``sig`` to our own child and wait for it (SIGKILL after 20 s)."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@attrs.define(eq=False)
class RedisServer:
    """A redis-server with ``appendonly yes`` and ``appendfsync always`` in a temp dir."""

    port: int
    workdir: str
    process: subprocess.Popen[bytes] | None = None

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
        _wait_for_port(self.port, self.process, log, 20)
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
                raise DatabaseServerError(f"redis-server never finished loading: {_tail(log)}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (SIGTERM: it finishes its AOF and exits)."""
        _stop(self.process, signal.SIGTERM)
        self.process = None

    def destroy(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_redis() -> RedisServer:
    """Start a persistent redis-server on a free loopback port."""
    server = RedisServer(free_port(), tempfile.mkdtemp(prefix="gearmanpy-redis-"))
    try:
        server.start()
    except BaseException:
        server.destroy()
        raise
    return server


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
class PostgresServer:
    """A throwaway PostgreSQL cluster (trust auth on loopback, database ``postgres``)."""

    port: int
    workdir: str
    account: tuple[int, int] | None
    process: subprocess.Popen[bytes] | None = None

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

    def initdb(self) -> None:
        """Create the cluster."""
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
            raise DatabaseServerError(f"initdb failed: {_tail(log)}")

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
        _wait_for_port(self.port, self.process, log, 30)
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
                    raise DatabaseServerError(f"PostgreSQL never became ready: {_tail(log)}") from e
                time.sleep(0.1)

    def stop(self) -> None:
        """Fast shutdown (SIGINT): sessions are cut, the server exits cleanly."""
        _stop(self.process, signal.SIGINT)
        self.process = None

    def destroy(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """Create and start a PostgreSQL cluster on a free loopback port."""
    account = _pg_account()
    workdir = tempfile.mkdtemp(prefix="gearmanpy-pg-")
    if account is not None:
        os.chown(workdir, *account)
    os.chmod(workdir, 0o700)
    server = PostgresServer(free_port(), workdir, account)
    try:
        server.initdb()
        server.start()
    except BaseException:
        server.destroy()
        raise
    return server
