"""
Tests for L{twisted_echo.listening.listen}: listeners, UDP addresses, listen errors.
"""

from __future__ import annotations

import errno
import socket

from twisted.internet import reactor, udp
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import TestCase

from tests.test_udp import UDPTestCase, address_of
from twisted_echo.listening import listen
from twisted_echo.listening.datagram import DatagramPort
from twisted_echo.listening.listen import (
    ListenError,
    StreamListenerService,
    UDPAddress,
    explain_listen_failure,
    parse_udp_description,
)
from twisted_echo.services.echo import EchoFactory
from twisted_echo.services.udp import UDPEcho


class ParseUDPDescriptionTests(TestCase):
    """
    C{udp:PORT[:interface=ADDR]}, in Twisted's endpoint string syntax.
    """

    def test_forms(self) -> None:
        for text, expected in [
            ("udp:7007", UDPAddress(7007, "")),
            ("udp:0:interface=127.0.0.1", UDPAddress(0, "127.0.0.1")),
            ("udp:port=53:interface=\\:\\:1", UDPAddress(53, "::1")),
        ]:
            self.assertEqual(parse_udp_description(text), expected, text)

    def test_errors_name_the_problem(self) -> None:
        for text, words in [
            ("tcp:7007", "expected udp:PORT"),
            ("udp:", "no port"),
            ("udp:seven", "bad port 'seven'"),
            ("udp:70000", "out of range"),
            ("udp:7:colour=red", "unknown udp parameter 'colour'"),
            ("udp:7:8", "too many ports"),
        ]:
            with self.assertRaises(ValueError) as caught:
                parse_udp_description(text)
            self.assertIn(words, str(caught.exception), text)


class ExplainListenFailureTests(TestCase):
    def test_busy_port_in_words(self) -> None:
        error = CannotListenError(
            "127.0.0.1", 7007, OSError(errno.EADDRINUSE, "Address already in use")
        )
        self.assertEqual(explain_listen_failure(error), "address already in use")

    def test_other_errors_keep_their_message(self) -> None:
        self.assertEqual(
            explain_listen_failure(ValueError("no such file")), "no such file"
        )


class StreamListenerServiceTests(TestCase):
    """
    One TCP listener as a service.
    """

    def test_logs_the_real_bound_address(self) -> None:
        """
        With port 0, the log says which port was really bound.
        """
        service = StreamListenerService(
            "tcp:0:interface=127.0.0.1",
            TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
            EchoFactory(reactor),  # type: ignore[arg-type]
            "echo",
        )
        with capturedLogs() as events:
            service.privilegedStartService()
        self.addCleanup(service.stopService)
        assert service.port is not None
        port = service.port.getHost().port
        self.assertNotEqual(port, 0)
        messages = [e.get("address") for e in events if e.get("service") == "echo"]
        self.assertEqual(messages, [f"tcp:127.0.0.1:{port}"])

    def test_busy_port_raises_listen_error(self) -> None:
        """
        A port already in use is reported as a L{ListenError} naming the
        address as the user wrote it.
        """
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        number = busy.getsockname()[1]
        description = f"tcp:{number}:interface=127.0.0.1"
        service = StreamListenerService(
            description,
            TCP4ServerEndpoint(reactor, number, interface="127.0.0.1"),
            EchoFactory(reactor),  # type: ignore[arg-type]
            "echo",
        )
        with self.assertRaises(ListenError) as caught:
            service.privilegedStartService()
        self.assertEqual(
            str(caught.exception),
            f"cannot listen on {description}: address already in use",
        )


class DatagramListenerServiceTests(UDPTestCase):
    """
    One UDP listener as a service: L{DatagramPort}, or Twisted's stock
    L{udp.Port} when L{twisted_echo.listening.datagram.datagram_port_problem} finds one.
    """

    async def test_fast_port_when_twisted_is_as_expected(self) -> None:
        echo = UDPEcho()
        with capturedLogs() as events:
            service = self.listen_echo(echo)
        self.assertIsInstance(service.port, DatagramPort)
        self.assertEqual([e for e in events if "problem" in e], [])
        await self.echoes(address_of(service), b"x")

    async def test_stock_port_when_the_check_fails(self) -> None:
        """
        When the check fails, the listener says so in one info line and
        uses Twisted's stock L{udp.Port}, which still echoes the largest
        datagram whole and keeps the loop guard.
        """
        self.patch(listen, "datagram_port_problem", lambda: "forced by the test")
        echo = UDPEcho()
        with capturedLogs() as events:
            service = self.listen_echo(echo)
        self.assertIs(type(service.port), udp.Port)
        stock = [e for e in events if "problem" in e]
        self.assertEqual(len(stock), 1)
        self.assertEqual(stock[0]["log_level"].name, "info")
        self.assertEqual(stock[0]["problem"], "forced by the test")
        self.assertIn("stock udp.Port", stock[0]["log_format"])
        await self.echoes(address_of(service), b"y" * 65507)
        self.assertEqual(echo.loop_guard.own_ports, {address_of(service)[1]})

    async def test_stock_port_on_a_wildcard_address_warns(self) -> None:
        """
        On a wildcard address the stock L{udp.Port} lets the kernel pick
        each reply's source: the line is a warning that says so, and the
        port still echoes.
        """
        self.patch(listen, "datagram_port_problem", lambda: "forced by the test")
        with capturedLogs() as events:
            service = self.listen_echo(UDPEcho(), "0.0.0.0")
        self.assertIs(type(service.port), udp.Port)
        [stock] = [e for e in events if "problem" in e]
        self.assertEqual(stock["log_level"].name, "warn")
        self.assertIn("connected client drops", stock["consequence"])
        await self.echoes(("127.0.0.1", service.port.getHost().port), b"w")

    async def test_wildcard_listener_uses_the_fast_port(self) -> None:
        """
        A wildcard listener is a L{DatagramPort} replying from each
        datagram's destination, and logs no problem.
        """
        with capturedLogs() as events:
            service = self.listen_echo(UDPEcho(), "0.0.0.0")
        self.assertIsInstance(service.port, DatagramPort)
        self.assertTrue(service.port.reply_from_destination)
        self.assertEqual([e for e in events if "problem" in e], [])


class ExposureTests(TestCase):
    """
    L{listen.exposure}: which bound addresses are open beyond loopback.
    """

    def test_loopback_and_unix_are_not(self) -> None:
        from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

        for address in [
            IPv4Address("TCP", "127.0.0.1", 7),
            IPv4Address("UDP", "127.1.2.3", 7),
            IPv6Address("TCP", "::1", 7),
            IPv6Address("TCP", "::ffff:127.0.0.1", 7),
            UNIXAddress(b"/run/sockecho.sock"),
        ]:
            self.assertIsNone(listen.exposure(address), address)

    def test_wildcards_and_other_addresses_are(self) -> None:
        from twisted.internet.address import IPv4Address, IPv6Address

        for address, expected in [
            (IPv4Address("TCP", "0.0.0.0", 7), "every IPv4 interface"),
            (IPv4Address("UDP", "0.0.0.0", 7), "every IPv4 interface"),
            (IPv6Address("TCP", "::", 7), "every interface"),
            (IPv4Address("TCP", "192.0.2.1", 7), "a non-loopback address"),
            (IPv6Address("TCP", "fe80::1%lo", 7), "a non-loopback address"),
        ]:
            self.assertEqual(listen.exposure(address), expected, address)

    def test_listener_warns_once_listening(self) -> None:
        """
        A listener on every interface logs the info line and then a warning
        naming the address; one on loopback only the info line.
        """
        for interface, warnings in [("", 1), ("127.0.0.1", 0)]:
            service = listen.StreamListenerService(
                "tcp:0",
                TCP4ServerEndpoint(reactor, 0, interface=interface),
                EchoFactory(reactor),  # type: ignore[arg-type]
                "echo",
            )
            with capturedLogs() as events:
                service.privilegedStartService()
            self.addCleanup(service.stopService)
            warned = [e for e in events if e["log_level"].name == "warn"]
            self.assertEqual(len(warned), warnings, interface)
            if warned:
                port = service.port.getHost().port
                self.assertEqual(
                    formatEvent(warned[0]),
                    f"echo listening on tcp:0.0.0.0:{port} is open beyond loopback "
                    "(every IPv4 interface); give the endpoint interface=127.0.0.1 "
                    "to keep it to this host",
                )
