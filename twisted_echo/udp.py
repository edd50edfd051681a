# -*- test-case-name: tests.test_udp -*-
"""
UDP echo, RFC 862: each datagram goes back to its sender, unchanged.

Loop guard: datagrams from some source ports are never answered, so that
two echo services (or an echo service and any other UDP service that
answers what it gets: DNS, NTP, chargen, another sockecho) cannot be made
to bounce a spoofed datagram between them forever, the "Loop DoS" attack
class (CVE-2024-2169). BSD inetd refuses its internal services' ports
(L{INETD_LOOP_PORTS}); sockecho refuses, by default, every privileged
port (0-1023, where such services live) and the default ports of its own
UDP services (L{SOCKECHO_UDP_PORTS}): L{DEFAULT_NEVER_ANSWER}, set with
C{--udp-never-answer}. The ports this server's UDP listeners are bound to
are refused whatever that list says (L{LoopGuard}). Dropped datagrams are
counted by reason.

Optional rate limits (L{twisted_echo.ratelimit}) then bound what one source
host, and all sources together, can get back: the per-source limit stops a
flood from one address and caps what a spoofed reflection victim receives;
the global limit caps the total, whatever the sources.

Speed: L{DatagramPort} relies on parts of Twisted's L{udp.Port} that are
not all public API; L{datagram_port_problem} checks at start-up that they
are still as expected, and L{twisted_echo.listen} falls back to the stock
L{udp.Port} when they are not. L{UDPEcho} replies with the socket's
C{sendto} only when the transport's L{ISystemHandle} is a socket.
"""

from __future__ import annotations

import inspect
import re
import socket
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import udp
from twisted.internet.error import MessageLengthError
from twisted.internet.interfaces import ISystemHandle
from twisted.internet.protocol import DatagramProtocol
from twisted.python import log

from twisted_echo.counters import ServiceCounters
from twisted_echo.ratelimit import SourceRateLimiter, TokenBucket

#: BSD inetd's loop guard: the source ports NetBSD's and OpenBSD's inetd
#: never answer on their internal UDP services (C{bad_ports} in C{inetd.c},
#: checked by C{port_good_dg}: echo 7, discard 9, daytime 13, chargen 19,
#: time 37), and 0, to which no reply can be sent. All are in
#: L{DEFAULT_NEVER_ANSWER}.
INETD_LOOP_PORTS = frozenset({0, 7, 9, 13, 19, 37})

#: Default ports of sockecho's own UDP services (UDP echo: 7007). A new UDP
#: service adds its default port here, so that two sockecho instances never
#: answer each other's services.
SOCKECHO_UDP_PORTS = frozenset({7007})

#: Source ports never answered unless C{--udp-never-answer} says otherwise:
#: every privileged port (0-1023: inetd's list, DNS 53, NTP 123, ...) and
#: L{SOCKECHO_UDP_PORTS}.
DEFAULT_NEVER_ANSWER = frozenset(range(1024)) | SOCKECHO_UDP_PORTS

#: Largest UDP payload over IPv6 (65535 minus the 8-byte UDP header); IPv4's
#: limit is 65507. Twisted's default read size of 8192 truncates silently.
MAX_DATAGRAM = 65535

_PORT = re.compile(r"[0-9]{1,5}")


def parse_ports(text: str) -> frozenset[int]:
    """
    Parse a list of UDP ports and port ranges.

    @param text: comma-separated ports and inclusive ranges, e.g.
        C{"0-1023,7007"}; spaces around items are ignored; C{"none"} or
        C{""}: no port.
    @return: the ports (each 0-65535).
    @raise ValueError: naming the item at fault.
    """
    if text.strip().lower() in ("", "none"):
        return frozenset()
    ports: set[int] = set()
    for item in text.split(","):
        first_text, dash, last_text = item.strip().partition("-")
        if not _PORT.fullmatch(first_text) or (dash and not _PORT.fullmatch(last_text)):
            raise ValueError(f"bad port or range {item.strip()!r}")
        first = int(first_text)
        last = int(last_text) if dash else first
        if last > 65535:
            raise ValueError(f"port {last} out of range 0-65535")
        if first > last:
            raise ValueError(f"range {item.strip()!r} runs backwards")
        ports.update(range(first, last + 1))
    return frozenset(ports)


def format_ports(ports: Iterable[int]) -> str:
    """
    Write ports the way L{parse_ports} reads them.

    @param ports: port numbers.
    @return: sorted ports with runs as ranges, e.g. C{"0-1023,7007"};
        C{"none"} for no port.
    """
    runs: list[list[int]] = []
    for port in sorted(set(ports)):
        if runs and port == runs[-1][1] + 1:
            runs[-1][1] = port
        else:
            runs.append([port, port])
    return ",".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs) or "none"


class LoopGuard:
    """
    The source ports UDP echo never answers: a configured list, plus the
    ports this server's own UDP listeners are bound to (so that a datagram
    spoofed from one of our own sockets, or sent by one of our listeners to
    another, ends there). One is shared by all of a server's L{UDPEcho}s.

    @ivar never_answer: the configured ports (C{frozenset[int]}); drops
        counted as C{"loop_port"}.
    @ivar blocked: L{never_answer} and the own ports together, what
        L{UDPEcho.datagramReceived} tests (C{frozenset[int]}); ports only
        in the own ports are counted as C{"own_port"}.
    """

    def __init__(self, never_answer: Iterable[int] | None = None) -> None:
        """
        @param never_answer: the ports never to answer; C{None}:
            L{DEFAULT_NEVER_ANSWER}.
        """
        self.never_answer = (
            DEFAULT_NEVER_ANSWER if never_answer is None else frozenset(never_answer)
        )
        self.blocked = self.never_answer
        self._own: Counter[int] = Counter()

    @property
    def own_ports(self) -> frozenset[int]:
        """
        The ports our listeners are bound to now.
        """
        return frozenset(self._own)

    def add_own_port(self, port: int) -> None:
        """
        A listener is bound to C{port}: never answer datagrams from it.
        """
        self._own[port] += 1
        self.blocked = self.never_answer.union(self._own)

    def remove_own_port(self, port: int) -> None:
        """
        A listener bound to C{port} stopped (a port two listeners share,
        IPv4 and IPv6, stays blocked until both stopped).
        """
        self._own[port] -= 1
        if self._own[port] <= 0:
            del self._own[port]
        self.blocked = self.never_answer.union(self._own)

    def reason(self, port: int) -> str:
        """
        @param port: a port in L{blocked}.
        @return: the drop reason to count: C{"loop_port"} if C{port} is in
            L{never_answer}, else C{"own_port"}.
        """
        return "loop_port" if port in self.never_answer else "own_port"


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
            L{DEFAULT_NEVER_ANSWER}.
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

        Reply with the socket's C{sendto} when the transport's
        L{ISystemHandle} is a socket (Twisted's L{udp.Port}): the address
        came from C{recvfrom}, so C{transport.write}'s checks that it is an
        IP address (parsed up to four times) are not needed. Otherwise
        (another transport), reply with C{transport.write}.
        """
        transport = self.transport
        get_host = getattr(transport, "getHost", None)
        if get_host is not None:
            self._own_port = get_host().port
            self.loop_guard.add_own_port(self._own_port)
        handle = transport.getHandle() if ISystemHandle.providedBy(transport) else None
        if isinstance(handle, socket.socket):
            self._sendto = handle.sendto
        else:
            self._sendto = transport.write  # type: ignore[union-attr]

    def stopProtocol(self) -> None:
        """
        Take our port out of the loop guard's own ports.
        """
        if self._own_port is not None:
            self.loop_guard.remove_own_port(self._own_port)
            self._own_port = None

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """
        Send C{datagram} (bytes) back to C{addr} (C{(host, port)}), unless
        its source port is in L{LoopGuard.blocked} or it is over a rate
        limit.
        """
        counters = self.counters
        counters.datagrams_in += 1
        counters.bytes_in += len(datagram)
        guard = self.loop_guard
        if addr[1] in guard.blocked:
            counters.dropped[guard.reason(addr[1])] += 1
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


#: The parameters of L{udp.Port.__init__} that L{DatagramPort} passes.
_INIT_PARAMETERS = ["self", "port", "proto", "interface", "maxPacketSize", "reactor"]


def datagram_port_problem(port_class: type = udp.Port) -> str | None:
    """
    Check that Twisted's L{udp.Port} still looks as L{DatagramPort} expects.

    L{DatagramPort} subclasses it and relies on parts that are not all
    public API: C{__init__(port, proto, interface, maxPacketSize, reactor)}
    storing C{protocol} and C{maxPacketSize}; C{startListening()};
    C{doRead()}, which it replaces, and whose stock version must still read
    up to C{maxThroughput} (a positive C{int}, bytes per event), trim IPv6
    addresses by C{addressFamily} and hand each datagram to
    C{protocol.datagramReceived}, as the replacement does; and
    L{ISystemHandle.getHandle} giving the socket (checked again on each
    port once it listens: L{DatagramPort.startListening}). The checks are
    by name and signature (a cheap look at the class and its code), not a
    proof; a Twisted release that fails them makes the test suite fail.

    @param port_class: the class to check (tests give a changed one).
    @return: C{None} if L{DatagramPort} can be used, else what is not as
        expected, in words.
    """
    name = f"{port_class.__module__}.{port_class.__qualname__}"
    methods: dict[str, Any] = {}
    for method in ("__init__", "startListening", "doRead", "getHandle"):
        methods[method] = getattr(port_class, method, None)
        if not inspect.isfunction(methods[method]):
            return f"{name}.{method} is not a Python function"
    init, do_read = methods["__init__"], methods["doRead"]
    parameters = list(inspect.signature(init).parameters)
    if parameters[:6] != _INIT_PARAMETERS:
        return f"{name}.__init__ takes {parameters}, not {_INIT_PARAMETERS}"
    if not {"protocol", "maxPacketSize"} <= set(init.__code__.co_names):
        return f"{name}.__init__ no longer sets protocol and maxPacketSize"
    throughput = getattr(port_class, "maxThroughput", None)
    if type(throughput) is not int or throughput <= 0:
        return f"{name}.maxThroughput is {throughput!r}, not a positive int"
    if getattr(port_class, "addressFamily", None) not in (
        socket.AF_INET,
        socket.AF_INET6,
    ):
        return f"{name}.addressFamily is not AF_INET or AF_INET6"
    reads = {"maxThroughput", "addressFamily", "datagramReceived"}
    if not reads <= set(do_read.__code__.co_names):
        return (
            f"{name}.doRead no longer uses {', '.join(sorted(reads))} as "
            f"DatagramPort.doRead does"
        )
    if not ISystemHandle.implementedBy(port_class):
        return f"{name} does not provide ISystemHandle"
    return None


class DatagramPort(udp.Port):
    """
    A UDP port that reads each datagram into one buffer allocated once.

    What it buys: Twisted's L{udp.Port} calls C{recvfrom(maxPacketSize)},
    which allocates (and then shrinks) a 64 KiB string for every datagram
    once the read size is raised to the largest datagram (L{MAX_DATAGRAM});
    here C{recvfrom_into} reads into one preallocated buffer and only the
    datagram's own bytes are copied out. Everything else is L{udp.Port}'s.

    It relies on L{udp.Port} internals: use it only when
    L{datagram_port_problem} returns C{None}. If, once listening,
    C{getHandle()} is not a socket, it reads with L{udp.Port.doRead}.
    """

    _receive: Any = None

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
        handle = self.getHandle()  # type: ignore[no-untyped-call]
        self._receive = (
            handle.recvfrom_into if isinstance(handle, socket.socket) else None
        )

    def doRead(self) -> None:
        """
        Read datagrams until the socket has none or C{maxThroughput} bytes
        were read, handing each to the protocol.
        """
        receive = self._receive
        if receive is None:
            return udp.Port.doRead(self)  # type: ignore[no-any-return]
        buffer = self._buffer
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
        return None
