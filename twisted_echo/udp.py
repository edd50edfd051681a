# -*- test-case-name: tests.test_udp -*-
"""
UDP echo, RFC 862: each datagram goes back to its sender, unchanged.

Datagrams from source port 0 or from the classic internal services' ports
(echo 7, discard 9, daytime 13, chargen 19, time 37) are never answered, as
BSD inetd does, so two such services cannot be made to bounce datagrams at
each other forever. Dropped datagrams are counted by reason.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import MessageLengthError
from twisted.internet.protocol import DatagramProtocol

from twisted_echo.counters import ServiceCounters

#: Source ports never answered (BSD inetd's loop guard).
LOOP_PORTS = frozenset({0, 7, 9, 13, 19, 37})

#: Largest UDP payload over IPv6 (65535 minus the 8-byte UDP header); IPv4's
#: limit is 65507. Twisted's default read size of 8192 truncates silently.
MAX_DATAGRAM = 65535


class UDPEcho(DatagramProtocol):
    """
    Echoes each datagram to its sender.

    @ivar counters: datagrams and bytes in and out, drops by reason
        (C{"loop_port"}: the source port is in L{LOOP_PORTS};
        C{"send_error"}: the kernel refused the reply).
    """

    noisy = False

    def __init__(self, counters: ServiceCounters | None = None) -> None:
        self.counters = counters if counters is not None else ServiceCounters()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """
        Send C{datagram} (bytes) back to C{addr} (C{(host, port)}), unless
        it came from a port in L{LOOP_PORTS}.
        """
        counters = self.counters
        counters.datagrams_in += 1
        counters.bytes_in += len(datagram)
        if addr[1] in LOOP_PORTS:
            counters.dropped["loop_port"] += 1
            return
        try:
            self.transport.write(datagram, addr)  # type: ignore[union-attr]
        except (OSError, MessageLengthError):
            counters.dropped["send_error"] += 1
            return
        counters.datagrams_out += 1
        counters.bytes_out += len(datagram)
