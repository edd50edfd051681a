"""
Tests for L{twisted_echo.client.stats}.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from twisted_echo.client.stats import LatencySummary, LoadStats, percentile


class PercentileTests(TestCase):
    def test_nearest_rank(self) -> None:
        values = list(range(1, 101))
        self.assertEqual(percentile(values, 0.5), 50)
        self.assertEqual(percentile(values, 0.9), 90)
        self.assertEqual(percentile(values, 0.99), 99)
        self.assertEqual(percentile(values, 1.0), 100)
        self.assertEqual(percentile([7], 0.01), 7)

    def test_empty(self) -> None:
        self.assertEqual(percentile([], 0.5), 0)

    def test_bad_fraction(self) -> None:
        self.assertRaises(ValueError, percentile, [1], 0)
        self.assertRaises(ValueError, percentile, [1], 1.5)

    def test_summary_sorts(self) -> None:
        summary = LatencySummary.of([30, 10, 20])
        self.assertEqual(summary, LatencySummary(3, 20, 30, 30, 30))


class LoadStatsTests(TestCase):
    def test_report(self) -> None:
        stats = LoadStats()
        stats.record_latency(0.000150)
        stats.record_latency(0.000250)
        stats.bytes_received = 2_000_000
        stats.connections = 4
        report = stats.report(2.0)
        self.assertEqual(report["requests"], 2)
        self.assertEqual(report["requests_per_s"], 1.0)
        self.assertEqual(report["mb_per_s"], 1.0)
        self.assertEqual(report["connections_per_s"], 2.0)
        self.assertEqual(
            report["latency_us"], {"p50": 150, "p90": 250, "p99": 250, "max": 250}
        )
        self.assertTrue(report["ok"])

    def test_not_ok(self) -> None:
        for name in ("errors", "mismatches", "lost_bytes", "lost_datagrams"):
            stats = LoadStats()
            setattr(stats, name, 1)
            self.assertFalse(stats.ok, name)

    def test_problems_are_bounded(self) -> None:
        stats = LoadStats()
        for i in range(100):
            stats.record_problem(str(i))
        self.assertEqual(len(stats.problems), LoadStats.MAX_PROBLEMS)
