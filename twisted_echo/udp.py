# -*- test-case-name: tests.test_udp -*-
"""
UDP echo, RFC 862: each datagram goes back to its sender, unchanged.

Datagrams from source port 0 or from the classic internal services' ports
(echo 7, discard 9, daytime 13, chargen 19, time 37) are never answered, as
BSD inetd does, so two such services cannot be made to bounce datagrams at
each other forever. Dropped datagrams are counted by reason.

Optional rate limits (L{twisted_echo.ratelimit}) then bound what one source
host, and all sources together, can get back: the per-source limit stops a
flood from one address and caps what a spoofed reflection victim receives;
the global limit caps the total, whatever the sources.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import udp
from twisted.internet.error import MessageLengthError
from twisted.internet.protocol import DatagramProtocol
from twisted.python import log

from twisted_echo.counters import ServiceCounters
from twisted_echo.ratelimit import SourceRateLimiter, TokenBucket

#: Source ports never answered (BSD inetd's loop guard).
LOOP_PORTS = frozenset({0, 7, 9, 13, 19, 37})

#: Largest UDP payload over IPv6 (65535 minus the 8-byte UDP header); IPv4's
#: limit is 65507. Twisted's default read size of 8192 truncates silently.
MAX_DATAGRAM = 65535


class UDPEcho(DatagramProtocol):
    """
    Echoes each datagram to its sender.

    Each datagram is checked, in this order, and dropped at the first check
    it fails: the loop guard (source port in L{LOOP_PORTS}, as BSD inetd),
    the per-source rate limit, then the global rate limit. So a datagram
    dropped by its source's limit does not use up the global allowance.

    @ivar counters: datagrams and bytes in and out, drops by reason
        (C{"loop_port"}: the source port is in L{LOOP_PORTS};
        C{"rate_source"}: the source host is over its rate limit;
        C{"rate_global"}: all sources together are over the global limit;
        C{"send_error"}: the kernel refused the reply).
    @ivar source_limit: the per-source limiter, or C{None} for none.
    @ivar global_limit: the global limiter, or C{None} for none.
    """

    noisy = False

    def __init__(
        self,
        counters: ServiceCounters | None = None,
        source_limit: SourceRateLimiter | None = None,
        global_limit: TokenBucket | None = None,
    ) -> None:
        """
        @param counters: where to count; a new L{ServiceCounters} if C{None}.
        @param source_limit: datagrams per second per source host; C{None}
            or an unlimited one (rate 0): no per-source limit.
        @param global_limit: datagrams per second from all sources together;
            C{None} or an unlimited one (rate 0): no global limit.
        """
        self.counters = counters if counters is not None else ServiceCounters()
        # An unlimited limiter is not consulted at all: one `is None` test.
        self.source_limit = (
            None if source_limit is None or source_limit.unlimited else source_limit
        )
        self.global_limit = (
            None if global_limit is None or global_limit.unlimited else global_limit
        )

    def startProtocol(self) -> None:
        """
        Reply with the socket's C{sendto} when the transport has a socket:
        the address came from C{recvfrom}, so C{transport.write}'s checks
        that it is an IP address (parsed up to four times) are not needed.
        """
        sock = getattr(self.transport, "socket", None)
        self._sendto = sock.sendto if sock is not None else self.transport.write  # type: ignore[union-attr]

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """
        Send C{datagram} (bytes) back to C{addr} (C{(host, port)}), unless
        it came from a port in L{LOOP_PORTS} or is over a rate limit.
        """
        counters = self.counters
        counters.datagrams_in += 1
        counters.bytes_in += len(datagram)
        if addr[1] in LOOP_PORTS:
            counters.dropped["loop_port"] += 1
            return
        source_limit = self.source_limit
        if source_limit is not None and not source_limit.allow(addr[0]):
            counters.dropped["rate_source"] += 1
            return
        global_limit = self.global_limit
        if global_limit is not None and not global_limit.allow():
            counters.dropped["rate_global"] += 1
            return
        try:
            self._sendto(datagram, addr)
        except (OSError, MessageLengthError):
            counters.dropped["send_error"] += 1
            return
        counters.datagrams_out += 1
        counters.bytes_out += len(datagram)


class DatagramPort(udp.Port):
    """
    A UDP port that reads each datagram into one buffer allocated once.

    Twisted's L{udp.Port} calls C{recvfrom(maxPacketSize)}, which allocates
    (and then shrinks) a 64 KiB string for every datagram once the read size
    is raised to the largest datagram; here only the datagram's own bytes
    are copied out. Everything else is L{udp.Port}'s.
    """

    def __init__(
        self,
        port: int,
        protocol: DatagramProtocol,
        interface: str,
        max_packet_size: int,
        reactor: Any,
    ) -> None:
        udp.Port.__init__(self, port, protocol, interface, max_packet_size, reactor)

    def startListening(self) -> None:
        self._buffer = memoryview(bytearray(self.maxPacketSize))
        udp.Port.startListening(self)

    def doRead(self) -> None:
        """
        Read datagrams until the socket has none or C{maxThroughput} bytes
        were read, handing each to the protocol.
        """
        buffer = self._buffer
        receive = self.socket.recvfrom_into
        deliver = self.protocol.datagramReceived
        ipv6 = self.addressFamily == socket.AF_INET6
        read = 0
        while read < self.maxThroughput:
            try:
                size, addr = receive(buffer)
            except BlockingIOError:
                return None
            except OSError:
                # Other errors: udp.Port's own handling (it reads again).
                return udp.Port.doRead(self)  # type: ignore[no-any-return]
            read += size
            if ipv6:
                addr = addr[:2]
            try:
                deliver(buffer[:size].tobytes(), addr)
            except BaseException:
                log.err()
