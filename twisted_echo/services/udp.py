# -*- test-case-name: tests.test_udp -*-
"""
UDP echo, RFC 862: each datagram goes back to its sender, unchanged
(L{UDPEcho}, the protocol; the datagram services built on it, such as
whoami's, answer otherwise through L{UDPEcho.reply_for}).

Each datagram first passes the loop guard
(L{twisted_echo.policies.loopguard}: source ports never answered,
CVE-2024-2169). Optional rate limits (L{twisted_echo.policies.ratelimit})
then bound what one source host, and all sources together, can get back:
the per-source limit stops a flood from one address and caps what a
spoofed reflection victim receives; the global limit caps the total,
whatever the sources. Dropped datagrams are counted by reason.

Speed: on sockecho's own port (L{twisted_echo.listening.datagram.DatagramPort})
L{UDPEcho} replies through the port's L{DatagramPort.replier}; on another
port it replies with the socket's C{sendto} when the transport's
L{ISystemHandle} is a socket.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from twisted.internet.error import MessageLengthError
from twisted.internet.interfaces import ISystemHandle
from twisted.internet.protocol import DatagramProtocol

from twisted_echo.faults.datagrams import DatagramFaults
from twisted_echo.listening.address import describe_address
from twisted_echo.listening.datagram import DatagramPort
from twisted_echo.policies.counters import ServiceCounters
from twisted_echo.policies.loopguard import LoopGuard
from twisted_echo.policies.ratelimit import SourceRateLimiter, TokenBucket
from twisted_echo.records.flows import FlowTable


class UDPEcho(DatagramProtocol):
    """
    Echoes each datagram to its sender.

    One per listening port: it replies from the socket it was connected
    to. The listeners of one server share the counters, the rate limiters
    and the L{LoopGuard}.

    Each datagram is checked, in this order, and dropped at the first check
    it fails: the loop guard (source port in L{LoopGuard.blocked}), the
    per-source rate limit, then the global rate limit. So a datagram
    dropped by its source's limit does not use up the global allowance.

    @ivar counters: datagrams and bytes in and out, drops by reason
        (C{"loop_port"}: the source port is in the configured never-answer
        list, L{LoopGuard.never_answer};
        C{"own_port"}: the source port is one this server's UDP listeners
        are bound to (and not in that list);
        C{"rate_source"}: the source host is over its rate limit;
        C{"rate_global"}: all sources together are over the global limit;
        C{"send_error"}: the kernel refused the reply).
    @ivar source_limit: the per-source limiter, or C{None} for none.
    @ivar global_limit: the global limiter, or C{None} for none.
    @ivar loop_guard: the L{LoopGuard}.
    """

    noisy = False
    _own_port: int | None = None
    _sendto: Callable[[bytes, Any], object]
    #: This listener's faults (C{--faults udp=...}), or L{None}.
    faults: DatagramFaults | None = None
    #: This listener's UDP peer flows, whose records go to the server's
    #: ring (L{twisted_echo.records.flows}), or L{None} (C{--records 0}).
    flows: FlowTable | None = None

    def __init__(
        self,
        counters: ServiceCounters | None = None,
        source_limit: SourceRateLimiter | None = None,
        global_limit: TokenBucket | None = None,
        loop_guard: LoopGuard | None = None,
    ) -> None:
        """
        @param counters: where to count; a new L{ServiceCounters} if C{None}.
        @param source_limit: datagrams per second per source host; C{None}
            or an unlimited one (rate 0): no per-source limit.
        @param global_limit: datagrams per second from all sources together;
            C{None} or an unlimited one (rate 0): no global limit.
        @param loop_guard: the source ports never answered, shared by the
            server's listeners; C{None}: a new L{LoopGuard} with
            L{twisted_echo.policies.loopguard.DEFAULT_NEVER_ANSWER}.
        """
        self.counters = counters if counters is not None else ServiceCounters()
        # An unlimited limiter is not consulted at all: one `is None` test.
        self.source_limit = (
            None if source_limit is None or source_limit.unlimited else source_limit
        )
        self.global_limit = (
            None if global_limit is None or global_limit.unlimited else global_limit
        )
        self.loop_guard = loop_guard if loop_guard is not None else LoopGuard()

    def startProtocol(self) -> None:
        """
        Add the port the transport is bound to to the loop guard's own
        ports.

        Reply with L{DatagramPort.replier} on a L{DatagramPort} (on a
        wildcard address, from the address each datagram was sent to).
        Otherwise reply with the socket's C{sendto} when the transport's
        L{twisted.internet.interfaces.ISystemHandle} is a socket (Twisted's
        L{twisted.internet.udp.Port}): the address
        came from C{recvfrom}, so C{transport.write}'s checks that it is an
        IP address (parsed up to four times) are not needed. Otherwise
        (another transport), reply with C{transport.write}.
        """
        transport = self.transport
        get_host = getattr(transport, "getHost", None)
        if get_host is not None:
            host = get_host()
            self._own_port = host.port
            self.loop_guard.add_own_port(self._own_port)
            if self.flows is not None:
                self.flows.listener = describe_address(host)
        replier = transport.replier() if isinstance(transport, DatagramPort) else None
        handle = transport.getHandle() if ISystemHandle.providedBy(transport) else None
        if replier is not None:
            self._sendto = replier
        elif isinstance(handle, socket.socket):
            self._sendto = handle.sendto
        else:
            self._sendto = transport.write  # type: ignore[union-attr]
        if self.faults is not None:
            self._sendto = self.faults.wrap(self._sendto, self)

    def stopProtocol(self) -> None:
        """
        Take our port out of the loop guard's own ports; end the live UDP
        flows (their records say C{drain}).
        """
        if self.flows is not None:
            self.flows.end_all()
        if self.faults is not None:
            self.faults.stop()
        if self._own_port is not None:
            self.loop_guard.remove_own_port(self._own_port)
            self._own_port = None

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """
        Send C{datagram} (bytes) back to C{addr} (C{(host, port)}), unless
        its source port is in L{LoopGuard.blocked} or it is over a rate
        limit. Count it in its peer flow (L{flows}) when there are records.
        """
        counters = self.counters
        counters.datagrams_in += 1
        counters.bytes_in += len(datagram)
        flows = self.flows
        if flows is None:
            flow = None
        else:  # FlowTable.seen, inline: this runs for every datagram
            flow = flows.live.get(addr)
            if flow is None:
                flow = flows.start(addr)
            flow.last = flows.seconds()
            flow.datagrams_in += 1
            flow.bytes_in += len(datagram)
        guard = self.loop_guard
        if addr[1] in guard.blocked:
            reason = guard.reason(addr[1])
            counters.dropped[reason] += 1
            if flow is not None:
                flow.drop(reason)
            return
        source_limit = self.source_limit
        if source_limit is not None and not source_limit.allow(addr[0]):
            counters.dropped["rate_source"] += 1
            if flow is not None:
                flow.drop("rate_source")
            return
        global_limit = self.global_limit
        if global_limit is not None and not global_limit.allow():
            counters.dropped["rate_global"] += 1
            if flow is not None:
                flow.drop("rate_global")
            return
        reply = self.reply_for(datagram, addr)
        try:
            self._sendto(reply, addr)
        except (OSError, MessageLengthError):
            counters.dropped["send_error"] += 1
            if flow is not None:
                flow.drop("send_error")
            return
        counters.datagrams_out += 1
        counters.bytes_out += len(reply)
        if flow is not None:  # Flow.sent, inline
            flow.datagrams_out += 1
            flow.bytes_out += len(reply)
            if flow.first_out is None and flow.datagrams_out:  # 0: a fault's loss
                flow.first_out = flow.last

    def reply_for(self, datagram: bytes, addr: Any) -> bytes:
        """
        @param datagram: a datagram that passed every check.
        @param addr: its sender, C{(host, port)}.
        @return: the reply: the datagram itself (RFC 862); other services
            built on this one answer otherwise.
        """
        return datagram
