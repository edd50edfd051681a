# -*- test-case-name: tests.test_limits -*-
"""
Connection limits and timeouts shared by the TCP services.

Twisted's own L{twisted.protocols.policies} wrappers are not used: every
C{ProtocolWrapper} hides C{IHalfCloseableProtocol} and so loses the tail of a
half-closed echo. The limits here are applied by the factories themselves.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

#: Defaults of the twistd options; 0 switches a limit off.
DEFAULT_MAX_CONNECTIONS = 10_000
DEFAULT_MAX_PER_PEER = 1_000
DEFAULT_IDLE_TIMEOUT = 300.0
DEFAULT_STALL_TIMEOUT = 60.0
DEFAULT_LINE_TIMEOUT = 60.0
DEFAULT_DRAIN_TIMEOUT = 10.0
#: The C{--metrics} listener's bounds (L{twisted_echo.operations.httpbounds}).
DEFAULT_METRICS_MAX_CONNECTIONS = 64
DEFAULT_METRICS_REQUEST_TIMEOUT = 10.0
#: After shutdown starts, a connection that has been quiet this long closes.
DRAIN_QUIET = 1.0


@dataclass
class Timeouts:
    """
    Per-connection timeouts, in seconds; 0 switches one off.

    @ivar idle: no traffic in either direction for this long: close.
    @ivar stall: the peer has not read what we owe it (flow control paused
        us, or we are closing) for this long: abort.
    @ivar line: the welcome service's time for one line, from its first byte
        to its end of line.
    """

    idle: float = DEFAULT_IDLE_TIMEOUT
    stall: float = DEFAULT_STALL_TIMEOUT
    line: float = DEFAULT_LINE_TIMEOUT


@dataclass
class ConnectionLimits:
    """
    How many TCP connections may be open at once, shared by every TCP service
    of one server.

    @ivar max_connections: open connections in all, 0 for no limit.
    @ivar max_per_peer: open connections from one peer host (IPv4 or IPv6
        address), 0 for no limit. UNIX socket peers are not counted.
    @ivar open_total: connections open now.
    @ivar open_by_peer: connections open now, by peer host.
    """

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_per_peer: int = DEFAULT_MAX_PER_PEER
    open_total: int = 0
    open_by_peer: Counter[str] = field(default_factory=Counter)

    def admit(self, host: str | None) -> str | None:
        """
        Take a place for a new connection from C{host}, if there is one.

        @param host: the peer's address, or L{None} where there is none.
        @return: L{None} when admitted (call L{release} when it closes), else
            the reason it is refused: C{"max_connections"} or
            C{"max_per_peer"}.
        """
        if self.max_connections and self.open_total >= self.max_connections:
            return "max_connections"
        refused = self.admit_peer(host)
        if refused is not None:
            return refused
        self.open_total += 1
        return None

    def admit_peer(self, host: str | None) -> str | None:
        """
        The per-peer rule alone: take a place for C{host} among its
        connections, if it has one left. L{admit} applies it; so does a
        connection whose peer is known only later (a PROXY header names
        the client: its connection was admitted by C{max_connections} only).

        @param host: the peer's address, or L{None} (not counted: UNIX
            socket peers).
        @return: L{None} when admitted (L{release} gives the place back),
            else C{"max_per_peer"}.
        """
        if host is None:
            return None
        if self.max_per_peer and self.open_by_peer[host] >= self.max_per_peer:
            return "max_per_peer"
        self.open_by_peer[host] += 1
        return None

    def release(self, host: str | None) -> None:
        """
        Give back the place of a connection from C{host} that closed.
        """
        self.open_total -= 1
        if host is not None:
            left = self.open_by_peer[host] - 1
            if left:
                self.open_by_peer[host] = left
            else:
                del self.open_by_peer[host]
