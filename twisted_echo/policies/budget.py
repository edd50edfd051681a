# -*- test-case-name: tests.test_budget -*-
"""
A memory budget for all TCP connections together (C{--max-buffer}).

Flow control bounds one connection: Twisted reads at most C{bufferSize}
bytes at once from a socket, and stops reading (pauses its producer) once
more than C{bufferSize} bytes wait in its write queue. A connection
therefore holds at most its I{allowance} (its transport's C{bufferSize}) in
queued replies, plus the reply to one read: C{(1 + expansion) * allowance}
bytes, where a service's I{expansion} is the most its reply to a read can
outgrow it (echo 1, upper 3, welcome 7: C{OK...} and CR LF on an empty
line). That product is the connection's I{weight} times its allowance.

L{MemoryBudget} sets every allowance so that the sum stays within the
budget:
 - three quarters of the budget are shared out as the I{base} allowance:
   the largest power of two (from L{MIN_ALLOWANCE} to L{MAX_ALLOWANCE})
   such that every open connection's weight times it fits;
 - the last quarter, the I{reserve}, goes to connections that show they
   read: each time a connection's queue drains after flow control paused it,
   its allowance doubles (up to L{MAX_ALLOWANCE}) if the reserve can cover
   it. A client that sends and never reads stays paused at the base, so a
   horde of them holds at most three quarters of the budget, while a
   client that reads its replies keeps large reads;
 - when connections arrive and the base must shrink, every allowance is cut
   to the new base, and boosts are taken back, largest first, until the
   reserve covers them again.

The welcome service's unfinished lines (up to C{--max-line} each) are not
covered by allowances; they are counted as they grow (L{hold_line}), and a
connection whose unfinished line grows while the total is over the budget
stops being read from until the total is back within it (its line timeout
closes it if it never is).

TLS connections whose handshake is under way hold OpenSSL's state (about
46 KiB each, before any byte is read), which no allowance covers: each is
counted as it starts (L{hold_handshake}) until its handshake finishes or the
connection closes. What they hold is promised like allowances: it comes out
of the base share, so thousands of silent TLS clients shrink every
connection's base allowance as connections that do not read would, and it
counts in what unfinished lines may use.

With few connections every allowance is L{MAX_ALLOWANCE} (256 KiB), as
without a budget: the budget only bites when connections times 256 KiB
outgrow it (64 MiB by default: 64 echo connections that do not read).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol as TypingProtocol

#: Largest allowance: sockecho's read size (256 KiB).
MAX_ALLOWANCE = 262144
#: Smallest allowance: reads never get smaller than this, even when the
#: budget is spread so thin that it is overrun (many thousands of
#: connections in a small budget).
MIN_ALLOWANCE = 1024
#: Share of the budget spread as the base allowance; the rest is the
#: reserve for connections that read.
BASE_SHARE = 0.75
#: Default budget, bytes.
DEFAULT_MAX_BUFFER = 64 * 1024 * 1024


class Budgeted(TypingProtocol):
    """
    What L{MemoryBudget} needs of a connection.

    @ivar allowance: bytes: the transport's read size and write queue limit.
    @ivar weight: (1 + expansion) of its service.
    """

    allowance: int

    @property
    def weight(self) -> int:
        """
        (1 + expansion) of the connection's service.
        """

    def set_allowance(self, allowance: int) -> None:
        """
        Apply a new allowance (bytes) to the connection's transport.
        """


class LineHolder(Budgeted, TypingProtocol):
    """
    A connection that holds unfinished lines (the welcome service).
    """

    def stop_reading(self) -> None:
        """
        Stop reading from the peer: the budget is spent.
        """

    def resume_reading(self) -> None:
        """
        Read from the peer again: the budget has room.
        """


def power_of_two_at_most(value: float) -> int:
    """
    @return: the largest power of two not above C{value} (1 for less).
    """
    whole = int(value)
    return 1 << (whole.bit_length() - 1) if whole > 1 else 1


class MemoryBudget:
    """
    Shares C{total} bytes out among the open connections (see the module
    docstring).

    @ivar total: the budget, bytes; 0 for none (every allowance is
        L{MAX_ALLOWANCE}).
    @ivar base: the allowance of a connection that has not shown it reads.
    @ivar weight_total: sum of the open connections' weights.
    @ivar boosted: connections whose allowance is above the base.
    """

    def __init__(self, total: int, sources: Iterable[Iterable[Budgeted]] = ()) -> None:
        """
        @param total: the budget, bytes (0: none).
        @param sources: live collections of the open connections (each
            factory's C{open_protocols}), walked when the base changes.
        """
        self.total = total
        self.base = MAX_ALLOWANCE
        self.weight_total = 0
        self.boosted: set[Budgeted] = set()
        self.line_bytes = 0
        self.handshake_bytes = 0
        self.line_paused: set[LineHolder] = set()
        self._boost_cost = 0
        self._sources: list[Iterable[Budgeted]] = list(sources)

    def add_source(self, connections: Iterable[Budgeted]) -> None:
        """
        Walk C{connections} too when the base changes.
        """
        self._sources.append(connections)

    def _connections(self) -> Iterator[Budgeted]:
        for source in self._sources:
            yield from source

    @property
    def reserve(self) -> int:
        """
        Bytes of the budget not promised to any connection nor held by TLS
        handshakes under way (may be below 0 only when even
        L{MIN_ALLOWANCE} reads overrun the budget).
        """
        return self.total - self.promised()

    def promised(self) -> int:
        """
        @return: the most the open connections may hold together, bytes.
        """
        return self.base * self.weight_total + self._boost_cost + self.handshake_bytes

    def over(self) -> bool:
        """
        @return: whether what is promised plus the unfinished lines held is
            over the budget.
        """
        return bool(self.total) and self.promised() + self.line_bytes > self.total

    def hold_line(self, connection: LineHolder, delta: int) -> None:
        """
        C{connection}'s unfinished line grew (or shrank) by C{delta} bytes.
        A growing line while the budget is spent stops the connection
        reading; a shrinking one may let stopped connections read again.
        """
        self.line_bytes += delta
        if delta > 0 and self.over():
            if connection not in self.line_paused:
                self.line_paused.add(connection)
                connection.stop_reading()
        elif delta < 0:
            self._resume_lines()

    def holds_back(self, connection: LineHolder) -> bool:
        """
        @return: whether C{connection} is not read from now because the
            budget cannot admit more of its unfinished line
            (L{hold_line}): what ends it meanwhile (its line or idle
            timeout) ends it for the budget (the record's C{memory_budget}).
        """
        return connection in self.line_paused

    def hold_handshake(self, delta: int) -> None:
        """
        TLS handshakes under way hold C{delta} more bytes (fewer, when
        negative: a handshake finished or its connection closed). The base
        allowance shrinks or grows to keep within the budget.
        """
        self.handshake_bytes += delta
        self._rebase()
        if delta < 0:
            self._resume_lines()

    def _resume_lines(self) -> None:
        if self.line_paused and not self.over():
            paused, self.line_paused = self.line_paused, set()
            for connection in paused:
                connection.resume_reading()

    def attach(self, connection: Budgeted) -> None:
        """
        A connection opened: give it the base allowance, shrinking the base
        (and others' boosts) if it no longer fits.
        """
        self.weight_total += connection.weight
        self._rebase()
        connection.set_allowance(self.base)

    def detach(self, connection: Budgeted) -> None:
        """
        A connection closed: give back what it was promised.
        """
        self.line_paused.discard(connection)
        self.weight_total -= connection.weight
        if connection in self.boosted:
            self.boosted.discard(connection)
            self._boost_cost -= connection.weight * (connection.allowance - self.base)
        self._rebase()
        self._resume_lines()

    def drained(self, connection: Budgeted) -> None:
        """
        A connection's queue drained after flow control paused it (its peer
        reads): double its allowance if the reserve covers it.
        """
        if not self.total:
            return
        current = connection.allowance
        wanted = min(current * 2, MAX_ALLOWANCE)
        cost = connection.weight * (wanted - current)
        if cost <= 0 or cost > self.reserve:
            return
        self._boost_cost += cost
        self.boosted.add(connection)
        connection.set_allowance(wanted)

    def _fitting_base(self) -> int:
        if not self.total or not self.weight_total:
            return MAX_ALLOWANCE
        share = (self.total * BASE_SHARE - self.handshake_bytes) / self.weight_total
        return max(MIN_ALLOWANCE, min(MAX_ALLOWANCE, power_of_two_at_most(share)))

    def _base_fits(self) -> bool:
        """
        @return: whether L{base} is still what L{_fitting_base} would
            compute (most connections open and close without changing it):
            every weight times it fits in the base share, and twice it
            would not (or it is at a bound).
        """
        base, weights = self.base, self.weight_total
        share = self.total * BASE_SHARE - self.handshake_bytes
        if not self.total or not weights:
            return base == MAX_ALLOWANCE
        return (base == MIN_ALLOWANCE or weights * base <= share) and (
            base == MAX_ALLOWANCE or weights * base * 2 > share
        )

    def _rebase(self) -> None:
        if self._base_fits():
            self._take_back_boosts()
            return
        base = self._fitting_base()
        if base != self.base:
            # Rare: the base moves by powers of two as connections come and
            # go. Every connection starts again from the new base.
            self.base = base
            self._boost_cost = 0
            self.boosted.clear()
            for connection in self._connections():
                connection.set_allowance(base)
        self._take_back_boosts()

    def _take_back_boosts(self) -> None:
        """
        Halve the largest boosts until the reserve is not below 0.
        """
        while self.boosted and self.reserve < 0:
            largest = max(self.boosted, key=lambda c: c.allowance)
            smaller = max(self.base, largest.allowance // 2)
            self._boost_cost -= largest.weight * (largest.allowance - smaller)
            largest.set_allowance(smaller)
            if smaller == self.base:
                self.boosted.discard(largest)
