# -*- test-case-name: tests.test_ratelimit -*-
"""
Tests for L{twisted_echo.policies.ratelimit}: token buckets, one per source host, in a
bounded table.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from twisted_echo.policies.ratelimit import (
    DEFAULT_MAX_SOURCES,
    SourceRateLimiter,
    TokenBucket,
)


def _allowed(allow: Callable[[], bool], n: int) -> int:
    """
    @return: how many of C{n} calls to C{allow()} said yes.
    """
    return sum(1 for _ in range(n) if allow())


class TokenBucketTests(TestCase):
    """
    L{TokenBucket}: RFC 2697's committed rate and burst size, in datagrams.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def test_burst_then_limited(self) -> None:
        """
        A new bucket is full: C{burst} datagrams are allowed at one instant,
        and no more.
        """
        bucket = TokenBucket(10, 20, self.clock)
        self.assertEqual(_allowed(bucket.allow, 1000), 20)
        self.assertFalse(bucket.allow())

    def test_refill_over_time(self) -> None:
        """
        Tokens come back at C{rate} per second, lazily, up to C{burst}.
        """
        bucket = TokenBucket(10, 20, self.clock)
        _allowed(bucket.allow, 20)
        self.clock.advance(0.5)
        self.assertEqual(_allowed(bucket.allow, 100), 5)
        self.clock.advance(1)
        self.assertEqual(_allowed(bucket.allow, 100), 10)
        # Idle for a long time: refilled to burst, not beyond.
        self.clock.advance(3600)
        self.assertEqual(_allowed(bucket.allow, 100), 20)

    def test_fractional_rate(self) -> None:
        """
        A rate below one per second accumulates fractions of a token.
        """
        bucket = TokenBucket(0.5, 1, self.clock)
        self.assertTrue(bucket.allow())
        self.clock.advance(1)
        self.assertFalse(bucket.allow())
        self.clock.advance(1)
        self.assertTrue(bucket.allow())

    def test_steady_rate(self) -> None:
        """
        Over a long run, the rate allowed is C{rate}, plus the first burst.
        """
        bucket = TokenBucket(100, 5, self.clock)
        allowed = 0
        for _ in range(10_000):  # 10 seconds in steps of 1 ms, 10/step
            allowed += _allowed(bucket.allow, 10)
            self.clock.advance(0.001)
        self.assertTrue(1000 <= allowed <= 1005, allowed)

    def test_clock_stepped_back(self) -> None:
        """
        A clock stepped backwards adds no tokens, and refilling resumes from
        the new time rather than waiting for the old one.
        """
        self.clock.advance(1000)
        bucket = TokenBucket(10, 20, self.clock)
        _allowed(bucket.allow, 20)
        self.clock.rightNow = 0.0
        self.assertFalse(bucket.allow())
        self.clock.advance(1)
        self.assertEqual(_allowed(bucket.allow, 100), 10)

    def test_rate_zero_is_unlimited(self) -> None:
        """
        A rate of 0 means no limit at all.
        """
        bucket = TokenBucket(0, 0, self.clock)
        self.assertTrue(bucket.unlimited)
        self.assertEqual(_allowed(bucket.allow, 100_000), 100_000)
        self.assertFalse(TokenBucket(1, 1, self.clock).unlimited)

    def test_bad_parameters(self) -> None:
        """
        A negative or non-finite rate, or a burst below 1, is refused.
        """
        for rate, burst in [
            (-1, 10),
            (float("nan"), 10),
            (float("inf"), 10),
            (10, 0),
            (10, -5),
            (10, 2.5),
            (10, True),
        ]:
            with self.assertRaises(ValueError, msg=(rate, burst)):
                TokenBucket(rate, burst, self.clock)  # type: ignore[arg-type]


class SourceRateLimiterTests(TestCase):
    """
    L{SourceRateLimiter}: one bucket per source host, in a bounded table.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def test_burst_then_limited(self) -> None:
        """
        Each host gets C{burst} datagrams at one instant, then no more.
        """
        limiter = SourceRateLimiter(10, 20, self.clock)
        self.assertEqual(_allowed(lambda: limiter.allow("192.0.2.1"), 1000), 20)
        self.clock.advance(1)
        self.assertEqual(_allowed(lambda: limiter.allow("192.0.2.1"), 1000), 10)

    def test_one_source_does_not_limit_another(self) -> None:
        """
        A host flooding past its limit leaves every other host's allowance
        whole.
        """
        limiter = SourceRateLimiter(10, 20, self.clock)
        self.assertEqual(_allowed(lambda: limiter.allow("192.0.2.1"), 100_000), 20)
        self.assertEqual(_allowed(lambda: limiter.allow("192.0.2.2"), 1000), 20)
        self.assertEqual(_allowed(lambda: limiter.allow("2001:db8::1"), 1000), 20)

    def test_rate_zero_is_unlimited(self) -> None:
        """
        A rate of 0 means no limit, and no table is kept.
        """
        limiter = SourceRateLimiter(0, 0, self.clock)
        self.assertTrue(limiter.unlimited)
        for i in range(1000):
            self.assertTrue(limiter.allow("192.0.2.1"))
            self.assertTrue(limiter.allow(f"10.0.{i // 256}.{i % 256}"))
        self.assertEqual(len(limiter), 0)

    def test_default_bound(self) -> None:
        """
        By default, at most 65,536 hosts are tracked.
        """
        self.assertEqual(DEFAULT_MAX_SOURCES, 65536)
        self.assertEqual(SourceRateLimiter(1, 1, self.clock).max_sources, 65536)

    def test_table_stays_bounded(self) -> None:
        """
        200,000 distinct source hosts at one instant (a spoofed flood) never
        grow the table past C{max_sources}; once it is full, the newcomers
        share one overflow bucket of C{burst}, while hosts already tracked
        keep their own allowance.
        """
        limiter = SourceRateLimiter(10, 5, self.clock, max_sources=65536)
        hosts = [f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}" for i in range(200_000)]
        allowed = 0
        for host in hosts:
            allowed += limiter.allow(host)
            self.assertLessEqual(len(limiter), 65536)
        self.assertEqual(len(limiter), 65536)
        # Every tracked host got its first datagram; the overflow bucket let
        # through its burst of 5 of the other 134,464.
        self.assertEqual(allowed, 65536 + 5)
        # The first hosts, still tracked, have burst - 1 tokens left.
        self.assertEqual(_allowed(lambda: limiter.allow(hosts[0]), 100), 4)
        # An untracked host is judged by the (empty) overflow bucket.
        self.assertFalse(limiter.allow("192.0.2.1"))

    def test_full_buckets_are_forgotten_first(self) -> None:
        """
        When the table is full, the least recently seen host is forgotten
        once its bucket has refilled, making room for a new one.
        """
        limiter = SourceRateLimiter(10, 5, self.clock, max_sources=3)
        for host in ("a", "b", "c"):
            for _ in range(5):
                self.assertTrue(limiter.allow(host))
        # Nothing has refilled: "d" is judged by the overflow bucket, which
        # is full, and is not tracked.
        self.assertTrue(limiter.allow("d"))
        self.assertEqual(len(limiter), 3)
        self.assertEqual(set(limiter._sources), {"a", "b", "c"})
        # After burst / rate seconds, every bucket is full again; "a" is
        # used, so "b" is now the least recently seen and is the one dropped.
        self.clock.advance(0.5)
        self.assertTrue(limiter.allow("a"))
        self.assertEqual(_allowed(lambda: limiter.allow("e"), 100), 5)
        self.assertEqual(list(limiter._sources), ["c", "a", "e"])
        self.assertEqual(len(limiter), 3)

    def test_bounded_churn(self) -> None:
        """
        200,000 distinct hosts arriving over time, faster than buckets
        refill, keep the table at its bound while idle hosts are replaced.
        """
        limiter = SourceRateLimiter(100, 1, self.clock, max_sources=1000)
        allowed = 0
        for i in range(200_000):
            allowed += limiter.allow(f"h{i}")
            self.clock.advance(0.0001)
            self.assertLessEqual(len(limiter), 1000)
        # Each host's bucket refills in 10 ms; 1000 hosts span 100 ms, so
        # the oldest is always full: every host gets in.
        self.assertEqual(allowed, 200_000)

    def test_bad_parameters(self) -> None:
        """
        A negative rate, a burst below 1 or a C{max_sources} below 1 is
        refused.
        """
        with self.assertRaises(ValueError):
            SourceRateLimiter(-1, 10, self.clock)
        with self.assertRaises(ValueError):
            SourceRateLimiter(10, 0, self.clock)
        with self.assertRaises(ValueError):
            SourceRateLimiter(10, 10, self.clock, max_sources=0)
