# -*- test-case-name: tests.test_datagram -*-
"""
Tests for L{twisted_echo.listening.datagram}: the datagram port's check of
the Twisted internals it uses, its fallback, and its replies from the
address each datagram was sent to on a wildcard address.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from twisted.internet import reactor, udp
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import TestCase

from tests.loopback import wait_until
from tests.test_udp import TIMEOUT, UDPTestCase, has_ipv6_loopback
from twisted_echo.listening import datagram as datagram_module
from twisted_echo.listening.datagram import (
    IP_PKTINFO,
    IPV6_PKTINFO,
    MAX_DATAGRAM,
    DatagramPort,
    datagram_port_problem,
    is_wildcard,
    reply_ancillary,
)
from twisted_echo.policies.counters import ServiceCounters
from twisted_echo.policies.loopguard import LoopGuard
from twisted_echo.policies.ratelimit import SourceRateLimiter
from twisted_echo.services.udp import UDPEcho


class _SocketlessDatagramPort(DatagramPort):
    """
    A L{DatagramPort} whose system handle, once listening, is not a socket.
    """

    def getHandle(self) -> object:
        return object()


class FastPathCheckTests(UDPTestCase):
    """
    L{datagram_port_problem}, and the stock L{udp.Port} when it fails.
    """

    def test_installed_twisted_passes(self) -> None:
        """
        The installed Twisted's L{udp.Port} is as L{DatagramPort} expects,
        and listeners use L{DatagramPort}: a Twisted release that changes
        what it relies on fails here.
        """
        self.assertIsNone(datagram_port_problem())
        service = self.listen_echo(UDPEcho())
        self.assertIsInstance(service.port, DatagramPort)
        self.assertIsNotNone(service.port._receive)

    def test_changes_are_found(self) -> None:
        """
        Each change of what L{DatagramPort} relies on is named.
        """

        class NoDoRead(udp.Port):
            doRead = None

        class RenamedArgument(udp.Port):
            def __init__(
                self,
                port: int,
                protocol: Any,
                interface: str = "",
                maxPacketSize: int = 8192,  # noqa: N803
                reactor: Any = None,
            ) -> None:
                udp.Port.__init__(self, port, protocol, interface, maxPacketSize)

        class KeepsProtocolElsewhere(udp.Port):
            def __init__(
                self,
                port: int,
                proto: Any,
                interface: str = "",
                maxPacketSize: int = 8192,  # noqa: N803
                reactor: Any = None,
            ) -> None:
                self._protocol = proto

        class NoThroughput(udp.Port):
            maxThroughput = None  # type: ignore[assignment]

        class NewDoRead(udp.Port):
            def doRead(self) -> None:
                pass

        for port_class, words in [
            (NoDoRead, "NoDoRead.doRead is not a Python function"),
            (RenamedArgument, "RenamedArgument.__init__ takes"),
            (KeepsProtocolElsewhere, "no longer sets protocol and maxPacketSize"),
            (NoThroughput, "maxThroughput is None, not a positive int"),
            (NewDoRead, "doRead no longer uses addressFamily, datagramReceived"),
        ]:
            problem = datagram_port_problem(port_class)
            self.assertIsNotNone(problem, port_class)
            self.assertIn(words, str(problem))

    async def test_port_without_socket_handle_reads_stock(self) -> None:
        """
        A L{DatagramPort} whose handle is not a socket once listening reads
        with L{udp.Port.doRead}, and its protocol writes with
        C{transport.write}: it still echoes.
        """
        echo = UDPEcho()
        port = _SocketlessDatagramPort(0, echo, "127.0.0.1", MAX_DATAGRAM, reactor)
        port.startListening()
        self.addCleanup(port.stopListening)
        self.assertIsNone(port._receive)
        await self.echoes(("127.0.0.1", port.getHost().port), b"z" * 65507)


class WildcardReplyTests(UDPTestCase):
    """
    A listener on a wildcard address (C{0.0.0.0}, C{::}) replies from the
    address each datagram was sent to, so that a connected client, which
    accepts datagrams from that address only, gets its reply (issue 10).
    """

    async def test_connected_clients_of_every_ipv4_address(self) -> None:
        """
        On a C{0.0.0.0} listener, connected clients sending to 127.0.0.1,
        127.0.0.2 and 127.1.2.3 (all local: 127.0.0.0/8 is routed to the
        loopback interface) each get their reply.
        """
        echo = UDPEcho()
        port = self.listen_echo(echo, "0.0.0.0").port.getHost().port
        for host in ("127.0.0.1", "127.0.0.2", "127.1.2.3"):
            payload = f"to {host}".encode()
            reply = await self.connected_echo(socket.AF_INET, (host, port), payload)
            self.assertEqual(reply, payload, f"no reply from {host}")
        self.assertEqual(echo.counters.datagrams_out, 3)
        self.assertEqual(dict(echo.counters.dropped), {})

    async def test_ipv6_wildcard(self) -> None:
        """
        On a C{::} listener, a connected client to ::1 gets its reply; so
        do connected IPv4 clients to 127.0.0.1 and 127.0.0.2 when the
        socket also takes IPv4 (C{IPV6_V6ONLY} off, Linux's default): their
        datagrams arrive as IPv4-mapped addresses (C{::ffff:127.0.0.2},
        RFC 4291 section 2.5.5.2) and the reply leaves from that address.
        """
        if not has_ipv6_loopback():
            raise self.skipTest("no IPv6 loopback (::1) here")
        echo = UDPEcho()
        service = self.listen_echo(echo, "::")
        port = service.port.getHost().port
        reply = await self.connected_echo(socket.AF_INET6, ("::1", port), b"six")
        self.assertEqual(reply, b"six")
        sock = service.port.getHandle()
        if sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY):
            raise self.skipTest("this :: socket takes IPv6 only (bindv6only=1)")
        for host in ("127.0.0.1", "127.0.0.2"):
            payload = f"mapped {host}".encode()
            reply = await self.connected_echo(socket.AF_INET, (host, port), payload)
            self.assertEqual(reply, payload, f"no reply from {host}")
        self.assertEqual(echo.counters.datagrams_out, 3)

    async def test_largest_datagram_to_a_second_address(self) -> None:
        """
        A 65507-byte datagram (the IPv4 maximum) sent to 127.0.0.2 on a
        C{0.0.0.0} listener comes back whole to the connected client.
        """
        port = self.listen_echo(UDPEcho(), "0.0.0.0").port.getHost().port
        payload = bytes(range(256)) * 255 + b"x" * 227
        reply = await self.connected_echo(socket.AF_INET, ("127.0.0.2", port), payload)
        self.assertEqual(reply, payload)

    def test_only_wildcard_ports_use_packet_information(self) -> None:
        """
        A wildcard port replies with L{DatagramPort.reply}; a port bound
        to one address keeps C{recvfrom_into} and the socket's C{sendto}.
        """
        wild_echo, one_echo = UDPEcho(), UDPEcho()
        wild = self.listen_echo(wild_echo, "0.0.0.0").port
        one = self.listen_echo(one_echo, "127.0.0.1").port
        self.assertTrue(wild.reply_from_destination)
        self.assertEqual(wild_echo._sendto, wild.reply)
        self.assertFalse(one.reply_from_destination)
        self.assertEqual(one_echo._sendto, one.getHandle().sendto)

    async def test_loop_guard_on_wildcard_listeners(self) -> None:
        """
        The loop guard holds on wildcard listeners: a datagram from
        listener A's socket to listener B's second address is dropped by B
        as C{own_port}, and A gets nothing.
        """
        guard = LoopGuard()
        a = UDPEcho(ServiceCounters(), loop_guard=guard)
        b = UDPEcho(ServiceCounters(), loop_guard=guard)
        a_port = self.listen_echo(a, "0.0.0.0").port
        b_port = self.listen_echo(b, "0.0.0.0").port
        a_port.write(b"loop?", ("127.0.0.2", b_port.getHost().port))
        await wait_until(lambda: b.counters.datagrams_in, TIMEOUT)
        self.assertEqual(dict(b.counters.dropped), {"own_port": 1})
        self.assertEqual(b.counters.datagrams_out, 0)
        # Fence: A answers this only after reading all queued before it.
        fence = await self.connected_echo(
            socket.AF_INET, ("127.0.0.2", a_port.getHost().port), b"fence"
        )
        self.assertEqual(fence, b"fence")
        self.assertEqual(a.counters.datagrams_in, 1)

    async def test_rate_limit_on_a_wildcard_listener(self) -> None:
        """
        The per-source limit holds: with a burst of 2 and a clock that does
        not move, 2 of 3 datagrams are answered, the third is counted as
        C{rate_source}.
        """
        echo = UDPEcho(source_limit=SourceRateLimiter(1, 2, Clock()))
        port = self.listen_echo(echo, "0.0.0.0").port.getHost().port
        for payload in (b"1", b"2"):
            reply = await self.connected_echo(
                socket.AF_INET, ("127.0.0.2", port), payload
            )
            self.assertEqual(reply, payload)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.sendto(b"3", ("127.0.0.2", port))
        await wait_until(lambda: echo.counters.datagrams_in == 3, TIMEOUT)
        self.assertEqual(dict(echo.counters.dropped), {"rate_source": 1})
        self.assertEqual(echo.counters.datagrams_out, 2)

    async def test_send_error_is_counted_not_raised(self) -> None:
        """
        A reply the kernel refuses (C{ENOBUFS}) on a wildcard listener is
        counted as C{send_error}; nothing is logged as an error.
        """
        echo = UDPEcho()
        service = self.listen_echo(echo, "0.0.0.0")

        def full(*args: Any) -> int:
            raise OSError(errno.ENOBUFS, "No buffer space available")

        service.port._sendmsg = full
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.sendto(b"x", ("127.0.0.2", service.port.getHost().port))
        await wait_until(lambda: echo.counters.datagrams_in, TIMEOUT)
        self.assertEqual(dict(echo.counters.dropped), {"send_error": 1})
        self.assertEqual(echo.counters.datagrams_out, 0)
        self.assertEqual(self.flushLoggedErrors(), [])

    async def test_refused_source_falls_back_to_the_kernels_choice(self) -> None:
        """
        If the kernel refuses the destination as a reply's source
        (C{EINVAL}: removed since, or a broadcast address), the reply is
        sent without it, as before.
        """
        echo = UDPEcho()
        service = self.listen_echo(echo, "0.0.0.0")
        real = service.port._sendmsg
        tried: list[object] = []

        def refuse_source(buffers: Any, ancillary: Any, *rest: Any) -> int:
            tried.append(ancillary)
            if ancillary:
                raise OSError(errno.EINVAL, "Invalid argument")
            return real(buffers, ancillary, *rest)  # type: ignore[no-any-return]

        service.port._sendmsg = refuse_source
        address = ("127.0.0.1", service.port.getHost().port)
        self.assertEqual(await self.connected_echo(socket.AF_INET, address, b"r"), b"r")
        self.assertEqual(len(tried), 2)
        self.assertTrue(tried[0])
        self.assertEqual(tried[1], ())
        self.assertEqual(echo.counters.datagrams_out, 1)

    async def test_without_packet_information_warns_and_echoes(self) -> None:
        """
        Where the platform has no C{IP_PKTINFO}, a wildcard listener logs a
        warning naming the consequence and replies as before (the kernel
        picks the source).
        """
        self.patch(datagram_module, "IP_PKTINFO", None)
        echo = UDPEcho()
        with capturedLogs() as events:
            service = self.listen_echo(echo, "0.0.0.0")
        self.assertFalse(service.port.reply_from_destination)
        # The other warning says the listener is open beyond loopback.
        [warning] = [
            e for e in events if e["log_level"].name == "warn" and "problem" in e
        ]
        self.assertIn("no packet information", warning["problem"])
        self.assertIn("connected client drops", warning["log_format"])
        address = ("127.0.0.1", service.port.getHost().port)
        self.assertEqual(await self.connected_echo(socket.AF_INET, address, b"o"), b"o")


class ReplyAncillaryTests(TestCase):
    """
    L{reply_ancillary}: the control message that sets a reply's source, from
    the one that gave the datagram's destination.
    """

    def test_ipv4_zeroes_the_interface_index(self) -> None:
        """
        C{in_pktinfo} (ip(7)): the interface index is zeroed, C{ipi_spec_dst}
        kept (the kernel's source), the rest as received.
        """
        received = (
            (7).to_bytes(4, "little")
            + socket.inet_aton("127.0.0.2")
            + socket.inet_aton("127.0.0.2")
        )
        [(level, kind, data)] = reply_ancillary(
            socket.IPPROTO_IP,
            IP_PKTINFO,
            received,  # type: ignore[arg-type]
        )
        self.assertEqual((level, kind), (socket.IPPROTO_IP, IP_PKTINFO))
        self.assertEqual(data, b"\0\0\0\0" + received[4:])

    def _ipv6(self, host: str, index: int = 3) -> list[Any]:
        data = socket.inet_pton(socket.AF_INET6, host) + index.to_bytes(4, "little")
        return reply_ancillary(socket.IPPROTO_IPV6, IPV6_PKTINFO, data)  # type: ignore[arg-type]

    def test_ipv6(self) -> None:
        """
        C{in6_pktinfo} (RFC 3542): the address is kept; the interface index
        is zeroed except for a link-local address, valid only with it.
        """
        for host, index in [
            ("2001:db8::7", 0),
            ("::1", 0),
            ("::ffff:192.0.2.7", 0),
            ("fe80::1", 3),
        ]:
            [(_, _, data)] = self._ipv6(host)
            self.assertEqual(
                data,
                socket.inet_pton(socket.AF_INET6, host) + index.to_bytes(4, "little"),
                host,
            )

    def test_destinations_that_cannot_be_sources(self) -> None:
        """
        Multicast, IPv4-mapped multicast and limited broadcast: no control
        message, the kernel picks the source.
        """
        for host in ("ff02::1", "::ffff:224.0.0.1", "::ffff:255.255.255.255"):
            self.assertEqual(self._ipv6(host), [], host)

    def test_other_messages(self) -> None:
        self.assertEqual(reply_ancillary(socket.IPPROTO_IP, 1, b"x" * 12), [])
        self.assertEqual(
            reply_ancillary(socket.IPPROTO_IP, IP_PKTINFO, b"x"),  # type: ignore[arg-type]
            [],
        )


class IsWildcardTests(TestCase):
    def test_forms(self) -> None:
        for host, expected in [
            ("", True),
            ("0.0.0.0", True),
            ("::", True),
            ("0:0::0", True),
            ("127.0.0.1", False),
            ("::1", False),
            ("fe80::1%lo", False),
            ("localhost", False),
        ]:
            self.assertEqual(is_wildcard(host), expected, host)
