"""
Tests for L{twisted_echo.client.endpoints}.
"""

from __future__ import annotations

import socket

from twisted.internet import defer, error
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase

from twisted_echo.client.endpoints import (
    DatagramTarget,
    EndpointError,
    explain_connect_failure,
    is_datagram,
    parse_datagram_endpoint,
    resolve_datagram_target,
    stream_endpoint,
)


class DatagramEndpointTests(TestCase):
    def test_forms(self) -> None:
        for text, host, port in [
            ("udp:127.0.0.1:7", "127.0.0.1", 7),
            ("UDP:localhost:7007", "localhost", 7007),
            ("udp:\\:\\:1:7", "::1", 7),
            ("udp:[::1]:7", "::1", 7),
            ("udp:host=::1:port=9", None, None),
            ("udp:port=9:host=example.org", "example.org", 9),
        ]:
            if host is None:
                # Unescaped colons in a keyword value cannot be told apart.
                self.assertRaises(EndpointError, parse_datagram_endpoint, text)
                continue
            self.assertEqual(parse_datagram_endpoint(text), DatagramTarget(host, port))

    def test_round_trip(self) -> None:
        target = DatagramTarget("::1", 7)
        self.assertEqual(parse_datagram_endpoint(str(target)), target)

    def test_errors_name_the_string(self) -> None:
        for text in [
            "udp:",
            "udp:localhost",
            "udp:localhost:0",
            "udp:localhost:70000",
            "udp:localhost:seven",
            "udp::7",
            "udp:[::1:7",
            "udp:a:1:2",
            "tcp:localhost:7",
        ]:
            e = self.assertRaises(EndpointError, parse_datagram_endpoint, text)
            self.assertIn(repr(text), str(e))
            self.assertNotIn("\n", str(e))

    def test_is_datagram(self) -> None:
        self.assertTrue(is_datagram(" udp:x:1"))
        self.assertFalse(is_datagram("tcp:x:1"))

    def test_resolve_literal(self) -> None:
        reactor = MemoryReactorClock()
        result = self.successResultOf(
            resolve_datagram_target(reactor, DatagramTarget("::1", 7))
        )
        self.assertEqual(result, ("::1", socket.AF_INET6))


class StreamEndpointTests(TestCase):
    def test_tcp_and_unix(self) -> None:
        reactor = MemoryReactorClock()
        self.assertIsInstance(
            stream_endpoint(reactor, "tcp:127.0.0.1:7"), TCP4ClientEndpoint
        )
        self.assertIsInstance(
            stream_endpoint(reactor, "unix:/tmp/x.sock"), UNIXClientEndpoint
        )

    def test_bad_strings_are_one_line(self) -> None:
        reactor = MemoryReactorClock()
        for text in ["foo:bar", "tcp:127.0.0.1:x", "udp:127.0.0.1:7", ""]:
            e = self.assertRaises(EndpointError, stream_endpoint, reactor, text)
            self.assertIn(repr(text), str(e))
            self.assertNotIn("\n", str(e))


class ExplainTests(TestCase):
    def test_words(self) -> None:
        self.assertEqual(
            explain_connect_failure(error.ConnectionRefusedError()),
            "connection refused",
        )
        self.assertEqual(explain_connect_failure(error.TimeoutError()), "timed out")
        self.assertEqual(explain_connect_failure(defer.TimeoutError()), "timed out")
        self.assertEqual(
            explain_connect_failure(error.DNSLookupError()), "host name not found"
        )
        self.assertEqual(explain_connect_failure(ValueError("bad\nthing")), "bad")
        self.assertEqual(explain_connect_failure(ValueError()), "ValueError")
