"""Tests for :mod:`gearmanpy.protocol.replies`: each reply is the bytes ``encode`` gives.

The reference is the checked encoder, ``encode(response(PacketType.X, *args))``; the reply
functions frame by hand for speed, so every one of them is compared with it over arguments
drawn as style.md §5 draws them (every argument but the last without NUL, the last any
bytes). The ERROR constants are checked against the codes and texts of protocol.md §2.1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gearmanpy.protocol import replies
from gearmanpy.protocol.packets import ARG_COUNTS, PacketType, encode, response
from tests.strategies import packets, plain_args

P = PacketType

#: Each reply function, the type it answers with, and how it is called with that type's
#: arguments (in wire order).
FUNCTIONS: dict[str, tuple[PacketType, Callable[[Sequence[bytes]], bytes]]] = {
    "error": (P.ERROR, lambda a: replies.error(*a)),
    "job_created": (P.JOB_CREATED, lambda a: replies.job_created(*a)),
    "job_assign": (P.JOB_ASSIGN, lambda a: replies.job_assign(*a)),
    "job_assign_uniq": (P.JOB_ASSIGN_UNIQ, lambda a: replies.job_assign_uniq(*a)),
    "job_assign_all": (P.JOB_ASSIGN_ALL, lambda a: replies.job_assign_all(*a)),
    "work_status": (P.WORK_STATUS, lambda a: replies.work_status(*a)),
    "work_forward(WORK_DATA)": (P.WORK_DATA, lambda a: replies.work_forward(P.WORK_DATA, *a)),
    "work_forward(WORK_WARNING)": (
        P.WORK_WARNING,
        lambda a: replies.work_forward(P.WORK_WARNING, *a),
    ),
    "work_complete": (P.WORK_COMPLETE, lambda a: replies.work_complete(*a)),
    "work_fail": (P.WORK_FAIL, lambda a: replies.work_fail(*a)),
    "work_exception": (P.WORK_EXCEPTION, lambda a: replies.work_exception(*a)),
    "status_res": (P.STATUS_RES, lambda a: replies.status_res(a[0], a[1:])),
    "status_res_unique": (
        P.STATUS_RES_UNIQUE,
        lambda a: replies.status_res_unique(a[0], a[1:5], a[5]),
    ),
    "echo_res": (P.ECHO_RES, lambda a: replies.echo_res(a)),
    "option_res": (P.OPTION_RES, lambda a: replies.option_res(a)),
}

#: Every ERROR constant with the code and text protocol.md §2.1 lists for its trigger, copied
#: from that table by hand (EPOCH_OUT_OF_RANGE is gearmanpy's own: gearmand closes the
#: connection without a reply, §2.1's last paragraph).
ERRORS: dict[str, tuple[bytes, bytes]] = {
    "UNIQUE_TOO_LARGE": (b"ARGUMENT_TOO_LARGE", b"Unique value too large"),
    "HANDLE_TOO_LARGE": (
        b"ARGUMENT_TOO_LARGE",
        b"Error occurred due to GEARMAND_JOB_HANDLE_SIZE being too small from snprintf",
    ),
    "QUEUE_FULL": (b"QUEUE_ERROR", b"Job queue is full"),
    "QUEUE_ERROR": (b"QUEUE_ERROR", b"QUEUE_ERROR"),
    "RESULT_JOB_NOT_FOUND": (b"JOB_NOT_FOUND", b"Job given in work result not found"),
    "DATA_JOB_NOT_FOUND": (b"JOB_NOT_FOUND", b"Job does not exist on server"),
    "EXCEPTION_JOB_NOT_FOUND": (
        b"JOB_NOT_FOUND",
        b"An exception was received for a job that does not exist",
    ),
    "COMMAND_NOT_EXPECTED": (b"INVALID_COMMAND", b"Command not expected"),
    "UNKNOWN_OPTION": (b"UNKNOWN_OPTION", b"Server does not recognize given option"),
    "EPOCH_OUT_OF_RANGE": (b"INVALID_ARGUMENT", b"Epoch value out of range"),
}

#: The constants without arguments.
EMPTY = {"NOOP": P.NOOP, "NO_JOB": P.NO_JOB}


def expected(ptype: PacketType, args: Sequence[bytes]) -> bytes:
    """The bytes the checked encoder gives for a response of ``ptype`` with ``args``."""
    return encode(response(ptype, *args))


def test_every_public_name_is_covered() -> None:
    """Each name replies exports is checked below: a new reply cannot go untested."""
    functions = {name.split("(")[0] for name in FUNCTIONS} | {"job_created_all"}
    covered = functions | ERRORS.keys() | EMPTY.keys() | {"HEADS", "HEADS_BY_TYPE"}
    assert covered == set(replies.__all__)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@given(data=st.data())
def test_function_matches_encode(name: str, data: st.DataObject) -> None:
    """The reply function gives exactly what encode gives for the same arguments."""
    ptype, call = FUNCTIONS[name]
    args = data.draw(packets(st.just(ptype))).args
    assert len(args) == ARG_COUNTS[ptype]
    assert call(args) == expected(ptype, args)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_function_edge_arguments(name: str) -> None:
    """Empty arguments, and a last argument of NUL bytes, frame as encode frames them."""
    ptype, call = FUNCTIONS[name]
    n = ARG_COUNTS[ptype]
    for args in ([b""] * n, [b"a"] * (n - 1) + [b"\0\0"], [b"x" * 64] * n):
        assert call(args) == expected(ptype, args)


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_error_constant_carries_gearmand_code_and_text(name: str) -> None:
    """The constant is ERROR with the code and text protocol.md §2.1 gives for its case."""
    assert getattr(replies, name) == expected(P.ERROR, ERRORS[name])


def test_error_constants_spot_checked_against_the_document() -> None:
    """A few constants, spelled out byte for byte as protocol.md §2.1 has them."""
    assert replies.RESULT_JOB_NOT_FOUND == (
        b"\0RES\0\0\0\x13\0\0\0\x30JOB_NOT_FOUND\0Job given in work result not found"
    )
    assert replies.QUEUE_FULL.endswith(b"QUEUE_ERROR\0Job queue is full")
    assert replies.UNIQUE_TOO_LARGE.endswith(b"ARGUMENT_TOO_LARGE\0Unique value too large")
    assert replies.COMMAND_NOT_EXPECTED.endswith(b"INVALID_COMMAND\0Command not expected")


@pytest.mark.parametrize("name", sorted(EMPTY))
def test_empty_constant_matches_encode(name: str) -> None:
    """NOOP and NO_JOB are the 12-byte headers encode gives, with an empty body."""
    assert getattr(replies, name) == expected(EMPTY[name], ())
    assert len(getattr(replies, name)) == 12


def test_heads_are_res_magic_and_type() -> None:
    """HEADS and HEADS_BY_TYPE hold each type's first eight bytes, as encode writes them."""
    for ptype in PacketType:
        head = expected(ptype, [b""] * ARG_COUNTS[ptype])[:8]
        assert getattr(replies.HEADS, ptype.name) == head
        assert replies.HEADS_BY_TYPE[ptype] == head


@given(st.lists(plain_args | st.sampled_from([b"H:a:1", b"H:a:10", b"H:a:100"]), max_size=20))
@example([b"H:a:9", b"H:a:10", b"H:a:9", b"", b"H:a:100", b"H:a:10"])
@example([b"h" * 64, b"h" * 63, b"h" * 64])
def test_job_created_all_is_job_created_per_handle(handles: list[bytes]) -> None:
    """job_created_all gives job_created of each handle, in order, whatever their lengths."""
    assert replies.job_created_all(handles) == [replies.job_created(h) for h in handles]
    assert replies.job_created_all(handles) == [expected(P.JOB_CREATED, [h]) for h in handles]
