# -*- test-case-name: tests.test_client_probe -*-
"""
The accounting of C{sockecho-client probe}: what a probe datagram holds,
and what the echoes that came back say about the path (loss, duplication,
reordering, damage, round-trip times). Pure logic: no sockets, no clock.

A probe datagram is a header (magic C{SEPR}, the sequence number, the send
time in nanoseconds; big-endian, C{HEADER_SIZE} bytes) and padding up to
the datagram's size, a pattern that depends on the sequence number, so any
change to a byte is seen.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from twisted_echo.client.stats import LatencySummary

MAGIC = b"SEPR"
_HEADER = struct.Struct(">4sQQ")
#: Bytes of a probe datagram's header: the smallest probe datagram.
HEADER_SIZE = _HEADER.size
_PATTERN = bytes(range(256)) * 257


def probe_datagram(seq: int, send_ns: int, size: int) -> bytes:
    """
    @param seq: the sequence number, 0 to 2**64 - 1.
    @param send_ns: the send time, nanoseconds (any monotonic clock).
    @param size: the datagram's size in bytes, C{HEADER_SIZE} to 65,507.
    @return: the datagram.
    @raise ValueError: for a size outside those bounds.
    """
    if not HEADER_SIZE <= size <= 65507:
        raise ValueError(
            f"a probe datagram is {HEADER_SIZE} to 65507 bytes, not {size}"
        )
    start = seq % 256
    return (
        _HEADER.pack(MAGIC, seq, send_ns) + _PATTERN[start : start + size - HEADER_SIZE]
    )


@dataclass
class ProbeAccount:
    """
    What was sent and what came back.

    An arrival is I{identified} when its header names a sequence number
    that was sent, with that datagram's send time; it is then I{intact}
    (the bytes sent), I{truncated} (shorter, the bytes sent up to its
    length) or I{corrupted} (any other difference). An arrival that is
    not identified (its header damaged) is counted as truncated when it is
    shorter than the datagrams sent, else as corrupted, and in
    C{unidentified}; it cannot be told which datagram it was, so that
    datagram counts as lost unless another copy of it came back.

    @ivar size: the size of the datagrams sent, bytes.
    @ivar sent_ns: the send time of each sequence number sent (0, 1, ...).
    @ivar received: datagrams that came back, whatever their state.
    @ivar duplicated: identified arrivals of a sequence number already seen.
    @ivar reordered: first arrivals of a sequence number lower than one
        seen before it.
    @ivar corrupted: arrivals of the size sent whose bytes differ.
    @ivar truncated: arrivals shorter than sent (their bytes as sent).
    @ivar unidentified: damaged arrivals whose header names no datagram.
    @ivar rtts_ns: the round trip of each intact first arrival, ns.
    """

    size: int
    sent_ns: list[int] = field(default_factory=list)
    received: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0
    truncated: int = 0
    unidentified: int = 0
    rtts_ns: list[int] = field(default_factory=list)
    _seen: set[int] = field(default_factory=set, init=False, repr=False)
    _highest: int = field(default=-1, init=False, repr=False)

    def record_sent(self, send_ns: int) -> bytes:
        """
        Count the next datagram as sent at C{send_ns}.

        @return: the datagram to send (its sequence number is the number
            sent before it).
        """
        seq = len(self.sent_ns)
        self.sent_ns.append(send_ns)
        return probe_datagram(seq, send_ns, self.size)

    def record_arrival(self, datagram: bytes, receive_ns: int) -> None:
        """
        Count one datagram that came back at C{receive_ns} (same clock as
        the send times).
        """
        self.received += 1
        seq = self._identify(datagram)
        if seq is None:
            self.unidentified += 1
            if len(datagram) < self.size:
                self.truncated += 1
            else:
                self.corrupted += 1
            return
        expected = probe_datagram(seq, self.sent_ns[seq], self.size)
        intact = datagram == expected
        if not intact:
            if len(datagram) < self.size and expected.startswith(datagram):
                self.truncated += 1
            else:
                self.corrupted += 1
        if seq in self._seen:
            self.duplicated += 1
            return
        self._seen.add(seq)
        if seq < self._highest:
            self.reordered += 1
        self._highest = max(self._highest, seq)
        if intact:
            self.rtts_ns.append(receive_ns - self.sent_ns[seq])

    def _identify(self, datagram: bytes) -> int | None:
        if len(datagram) < HEADER_SIZE:
            return None
        magic, seq, send_ns = _HEADER.unpack_from(datagram)
        if magic != MAGIC or seq >= len(self.sent_ns):
            return None
        if self.sent_ns[seq] != send_ns:
            return None
        return int(seq)

    @property
    def sent(self) -> int:
        """
        Datagrams sent.
        """
        return len(self.sent_ns)

    @property
    def lost(self) -> int:
        """
        Datagrams sent of which no identified copy came back.
        """
        return self.sent - len(self._seen)

    def report(self) -> dict[str, object]:
        """
        @return: the counts as JSON-ready values: C{sent}, C{received},
            C{lost}, C{lost_pct} (percent of sent, 2 decimals),
            C{duplicated}, C{reordered}, C{corrupted}, C{truncated},
            C{unidentified}, C{rtt_us} (C{p50}, C{p90}, C{p99}, C{max}:
            microseconds, nearest rank, over intact first arrivals).
        """
        rtt = LatencySummary.of([round(ns / 1000) for ns in self.rtts_ns])
        return {
            "sent": self.sent,
            "received": self.received,
            "lost": self.lost,
            "lost_pct": round(100 * self.lost / self.sent, 2) if self.sent else 0.0,
            "duplicated": self.duplicated,
            "reordered": self.reordered,
            "corrupted": self.corrupted,
            "truncated": self.truncated,
            "unidentified": self.unidentified,
            "rtt_us": {"p50": rtt.p50, "p90": rtt.p90, "p99": rtt.p99, "max": rtt.max},
        }
