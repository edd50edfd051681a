"""
Tests for L{twisted_echo.client.chat}, in memory: standard I/O and the peer
are L{StringTransport}s. (The command as a process is tested in
L{tests.test_client_main}.)
"""

from __future__ import annotations

from typing import Any

from twisted.internet import error
from twisted.internet.protocol import connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.test_client_load import HalfCloseTransport
from twisted_echo.client.chat import (
    DatagramChat,
    StreamChat,
    StreamPeerFactory,
    UserSide,
)


class StdioTransport(StringTransport):
    """
    Standard I/O whose C{loseConnection} closes at once, as StandardIO does
    once its output is written.
    """

    def __init__(self) -> None:
        StringTransport.__init__(self)
        self.protocol: UserSide | None = None

    def loseConnection(self) -> None:
        StringTransport.loseConnection(self)
        assert self.protocol is not None
        self.protocol.connectionLost(Failure(connectionDone.value))


class StreamChatTests(TestCase):
    def setUp(self) -> None:
        self.session = StreamChat()
        self.peer = StreamPeerFactory(self.session).buildProtocol(None)
        self.peer_transport = HalfCloseTransport()
        self.peer.makeConnection(self.peer_transport)
        self.user = UserSide(self.session)
        self.stdio = StdioTransport()
        self.stdio.protocol = self.user
        self.user.makeConnection(self.stdio)

    def test_relays_both_ways(self) -> None:
        self.user.dataReceived(b"hello\n")
        self.assertEqual(self.peer_transport.value(), b"hello\n")
        self.peer.dataReceived(b"HELLO\n")
        self.assertEqual(self.stdio.value(), b"HELLO\n")

    def test_end_of_input_half_closes_and_prints_the_rest(self) -> None:
        self.user.dataReceived(b"a\nb\n")
        self.user.readConnectionLost()
        self.assertTrue(self.peer_transport.write_closed)
        self.assertNoResult(self.session.done)
        # Replies still owed come after the half-close, and are printed.
        self.peer.dataReceived(b"A\nB\n")
        self.peer.readConnectionLost()
        self.assertTrue(self.peer_transport.disconnecting)
        self.peer.connectionLost(Failure(connectionDone.value))
        self.assertEqual(self.stdio.value(), b"A\nB\n")
        self.assertEqual(self.successResultOf(self.session.done), 0)
        self.assertIsNone(self.session.problem)

    def test_server_closing_first_ends_the_chat(self) -> None:
        self.peer.dataReceived(b"ERROR: line too long\r\n")
        self.peer.readConnectionLost()
        self.peer.connectionLost(Failure(connectionDone.value))
        self.assertEqual(self.successResultOf(self.session.done), 0)

    def test_reset_is_reported(self) -> None:
        self.peer.connectionLost(Failure(error.ConnectionLost()))
        self.assertEqual(self.successResultOf(self.session.done), 1)
        self.assertEqual(
            self.session.problem, "connection lost: connection lost (reset by peer)"
        )


class FakeUDPTransport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.connected_to: tuple[str, int] | None = None

    def connect(self, host: str, port: int) -> None:
        self.connected_to = (host, port)

    def write(self, datagram: bytes, addr: Any = None) -> None:
        self.sent.append(datagram)


class DatagramChatTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.session = DatagramChat(("127.0.0.1", 7), self.clock, reply_wait=1.0)
        self.udp = FakeUDPTransport()
        self.session.makeConnection(self.udp)  # type: ignore[arg-type]
        self.user = UserSide(self.session)
        self.stdio = StdioTransport()
        self.stdio.protocol = self.user
        self.user.makeConnection(self.stdio)

    def test_one_datagram_per_line(self) -> None:
        self.assertEqual(self.udp.connected_to, ("127.0.0.1", 7))
        self.user.dataReceived(b"ping\npo")
        self.user.dataReceived(b"ng\n")
        self.assertEqual(self.udp.sent, [b"ping\n", b"pong\n"])
        self.session.datagramReceived(b"ping\n", ("127.0.0.1", 7))
        self.assertEqual(self.stdio.value(), b"ping\n")

    def test_waits_for_owed_replies_at_end(self) -> None:
        self.user.dataReceived(b"a\nlast")
        self.user.readConnectionLost()
        self.assertEqual(self.udp.sent, [b"a\n", b"last"])
        self.session.datagramReceived(b"a\n", None)
        self.assertNoResult(self.session.done)
        self.session.datagramReceived(b"last", None)
        self.assertEqual(self.successResultOf(self.session.done), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_gives_up_after_the_wait(self) -> None:
        self.user.dataReceived(b"a\n")
        self.user.readConnectionLost()
        self.clock.advance(1.0)
        self.assertEqual(self.successResultOf(self.session.done), 1)
        self.assertEqual(
            self.session.problem, "1 datagram(s) got no reply within 1.0 s"
        )

    def test_refused(self) -> None:
        self.user.dataReceived(b"a\n")
        self.session.connectionRefused()
        self.assertEqual(self.successResultOf(self.session.done), 1)
        assert self.session.problem is not None
        self.assertIn("connection refused", self.session.problem)
