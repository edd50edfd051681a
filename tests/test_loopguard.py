# -*- test-case-name: tests.test_loopguard -*-
"""
Tests for L{twisted_echo.policies.loopguard}: the source ports UDP echo
never answers (BSD inetd's rule, widened against CVE-2024-2169 loops) and
the C{PORT[-PORT],...} list.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.test_udp import _BoundTransport
from twisted_echo.policies.loopguard import (
    DEFAULT_NEVER_ANSWER,
    INETD_LOOP_PORTS,
    SOCKECHO_UDP_PORTS,
    LoopGuard,
    format_ports,
    parse_ports,
)
from twisted_echo.services.udp import UDPEcho


class LoopGuardTests(TestCase):
    """
    L{LoopGuard}: the configured list, our own ports, and the drop reasons.
    """

    def test_default_list(self) -> None:
        """
        By default every privileged port and sockecho's default UDP ports
        (UDP echo's 7007, whoami's 7010) are never answered; BSD inetd's
        list is part of it.
        """
        self.assertEqual(DEFAULT_NEVER_ANSWER, frozenset(range(1024)) | {7007, 7010})
        self.assertEqual(SOCKECHO_UDP_PORTS, {7007, 7010})
        self.assertLessEqual(INETD_LOOP_PORTS, DEFAULT_NEVER_ANSWER)
        self.assertEqual(INETD_LOOP_PORTS, {0, 7, 9, 13, 19, 37})
        self.assertEqual(LoopGuard().never_answer, DEFAULT_NEVER_ANSWER)
        self.assertEqual(format_ports(DEFAULT_NEVER_ANSWER), "0-1023,7007,7010")

    def test_configured_list_replaces_default(self) -> None:
        """
        A configured list replaces the default one: port 53 is answered
        when it is not listed; our own port is never answered anyway.
        """
        guard = LoopGuard({5000, 6000})
        protocol = UDPEcho(loop_guard=guard)
        transport = _BoundTransport(40000)
        protocol.makeConnection(transport)  # type: ignore[arg-type]
        for port in (53, 5000, 6000, 40000, 7007):
            protocol.datagramReceived(b"x", ("192.0.2.1", port))
        self.assertEqual(
            transport.written,
            [(b"x", ("192.0.2.1", 53)), (b"x", ("192.0.2.1", 7007))],
        )
        self.assertEqual(
            dict(protocol.counters.dropped), {"loop_port": 2, "own_port": 1}
        )

    def test_own_port_in_the_list_counts_as_loop_port(self) -> None:
        """
        A port both configured and our own is counted as C{loop_port}.
        """
        guard = LoopGuard({7007})
        guard.add_own_port(7007)
        self.assertEqual(guard.reason(7007), "loop_port")

    def test_own_ports_are_shared_and_released(self) -> None:
        """
        Protocols sharing a guard refuse each other's ports; a port stays
        refused until every listener bound to it stopped.
        """
        guard = LoopGuard(())
        first, second, third = (UDPEcho(loop_guard=guard) for _ in range(3))
        first.makeConnection(_BoundTransport(40000))  # type: ignore[arg-type]
        second.makeConnection(_BoundTransport(40001))  # type: ignore[arg-type]
        third.makeConnection(_BoundTransport(40001))  # type: ignore[arg-type]
        self.assertEqual(guard.own_ports, {40000, 40001})
        self.assertEqual(guard.blocked, {40000, 40001})
        first.datagramReceived(b"x", ("127.0.0.1", 40001))
        self.assertEqual(first.counters.dropped["own_port"], 1)
        second.doStop()
        self.assertEqual(guard.own_ports, {40000, 40001})
        third.doStop()
        first.doStop()
        self.assertEqual(guard.own_ports, frozenset())
        self.assertEqual(guard.blocked, frozenset())


class PortListTests(TestCase):
    """
    L{parse_ports} and L{format_ports}: C{PORT[-PORT],...}.
    """

    def test_forms(self) -> None:
        for text, expected in [
            ("0-1023,7007", frozenset(range(1024)) | {7007}),
            (" 53 , 123 ", {53, 123}),
            ("7-7", {7}),
            ("65535", {65535}),
            ("none", frozenset()),
            ("", frozenset()),
        ]:
            self.assertEqual(parse_ports(text), expected, text)

    def test_errors_name_the_item(self) -> None:
        for text, words in [
            ("seven", "bad port or range 'seven'"),
            ("1-", "bad port or range '1-'"),
            ("-5", "bad port or range '-5'"),
            ("+5", "bad port or range '+5'"),
            ("1,,2", "bad port or range ''"),
            ("5 6", "bad port or range '5 6'"),
            ("70000", "port 70000 out of range 0-65535"),
            ("10-5", "range '10-5' runs backwards"),
        ]:
            with self.assertRaises(ValueError) as caught:
                parse_ports(text)
            self.assertIn(words, str(caught.exception), text)

    def test_format_round_trips(self) -> None:
        for ports, text in [
            ({7, 9, 10, 11, 13}, "7,9-11,13"),
            (set(), "none"),
            ({0}, "0"),
        ]:
            self.assertEqual(format_ports(ports), text)
            self.assertEqual(parse_ports(text), ports)
