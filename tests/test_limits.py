"""
Tests for L{twisted_echo.policies.limits} and how the factories apply them.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from tests.memory import connect
from twisted_echo.policies.limits import ConnectionLimits
from twisted_echo.services.echo import Echo, EchoFactory
from twisted_echo.services.stream import Refused
from twisted_echo.services.welcome import WelcomeFactory


class ConnectionLimitsTests(TestCase):
    def test_total_limit(self) -> None:
        limits = ConnectionLimits(max_connections=2, max_per_peer=0)
        self.assertIsNone(limits.admit("192.0.2.1"))
        self.assertIsNone(limits.admit("192.0.2.2"))
        self.assertEqual(limits.admit("192.0.2.3"), "max_connections")
        limits.release("192.0.2.1")
        self.assertIsNone(limits.admit("192.0.2.3"))

    def test_per_peer_limit(self) -> None:
        limits = ConnectionLimits(max_connections=0, max_per_peer=2)
        for _ in range(2):
            self.assertIsNone(limits.admit("192.0.2.1"))
        self.assertEqual(limits.admit("192.0.2.1"), "max_per_peer")
        self.assertIsNone(limits.admit("192.0.2.2"))
        limits.release("192.0.2.1")
        limits.release("192.0.2.1")
        self.assertNotIn("192.0.2.1", limits.open_by_peer)

    def test_unix_peers_count_only_in_total(self) -> None:
        limits = ConnectionLimits(max_connections=0, max_per_peer=1)
        self.assertIsNone(limits.admit(None))
        self.assertIsNone(limits.admit(None))
        self.assertEqual(limits.open_total, 2)

    def test_one_per_peer_rule(self) -> None:
        """
        C{admit_peer} is the per-peer rule C{admit} applies, alone: a peer
        known only later (a PROXY header's client) takes a place among its
        host's connections without taking another in the total.
        """
        limits = ConnectionLimits(max_connections=0, max_per_peer=2)
        self.assertIsNone(limits.admit("192.0.2.1"))
        self.assertIsNone(limits.admit(None))
        self.assertIsNone(limits.admit_peer("192.0.2.1"))
        self.assertEqual(limits.admit_peer("192.0.2.1"), "max_per_peer")
        self.assertEqual(limits.admit("192.0.2.1"), "max_per_peer")
        self.assertIsNone(limits.admit_peer(None))
        self.assertEqual((limits.open_total, limits.open_by_peer["192.0.2.1"]), (2, 2))


class FactoryLimitTests(TestCase):
    """
    Factories refuse connections over a limit and give the place back when a
    connection closes.
    """

    def build(self, factory: EchoFactory | WelcomeFactory, host: str) -> object:
        return factory.buildProtocol(IPv4Address("TCP", host, 1234))

    def test_echo_refusal_is_a_silent_clean_close(self) -> None:
        """
        Byte-transparent services close a refused connection without a word
        (any text would look like an echo).
        """
        factory = EchoFactory(Clock(), limits=ConnectionLimits(max_per_peer=1))
        first = self.build(factory, "192.0.2.1")
        self.assertIsInstance(first, Echo)
        refused = self.build(factory, "192.0.2.1")
        self.assertIsInstance(refused, Refused)
        transport = StringTransport()
        refused.makeConnection(transport)  # type: ignore[attr-defined]
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(factory.counters.refused["max_per_peer"], 1)
        # Another client is still served.
        self.assertIsInstance(self.build(factory, "192.0.2.2"), Echo)

    def test_welcome_refusal_says_why(self) -> None:
        factory = WelcomeFactory(
            Clock(), limits=ConnectionLimits(max_connections=0, max_per_peer=0)
        )
        factory.limits.max_connections = 1
        self.build(factory, "192.0.2.1")
        refused = self.build(factory, "192.0.2.2")
        transport = StringTransport()
        refused.makeConnection(transport)  # type: ignore[attr-defined]
        self.assertEqual(
            transport.value(),
            b"ERROR: too many connections (max_connections); try again later\r\n",
        )
        self.assertTrue(transport.disconnecting)

    def test_closed_connection_gives_its_place_back(self) -> None:
        factory = EchoFactory(Clock(), limits=ConnectionLimits(max_connections=1))
        protocol, _ = connect(factory, Echo)
        self.assertIsInstance(self.build(factory, "192.0.2.9"), Refused)
        protocol.connectionLost(None)
        self.assertIsInstance(self.build(factory, "192.0.2.9"), Echo)

    def test_unix_address_has_no_peer_limit(self) -> None:
        factory = EchoFactory(Clock(), limits=ConnectionLimits(max_per_peer=1))
        for _ in range(3):
            self.assertIsInstance(factory.buildProtocol(UNIXAddress(None)), Echo)
