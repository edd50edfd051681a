"""
Tests for L{twisted_echo.listening.endpoints}: the one reader of listening
addresses, and the places that ask it.
"""

from __future__ import annotations

import shutil
import socket
import tempfile

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import TestCase

from twisted_echo.app.options import Options, is_datagram_description, with_backlog
from twisted_echo.listening.activation import (
    is_systemd_description,
    parse_systemd_description,
)
from twisted_echo.listening.endpoints import parse_description
from twisted_echo.listening.listen import parse_datagram_description
from twisted_echo.listening.tls import is_tls_description


class ParseDescriptionTests(TestCase):
    """
    L{parse_description} reads each kind, its fields and the wrapper.
    """

    def test_tcp(self) -> None:
        parsed = parse_description("tcp:7007:interface=127.0.0.1")
        self.assertEqual(parsed.kind, "tcp")
        self.assertEqual(parsed.args, ("7007",))
        self.assertEqual(parsed.option("interface"), "127.0.0.1")
        self.assertFalse(parsed.datagram or parsed.tls or parsed.systemd)
        self.assertFalse(parsed.proxied)

    def test_tcp6_escaped_colons(self) -> None:
        parsed = parse_description("tcp6:7007:interface=\\:\\:1")
        self.assertEqual(parsed.kind, "tcp6")
        self.assertEqual(parsed.option("interface"), "::1")
        self.assertEqual(parsed.inner, "tcp6:7007:interface=\\:\\:1")

    def test_unix(self) -> None:
        parsed = parse_description("unix:/run/sockecho.sock:mode=600")
        self.assertEqual(parsed.kind, "unix")
        self.assertEqual(parsed.args, ("/run/sockecho.sock",))
        self.assertEqual(parsed.option("mode"), "600")

    def test_ssl(self) -> None:
        parsed = parse_description("ssl:0:privateKey=k.pem:certKey=c.pem")
        self.assertTrue(parsed.tls)
        self.assertEqual(parsed.option("certKey"), "c.pem")

    def test_udp(self) -> None:
        parsed = parse_description("udp:7007")
        self.assertTrue(parsed.datagram)
        self.assertEqual(parsed.args, ("7007",))

    def test_systemd(self) -> None:
        parsed = parse_description("systemd:name=echo")
        self.assertTrue(parsed.systemd)
        self.assertEqual(parsed.option("name"), "echo")
        self.assertEqual(parse_description("systemd:").options, ())

    def test_haproxy_wrapped(self) -> None:
        parsed = parse_description("haproxy:unix:/run/s.sock")
        self.assertTrue(parsed.proxied)
        self.assertEqual(parsed.kind, "unix")
        self.assertEqual(parsed.inner, "unix:/run/s.sock")
        self.assertEqual(parse_description("haproxy:haproxy:tcp:0").kind, "haproxy")

    def test_whitespace(self) -> None:
        """
        Whitespace around the description, or after C{haproxy:}, is not
        part of it, for every kind.
        """
        for text, kind in [
            ("  tcp:0 ", "tcp"),
            (" ssl:0", "ssl"),
            ("\tudp:0\n", "udp"),
            (" systemd:index=0", "systemd"),
            (" haproxy: tcp:0", "tcp"),
        ]:
            parsed = parse_description(text)
            self.assertEqual(parsed.kind, kind, text)
            self.assertEqual(parsed.given, text)
            self.assertFalse(parsed.inner[:1].isspace(), text)

    def test_every_sniffer_agrees(self) -> None:
        """
        The old per-module kind tests now all read L{parse_description},
        with surrounding whitespace alike (the systemd one did not strip it).
        """
        self.assertTrue(is_systemd_description(" systemd:index=0"))
        self.assertTrue(is_tls_description(" ssl:0"))
        self.assertTrue(is_datagram_description(" udp:0"))
        self.assertEqual(parse_systemd_description(" systemd:index=2").index, 2)
        self.assertEqual(parse_datagram_description(" udp:7007").port, 7007)
        self.assertEqual(parse_datagram_description(" systemd:index=1").index, 1)

    def test_backlog_added_after_whitespace(self) -> None:
        self.assertEqual(with_backlog(" tcp:0 ", 5), "tcp:0:backlog=5")
        self.assertEqual(with_backlog("tcp:0:backlog=7", 5), "tcp:0:backlog=7")
        self.assertEqual(with_backlog("systemd:index=0", 5), "systemd:index=0")


class WhitespaceListenerTests(TestCase):
    """
    A listener given with surrounding whitespace (as a quoted shell
    argument or a config line may carry) listens, over a real socket.
    """

    def test_tcp_with_spaces_listens(self) -> None:
        from twisted.internet import reactor

        options = Options()
        options.parseOptions(["--echo", " tcp:0:interface=127.0.0.1 "])
        endpoint = options.stream_endpoint(options.listeners["echo"][0], reactor)
        connected: Deferred[None] = Deferred()

        class Note(Protocol):
            def connectionMade(self) -> None:
                connected.callback(None)

        listening = endpoint.listen(Factory.forProtocol(Note))

        def connect(port: object) -> Deferred[None]:
            self.addCleanup(port.stopListening)  # type: ignore[attr-defined]
            address = port.getHost()  # type: ignore[attr-defined]
            self.assertIsInstance(address, IPv4Address)
            client = socket.create_connection(("127.0.0.1", address.port))
            self.addCleanup(client.close)
            return connected

        return listening.addCallback(connect)

    def test_bad_haproxy_kind_after_whitespace(self) -> None:
        options = Options()
        error = self.assertRaises(
            usage.UsageError,
            options.parseOptions,
            ["--echo", "haproxy: ssl:0"],
        )
        self.assertIn("haproxy: does not take ssl:", str(error))


class TLSProbeTests(TestCase):
    """
    The check that sockecho's TLS layer fits the installed Twisted runs
    where a TLS listener really opens, not in a supervisor that only asks
    the endpoint where it would listen.
    """

    def setUp(self) -> None:
        from twisted_echo.listening import tls
        from twisted_echo.testing.spawn import make_certificate

        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        cert, key = make_certificate(directory)
        self.description = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        self.checks: list[None] = []
        real = tls.tls_layer_problem

        def counting() -> str | None:
            self.checks.append(None)
            return real()

        self.patch(tls, "tls_layer_problem", counting)

    def test_supervisor_does_not_check(self) -> None:
        options = Options()
        options.parseOptions(
            ["--echo", self.description, "--no-upper", "--no-welcome", "--no-udp"]
        )
        from twisted_echo.app.options import listener_keys
        from twisted_echo.app.supervisor import Supervisor

        supervisor = Supervisor(
            [], listener_keys(options), options.stream_endpoint, 2, Clock(), 10
        )
        supervisor.privilegedStartService()
        for listener in supervisor.listeners:
            for sock in listener.sockets:
                self.addCleanup(sock.close)
        self.assertEqual([listener.kind for listener in supervisor.listeners], ["ssl"])
        self.assertEqual(self.checks, [])

    def test_listener_checks_once_when_it_opens(self) -> None:
        from twisted.internet import reactor

        options = Options()
        options.parseOptions(
            ["--echo", self.description, "--no-upper", "--no-welcome", "--no-udp"]
        )
        self.assertEqual(self.checks, [])
        endpoint = options.stream_endpoint(options.listeners["echo"][0], reactor)
        listening = endpoint.listen(Factory.forProtocol(Protocol))

        def opened(port: object) -> None:
            self.addCleanup(port.stopListening)  # type: ignore[attr-defined]
            self.assertEqual(self.checks, [None])

        return listening.addCallback(opened)
