"""
Tests for L{twisted_echo.address}.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.trial.unittest import TestCase

from twisted_echo.address import describe_address


class DescribeAddressTests(TestCase):
    def test_client_endpoint_strings(self) -> None:
        for address, expected in [
            (IPv4Address("TCP", "127.0.0.1", 7007), "tcp:127.0.0.1:7007"),
            (IPv6Address("TCP", "::1", 7007), "tcp6:\\:\\:1:7007"),
            (IPv4Address("UDP", "127.0.0.1", 9), "udp:127.0.0.1:9"),
            (UNIXAddress(b"/run/sockecho.sock"), "unix:/run/sockecho.sock"),
        ]:
            self.assertEqual(describe_address(address), expected)
