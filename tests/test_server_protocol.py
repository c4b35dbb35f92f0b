"""Tests for gearmanpy.server.protocol and the admin commands, on StringTransport."""

from __future__ import annotations

import os
from typing import cast

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gearmanpy.protocol.packets import PacketDecoder, PacketType, encode, request, response
from gearmanpy.server.admin import VERSION, priority_rows, status_rows
from gearmanpy.server.core import JobServerCore
from gearmanpy.server.outbound import OutputLimits
from gearmanpy.server.protocol import (
    HANDLED,
    NOT_EXPECTED,
    SUBMITS,
    ServerFactory,
    ServerProtocol,
)
from tests.serverhelpers import SlowStore, SlowTransport

P = PacketType


class Conn:
    """A ServerProtocol on a StringTransport, with helpers to send and read packets."""

    def __init__(
        self,
        factory: ServerFactory,
        host: str = "127.0.0.1",
        unix: bool = False,
        slow: int | None = None,
        port: int = 40000,
    ):
        """``slow``: the peer's transport holds only that many bytes until it is drained
        (a :class:`~tests.serverhelpers.SlowTransport`)."""
        peer = UNIXAddress("/tmp/s") if unix else IPv4Address("TCP", host, port)
        self.transport = (
            StringTransport(peerAddress=peer)
            if slow is None
            else SlowTransport(slow, peerAddress=peer)
        )
        self.proto: ServerProtocol = factory.buildProtocol(peer)
        self.proto.makeConnection(self.transport)

    def send(self, *packets: object) -> None:
        self.proto.dataReceived(
            b"".join(p if isinstance(p, bytes) else encode(p) for p in packets)  # type: ignore[arg-type]
        )

    def packets(self) -> list[tuple[PacketType, tuple[bytes, ...]]]:
        out = self.transport.value()
        self.transport.clear()
        return [(p.type, p.args) for p in PacketDecoder(allow_admin=False).feed(out)]  # type: ignore[union-attr]

    def text(self) -> bytes:
        out = self.transport.value()
        self.transport.clear()
        return out

    def lose(self) -> None:
        self.proto.connectionLost(Failure(ConnectionDone()))


class ProtocolTests(SynchronousTestCase):
    """Binary packets over a fake transport."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.core = JobServerCore(clock=self.clock, handle_prefix=b"H:t")
        self.factory = ServerFactory(self.core, max_packet_size=1024)

    def test_every_client_type_has_a_handler(self) -> None:
        """Each type a peer may send has a handler (a packet_<NAME> method, or the submission
        runs); the rest are refused."""
        self.assertEqual(HANDLED | NOT_EXPECTED, frozenset(PacketType))
        for ptype in HANDLED - SUBMITS.keys():
            self.assertTrue(callable(getattr(ServerProtocol, "packet_" + ptype.name)))
        self.assertLessEqual(SUBMITS.keys(), HANDLED)
        proto = Conn(self.factory).proto
        for ptype in HANDLED:
            self.assertNotEqual(proto._table[ptype], proto._not_expected, ptype.name)

    def test_round_trip_client_worker(self) -> None:
        """A client's job reaches a worker and the result comes back."""
        client, worker = Conn(self.factory), Conn(self.factory)
        worker.send(request(P.CAN_DO, b"rev"), request(P.GRAB_JOB))
        self.assertEqual(worker.packets(), [(P.NO_JOB, ())])
        worker.send(request(P.PRE_SLEEP))
        client.send(request(P.SUBMIT_JOB, b"rev", b"", b"abc"))
        self.assertEqual(client.packets(), [(P.JOB_CREATED, (b"H:t:1",))])
        self.assertEqual(worker.packets(), [(P.NOOP, ())])
        worker.send(request(P.GRAB_JOB))
        self.assertEqual(worker.packets(), [(P.JOB_ASSIGN, (b"H:t:1", b"rev", b"abc"))])
        worker.send(request(P.WORK_COMPLETE, b"H:t:1", b"cba"))
        self.assertEqual(client.packets(), [(P.WORK_COMPLETE, (b"H:t:1", b"cba"))])

    def test_one_byte_at_a_time(self) -> None:
        """Packets fed one byte per dataReceived work the same."""
        client = Conn(self.factory)
        data = encode(request(P.ECHO_REQ, b"a\0b")) + encode(
            request(P.SUBMIT_JOB_BG, b"f", b"", b"")
        )
        for i in range(len(data)):
            client.proto.dataReceived(data[i : i + 1])
        self.assertEqual(client.packets(), [(P.ECHO_RES, (b"a\0b",)), (P.JOB_CREATED, (b"H:t:1",))])

    def test_all_submit_types(self) -> None:
        """Every SUBMIT variant maps to its priority and background flag."""
        client = Conn(self.factory)
        client.send(
            request(P.SUBMIT_JOB_HIGH, b"f", b"", b"h"),
            request(P.SUBMIT_JOB_LOW_BG, b"f", b"", b"l"),
            request(P.SUBMIT_JOB_HIGH_BG, b"f", b"", b"hb"),
            request(P.SUBMIT_JOB_LOW, b"f", b"", b"lf"),
            request(P.SUBMIT_JOB_EPOCH, b"f", b"", b"junk", b"e"),
            request(P.SUBMIT_REDUCE_JOB, b"f", b"", b"r", b"", b"rf"),
            request(P.SUBMIT_REDUCE_JOB_BACKGROUND, b"f", b"", b"r", b"", b"rb"),
        )
        self.assertEqual([t for t, _ in client.packets()], [P.JOB_CREATED] * 7)
        self.assertEqual(priority_rows(self.core), [(b"f", 2, 3, 2, 0)])
        background = sorted(j.data for j in self.core.jobs.values() if j.background)
        self.assertEqual(background, [b"e", b"hb", b"l", b"rb"])

    def test_exceptions_option(self) -> None:
        """OPTION_REQ exceptions is echoed; other options get UNKNOWN_OPTION."""
        c = Conn(self.factory)
        c.send(request(P.OPTION_REQ, b"Exceptions"), request(P.OPTION_REQ, b"other"))
        self.assertEqual(
            c.packets(),
            [
                (P.OPTION_RES, (b"Exceptions",)),
                (P.ERROR, (b"UNKNOWN_OPTION", b"Server does not recognize given option")),
            ],
        )
        self.assertTrue(c.proto.peer.exceptions)  # type: ignore[union-attr]

    def test_response_types_are_refused_but_connection_stays(self) -> None:
        """A server-to-client type gets ERROR INVALID_COMMAND and the stream continues."""
        c = Conn(self.factory)
        c.send(request(P.NOOP), request(P.SUBMIT_JOB_SCHED, *[b""] * 8), request(P.ECHO_REQ, b"ok"))
        self.assertEqual(
            c.packets(),
            [(P.ERROR, (b"INVALID_COMMAND", b"Command not expected"))] * 2
            + [(P.ECHO_RES, (b"ok",))],
        )
        self.assertFalse(c.transport.disconnecting)

    def test_response_magic_is_an_error(self) -> None:
        """A request sent with \\0RES magic gets ERROR INVALID_MAGIC and a close."""
        c = Conn(self.factory)
        c.send(response(P.ECHO_REQ, b"x"))
        self.assertEqual(c.packets(), [(P.ERROR, (b"INVALID_MAGIC", b"Request magic expected"))])
        self.assertTrue(c.transport.disconnecting)

    def test_bad_input_closes_after_earlier_packets(self) -> None:
        """Packets before a malformed one are handled; then ERROR and close."""
        c = Conn(self.factory)
        c.send(request(P.ECHO_REQ, b"first"), b"\0REQ\x80\0\0\0\0\0\0\0")
        got = c.packets()
        self.assertEqual(got[0], (P.ECHO_RES, (b"first",)))
        self.assertEqual(got[1][0], P.ERROR)
        self.assertTrue(c.transport.disconnecting)
        self.flushLoggedErrors()

    def test_pipelined_runs_of_submissions_answer_in_order(self) -> None:
        """Runs of SUBMITs mixed with other requests: one reply each, in request order."""
        self.core.function(b"f")
        self.core.set_max_queue(b"f", [0, 3, 0])  # the fourth NORMAL job is refused
        c = Conn(self.factory)
        bg = request(P.SUBMIT_JOB_BG, b"f", b"", b"x")
        c.send(
            bg,
            bg,
            request(P.ECHO_REQ, b"e"),
            request(P.SUBMIT_JOB, b"f", b"u", b"y"),
            bg,
            request(P.SUBMIT_JOB_HIGH_BG, b"f", b"", b"z"),
        )
        self.assertEqual(
            c.packets(),
            [
                (P.JOB_CREATED, (b"H:t:1",)),
                (P.JOB_CREATED, (b"H:t:2",)),
                (P.ECHO_RES, (b"e",)),
                (P.JOB_CREATED, (b"H:t:3",)),
                (P.ERROR, (b"QUEUE_ERROR", b"Job queue is full")),
                (P.JOB_CREATED, (b"H:t:4",)),
            ],
        )
        self.assertEqual([j.priority for j in self.core.jobs.values()], [1, 1, 1, 0])

    def test_handler_bug_closes_only_that_connection(self) -> None:
        """An exception in a handler is logged; that peer is dropped, nothing after it runs."""
        c, other = Conn(self.factory), Conn(self.factory)

        def broken(args: object) -> None:
            raise RuntimeError("bug")

        c.proto._table[P.GRAB_JOB] = broken
        c.send(request(P.ECHO_REQ, b"before"), request(P.GRAB_JOB), request(P.ECHO_REQ, b"after"))
        self.assertEqual(c.packets(), [(P.ECHO_RES, (b"before",))])
        self.assertTrue(c.transport.disconnecting)
        self.assertNotIn(c.proto.peer, self.core.peers)  # the core let go of it at once
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        c.send(request(P.ECHO_REQ, b"later"))
        self.assertEqual(c.packets(), [])
        other.send(request(P.ECHO_REQ, b"fine"))
        self.assertEqual(other.packets(), [(P.ECHO_RES, (b"fine",))])

    def test_oversize_refused_before_body(self) -> None:
        """A header announcing more than max_packet_size is refused at once."""
        c = Conn(self.factory)
        c.send(b"\0REQ\0\0\0\x10\0\0\x10\0")
        self.assertEqual(c.packets()[0][1][0], b"ARGUMENT_TOO_LARGE")
        self.assertTrue(c.transport.disconnecting)

    def test_epoch_overflow_gets_error(self) -> None:
        """An epoch that overflows 64 bits gets ERROR, not a crash or silence."""
        c = Conn(self.factory)
        c.send(request(P.SUBMIT_JOB_EPOCH, b"f", b"", b"9" * 30, b"x"))
        self.assertEqual(c.packets()[0][1][0], b"INVALID_ARGUMENT")

    def test_disconnect_requeues(self) -> None:
        """connectionLost gives the worker's job back to the queue."""
        client, worker = Conn(self.factory), Conn(self.factory)
        client.send(request(P.SUBMIT_JOB_BG, b"f", b"", b"x"))
        worker.send(request(P.CAN_DO, b"f"), request(P.GRAB_JOB))
        worker.lose()
        self.assertEqual(status_rows(self.core), [(b"f", 1, 0, 0)])

    def test_set_client_id_and_workers(self) -> None:
        """SET_CLIENT_ID shows in workers (cut to 127 bytes)."""
        w = Conn(self.factory)
        w.send(
            request(P.SET_CLIENT_ID, b"i" * 200), request(P.CAN_DO, b"a"), request(P.CAN_DO, b"b")
        )
        w.send(b"workers\n")
        self.assertEqual(w.text(), b"-1 127.0.0.1 " + b"i" * 127 + b" : b a\n.\n")


class AdminTests(SynchronousTestCase):
    """Admin text commands, byte-exact with protocol.md §4."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.core = JobServerCore(clock=self.clock, handle_prefix=b"H:vm")
        self.factory = ServerFactory(self.core)
        self.c = Conn(self.factory)

    def admin(self, line: bytes) -> bytes:
        self.c.send(line)
        return self.c.text()

    def test_status_and_prioritystatus(self) -> None:
        """status and prioritystatus list functions with tab-separated counts."""
        self.c.send(
            request(P.SUBMIT_JOB_BG, b"mqa", b"", b"x"),
            request(P.SUBMIT_JOB_LOW_BG, b"mqa", b"", b"x"),
        )
        self.c.text()
        self.admin(b"create function lgrev\r\n")
        self.assertEqual(self.admin(b"STATUS\r\n"), b"mqa\t2\t0\t0\nlgrev\t0\t0\t0\n.\n")
        self.assertEqual(
            self.admin(b"prioritystatus\n"), b"mqa\t0\t1\t1\t0\nlgrev\t0\t0\t0\t0\n.\n"
        )

    def test_create_function_keeps_last_character(self) -> None:
        """create function with a bare \\n keeps the whole name (gearmand drops a byte)."""
        self.assertEqual(self.admin(b"create function xyz\n"), b"OK\r\n")
        self.assertIn(b"xyz", self.core.functions)

    def test_show_jobs_and_unique_jobs(self) -> None:
        """show jobs and show unique jobs list live jobs."""
        self.c.send(
            request(P.SUBMIT_JOB_BG, b"f", b"", b"x"), request(P.SUBMIT_JOB_BG, b"f", b"u1", b"x")
        )
        self.c.text()
        self.assertEqual(self.admin(b"show jobs\n"), b"H:vm:1\t0\t0\t1\nH:vm:2\t0\t0\t1\n.\n")
        self.assertEqual(self.admin(b"show unique jobs\n"), b"\nu1\n.\n")
        self.assertEqual(
            self.admin(b"show\n"), b"ERR UNKNOWN_COMMAND Unknown+server+commandshow\r\n"
        )
        self.assertEqual(self.admin(b"show x\n"), b"ERR UNKNOWN_SHOW_ARGUMENTS\r\n")

    def test_errors_byte_exact(self) -> None:
        """Unknown words and wrong arities get gearmand's exact ERR lines."""
        cases = {
            b"foo\n": b"ERR UNKNOWN_COMMAND Unknown+server+commandfoo\r\n",
            b"\n": b"ERR UNKNOWN_COMMAND Unknown+server+command\r\n",
            b"cancel job\n": b"ERR UNKNOWN_COMMAND Unknown+server+commandcancel\r\n",
            b"cancel job H:x:1\n": b"ERR UNKNOWN_JOB\r\n",
            b"cancel foo bar\n": b"ERR UNKNOWN_ERROR\r\n",
            b"create function\n": b"ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+create\r\n",
            b"drop x\n": b"ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+drop\r\n",
            b"maxqueue\n": b"ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+maxqueue\r\n",
            b"maxqueue abc 5\n": b"OK\r\n",
            b"drop function nope\n": b"ERR function not found\r\n",
        }
        for line, reply in cases.items():
            self.assertEqual(self.admin(line), reply, line)

    def test_version_getpid_verbose(self) -> None:
        """One-line replies carry OK and a value, ended by \\n."""
        self.assertEqual(self.admin(b"version\n"), b"OK " + VERSION + b"\n")
        self.assertEqual(self.admin(b"getpid\n"), b"OK %d\n" % os.getpid())
        self.assertEqual(self.admin(b"verbose\n"), b"OK INFO\n")

    def test_pipelined_and_mixed_with_binary(self) -> None:
        """Admin lines and binary packets on one connection are answered in order."""
        self.c.send(b"version\n" + encode(request(P.ECHO_REQ, b"e")) + b"getpid\n")
        out = self.c.text()
        self.assertTrue(out.startswith(b"OK " + VERSION + b"\n\0RES"))
        self.assertTrue(out.endswith(b"OK %d\n" % os.getpid()))

    def test_six_words_close(self) -> None:
        """A sixth word ends the connection with an error line."""
        self.admin(b"a b c d e f\n")
        self.assertTrue(self.c.transport.disconnecting)

    def test_shutdown_only_from_trusted_peers(self) -> None:
        """shutdown is refused to remote peers and accepted from loopback and unix."""
        requested: list[bool] = []
        self.core.on_shutdown = requested.append
        remote = Conn(self.factory, host="10.1.2.3")
        remote.send(b"shutdown\n")
        self.assertTrue(remote.text().startswith(b"ERR PERMISSION_DENIED"))
        local = Conn(self.factory, unix=True)
        local.send(b"shutdown graceful\r\n")
        self.assertEqual(local.text(), b"OK\r\n")
        self.clock.advance(0)
        self.assertEqual(requested, [True])
        self.c.send(b"shutdown\n")
        self.clock.advance(0)
        self.assertEqual(requested, [True, False])

    def test_cancel_and_drop(self) -> None:
        """cancel job answers OK for a live job; drop function refuses queued jobs."""
        self.c.send(request(P.SUBMIT_JOB_BG, b"f", b"", b"x"))
        self.c.text()
        self.assertEqual(self.admin(b"drop function F\n"), b"ERR there are still queued jobs\r\n")
        self.assertEqual(self.admin(b"cancel job H:vm:1\n"), b"OK\r\n")
        w = Conn(self.factory)
        w.send(request(P.CAN_DO, b"f"), request(P.GRAB_JOB))
        self.assertEqual(w.packets(), [(P.NO_JOB, ())])
        w.lose()
        self.assertEqual(self.admin(b"drop function F\n"), b"OK\r\n")


class CoalescedWriteTests(SynchronousTestCase):
    """With coalesce_writes, packets not caused by a peer's input go out once per turn."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = SlowStore()
        self.core = JobServerCore(clock=self.clock, handle_prefix=b"H:t", store=self.store)
        self.factory = ServerFactory(self.core, coalesce_writes=True)

    def count_writes(self, conn: Conn) -> list[bytes]:
        writes: list[bytes] = []
        original = conn.transport.write

        def write(data: bytes) -> None:
            writes.append(data)
            original(data)

        conn.transport.write = write  # type: ignore[method-assign]
        return writes

    def test_store_acknowledgements_are_one_write_at_end_of_turn(self) -> None:
        """A commit acknowledging three jobs sends their JOB_CREATED in one write, after the turn."""
        client = Conn(self.factory)
        client.send(*[request(P.SUBMIT_JOB_BG, b"f", b"", b"%d" % i) for i in range(3)])
        writes = self.count_writes(client)
        for _, d in self.store.adds:
            d.callback(None)
        self.assertEqual(writes, [])
        self.clock.advance(0)
        self.assertEqual(len(writes), 1)
        self.assertEqual(client.packets(), [(P.JOB_CREATED, (b"H:t:%d" % i,)) for i in (1, 2, 3)])

    def test_packets_caused_by_input_are_not_delayed(self) -> None:
        """A worker's result reaches the client at once, and own replies are never delayed."""
        client, worker = Conn(self.factory), Conn(self.factory)
        client.send(request(P.SUBMIT_JOB, b"f", b"", b"x"))
        self.assertEqual(client.packets(), [(P.JOB_CREATED, (b"H:t:1",))])
        worker.send(request(P.CAN_DO, b"f"), request(P.GRAB_JOB))
        worker.send(request(P.WORK_COMPLETE, b"H:t:1", b"done"))
        self.assertEqual(client.packets(), [(P.WORK_COMPLETE, (b"H:t:1", b"done"))])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_pending_packets_precede_own_replies(self) -> None:
        """Packets owed from a commit stay ahead of the replies to the peer's next request."""
        client = Conn(self.factory)
        client.send(request(P.SUBMIT_JOB_BG, b"f", b"", b"x"))
        self.store.adds[0][1].callback(None)
        client.send(request(P.ECHO_REQ, b"e"))
        self.assertEqual(client.packets(), [(P.JOB_CREATED, (b"H:t:1",)), (P.ECHO_RES, (b"e",))])
        self.clock.advance(0)
        self.assertEqual(client.packets(), [])

    def test_protocol_error_is_told_while_a_store_write_is_in_flight(self) -> None:
        """A bad packet behind a background submission the store has not committed still gets
        its ERROR before the close (the held JOB_CREATED is dropped with the connection)."""
        client = Conn(self.factory)
        client.send(request(P.SUBMIT_JOB_BG, b"f", b"", b"x"))
        client.proto.dataReceived(b"\0BAD" + b"\0" * 8)
        self.assertEqual([t for t, _ in client.packets()], [P.ERROR])
        self.assertTrue(client.transport.disconnecting)

    def test_bad_admin_line_is_told_while_a_store_write_is_in_flight(self) -> None:
        """An admin line with too many words gets its ERR line even with a reply held."""
        client = Conn(self.factory)
        client.send(request(P.SUBMIT_JOB_BG, b"f", b"", b"x"))
        client.transport.clear()
        client.proto.dataReceived(b"a b c d e f\n")
        self.assertTrue(client.transport.value().startswith(b"ERR INVALID_ARGUMENTS "))
        self.assertTrue(client.transport.disconnecting)


class BackPressureTests(SynchronousTestCase):
    """A peer that does not read its replies stops being read from, then is dropped; the
    other peers are served all along."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.core = JobServerCore(clock=self.clock, handle_prefix=b"H:t")
        self.limits = OutputLimits(soft=4096, hard=16384, timeout=30.0)
        self.factory = ServerFactory(self.core, max_packet_size=1 << 16, output_limits=self.limits)
        self.slow = Conn(self.factory, slow=1024, port=40001)
        self.slow_io = cast(SlowTransport, self.slow.transport)
        self.normal = Conn(self.factory, port=40002)

    def echo(self, conn: Conn, count: int, size: int = 1000) -> None:
        conn.send(*[request(P.ECHO_REQ, b"%04d" % i + b"e" * (size - 4)) for i in range(count)])

    def test_default_limits_follow_the_packet_size(self) -> None:
        """Without output_limits the factory bounds every peer by its max packet size."""
        factory = ServerFactory(self.core, max_packet_size=1000)
        self.assertEqual(factory.output_limits, OutputLimits.for_packet_size(1000))

    def test_slow_reader_paused_until_half_drained_others_served(self) -> None:
        """ECHO_REQs whose replies pile up past soft stop the reading from that peer; the
        normal client is answered meanwhile; once half has drained reading resumes, and
        every reply arrives in order."""
        self.echo(self.slow, 3)
        self.assertEqual(self.slow.transport.producerState, "producing")
        self.echo(self.slow, 2)
        self.assertEqual(self.slow.transport.producerState, "paused")
        self.echo(self.normal, 1, size=10)
        self.assertEqual(self.normal.packets(), [(P.ECHO_RES, (b"0000" + b"e" * 6,))])
        received = self.slow_io.drain()
        self.assertEqual(self.slow.transport.producerState, "producing")
        received += self.slow_io.drain()
        packets = [(p.type, p.args) for p in PacketDecoder(allow_admin=False).feed(received)]  # type: ignore[union-attr]
        expected = [b"%04d" % i + b"e" * 996 for i in (0, 1, 2, 0, 1)]
        self.assertEqual(packets, [(P.ECHO_RES, (e,)) for e in expected])

    def test_pipelined_submissions_pause(self) -> None:
        """A client pipelining SUBMIT_JOB_BG without reading its JOB_CREATEDs is paused."""
        self.slow.send(*[request(P.SUBMIT_JOB_BG, b"f", b"", b"x")] * 300)
        self.assertEqual(self.slow.transport.producerState, "paused")
        self.normal.send(request(P.SUBMIT_JOB_BG, b"f", b"", b"x"))
        self.assertEqual(self.normal.packets(), [(P.JOB_CREATED, (b"H:t:301",))])

    def fed_by_worker(self) -> Conn:
        """The slow peer waits for a job whose worker sends 20 kB of WORK_DATA: past hard."""
        self.slow.send(request(P.SUBMIT_JOB, b"f", b"", b"x"))
        worker = Conn(self.factory, port=40003)
        worker.send(request(P.CAN_DO, b"f"), request(P.GRAB_JOB))
        self.assertEqual(worker.packets()[0][0], P.JOB_ASSIGN)
        for _ in range(20):
            worker.send(request(P.WORK_DATA, b"H:t:1", b"d" * 1000))
        self.assertEqual(self.slow.transport.producerState, "paused")
        return worker

    def test_past_hard_for_the_timeout_is_dropped_with_one_log_line(self) -> None:
        """Replies caused by a worker pile up past hard; 30 s later the peer is dropped (the
        connection reset, one log line naming it) and the worker goes on."""
        worker = self.fed_by_worker()
        self.clock.advance(29.9)
        self.assertFalse(self.slow.transport.disconnecting)
        with capturedLogs() as events:
            self.clock.advance(0.1)
        self.assertTrue(self.slow.transport.disconnected, "not reset")
        lines = [formatEvent(e) for e in events]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("dropping 127.0.0.1:40001 (client id -)", lines[0])
        self.assertIn("MiB of replies unread for 30 s", lines[0])
        self.assertNotIn(self.slow.proto.peer, self.core.peers)
        worker.send(request(P.WORK_COMPLETE, b"H:t:1", b"done"), request(P.ECHO_REQ, b"ok"))
        self.assertEqual(worker.packets(), [(P.ECHO_RES, (b"ok",))])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reading_again_in_time_keeps_the_connection(self) -> None:
        """A peer that reads before the timeout is neither dropped nor left paused."""
        self.fed_by_worker()
        self.clock.advance(20)
        while self.slow.transport.value():
            self.slow_io.drain()
        self.assertEqual(self.slow.transport.producerState, "producing")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(60)
        self.assertFalse(self.slow.transport.disconnecting)

    def test_lost_connection_leaves_no_timer(self) -> None:
        """A peer past hard that disconnects cancels its timer."""
        self.fed_by_worker()
        self.slow.lose()
        self.assertEqual(self.clock.getDelayedCalls(), [])
