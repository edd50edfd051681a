"""
Tests for L{twisted_echo.udp}: UDP echo with BSD inetd's loop guard.
"""

from __future__ import annotations

import errno
import socket

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.testing import FakeDatagramTransport
from twisted.trial.unittest import TestCase

from twisted_echo.listen import DatagramListenerService, UDPAddress
from twisted_echo.udp import LOOP_PORTS, UDPEcho


class UDPEchoProtocolTests(TestCase):
    """
    The UDP echo protocol, on a fake datagram transport.
    """

    def setUp(self) -> None:
        self.protocol = UDPEcho()
        self.transport = FakeDatagramTransport()
        self.protocol.makeConnection(self.transport)  # type: ignore[arg-type]

    def test_datagram_goes_back_to_its_sender(self) -> None:
        """
        Each datagram goes back, unchanged, to the address it came from.
        """
        self.protocol.datagramReceived(b"ping", ("192.0.2.1", 5555))
        self.protocol.datagramReceived(b"", ("192.0.2.2", 6666))
        self.assertEqual(
            self.transport.written,
            [(b"ping", ("192.0.2.1", 5555)), (b"", ("192.0.2.2", 6666))],
        )
        self.assertEqual(self.protocol.counters.datagrams_out, 2)

    def test_loop_ports_are_not_answered(self) -> None:
        """
        Datagrams from port 0 or the internal services' ports (7, 9, 13, 19,
        37) are dropped and counted, as BSD inetd does against echo loops.
        """
        for port in sorted(LOOP_PORTS):
            self.protocol.datagramReceived(b"loop?", ("192.0.2.1", port))
        self.assertEqual(self.transport.written, [])
        self.assertEqual(self.protocol.counters.dropped["loop_port"], 6)
        self.assertEqual(LOOP_PORTS, {0, 7, 9, 13, 19, 37})

    def test_send_error_is_counted_not_raised(self) -> None:
        """
        A reply the kernel refuses (buffer full) is counted as dropped.
        """

        def refuse(packet: bytes, addr: object) -> None:
            raise OSError(errno.ENOBUFS, "No buffer space available")

        self.transport.write = refuse  # type: ignore[method-assign]
        self.protocol.datagramReceived(b"x", ("192.0.2.1", 5555))
        self.assertEqual(self.protocol.counters.dropped["send_error"], 1)


class _Receiver(DatagramProtocol):
    def __init__(self) -> None:
        self.received: Deferred[tuple[bytes, object]] = Deferred()

    def datagramReceived(self, datagram: bytes, addr: object) -> None:
        if not self.received.called:
            self.received.callback((datagram, addr))


class UDPLoopbackTests(TestCase):
    """
    UDP echo on a real loopback socket.
    """

    def setUp(self) -> None:
        self.echo = UDPEcho()
        self.service = DatagramListenerService(
            "udp:0:interface=127.0.0.1",
            UDPAddress(0, "127.0.0.1"),
            self.echo,
            reactor,  # type: ignore[arg-type]
            "udp",
        )
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.address = ("127.0.0.1", self.service.port.getHost().port)

    async def test_largest_datagram_comes_back_whole(self) -> None:
        """
        A 65507-byte datagram (the IPv4 maximum) comes back whole, not cut
        to Twisted's default 8192-byte read size.
        """
        receiver = _Receiver()
        port = reactor.listenUDP(  # type: ignore[attr-defined]
            0, receiver, interface="127.0.0.1", maxPacketSize=65535
        )
        self.addCleanup(port.stopListening)
        payload = bytes(range(256)) * 255 + b"x" * 227
        self.assertEqual(len(payload), 65507)
        port.write(payload, self.address)
        receiver.received.addTimeout(5, reactor)
        datagram, addr = await receiver.received
        self.assertEqual(datagram, payload)
        self.assertEqual(addr, self.address)

    def test_datagram_from_port_7_is_not_answered(self) -> None:
        """
        A datagram from source port 7 (another echo server) gets no answer.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        try:
            sock.bind(("127.0.0.1", 7))
        except OSError as e:
            raise self.skipTest(f"cannot bind UDP port 7 here: {e}") from None
        sock.sendto(b"loop?", self.address)
        # Let the reactor deliver it: run it for a moment.
        d: Deferred[None] = Deferred()
        reactor.callLater(0.3, d.callback, None)  # type: ignore[attr-defined]
        return d.addCallback(lambda _: self._assert_unanswered(sock))

    def _assert_unanswered(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        with self.assertRaises(BlockingIOError):
            sock.recvfrom(100)
        self.assertEqual(self.echo.counters.dropped["loop_port"], 1)
