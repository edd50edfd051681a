# -*- test-case-name: tests.test_loopguard -*-
"""
The UDP loop guard: the source ports a UDP service never answers
(L{LoopGuard}), and the C{--udp-never-answer} list's reader and writer
(L{parse_ports}, L{format_ports}).

Datagrams from some source ports are never answered, so that
two echo services (or an echo service and any other UDP service that
answers what it gets: DNS, NTP, chargen, another sockecho) cannot be made
to bounce a spoofed datagram between them forever, the "Loop DoS" attack
class (CVE-2024-2169). BSD inetd refuses its internal services' ports
(L{INETD_LOOP_PORTS}); sockecho refuses, by default, every privileged
port (0-1023, where such services live) and the default ports of its own
UDP services (L{SOCKECHO_UDP_PORTS}): L{DEFAULT_NEVER_ANSWER}, set with
C{--udp-never-answer}. The ports this server's UDP listeners are bound to
are refused whatever that list says (L{LoopGuard}). The services
(L{twisted_echo.services.udp.UDPEcho}) test L{LoopGuard.blocked} and count
dropped datagrams by L{LoopGuard.reason}.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

__all__ = [
    "DEFAULT_NEVER_ANSWER",
    "INETD_LOOP_PORTS",
    "SOCKECHO_UDP_PORTS",
    "LoopGuard",
    "format_ports",
    "parse_ports",
]

#: BSD inetd's loop guard: the source ports NetBSD's and OpenBSD's inetd
#: never answer on their internal UDP services (C{bad_ports} in C{inetd.c},
#: checked by C{port_good_dg}: echo 7, discard 9, daytime 13, chargen 19,
#: time 37), and 0, to which no reply can be sent. All are in
#: L{DEFAULT_NEVER_ANSWER}.
INETD_LOOP_PORTS = frozenset({0, 7, 9, 13, 19, 37})

#: Default ports of sockecho's own UDP services (UDP echo: 7007; whoami,
#: as documented: 7010). A new UDP service adds its default port here, so
#: that two sockecho instances never answer each other's services.
SOCKECHO_UDP_PORTS = frozenset({7007, 7010})

#: Source ports never answered unless C{--udp-never-answer} says otherwise:
#: every privileged port (0-1023: inetd's list, DNS 53, NTP 123, ...) and
#: L{SOCKECHO_UDP_PORTS}.
DEFAULT_NEVER_ANSWER = frozenset(range(1024)) | SOCKECHO_UDP_PORTS

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
    another, ends there). One is shared by all of a server's UDP echo
    protocols (L{twisted_echo.services.udp.UDPEcho}).

    @ivar never_answer: the configured ports (C{frozenset[int]}); drops
        counted as C{"loop_port"}.
    @ivar blocked: L{never_answer} and the own ports together, what
        L{twisted_echo.services.udp.UDPEcho.datagramReceived}
        tests (C{frozenset[int]}); ports only
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
