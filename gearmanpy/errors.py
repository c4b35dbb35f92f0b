# -*- test-case-name: tests.test_packets -*-
"""The exception hierarchy shared by the codec, the server, the client and the worker."""

from __future__ import annotations

from typing import Any


class GearmanError(Exception):
    """Base class of every error gearmanpy raises on purpose."""


class ProtocolError(GearmanError):
    """The peer sent bytes that are not valid Gearman.

    :ivar events: packets and admin commands that were decoded, in order, from the same
        chunk before the error was found; the caller should still act on them.
    :ivar code: the gearmand error code to put in the ERROR packet sent back.
    """

    code: bytes = b"INVALID_PACKET"

    def __init__(self, message: str, events: list[Any] | None = None) -> None:
        super().__init__(message)
        self.events: list[Any] = events if events is not None else []


class BadMagic(ProtocolError):
    """A binary packet did not start with ``\\0REQ`` or ``\\0RES``."""

    code = b"INVALID_MAGIC"


class UnknownPacketType(ProtocolError):
    """A binary packet header named a type outside 1-42."""

    code = b"INVALID_COMMAND"


class PacketTooLarge(ProtocolError):
    """A packet header announced a body larger than the configured limit."""

    code = b"ARGUMENT_TOO_LARGE"


class MalformedPacket(ProtocolError):
    """A packet body had fewer NUL-separated arguments than its type requires."""

    code = b"INVALID_PACKET"


class AdminLineTooLong(ProtocolError):
    """An admin text line ran past the configured limit without a newline."""

    code = b"ARGUMENT_TOO_LARGE"


class AdminCommandError(ProtocolError):
    """An admin text line had more words than any admin command takes."""

    code = b"INVALID_ARGUMENTS"


class JobError(GearmanError):
    """Base class for the ways a submitted job can end without a result."""


class JobFailed(JobError):
    """The worker reported WORK_FAIL (or the server failed the job after its retries)."""


class JobException(JobError):
    """The worker reported WORK_EXCEPTION; ``payload`` is what it sent."""

    def __init__(self, payload: bytes) -> None:
        super().__init__(payload.decode("utf-8", "replace"))
        self.payload = payload


class JobTimeout(JobError):
    """The job did not finish within the caller's timeout; the client forgot it."""


class JobLost(JobError):
    """The server accepted the job and then the connection was lost: the outcome is unknown."""


class NoServersAvailable(GearmanError):
    """No configured server could be reached to carry a request."""


class ServerError(GearmanError):
    """The server answered a request with an ERROR packet."""

    def __init__(self, code: bytes, text: bytes) -> None:
        super().__init__(f"{code.decode('ascii', 'replace')}: {text.decode('utf-8', 'replace')}")
        self.code = code
        self.text = text


class AdminError(ServerError):
    """The server answered an admin text command with ``ERR CODE [TEXT]``.

    gearmand writes the text with ``+`` for spaces; :attr:`text` keeps it as sent, the
    message shows it with spaces. Some replies have no code, only a sentence (``ERR there
    are still connected workers...``): then :attr:`code` is its first word.
    """

    def __str__(self) -> str:
        """``CODE: text with spaces``, for a one-line error message."""
        text = self.text.decode("utf-8", "replace").replace("+", " ")
        code = self.code.decode("ascii", "replace")
        if not code.replace("_", "").isupper():
            # A sentence, not a code (``ERR there are still connected workers...``).
            return f"{code} {text}".rstrip()
        return f"{code}: {text}" if text else code


class StoreError(GearmanError):
    """A persistent store could not carry out an operation (it is down, full or broken)."""


class RequestLost(GearmanError):
    """The connection closed before the server answered a request.

    For a submission this means the server may or may not have created the job; gearmanpy
    does not resend it on another server (that could run a job twice).
    """


class TLSHandshakeError(GearmanError, ConnectionError):
    """A TLS connection to a server failed in its handshake; the message says why (the
    server's certificate did not verify, or is for another host, or it refused ours)."""
