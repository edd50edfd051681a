# -*- test-case-name: tests.test_udp -*-
"""
Tests for L{twisted_echo.services.udp}: UDP echo with its loop guard (BSD inetd's
rule, widened against CVE-2024-2169 loops), rate limits, one protocol per
listening port, and the check of the Twisted internals its fast path uses.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISystemHandle
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.python import usage
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tests.loopback import wait_until
from twisted_echo.app.options import Options, makeService
from twisted_echo.listening.datagram import MAX_DATAGRAM
from twisted_echo.listening.listen import DatagramListenerService, UDPAddress
from twisted_echo.policies.counters import ServiceCounters
from twisted_echo.policies.loopguard import DEFAULT_NEVER_ANSWER, LoopGuard
from twisted_echo.policies.ratelimit import SourceRateLimiter, TokenBucket
from twisted_echo.services.udp import UDPEcho

#: Bound on every wait for a datagram, in seconds.
TIMEOUT = 5.0


class _BoundTransport(FakeDatagramTransport):
    """
    A fake datagram transport bound to 127.0.0.1:C{port}.
    """

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", "127.0.0.1", self.port)


@implementer(ISystemHandle)
class _HandleTransport(FakeDatagramTransport):
    """
    A fake datagram transport whose system handle is C{handle}.
    """

    def __init__(self, handle: object) -> None:
        super().__init__()
        self.handle = handle

    def getHandle(self) -> object:
        return self.handle


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

    def test_privileged_source_ports_are_not_answered(self) -> None:
        """
        Datagrams from any port below 1024 are dropped and counted as
        C{loop_port}: inetd's list (0, 7, 9, 13, 19, 37) and every other
        service that answers what it gets, DNS 53 and NTP 123 among them
        (CVE-2024-2169).
        """
        ports = [0, 7, 9, 13, 19, 37, 53, 123, 161, 1023]
        for port in ports:
            self.protocol.datagramReceived(b"loop?", ("192.0.2.1", port))
        self.assertEqual(self.transport.written, [])
        self.assertEqual(dict(self.protocol.counters.dropped), {"loop_port": 10})

    def test_sockecho_default_port_is_not_answered(self) -> None:
        """
        A datagram from UDP port 7007, another sockecho's UDP echo, is
        dropped, so two instances cannot bounce one between them.
        """
        self.protocol.datagramReceived(b"loop?", ("192.0.2.1", 7007))
        self.assertEqual(self.transport.written, [])
        self.assertEqual(dict(self.protocol.counters.dropped), {"loop_port": 1})

    def test_other_ports_are_answered(self) -> None:
        """
        Ports from 1024 up, other than sockecho's and our own, are answered.
        """
        ports = [1024, 5353, 7006, 7008, 49152, 65535]
        for port in ports:
            self.protocol.datagramReceived(b"hi", ("192.0.2.1", port))
        self.assertEqual(
            self.transport.written, [(b"hi", ("192.0.2.1", p)) for p in ports]
        )
        self.assertEqual(dict(self.protocol.counters.dropped), {})

    def test_own_port_is_not_answered(self) -> None:
        """
        A datagram whose source port is the one this listener is bound to
        (from another instance on that port, or spoofed) is dropped and
        counted as C{own_port}; a neighbouring port is answered.
        """
        protocol = UDPEcho()
        transport = _BoundTransport(40000)
        protocol.makeConnection(transport)  # type: ignore[arg-type]
        protocol.datagramReceived(b"loop?", ("192.0.2.1", 40000))
        protocol.datagramReceived(b"hi", ("192.0.2.1", 40001))
        self.assertEqual(transport.written, [(b"hi", ("192.0.2.1", 40001))])
        self.assertEqual(dict(protocol.counters.dropped), {"own_port": 1})

    def test_send_error_is_counted_not_raised(self) -> None:
        """
        A reply the kernel refuses (buffer full) is counted as dropped.
        """

        class FullSocket(socket.socket):
            def sendto(self, *args: Any) -> int:  # type: ignore[override]
                raise OSError(errno.ENOBUFS, "No buffer space available")

        sock = FullSocket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        protocol = UDPEcho()
        protocol.makeConnection(_HandleTransport(sock))  # type: ignore[arg-type]
        protocol.datagramReceived(b"x", ("192.0.2.1", 5555))
        self.assertEqual(protocol.counters.dropped["send_error"], 1)
        self.assertEqual(protocol.counters.datagrams_out, 0)

    def test_handle_not_a_socket_replies_with_write(self) -> None:
        """
        A transport whose system handle is not a socket is written to with
        C{transport.write}.
        """
        transport = _HandleTransport(object())
        protocol = UDPEcho()
        protocol.makeConnection(transport)  # type: ignore[arg-type]
        protocol.datagramReceived(b"x", ("192.0.2.1", 5555))
        self.assertEqual(transport.written, [(b"x", ("192.0.2.1", 5555))])


class NeverAnswerOptionTests(TestCase):
    """
    C{--udp-never-answer} and how L{makeService} uses it.
    """

    def _parse(self, *args: str) -> Options:
        options = Options()
        options.parseOptions(list(args))
        return options

    def _guards(self, options: Options) -> list[LoopGuard]:
        return [child.protocol.loop_guard for child in makeService(options)  # type: ignore[attr-defined]
                if isinstance(child, DatagramListenerService)]  # fmt: skip

    def test_default(self) -> None:
        options = self._parse("--udp", "udp:0:interface=127.0.0.1")
        self.assertIsNone(options["udp-never-answer"])
        [guard] = self._guards(options)
        self.assertEqual(guard.never_answer, DEFAULT_NEVER_ANSWER)
        self.assertIn(
            "or none [default: 0-1023,7007,7010]", " ".join(str(options).split())
        )

    def test_given(self) -> None:
        options = self._parse("--udp-never-answer", "53,7000-7002")
        self.assertEqual(options["udp-never-answer"], {53, 7000, 7001, 7002})
        [guard] = self._guards(options)
        self.assertEqual(guard.never_answer, {53, 7000, 7001, 7002})
        options = self._parse("--udp-never-answer", "none")
        self.assertEqual(options["udp-never-answer"], frozenset())

    def test_bad_value_names_the_option(self) -> None:
        with self.assertRaises(usage.UsageError) as caught:
            self._parse("--udp-never-answer", "53,dns")
        self.assertIn(
            "--udp-never-answer takes comma-separated ports and ranges "
            "(PORT[-PORT],...) or none, not '53,dns': bad port or range 'dns'",
            str(caught.exception),
        )


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


def has_ipv6_loopback() -> bool:
    """
    @return: whether a UDP socket can be bound to C{::1} here.
    """
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


class _Receiver(DatagramProtocol):
    """
    Collects the datagrams it receives, with their source addresses.
    """

    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int]]] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append((datagram, addr))


class UDPTestCase(TestCase):
    """
    Real UDP sockets on 127.0.0.1, free ports.
    """

    def listen_echo(
        self, echo: UDPEcho, interface: str = "127.0.0.1"
    ) -> DatagramListenerService:
        """
        Run C{echo} on a L{DatagramListenerService} on C{interface} (an IP
        address; C{"0.0.0.0"} and C{"::"} are the wildcards), a free port,
        until the test ends.
        """
        escaped = interface.replace(":", "\\:")
        service = DatagramListenerService(
            f"udp:0:interface={escaped}",
            UDPAddress(0, interface),
            echo,
            reactor,  # type: ignore[arg-type]
            "udp",
        )
        service.startService()
        self.addCleanup(service.stopService)
        return service

    async def connected_echo(
        self, family: int, address: tuple[str, int], payload: bytes
    ) -> bytes | None:
        """
        Send C{payload} from a I{connected} UDP socket to C{address}, as
        C{nc -u} and most client libraries do: the kernel hands such a
        socket only datagrams whose source is exactly C{address}.

        @param family: C{AF_INET} or C{AF_INET6}.
        @return: the reply, or C{None} if none came within L{TIMEOUT}
            seconds (polled every 10 ms).
        """
        sock = socket.socket(family, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.connect(address)
        sock.setblocking(False)
        sock.send(payload)
        replies: list[bytes] = []

        def received() -> bool:
            try:
                replies.append(sock.recv(MAX_DATAGRAM + 1))
            except BlockingIOError:
                pass
            return bool(replies)

        try:
            await wait_until(received, TIMEOUT)
        except AssertionError:
            return None
        return replies[0]

    def client(self) -> tuple[_Receiver, Any]:
        """
        A UDP client on 127.0.0.1, a free port, until the test ends.

        @return: its protocol and its port (with C{write}).
        """
        receiver = _Receiver()
        port = reactor.listenUDP(  # type: ignore[attr-defined]
            0, receiver, interface="127.0.0.1", maxPacketSize=MAX_DATAGRAM
        )
        self.addCleanup(port.stopListening)
        return receiver, port

    async def echoes(self, address: tuple[str, int], payload: bytes) -> None:
        """
        Send C{payload} to C{address} from a new client; it must come back
        whole, from C{address}.
        """
        receiver, port = self.client()
        port.write(payload, address)
        await wait_until(lambda: receiver.received, TIMEOUT)
        self.assertEqual(receiver.received, [(payload, address)])


def address_of(service: Any) -> tuple[str, int]:
    """
    @return: where C{service} (a listener service) is listening.
    """
    return ("127.0.0.1", service.port.getHost().port)


class UDPLoopbackTests(UDPTestCase):
    """
    UDP echo on a real loopback socket.
    """

    def setUp(self) -> None:
        self.echo = UDPEcho()
        self.service = self.listen_echo(self.echo)
        self.address = address_of(self.service)

    async def test_largest_datagram_comes_back_whole(self) -> None:
        """
        A 65507-byte datagram (the IPv4 maximum) comes back whole, not cut
        to Twisted's default 8192-byte read size.
        """
        payload = bytes(range(256)) * 255 + b"x" * 227
        self.assertEqual(len(payload), 65507)
        await self.echoes(self.address, payload)

    async def test_datagram_from_port_7_is_not_answered(self) -> None:
        """
        A datagram from source port 7 (another echo server) gets no answer:
        once the server has read it, it has counted it dropped and sent
        nothing.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        try:
            sock.bind(("127.0.0.1", 7))
        except OSError as e:
            raise self.skipTest(f"cannot bind UDP port 7 here: {e}") from None
        sock.sendto(b"loop?", self.address)
        await wait_until(lambda: self.echo.counters.datagrams_in, TIMEOUT)
        self.assertEqual(dict(self.echo.counters.dropped), {"loop_port": 1})
        self.assertEqual(self.echo.counters.datagrams_out, 0)
        sock.setblocking(False)
        with self.assertRaises(BlockingIOError):
            sock.recvfrom(100)


class UDPLoopTests(UDPTestCase):
    """
    Two UDP echo listeners of one server cannot be made to bounce a
    datagram between them.
    """

    async def test_no_loop_between_two_listeners(self) -> None:
        """
        A datagram sent from listener A's socket to listener B (as a
        spoofer would make it look) is dropped by B: B receives it once,
        sends nothing, and A receives nothing.
        """
        guard = LoopGuard()
        a = UDPEcho(ServiceCounters(), loop_guard=guard)
        b = UDPEcho(ServiceCounters(), loop_guard=guard)
        a_service = self.listen_echo(a)
        b_service = self.listen_echo(b)
        a_service.port.write(b"loop?", address_of(b_service))
        await wait_until(lambda: b.counters.datagrams_in, TIMEOUT)
        self.assertEqual(b.counters.datagrams_out, 0)
        self.assertEqual(dict(b.counters.dropped), {"own_port": 1})
        # Fence: a datagram sent to A now is queued behind anything B could
        # have sent A; once A has answered it, A has read all before it.
        await self.echoes(address_of(a_service), b"fence")
        self.assertEqual(a.counters.datagrams_in, 1)
        self.assertEqual(b.counters.datagrams_in, 1)


class OneProtocolPerPortTests(UDPTestCase):
    """
    Two C{--udp} listeners as L{makeService} builds them.
    """

    async def test_each_listener_replies_from_its_own_address(self) -> None:
        """
        A datagram sent to either listener comes back from that listener's
        address; both count into the one UDP counters.
        """
        options = Options()
        options.parseOptions(
            ["--no-echo", "--no-upper", "--no-welcome"]
            + ["--udp", "udp:0:interface=127.0.0.1"] * 2
        )
        service = makeService(options)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        first, second = list(service)
        for listener in (first, second, first):
            await self.echoes(address_of(listener), b"which?")
        self.assertEqual(service.counters["udp"].datagrams_out, 3)

    async def test_ipv4_and_ipv6_listeners(self) -> None:
        """
        C{--udp udp:0:interface=127.0.0.1} and C{--udp
        udp:0:interface=\\:\\:1}: each has its own L{UDPEcho} (one reply
        path per socket family) and both answer.
        """
        if not has_ipv6_loopback():
            raise self.skipTest("no IPv6 loopback (::1) here")
        options = Options()
        options.parseOptions(
            ["--no-echo", "--no-upper", "--no-welcome"]
            + ["--udp", "udp:0:interface=127.0.0.1"]
            + ["--udp", "udp:0:interface=\\:\\:1"]
        )
        service = makeService(options)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        four, six = list(service)
        self.assertIsNot(four.protocol, six.protocol)  # type: ignore[attr-defined]
        for family, listener in [(socket.AF_INET, four), (socket.AF_INET6, six)]:
            host = listener.port.getHost()  # type: ignore[attr-defined]
            reply = await self.connected_echo(family, (host.host, host.port), b"v?")
            self.assertEqual(reply, b"v?", host)
        self.assertEqual(service.counters["udp"].datagrams_out, 2)
