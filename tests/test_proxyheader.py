"""
Tests for L{twisted_echo.listening.proxyheader}: header reading
(proxy-protocol.txt sections 2.1 and 2.2), L{ProxyHeaderProtocol} starting
the service only after it and handing it the transport, limits, counters
and log lines by the client it names, and half-close over real sockets.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import struct
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import TestCase

from tests.loopback import exchange
from tests.memory import PEER
from tests.process import IO_TIMEOUT, RunningServer, tcp_exchange, temp_dir, wait_until
from twisted_echo._twisted.transport import use_lean_transport
from twisted_echo.app import options as tap
from twisted_echo.listening.proxyheader import (
    HEADER_TIMEOUT,
    V2_SIGNATURE,
    HeaderError,
    HeaderReader,
    ProxyHeaderEndpoint,
    ProxyHeaderFactory,
    ProxyHeaderProtocol,
    split_proxy_description,
)
from twisted_echo.policies.limits import ConnectionLimits, Timeouts
from twisted_echo.services.echo import EchoFactory
from twisted_echo.services.stream import Refused, StreamProtocol
from twisted_echo.services.welcome import Welcome, WelcomeFactory

V1_TCP4 = b"PROXY TCP4 203.0.113.5 192.0.2.1 56324 7007\r\n"
V1_TCP6 = b"PROXY TCP6 2001:db8:0:0::5 2001:db8::1 56324 7007\r\n"


def v2(
    command: int = 1,
    family_protocol: int = 0x11,
    addresses: bytes | None = None,
    tlvs: bytes = b"",
    version: int = 2,
) -> bytes:
    """
    @return: a version 2 header (section 2.2); by default TCP over IPv4
        from 198.51.100.9:40001 to 192.0.2.1:7007.
    """
    if addresses is None:
        addresses = socket.inet_aton("198.51.100.9") + socket.inet_aton("192.0.2.1")
        addresses += struct.pack("!HH", 40001, 7007)
    block = addresses + tlvs
    return (
        V2_SIGNATURE
        + bytes([version << 4 | command, family_protocol])
        + struct.pack("!H", len(block))
        + block
    )


class HeaderReaderTests(TestCase):
    """
    L{HeaderReader}, sections 2.1 and 2.2.
    """

    def read(self, *chunks: bytes) -> tuple[object, bytes]:
        reader = HeaderReader()
        for chunk in chunks[:-1]:
            self.assertIsNone(reader.feed(chunk))
        result = reader.feed(chunks[-1])
        assert result is not None
        return result

    def reason(self, *chunks: bytes) -> str:
        reader = HeaderReader()
        with self.assertRaises(HeaderError) as caught:
            for chunk in chunks:
                reader.feed(chunk)
        return caught.exception.reason

    def test_v1_tcp4(self) -> None:
        header, rest = self.read(V1_TCP4 + b"hello")
        self.assertEqual(header.source, IPv4Address("TCP", "203.0.113.5", 56324))  # type: ignore[attr-defined]
        self.assertEqual(header.destination, IPv4Address("TCP", "192.0.2.1", 7007))  # type: ignore[attr-defined]
        self.assertEqual((header.version, header.length), (1, len(V1_TCP4)))  # type: ignore[attr-defined]
        self.assertEqual(rest, b"hello")

    def test_v1_tcp6_canonical_host(self) -> None:
        """
        IPv6 hosts are canonical, so one client is one host for limits.
        """
        header, rest = self.read(V1_TCP6)
        self.assertEqual(header.source, IPv6Address("TCP", "2001:db8::5", 56324))  # type: ignore[attr-defined]
        self.assertEqual(rest, b"")

    def test_v1_tcp6_zone_kept_apart_from_the_host(self) -> None:
        """
        A zone (RFC 6874 / RFC 4007 scope id) of unreserved characters, at
        most 15 (Linux's C{IFNAMSIZ} less its NUL), is read as the
        address's C{scopeID}; the host is the address without it, so a zone
        never makes one client another host.
        """
        for zone in (b"0", b"eth0", b"en-1.2_x~y", b"a" * 15):
            header, _ = self.read(
                b"PROXY TCP6 fe80::1%" + zone + b" fe80::2%" + zone + b" 1 2\r\n"
            )
            source = header.source  # type: ignore[attr-defined]
            self.assertEqual(source, IPv6Address("TCP", "fe80::1", 1, 0, zone.decode()))
            self.assertEqual(header.destination.host, "fe80::2")  # type: ignore[attr-defined]

    def test_v1_tcp6_malformed_zone(self) -> None:
        """
        Any other zone is a malformed header (section 2.1: "Any sequence
        which does not exactly match the protocol must be discarded").
        """
        for zone in (
            b'"x\\y{z}',
            b"",
            b"a" * 16,
            b"eth0/1",
            b"a%b",
            b"%41",
            b"\x1b[2J",
            "\u00e9".encode(),
        ):
            line = b"PROXY TCP6 fe80::1%" + zone + b" fe80::2 1 2\r\n"
            self.assertEqual(self.reason(line), "malformed", line)
            line = b"PROXY TCP6 fe80::1 fe80::2%" + zone + b" 1 2\r\n"
            self.assertEqual(self.reason(line), "malformed", line)

    def test_v1_tcp4_strict(self) -> None:
        for source in (b"1.2.3.4%0", b"01.2.3.4", b"1.2.3", b"1.2.3.4.", b"::1"):
            line = b"PROXY TCP4 " + source + b" 1.2.3.5 1 2\r\n"
            self.assertEqual(self.reason(line), "malformed", line)

    def test_v1_unknown(self) -> None:
        for line in (b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ::1 ::2 1 2\r\n"):
            header, _ = self.read(line)
            self.assertIsNone(header.source)  # type: ignore[attr-defined]

    def test_v1_split_across_reads(self) -> None:
        data = V1_TCP4 + b"x"
        for cut in range(1, len(data) - 1):
            header, rest = self.read(data[:cut], data[cut:])
            self.assertEqual(header.source.host, "203.0.113.5")  # type: ignore[attr-defined]
            self.assertEqual(rest, b"x")

    def test_v1_malformed(self) -> None:
        for line in (
            b"PROXY TCP4 203.0.113.5 192.0.2.1 56324 70070\r\n",
            b"PROXY TCP4 203.0.113.5 192.0.2.1 056324 7007\r\n",
            b"PROXY TCP4 203.0.113.500 192.0.2.1 56324 7007\r\n",
            b"PROXY TCP4 2001:db8::5 192.0.2.1 56324 7007\r\n",
            b"PROXY TCP6 203.0.113.5 2001:db8::1 56324 7007\r\n",
            b"PROXY TCP4  203.0.113.5 192.0.2.1 56324 7007\r\n",
            b"PROXY UDP4 203.0.113.5 192.0.2.1 56324 7007\r\n",
            b"PROXY TCP4 203.0.113.5 192.0.2.1 56324\r\n",
            b"PROXY TCP4 203.0.113.5 192.0.2.1 56324 7007\n",
        ):
            self.assertEqual(self.reason(line), "malformed", line)

    def test_v1_oversized(self) -> None:
        self.assertEqual(self.reason(b"PROXY UNKNOWN " + b"a" * 100), "oversized")

    def test_missing(self) -> None:
        for data in (b"GET / HTTP/1.0\r\n", b"hello", b"\r\n\r\n\x01", b"PROXZ"):
            self.assertEqual(self.reason(data), "missing", data)

    def test_v2_proxy_tcp4(self) -> None:
        header, rest = self.read(v2() + b"after")
        self.assertEqual(header.source, IPv4Address("TCP", "198.51.100.9", 40001))  # type: ignore[attr-defined]
        self.assertEqual(header.command, "PROXY")  # type: ignore[attr-defined]
        self.assertEqual(rest, b"after")

    def test_v2_proxy_tcp6(self) -> None:
        addresses = (
            socket.inet_pton(socket.AF_INET6, "2001:db8::9")
            + socket.inet_pton(socket.AF_INET6, "2001:db8::1")
            + struct.pack("!HH", 1, 2)
        )
        header, _ = self.read(v2(family_protocol=0x21, addresses=addresses))
        self.assertEqual(header.source, IPv6Address("TCP", "2001:db8::9", 1))  # type: ignore[attr-defined]

    def test_v2_link_local_has_no_zone(self) -> None:
        """
        Version 2 carries 16 raw bytes: a link-local address has no zone.
        """
        addresses = (
            socket.inet_pton(socket.AF_INET6, "fe80::1")
            + socket.inet_pton(socket.AF_INET6, "fe80::2")
            + struct.pack("!HH", 1, 2)
        )
        header, _ = self.read(v2(family_protocol=0x21, addresses=addresses))
        self.assertEqual(header.source, IPv6Address("TCP", "fe80::1", 1))  # type: ignore[attr-defined]

    def test_v2_unix(self) -> None:
        addresses = b"/run/a.sock".ljust(108, b"\0") + b"/run/b.sock".ljust(108, b"\0")
        header, _ = self.read(v2(family_protocol=0x31, addresses=addresses))
        self.assertEqual(header.source, UNIXAddress(b"/run/a.sock"))  # type: ignore[attr-defined]

    def test_v2_local_and_unspec(self) -> None:
        """
        LOCAL (health checks) and UNSPEC: the real connection's addresses,
        whatever address block follows (section 2.2).
        """
        for data in (v2(command=0), v2(command=0, addresses=b""), v2(0x1, 0x00)):
            header, rest = self.read(data + b"x")
            self.assertIsNone(header.source)  # type: ignore[attr-defined]
            self.assertEqual(rest, b"x")
        self.assertEqual(self.read(v2(command=0))[0].command, "LOCAL")  # type: ignore[attr-defined]

    def test_v2_tlvs_skipped(self) -> None:
        tlvs = b"\x01\x00\x02h2" + b"\x04\x00\x03abc"
        header, rest = self.read(v2(tlvs=tlvs) + b"data")
        self.assertEqual(header.source.host, "198.51.100.9")  # type: ignore[attr-defined]
        self.assertEqual(rest, b"data")

    def test_v2_split_across_reads(self) -> None:
        data = v2(tlvs=b"\x04\x00\x01z") + b"x"
        for cut in range(1, len(data) - 1):
            header, rest = self.read(data[:cut], data[cut:])
            self.assertEqual(header.source.port, 40001)  # type: ignore[attr-defined]
            self.assertEqual(rest, b"x")

    def test_v2_malformed(self) -> None:
        for data in (
            v2(version=1),
            v2(command=2),
            v2(family_protocol=0x41),
            v2(family_protocol=0x13),
            v2(addresses=b"\x01\x02\x03"),
            v2(family_protocol=0x21),
        ):
            self.assertEqual(self.reason(data), "malformed", data)

    def test_v2_oversized(self) -> None:
        self.assertEqual(self.reason(v2(tlvs=b"\0" * 5000)[:16]), "oversized")


class Proxied:
    """
    A C{haproxy:} connection in memory, as its transport sees it: what it
    is given goes to the transport's C{protocol}, the L{ProxyHeaderProtocol}
    and, after the hand-off, the service's own protocol (as Twisted's TCP
    transport delivers to its C{protocol} attribute).
    """

    def __init__(self, first: ProxyHeaderProtocol, transport: StringTransport) -> None:
        self.first = first
        self.transport = transport
        transport.protocol = first  # type: ignore[attr-defined]

    @property
    def current(self) -> object:
        return self.transport.protocol  # type: ignore[attr-defined]

    @property
    def service(self) -> StreamProtocol:
        service = self.first.service
        assert isinstance(service, StreamProtocol)
        return service

    def __getattr__(self, name: str) -> object:
        return getattr(self.current, name)


class ProxiedConnectionTests(TestCase):
    """
    A C{haproxy:} listener's connections, in memory.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.limits = ConnectionLimits(max_connections=10, max_per_peer=1)
        self.factory = EchoFactory(self.clock, limits=self.limits)
        self.events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def connect(
        self, factory: EchoFactory | None = None
    ) -> tuple[Any, StringTransport]:
        factory = factory or self.factory
        protocol = factory.buildProtocol(PEER, proxy_header=True)
        assert isinstance(protocol, ProxyHeaderProtocol)
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 7007), peerAddress=PEER
        )
        connection = Proxied(protocol, transport)
        protocol.makeConnection(transport)
        return connection, transport

    def messages(self) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events]

    def test_bytes_after_header_echoed_header_not(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(V1_TCP4[:10])
        self.assertEqual(self.factory.counters.connections_total, 0)
        protocol.dataReceived(V1_TCP4[10:] + b"hello")
        protocol.dataReceived(b" world")
        self.assertEqual(transport.value(), b"hello world")
        self.assertEqual(protocol.bytes_in, 11)
        self.assertEqual(self.factory.counters.connections_total, 1)
        # Handed off, not wrapped: the transport's protocol and producer
        # are the service's.
        self.assertIs(protocol.current, protocol.service)
        self.assertIs(transport.producer, protocol.service)

    def test_client_and_proxy_address(self) -> None:
        protocol, _ = self.connect()
        self.assertEqual(protocol.service.proxy_address(), None)
        protocol.dataReceived(v2())
        self.assertEqual(
            protocol.client_address(), IPv4Address("TCP", "198.51.100.9", 40001)
        )
        self.assertEqual(protocol.proxy_address(), PEER)
        self.assertEqual(protocol.peer_host, "198.51.100.9")
        self.assertEqual(self.limits.open_by_peer, {"198.51.100.9": 1})

    def test_local_uses_the_real_peer(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(v2(command=0) + b"ping")
        self.assertEqual(transport.value(), b"ping")
        self.assertEqual(protocol.client_address(), PEER)
        self.assertIsNone(protocol.proxy_address())
        self.assertEqual(self.limits.open_by_peer, {PEER.host: 1})

    def test_log_lines_name_the_client(self) -> None:
        protocol, _ = self.connect()
        protocol.dataReceived(V1_TCP4 + b"abc")
        protocol.connectionLost(None)
        messages = self.messages()
        self.assertIn(
            "echo connection from tcp:203.0.113.5:56324 via tcp:192.0.2.7:40000",
            messages,
        )
        self.assertTrue(
            any(
                m.startswith("echo connection from tcp:203.0.113.5:56324 closed: 3")
                for m in messages
            ),
            messages,
        )
        self.assertEqual(self.limits.open_total, 0)
        self.assertEqual(self.limits.open_by_peer, {})
        self.assertEqual(self.factory.counters.bytes_in, 3)

    def test_per_peer_limit_counts_header_hosts(self) -> None:
        """
        Many connections from one proxy are admitted, one per client host
        (C{max_per_peer=1}); a second from a client host is refused after
        its header.
        """
        first, _ = self.connect()
        first.dataReceived(V1_TCP4)
        second, _ = self.connect()
        second.dataReceived(v2())
        third, transport = self.connect()
        third.dataReceived(V1_TCP4 + b"dropped")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.factory.counters.refused["max_per_peer"], 1)
        self.assertEqual(self.factory.counters.connections_total, 2)
        third.connectionLost(None)
        self.assertEqual(self.limits.open_total, 2)
        first.connectionLost(None)
        second.connectionLost(None)
        self.assertEqual(
            (self.limits.open_total, dict(self.limits.open_by_peer)), (0, {})
        )
        self.assertEqual(self.factory.counters.connections_open, 0)

    def test_per_peer_limit_ignores_zones(self) -> None:
        """
        C{fe80::1%0} ... C{%4} are one host for C{--max-per-peer}: the
        second is refused (C{max_per_peer=1}), and logged with its zone.
        """
        first, _ = self.connect()
        first.dataReceived(b"PROXY TCP6 fe80::1%0 fe80::2 1 7007\r\n")
        self.assertEqual(dict(self.limits.open_by_peer), {"fe80::1": 1})
        for zone in range(1, 5):
            protocol, transport = self.connect()
            protocol.dataReceived(b"PROXY TCP6 fe80::1%%%d fe80::2 1 7007\r\n" % zone)
            self.assertTrue(transport.disconnecting)
            protocol.connectionLost(None)
        self.assertEqual(self.factory.counters.refused["max_per_peer"], 4)
        self.assertEqual(self.factory.counters.connections_total, 1)
        self.assertIn(
            "echo connection from tcp6:fe80\\:\\:1%0:1 via tcp:192.0.2.7:40000",
            self.messages(),
        )
        first.connectionLost(None)
        self.assertEqual(dict(self.limits.open_by_peer), {})

    def test_failures_close_without_reply_and_count(self) -> None:
        cases = [
            (b"GET / HTTP/1.0\r\n", "missing"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\nabc", "malformed"),
            (b"PROXY " + b"x" * 200, "oversized"),
        ]
        for data, reason in cases:
            protocol, transport = self.connect()
            protocol.dataReceived(data)
            protocol.dataReceived(b"more")
            self.assertTrue(transport.disconnecting, reason)
            self.assertEqual(transport.value(), b"")
            protocol.connectionLost(None)
            self.assertEqual(self.factory.counters.refused[f"proxy_{reason}"], 1)
        self.assertEqual(self.factory.counters.connections_total, 0)
        self.assertEqual(self.factory.counters.connections_open, 0)
        self.assertEqual(self.limits.open_total, 0)
        self.assertIn(
            "echo connection from tcp:192.0.2.7:40000: no valid PROXY header "
            "(missing); closing",
            self.messages(),
        )

    def test_timeout(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(V1_TCP4[:20])
        self.clock.advance(HEADER_TIMEOUT - 0.1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(dict(self.factory.counters.refused), {"proxy_timeout": 1})
        protocol.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.limits.open_total, 0)

    def test_header_read_cancels_timeout(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(V1_TCP4)
        self.clock.advance(HEADER_TIMEOUT * 2)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(dict(self.factory.counters.refused), {})

    def test_half_close_before_header(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"PROXY TCP4")
        protocol.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(None)
        self.assertEqual(dict(self.factory.counters.refused), {"proxy_incomplete": 1})

    def test_connection_lost_before_header(self) -> None:
        protocol, _ = self.connect()
        protocol.connectionLost(None)
        self.assertEqual(dict(self.factory.counters.refused), {"proxy_incomplete": 1})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.limits.open_total, 0)

    def test_half_close_after_header_echoes_all(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(V1_TCP4 + b"tail")
        protocol.readConnectionLost()
        self.assertEqual(transport.value(), b"tail")
        self.assertTrue(transport.disconnecting)

    def test_welcome_banner_after_header(self) -> None:
        factory = WelcomeFactory(self.clock, banner="hi", limits=self.limits)
        first = factory.buildProtocol(PEER, proxy_header=True)
        assert isinstance(first, ProxyHeaderProtocol)
        assert isinstance(first.service, Welcome)
        transport = StringTransport(peerAddress=PEER)
        protocol = Proxied(first, transport)
        first.makeConnection(transport)
        self.assertEqual(transport.value(), b"")
        protocol.dataReceived(V1_TCP4[:-1])
        self.assertEqual(transport.value(), b"")
        protocol.dataReceived(b"\nline\r\n")
        self.assertEqual(transport.value(), b"hi\r\nOK...line\r\n")

    def test_welcome_lost_before_header(self) -> None:
        factory = WelcomeFactory(self.clock, limits=self.limits)
        first = factory.buildProtocol(PEER, proxy_header=True)
        assert isinstance(first, ProxyHeaderProtocol)
        assert isinstance(first.service, Welcome)
        transport = StringTransport(peerAddress=PEER)
        protocol = Proxied(first, transport)
        first.makeConnection(transport)
        protocol.dataReceived(b"PROXY TC")
        protocol.connectionLost(None)
        self.assertEqual(dict(factory.counters.refused), {"proxy_incomplete": 1})
        self.assertEqual(factory.counters.connections_open, 0)
        self.assertEqual(self.limits.open_total, 0)

    def test_max_connections_still_checked_at_accept(self) -> None:
        factory = EchoFactory(self.clock, limits=ConnectionLimits(1, 0))
        self.connect(factory)
        refused = factory.buildProtocol(PEER, proxy_header=True)
        self.assertIsInstance(refused, Refused)
        self.assertEqual(factory.counters.refused["max_connections"], 1)

    def test_split_description(self) -> None:
        self.assertEqual(
            split_proxy_description("haproxy:tcp:7007:interface=127.0.0.1"),
            (True, "tcp:7007:interface=127.0.0.1"),
        )
        self.assertEqual(split_proxy_description("tcp:7007"), (False, "tcp:7007"))


class ProxiedLoopbackTests(TestCase):
    """
    A C{haproxy:} listener over real sockets.
    """

    async def test_v2_header_then_1mib_half_closed(self) -> None:
        factory = EchoFactory(
            reactor, limits=ConnectionLimits(0, 0), timeouts=Timeouts()
        )
        endpoint = ProxyHeaderEndpoint(
            TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        )
        port = await endpoint.listen(factory)
        use_lean_transport(port)
        self.addCleanup(port.stopListening)
        payload = os.urandom(1 << 20)
        client = await exchange(port.getHost().port, v2() + payload)
        self.assertEqual(client.count, len(payload))
        self.assertEqual(client.digest.digest(), hashlib.sha256(payload).digest())
        self.assertEqual(factory.counters.bytes_in, len(payload))

    def test_connection_log_prefix_names_the_service(self) -> None:
        """
        The transport's log prefix (Twisted's C{tcp.Server} makes it once,
        before the header is read) names the service's protocol.
        """
        protocol = EchoFactory(reactor).buildProtocol(PEER, proxy_header=True)
        assert protocol is not None
        self.assertEqual(protocol.logPrefix(), "Echo")

    def test_port_log_names_the_service_factory(self) -> None:
        factory = ProxyHeaderFactory(EchoFactory(reactor))
        self.assertEqual(factory.logPrefix(), "EchoFactory")


class ProxyOptionsTests(TestCase):
    """
    The C{haproxy:} prefix in the listener options (L{tap.Options}).
    """

    def parse(self, *args: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(list(args))
        return options

    def test_prefix_gives_a_proxy_header_endpoint(self) -> None:
        config = self.parse("--echo", "haproxy:tcp:7007:interface=127.0.0.1")
        endpoint = config.stream_endpoint(config.listeners["echo"][0], reactor)
        self.assertIsInstance(endpoint, ProxyHeaderEndpoint)

    def test_refused_combinations(self) -> None:
        for args in (
            ("--echo", "haproxy:ssl:7207"),
            ("--echo", "haproxy:haproxy:tcp:7007"),
            ("--upper", "haproxy:udp:7007"),
            ("--metrics", "haproxy:tcp:9100"),
            ("--udp", "haproxy:udp:7007"),
            ("--echo", "haproxy:tcp:notaport"),
            ("--whoami", "haproxy:udp:7010"),
        ):
            self.assertRaises(usage.UsageError, self.parse, *args)

    async def test_service_reads_header_then_serves(self) -> None:
        """
        A server built from C{--welcome haproxy:...}: the banner comes after
        the header, and the header's client is counted.
        """
        top = tap.makeService(
            self.parse(
                "--no-echo", "--no-upper", "--no-udp",
                "--welcome", "haproxy:tcp:0:interface=127.0.0.1",
                "--banner", "hi",
            )
        )  # fmt: skip
        top.privilegedStartService()
        top.startService()
        self.addCleanup(top.stopService)
        (listener,) = list(top)
        port = listener.port.getHost().port  # type: ignore[attr-defined]
        client = await exchange(port, V1_TCP4 + b"one\r\n")
        self.assertEqual(b"".join(client.received), b"hi\r\nOK...one\r\n")
        self.assertEqual(top.counters["welcome"].connections_total, 1)  # type: ignore[attr-defined]


def wait_for_log(path: str, pattern: str) -> re.Match[str]:
    """
    Wait (polling, at most C{IO_TIMEOUT} seconds) until the log file at
    C{path} matches C{pattern}.

    @return: the match.
    @raise AssertionError: when it did not in time.
    """
    seen: list[str] = [""]
    found: list[re.Match[str]] = []

    def matched() -> bool:
        if os.path.exists(path):
            with open(path, encoding="utf-8", errors="replace", newline="") as f:
                seen[0] = f.read()
        found[:] = [m] if (m := re.search(pattern, seen[0])) else []
        return bool(found)

    if not wait_until(matched, IO_TIMEOUT, interval=0.05):
        raise AssertionError(f"{pattern!r} not in {seen[0]!r}")
    return found[0]


class ForgedLogLineTests(TestCase):
    """
    A real C{twistd -n sockecho} with a C{haproxy:} listener and its log in
    a file: a version 2 header whose UNIX source path holds a CR, a log
    line of its own and an ESC sequence forges no line.
    """

    PATH = (
        b"/x\r2026-01-01T00:00:00+0000 [twisted_echo.app.server#critical] "
            b"FORGED\x1b[2J\n"
    )

    def read_log(self, path: str, pattern: str) -> re.Match[str]:
        return wait_for_log(path, pattern)

    def test_unix_path_with_cr_and_esc(self) -> None:
        self.check_unix_path()

    def test_unix_path_with_cr_and_esc_through_workers(self) -> None:
        """
        With C{--workers}, a worker's line travels exact (JSON) to the
        supervisor, whose text log escapes it.
        """
        self.check_unix_path("--workers", "2")

    def check_unix_path(self, *args: str) -> None:
        log = os.path.join(temp_dir(self), "twistd.log")
        server = RunningServer(
            self,
            ["--no-upper", "--no-welcome", "--no-udp",
             "--echo", "haproxy:tcp:0:interface=127.0.0.1", *args],
            twistd_options=[f"--logfile={log}"],
        )  # fmt: skip
        port = int(self.read_log(log, r"echo listening on tcp:127\.0\.0\.1:(\d+)\n")[1])
        addresses = self.PATH.ljust(108, b"\0") + b"/run/y.sock".ljust(108, b"\0")
        header = v2(family_protocol=0x31, addresses=addresses)
        self.assertEqual(tcp_exchange(port, header + b"ping"), b"ping")
        self.read_log(log, r"closed: 4 bytes in")
        server.stop()
        with open(log, "rb") as f:
            data = f.read()
        self.assertNotIn(b"\r", data)
        self.assertNotIn(b"\x1b", data)
        for line in data.decode("utf-8").split("\n")[:-1]:
            self.assertRegex(line, r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[|\t)")
            self.assertNotRegex(line, r"^2026-01-01T00:00:00")
        escaped = (
            "echo connection from unix:/x\\r2026-01-01T00:00:00+0000 "
            "[twisted_echo.app.server#critical] FORGED\\x1b[2J\\n"
        )
        self.assertIn(escaped + " via tcp:127.0.0.1:", data.decode())
        self.assertIn(escaped + " closed: 4 bytes in, 4 bytes out", data.decode())
        self.assertEqual(data.count(b"FORGED"), 2)
