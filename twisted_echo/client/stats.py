# -*- test-case-name: tests.test_client_stats -*-
"""
Latency percentiles and the load run's totals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(ordered: Sequence[int], fraction: float) -> int:
    """
    Nearest-rank percentile.

    @param ordered: values sorted ascending (e.g. latencies in microseconds).
    @param fraction: 0 < fraction <= 1 (0.99 for p99).
    @return: the smallest value with at least C{fraction} of the values at
        or below it; 0 for no values.
    @raise ValueError: for a fraction outside (0, 1].
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], not {fraction}")
    if not ordered:
        return 0
    rank = math.ceil(fraction * len(ordered))
    return ordered[max(rank, 1) - 1]


@dataclass(frozen=True)
class LatencySummary:
    """
    Latency percentiles, all in microseconds.
    """

    count: int
    p50: int
    p90: int
    p99: int
    max: int

    @classmethod
    def of(cls, latencies_us: Sequence[int]) -> LatencySummary:
        """
        @param latencies_us: latencies in microseconds, any order.
        @return: their summary (all zero for none).
        """
        ordered = sorted(latencies_us)
        return cls(
            count=len(ordered),
            p50=percentile(ordered, 0.50),
            p90=percentile(ordered, 0.90),
            p99=percentile(ordered, 0.99),
            max=ordered[-1] if ordered else 0,
        )


@dataclass
class LoadStats:
    """
    What a load run did.

    @ivar requests: requests (or datagrams) whose whole reply came back.
    @ivar bytes_sent: request bytes written.
    @ivar bytes_received: reply bytes received and found correct.
    @ivar connections: connections that completed (opened and closed cleanly).
    @ivar errors: connections that failed or ended badly.
    @ivar mismatches: connections (or datagrams) whose reply differed.
    @ivar lost_bytes: reply bytes owed but never received.
    @ivar lost_datagrams: datagrams sent whose reply never came in time.
    @ivar latencies_us: each request's latency, microseconds.
    @ivar problems: the first few error and mismatch descriptions.
    """

    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    connections: int = 0
    errors: int = 0
    mismatches: int = 0
    lost_bytes: int = 0
    lost_datagrams: int = 0
    latencies_us: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    #: How many problem descriptions are kept.
    MAX_PROBLEMS = 5

    def record_latency(self, seconds: float) -> None:
        """
        Count one completed request that took C{seconds}.
        """
        self.requests += 1
        self.latencies_us.append(round(seconds * 1_000_000))

    def record_problem(self, description: str) -> None:
        """
        Keep C{description} (one line) if fewer than L{MAX_PROBLEMS} are kept.
        """
        if len(self.problems) < self.MAX_PROBLEMS:
            self.problems.append(description)

    @property
    def ok(self) -> bool:
        """
        No error, mismatch or loss.
        """
        return not (
            self.errors or self.mismatches or self.lost_bytes or self.lost_datagrams
        )

    def report(self, elapsed: float) -> dict[str, object]:
        """
        @param elapsed: the run's length in seconds.
        @return: totals and rates as JSON-ready values: C{requests_per_s},
            C{mb_per_s} (reply megabytes, 10**6 bytes, per second),
            C{connections_per_s}, C{latency_us} (p50, p90, p99, max).
        """
        span = elapsed if elapsed > 0 else 1e-9
        latency = LatencySummary.of(self.latencies_us)
        return {
            "elapsed_s": round(elapsed, 3),
            "requests": self.requests,
            "requests_per_s": round(self.requests / span, 1),
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "mb_per_s": round(self.bytes_received / span / 1e6, 3),
            "connections": self.connections,
            "connections_per_s": round(self.connections / span, 1),
            "latency_us": {
                "p50": latency.p50,
                "p90": latency.p90,
                "p99": latency.p99,
                "max": latency.max,
            },
            "errors": self.errors,
            "mismatches": self.mismatches,
            "lost_bytes": self.lost_bytes,
            "lost_datagrams": self.lost_datagrams,
            "problems": list(self.problems),
            "ok": self.ok,
        }
