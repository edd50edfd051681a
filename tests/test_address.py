"""
Tests for L{twisted_echo.listening.address}.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.trial.unittest import TestCase

from twisted_echo.listening.address import (
    TLSIPv4Address,
    TLSIPv6Address,
    describe_address,
    tls_address,
)


class DescribeAddressTests(TestCase):
    def test_client_endpoint_strings(self) -> None:
        for address, expected in [
            (IPv4Address("TCP", "127.0.0.1", 7007), "tcp:127.0.0.1:7007"),
            (IPv6Address("TCP", "::1", 7007), "tcp6:\\:\\:1:7007"),
            (IPv4Address("UDP", "127.0.0.1", 9), "udp:127.0.0.1:9"),
            (UNIXAddress(b"/run/sockecho.sock"), "unix:/run/sockecho.sock"),
            (TLSIPv4Address("TCP", "127.0.0.1", 7207), "ssl:127.0.0.1:7207"),
            (TLSIPv6Address("TCP", "::1", 7207), "ssl:\\:\\:1:7207"),
            (IPv6Address("TCP", "fe80::1", 1, 0, "eth0"), "tcp6:fe80\\:\\:1%eth0:1"),
            (IPv6Address("TCP", "fe80::1%eth0", 1, 0, 2), "tcp6:fe80\\:\\:1%eth0:1"),
            (IPv6Address("TCP", "fe80::1", 1, 0, 2), "tcp6:fe80\\:\\:1:1"),
        ]:
            self.assertEqual(describe_address(address), expected)


class TLSAddressTests(TestCase):
    def test_marks_ip_addresses(self) -> None:
        v4 = tls_address(IPv4Address("TCP", "127.0.0.1", 7207))
        self.assertIsInstance(v4, TLSIPv4Address)
        self.assertEqual(describe_address(v4), "ssl:127.0.0.1:7207")
        v6 = tls_address(IPv6Address("TCP", "::1", 7207, 0, 2))
        assert isinstance(v6, TLSIPv6Address)
        self.assertEqual((v6.host, v6.port, v6.scopeID), ("::1", 7207, 2))
        self.assertIs(tls_address(v6), v6)

    def test_still_ip_addresses(self) -> None:
        """
        Code that checks for an L{IPv4Address} (per-peer limits, Twisted)
        still sees one.
        """
        address = tls_address(IPv4Address("TCP", "10.0.0.1", 1))
        self.assertIsInstance(address, IPv4Address)
        self.assertEqual(getattr(address, "host", None), "10.0.0.1")

    def test_others_unchanged(self) -> None:
        unix = UNIXAddress(b"/run/s.sock")
        self.assertIs(tls_address(unix), unix)
