# -*- test-case-name: tests.test_counters -*-
"""
Per-service counters, readable from code and logged at shutdown.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class ServiceCounters:
    """
    What one service has done since start.

    @ivar connections_open: TCP connections open now.
    @ivar connections_total: TCP connections accepted since start.
    @ivar bytes_in: bytes received from peers (TCP payload or datagram payload).
    @ivar bytes_out: bytes sent back to peers.
    @ivar datagrams_in: UDP datagrams received.
    @ivar datagrams_out: UDP datagrams sent back.
    @ivar dropped: datagrams dropped, by reason (C{str}).
    @ivar refused: TCP connections refused by a limit, by reason.
    @ivar timeouts: TCP connections closed by a timeout, by kind (C{"idle"},
        C{"stall"}, C{"line"}, C{"drain"}, C{"handshake"}: TLS, see
        L{twisted_echo.listening.tls}).
    @ivar pauses: times flow control stopped reading from a TCP peer that was
        not reading its replies (see L{twisted_echo.policies.budget}).
    @ivar held_bytes: bytes held in user space for this service's
        connections (queued replies, unfinished lines), as last measured.
    @ivar faults: faults injected (C{--faults}, L{twisted_echo.faults}), by
        fault name: connections given each, and C{refuse} windows.
    """

    connections_open: int = 0
    connections_total: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    datagrams_in: int = 0
    datagrams_out: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    timeouts: Counter[str] = field(default_factory=Counter)
    pauses: int = 0
    held_bytes: int = 0
    faults: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        """
        @return: one human-readable line of the non-zero counters.
        """
        parts = [
            f"{name}={value}"
            for name, value in (
                ("connections", self.connections_total),
                ("open", self.connections_open),
                ("bytes_in", self.bytes_in),
                ("bytes_out", self.bytes_out),
                ("datagrams_in", self.datagrams_in),
                ("datagrams_out", self.datagrams_out),
                ("pauses", self.pauses),
                ("held_bytes", self.held_bytes),
            )
            if value
        ]
        for name, counter in (
            ("dropped", self.dropped),
            ("refused", self.refused),
            ("timeouts", self.timeouts),
            ("faults", self.faults),
        ):
            parts.extend(f"{name}[{key}]={n}" for key, n in sorted(counter.items()))
        return " ".join(parts) or "idle"


def copy_counters(counters: ServiceCounters) -> ServiceCounters:
    """
    @return: plain L{ServiceCounters} equal to C{counters} (which may be a
        worker's L{twisted_echo.operations.sharedcounters.SharedServiceCounters}).
    """
    copied = ServiceCounters(
        **{f.name: getattr(counters, f.name) for f in fields(ServiceCounters)}
    )
    copied.dropped = Counter(counters.dropped)
    copied.refused = Counter(counters.refused)
    copied.timeouts = Counter(counters.timeouts)
    copied.faults = Counter(counters.faults)
    return copied


def with_open_connections(
    counters: Mapping[str, ServiceCounters], factories: Iterable[Any]
) -> dict[str, ServiceCounters]:
    """
    Each service's figures now: its counters, plus, for the connections
    still open, the bytes they have carried (added to the service's
    counters only when they close) and the bytes they hold.

    @param counters: each service's counters, by service name; not changed.
    @param factories: the stream services' factories (C{service_name},
        C{open_protocols} with C{bytes_in} and C{bytes_out}, C{held_bytes()}).
    @return: copies of C{counters} with those added.
    """
    figures = {name: copy_counters(c) for name, c in counters.items()}
    for factory in factories:
        found = figures.get(factory.service_name)
        if found is None:
            continue
        for protocol in factory.open_protocols:
            found.bytes_in += protocol.bytes_in
            found.bytes_out += protocol.bytes_out
        found.held_bytes = factory.held_bytes()
    return figures
