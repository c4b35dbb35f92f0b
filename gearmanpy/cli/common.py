"""What every subcommand shares: the servers (``--server``, ``GEARMAN_SERVERS``) and TLS to
them (``--ssl...``), one-line errors, and running a coroutine on the reactor with a clean
exit status.

Errors a user can cause (an unreachable server, a bad argument, a failed job) end the
program with one line on stderr, ``gearmanpy: error: ...``, and a non-zero status; a
traceback is kept for bugs.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

import click
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError

from gearmanpy._connection import ClientTLS, split_host_port
from gearmanpy.errors import GearmanError

#: The server used when neither ``--server`` nor ``GEARMAN_SERVERS`` names one.
DEFAULT_SERVER = "127.0.0.1:4730"

#: The environment variable libgearman reads its servers from (``host[:port],...``).
SERVERS_ENV = "GEARMAN_SERVERS"

#: Exit status of a command that failed because of its input, a server or a job.
FAILED = 1

#: Exit status of a command stopped by its timeout.
TIMED_OUT = 3


class CliError(click.ClickException):
    """A user-facing failure: printed as one line, exit status ``code``."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        """:param code: the exit status."""
        super().__init__(message)
        self.exit_code = code  # type: ignore[misc]  # click reads it per instance too

    def show(self, file: Any = None) -> None:
        """Print ``gearmanpy: error: MESSAGE`` on stderr."""
        click.echo(f"gearmanpy: error: {self.format_message()}", err=True)


def parse_servers(values: tuple[str, ...] | list[str], env: str | None) -> list[str]:
    """The servers to use: each ``--server`` (a value may hold several, comma-separated),
    else ``GEARMAN_SERVERS``, else :data:`DEFAULT_SERVER`.

    Twisted endpoint strings (``unix:path=...``, ``tls:...``) pass through untouched.

    :raises CliError: for an address that cannot be understood.
    """
    given = list(values) or ([env] if env else [])
    servers: list[str] = []
    for value in given:
        parts = [value] if ":" in value and "=" in value else value.split(",")
        servers += [part.strip() for part in parts if part.strip()]
    if not servers:
        return [DEFAULT_SERVER]
    for server in servers:
        if "=" in server:
            continue
        try:
            split_host_port(server)
        except ValueError as e:
            raise CliError(str(e)) from None
    return servers


def servers_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--server/-s`` option, repeatable, read into a ``servers`` list."""

    def convert(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str]:
        return parse_servers(value, os.environ.get(SERVERS_ENV))

    return click.option(
        "--server",
        "-s",
        "servers",
        multiple=True,
        metavar="HOST[:PORT]",
        callback=convert,
        help=f"A job server (repeatable, or comma-separated); default ${SERVERS_ENV} "
        f"or {DEFAULT_SERVER}.",
    )(f)


def make_tls(
    ssl: bool, ca: str | None, certificate: str | None, key: str | None, hostname: str | None
) -> ClientTLS | None:
    """The TLS settings of the ``--ssl...`` options: None (plain TCP) unless one is given.

    :raises CliError: for a key without a certificate, or a file that cannot be read.
    """
    if not (ssl or ca or certificate or key or hostname):
        return None
    if key is not None and certificate is None:
        raise CliError("--ssl-key needs --ssl-certificate")
    try:
        return ClientTLS(ca=ca, certificate=certificate, key=key, hostname=hostname)
    except ValueError as e:
        raise CliError(str(e)) from None


#: The ``--ssl...`` options, named as gearmand's and libgearman's ``gearman`` tool name them.
_TLS_OPTIONS = (
    click.option(
        "--ssl",
        is_flag=True,
        help="Speak TLS to the servers, verifying each one's certificate and host name "
        "(against the system's roots unless --ssl-ca-file is given). Any --ssl-* option "
        "implies it.",
    ),
    click.option("--ssl-ca-file", metavar="FILE", help="CA certificates (PEM) to verify with."),
    click.option(
        "--ssl-certificate", metavar="FILE", help="This client's certificate (PEM), if asked."
    ),
    click.option("--ssl-key", metavar="FILE", help="Its private key (PEM), if not in the file."),
    click.option(
        "--ssl-hostname", metavar="NAME", help="The name the server's certificate must carry."
    ),
)


def tls_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--ssl...`` options, handed to the command as one ``tls`` argument
    (a :class:`~gearmanpy.ClientTLS`, or None for plain TCP)."""

    @functools.wraps(f)
    def command(
        *args: Any, ssl: bool, ssl_ca_file: str | None, ssl_certificate: str | None,
        ssl_key: str | None, ssl_hostname: str | None, **kwargs: Any,
    ) -> Any:  # fmt: skip
        tls = make_tls(ssl, ssl_ca_file, ssl_certificate, ssl_key, ssl_hostname)
        return f(*args, tls=tls, **kwargs)

    for option in reversed(_TLS_OPTIONS):
        command = option(command)
    return command


def describe_error(error: BaseException) -> str:
    """One line for an error a user can cause."""
    if isinstance(error, ConnectError):
        return f"cannot connect: {error.__class__.__name__}: {error}".rstrip(": ")
    return str(error) or error.__class__.__name__


def run(main: Callable[[Any], Coroutine[Any, Any, int | None]]) -> NoReturn:
    """Run ``main(reactor)`` on the global reactor and exit with the status it returns.

    A :class:`CliError`, :class:`~gearmanpy.errors.GearmanError`, ``ValueError`` or
    connection error becomes one line on stderr and exit status 1 (a CliError's own code).
    """
    from twisted.internet import task

    async def guarded(reactor: Any) -> None:
        try:
            code = await main(reactor)
        except CliError as e:
            e.show()
            raise SystemExit(e.exit_code) from None
        except (GearmanError, ValueError, ConnectError, OSError) as e:
            click.echo(f"gearmanpy: error: {describe_error(e)}", err=True)
            raise SystemExit(FAILED) from None
        sys.stdout.flush()
        raise SystemExit(code or 0)

    task.react(lambda reactor: Deferred.fromCoroutine(guarded(reactor)))


def stderr_is_terminal() -> bool:
    """Whether a person watches stderr (then progress is drawn, not printed as lines)."""
    return sys.stderr.isatty()


__all__ = [
    "DEFAULT_SERVER",
    "FAILED",
    "SERVERS_ENV",
    "TIMED_OUT",
    "CliError",
    "describe_error",
    "make_tls",
    "parse_servers",
    "run",
    "servers_option",
    "stderr_is_terminal",
    "tls_options",
]
