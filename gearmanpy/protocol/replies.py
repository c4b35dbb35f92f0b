# -*- test-case-name: tests.test_replies -*-
"""Every packet a job server sends, as bytes: ``\\0RES`` heads, JOB_ASSIGN variants, ERRORs.

The server's rules (``gearmanpy.server.core``) decide *what* to answer; this module is the one
place that knows *how* each answer looks on the wire, byte for byte as gearmand 1.1.20 sends
it (protocol.md §2). The functions frame arguments without checking them: the server only
passes values it has already validated, and checks here would cost on every packet. The
ERRORs the server sends are pre-built constants, named after what went wrong. Nothing here
imports Twisted.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

from gearmanpy.protocol.packets import Magic, PacketType, frame, head, pack_size

_RES = Magic.RES.value

#: ``\\0RES`` + type for every packet type, by name (``HEADS.NOOP``). A plain namespace:
#: looking a member up on the PacketType enum costs several times more (``python
#: benchmarks/codec_bench.py`` shows the per-packet budget this has to fit in).
HEADS = SimpleNamespace(**{t.name: head(_RES, t) for t in PacketType})

#: The same heads indexed by type number, for callers that hold a type rather than a name.
HEADS_BY_TYPE: list[bytes] = [head(_RES, t) for t in range(max(PacketType) + 1)]

# The heads of the replies made once or more per job, as module constants (one lookup less).
_JOB_CREATED = HEADS.JOB_CREATED
_JOB_ASSIGN = HEADS.JOB_ASSIGN
_WORK_COMPLETE = HEADS.WORK_COMPLETE
_WORK_FAIL = HEADS.WORK_FAIL

#: NOOP: wakes a sleeping worker.
NOOP = frame(HEADS.NOOP, ())
#: NO_JOB: the answer to a GRAB when nothing is queued for the worker.
NO_JOB = frame(HEADS.NO_JOB, ())


def error(code: bytes, text: bytes) -> bytes:
    """ERROR as gearmand sends it: ``CODE\\0text``."""
    return frame(HEADS.ERROR, (code, text))


# The ERRORs a job server sends, byte for byte as gearmand 1.1.20 (protocol.md §2.1).
#: A unique (or reducer) longer than MAX_UNIQUE_SIZE.
UNIQUE_TOO_LARGE = error(b"ARGUMENT_TOO_LARGE", b"Unique value too large")
#: A WORK_FAIL whose handle is longer than MAX_HANDLE_SIZE.
HANDLE_TOO_LARGE = error(
    b"ARGUMENT_TOO_LARGE",
    b"Error occurred due to GEARMAND_JOB_HANDLE_SIZE being too small from snprintf",
)
#: A submission past the function's ``maxqueue`` limit.
QUEUE_FULL = error(b"QUEUE_ERROR", b"Job queue is full")
#: A background job the store could not make durable.
QUEUE_ERROR = error(b"QUEUE_ERROR", b"QUEUE_ERROR")
#: WORK_STATUS, WORK_COMPLETE or WORK_FAIL for a job this worker does not hold.
RESULT_JOB_NOT_FOUND = error(b"JOB_NOT_FOUND", b"Job given in work result not found")
#: WORK_DATA or WORK_WARNING for a job this worker does not hold.
DATA_JOB_NOT_FOUND = error(b"JOB_NOT_FOUND", b"Job does not exist on server")
#: WORK_EXCEPTION for a job this worker does not hold.
EXCEPTION_JOB_NOT_FOUND = error(
    b"JOB_NOT_FOUND", b"An exception was received for a job that does not exist"
)
#: A packet type a server never accepts (a response type, or one gearmand does not handle).
COMMAND_NOT_EXPECTED = error(b"INVALID_COMMAND", b"Command not expected")
#: SUBMIT_JOB_EPOCH with a time past 64 bits. gearmand sends no reply at all and the client
#: waits for ever (protocol.md §2.1); gearmanpy answers, and the connection stays usable.
EPOCH_OUT_OF_RANGE = error(b"INVALID_ARGUMENT", b"Epoch value out of range")
#: OPTION_REQ for anything but ``exceptions``.
UNKNOWN_OPTION = error(b"UNKNOWN_OPTION", b"Server does not recognize given option")


def job_created(handle: bytes) -> bytes:
    """JOB_CREATED: the submission was accepted (and, for a durable store, is durable)."""
    return _JOB_CREATED + pack_size(len(handle)) + handle


def job_created_all(handles: list[bytes]) -> list[bytes]:
    """JOB_CREATED for each of ``handles``, in one loop.

    The server makes handles thousands at a time and their JOB_CREATED with them, so a
    pipelined submission costs no call to frame its answer.
    """
    heads: dict[int, bytes] = {}
    out = []
    for h in handles:
        n = len(h)
        prefix = heads.get(n)
        if prefix is None:
            prefix = heads[n] = _JOB_CREATED + pack_size(n)
        out.append(prefix + h)
    return out


def job_assign(handle: bytes, function: bytes, data: bytes) -> bytes:
    """JOB_ASSIGN: a job for a worker that sent GRAB_JOB."""
    body = handle + b"\0" + function + b"\0" + data
    return _JOB_ASSIGN + pack_size(len(body)) + body


def job_assign_uniq(handle: bytes, function: bytes, unique: bytes, data: bytes) -> bytes:
    """JOB_ASSIGN_UNIQ: a job with its unique, for GRAB_JOB_UNIQ (and GRAB_JOB_ALL without
    a reducer)."""
    body = b"\0".join((handle, function, unique, data))
    return HEADS.JOB_ASSIGN_UNIQ + pack_size(len(body)) + body


def job_assign_all(
    handle: bytes, function: bytes, unique: bytes, reducer: bytes, data: bytes
) -> bytes:
    """JOB_ASSIGN_ALL: a reduce job with unique and reducer, for GRAB_JOB_ALL."""
    body = b"\0".join((handle, function, unique, reducer, data))
    return HEADS.JOB_ASSIGN_ALL + pack_size(len(body)) + body


def work_status(handle: bytes, numerator: bytes, denominator: bytes) -> bytes:
    """WORK_STATUS forwarded to a client, byte for byte as the worker sent it."""
    return frame(HEADS.WORK_STATUS, (handle, numerator, denominator))


def work_forward(ptype: int, handle: bytes, data: bytes) -> bytes:
    """WORK_DATA or WORK_WARNING (``ptype``) forwarded to a client."""
    body = handle + b"\0" + data
    return HEADS_BY_TYPE[ptype] + pack_size(len(body)) + body


def work_complete(handle: bytes, data: bytes) -> bytes:
    """WORK_COMPLETE: the job's result, for its foreground clients."""
    body = handle + b"\0" + data
    return _WORK_COMPLETE + pack_size(len(body)) + body


def work_fail(handle: bytes) -> bytes:
    """WORK_FAIL with the bare handle (gearmand sometimes adds a NUL: quirk 1)."""
    return _WORK_FAIL + pack_size(len(handle)) + handle


def work_exception(handle: bytes, data: bytes) -> bytes:
    """WORK_EXCEPTION, for clients that asked for exceptions."""
    return frame(HEADS.WORK_EXCEPTION, (handle, data))


def status_res(handle: bytes, fields: Sequence[bytes]) -> bytes:
    """STATUS_RES: ``handle`` then known, running, numerator, denominator."""
    return frame(HEADS.STATUS_RES, (handle, *fields))


def status_res_unique(unique: bytes, fields: Sequence[bytes], clients: bytes) -> bytes:
    """STATUS_RES_UNIQUE: ``unique``, the four status fields, then the waiting clients."""
    return frame(HEADS.STATUS_RES_UNIQUE, (unique, *fields, clients))


def echo_res(args: Sequence[bytes]) -> bytes:
    """ECHO_RES: the ECHO_REQ body, unchanged."""
    return frame(HEADS.ECHO_RES, args)


def option_res(args: Sequence[bytes]) -> bytes:
    """OPTION_RES: the option that was set, as the peer spelled it."""
    return frame(HEADS.OPTION_RES, args)


__all__ = [
    "COMMAND_NOT_EXPECTED",
    "DATA_JOB_NOT_FOUND",
    "EPOCH_OUT_OF_RANGE",
    "EXCEPTION_JOB_NOT_FOUND",
    "HANDLE_TOO_LARGE",
    "HEADS",
    "HEADS_BY_TYPE",
    "NOOP",
    "NO_JOB",
    "QUEUE_ERROR",
    "QUEUE_FULL",
    "RESULT_JOB_NOT_FOUND",
    "UNIQUE_TOO_LARGE",
    "UNKNOWN_OPTION",
    "echo_res",
    "error",
    "job_assign",
    "job_assign_all",
    "job_assign_uniq",
    "job_created",
    "job_created_all",
    "option_res",
    "status_res",
    "status_res_unique",
    "work_complete",
    "work_exception",
    "work_fail",
    "work_forward",
    "work_status",
]
