# -*- test-case-name: tests.test_worker -*-
"""The grab/sleep cycle of one worker connection, as an automat state machine (protocol.md §3.5).

    GRAB_JOB_ALL -> JOB_ASSIGN_ALL/_UNIQ (run it)  -> GRAB_JOB_ALL ...
                 -> NO_JOB -> PRE_SLEEP -> ... NOOP -> GRAB_JOB_ALL ...

:func:`new_cycle` builds one machine per connection; the connection
(:class:`gearmanpy.worker.WorkerProtocol`) just calls its inputs. Package-internal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol as TypingProtocol

import attrs
from automat import TypeMachineBuilder, pep614

from gearmanpy.errors import ProtocolError
from gearmanpy.protocol.packets import Packet, PacketType, request


class GrabCycle(TypingProtocol):
    """Inputs of one connection's grab/sleep cycle (an automat machine, kept private).

    States: Awake (may GRAB when the pool has a free slot), Grabbing (GRAB_JOB_ALL sent,
    waiting for a JOB_ASSIGN or NO_JOB), Sleeping (PRE_SLEEP sent, waiting for NOOP), Gone
    (the connection closed).
    """

    def grab(self) -> bool:
        """Send GRAB_JOB_ALL if awake; return whether it was sent."""

    def no_job(self) -> None:
        """NO_JOB arrived: send PRE_SLEEP and sleep."""

    def assigned(self) -> None:
        """A JOB_ASSIGN(_UNIQ) arrived: awake again."""

    def noop(self) -> bool:
        """NOOP arrived; return whether it woke a sleeping connection."""

    def awake(self) -> bool:
        """Return whether a GRAB may be sent now."""

    def lost(self) -> bool:
        """The connection closed; return whether a GRAB was in flight (its slot frees)."""


@attrs.define(eq=False)
class CycleCore:
    """Shared state of the grab/sleep machine: how to send a packet."""

    send: Callable[[Packet], None]


class UnexpectedError(ProtocolError):
    """The server sent a packet that does not fit the grab/sleep cycle (log and drop)."""


def _build() -> Callable[[CycleCore], GrabCycle]:
    """Build the grab/sleep state machine (protocol.md §3.5)."""
    machine = TypeMachineBuilder(GrabCycle, CycleCore)
    awake = machine.state("Awake")
    grabbing = machine.state("Grabbing")
    sleeping = machine.state("Sleeping")
    gone = machine.state("Gone")

    @pep614(awake.upon(GrabCycle.grab).to(grabbing))
    def send_grab(c: GrabCycle, s: CycleCore) -> bool:
        s.send(request(PacketType.GRAB_JOB_ALL))
        return True

    for state in (grabbing, sleeping, gone):
        state.upon(GrabCycle.grab).loop().returns(False)

    @pep614(grabbing.upon(GrabCycle.no_job).to(sleeping))
    def pre_sleep(c: GrabCycle, s: CycleCore) -> None:
        s.send(request(PacketType.PRE_SLEEP))

    grabbing.upon(GrabCycle.assigned).to(awake).returns(None)

    @pep614(awake.upon(GrabCycle.no_job).loop())
    @pep614(sleeping.upon(GrabCycle.no_job).loop())
    @pep614(awake.upon(GrabCycle.assigned).loop())
    @pep614(sleeping.upon(GrabCycle.assigned).loop())
    def out_of_turn(c: GrabCycle, s: CycleCore) -> None:
        raise UnexpectedError("NO_JOB or JOB_ASSIGN without a GRAB")

    sleeping.upon(GrabCycle.noop).to(awake).returns(True)
    for state in (awake, grabbing, gone):
        state.upon(GrabCycle.noop).loop().returns(False)
    gone.upon(GrabCycle.no_job).loop().returns(None)
    gone.upon(GrabCycle.assigned).loop().returns(None)

    awake.upon(GrabCycle.awake).loop().returns(True)
    for state in (grabbing, sleeping, gone):
        state.upon(GrabCycle.awake).loop().returns(False)

    grabbing.upon(GrabCycle.lost).to(gone).returns(True)
    for state in (awake, sleeping):
        state.upon(GrabCycle.lost).to(gone).returns(False)
    gone.upon(GrabCycle.lost).loop().returns(False)

    return machine.build()


new_cycle = _build()


__all__ = ["CycleCore", "GrabCycle", "UnexpectedError", "new_cycle"]
