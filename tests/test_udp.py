# -*- test-case-name: tests.test_udp -*-
"""
Tests for L{twisted_echo.udp}: UDP echo with BSD inetd's loop guard and rate
limits.
"""

from __future__ import annotations

import errno
import socket

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.trial.unittest import TestCase

from twisted_echo.listen import DatagramListenerService, UDPAddress
from twisted_echo.ratelimit import SourceRateLimiter, TokenBucket
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

        class FullSocket:
            def sendto(self, packet: bytes, addr: object) -> int:
                raise OSError(errno.ENOBUFS, "No buffer space available")

        transport = FakeDatagramTransport()
        transport.socket = FullSocket()  # type: ignore[attr-defined]
        protocol = UDPEcho()
        protocol.makeConnection(transport)  # type: ignore[arg-type]
        protocol.datagramReceived(b"x", ("192.0.2.1", 5555))
        self.assertEqual(protocol.counters.dropped["send_error"], 1)
        self.assertEqual(protocol.counters.datagrams_out, 0)


class UDPEchoRateLimitTests(TestCase):
    """
    UDP echo with per-source and global rate limits, on a fake transport and
    a fake clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.transport = FakeDatagramTransport()

    def _echo(
        self,
        source_limit: SourceRateLimiter | None = None,
        global_limit: TokenBucket | None = None,
    ) -> UDPEcho:
        protocol = UDPEcho(source_limit=source_limit, global_limit=global_limit)
        protocol.makeConnection(self.transport)  # type: ignore[arg-type]
        return protocol

    def _answered(self, host: str) -> int:
        return sum(1 for _, addr in self.transport.written if addr[0] == host)

    def test_flood_from_one_source(self) -> None:
        """
        1,000 datagrams at one instant from one host (from ever-changing
        ports, as a spoofer would send them) with a limit of 10/s, burst 20:
        exactly 20 are answered; more after time passes; another host is
        still answered meanwhile.
        """
        protocol = self._echo(SourceRateLimiter(10, 20, self.clock))
        for i in range(1000):
            protocol.datagramReceived(b"flood", ("192.0.2.66", 1024 + i))
        self.assertEqual(self._answered("192.0.2.66"), 20)
        self.assertEqual(protocol.counters.dropped["rate_source"], 980)

        protocol.datagramReceived(b"hello", ("192.0.2.7", 5555))
        self.assertEqual(self.transport.written[-1], (b"hello", ("192.0.2.7", 5555)))

        self.clock.advance(1)
        for i in range(1000):
            protocol.datagramReceived(b"flood", ("192.0.2.66", 1024 + i))
        self.assertEqual(self._answered("192.0.2.66"), 30)
        self.assertEqual(protocol.counters.dropped["rate_source"], 1970)
        self.assertEqual(protocol.counters.datagrams_in, 2001)
        self.assertEqual(protocol.counters.datagrams_out, 31)

    def test_global_limit_caps_the_total(self) -> None:
        """
        The global limit caps what all sources together get back, however
        many there are.
        """
        protocol = self._echo(global_limit=TokenBucket(5, 50, self.clock))
        for i in range(200):
            protocol.datagramReceived(b"x", (f"10.0.0.{i}", 5555))
        self.assertEqual(len(self.transport.written), 50)
        self.assertEqual(protocol.counters.dropped["rate_global"], 150)
        self.clock.advance(2)
        for i in range(200):
            protocol.datagramReceived(b"x", (f"10.0.1.{i}", 5555))
        self.assertEqual(len(self.transport.written), 60)
        self.assertEqual(protocol.counters.dropped["rate_global"], 340)

    def test_checks_in_order_drops_by_reason(self) -> None:
        """
        The loop guard comes first, then the per-source limit, then the
        global one; each drop is counted under its own reason, and a
        datagram dropped by an earlier check spends no token of a later one.
        """
        protocol = self._echo(
            SourceRateLimiter(1, 2, self.clock), TokenBucket(1, 3, self.clock)
        )
        # Loop ports: dropped before any bucket is touched.
        for _ in range(10):
            protocol.datagramReceived(b"loop?", ("192.0.2.1", 7))
        # Host 1: 2 answered, 8 over its own limit (global has 1 token left).
        for _ in range(10):
            protocol.datagramReceived(b"a", ("192.0.2.1", 5555))
        # Host 2: its first passes the source limit and takes the last
        # global token; its second passes the source limit, not the global.
        for _ in range(2):
            protocol.datagramReceived(b"b", ("192.0.2.2", 5555))
        self.assertEqual(
            dict(protocol.counters.dropped),
            {"loop_port": 10, "rate_source": 8, "rate_global": 1},
        )
        self.assertEqual(
            self.transport.written,
            [(b"a", ("192.0.2.1", 5555))] * 2 + [(b"b", ("192.0.2.2", 5555))],
        )

    def test_unlimited_limiters_are_not_consulted(self) -> None:
        """
        Limiters with rate 0 are the same as none: no check on the hot path.
        """
        protocol = self._echo(
            SourceRateLimiter(0, 0, self.clock), TokenBucket(0, 0, self.clock)
        )
        self.assertIsNone(protocol.source_limit)
        self.assertIsNone(protocol.global_limit)
        for i in range(1000):
            protocol.datagramReceived(b"x", ("192.0.2.1", 1024 + i))
        self.assertEqual(len(self.transport.written), 1000)
        self.assertEqual(UDPEcho().source_limit, None)
        self.assertEqual(UDPEcho().global_limit, None)


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
