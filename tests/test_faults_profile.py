"""
Tests for L{twisted_echo.faults.profile}: the fault profile grammar.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from twisted_echo.faults.profile import (
    ProfileError,
    parse_bytes,
    parse_duration,
    parse_profile,
    parse_rate,
)


class UnitTests(TestCase):
    def test_durations(self) -> None:
        self.assertEqual(parse_duration("200ms"), 0.2)
        self.assertEqual(parse_duration("2s"), 2.0)
        self.assertEqual(parse_duration("1.5s"), 1.5)
        for bad in ("200", "2m", "-1s", "ms", ""):
            self.assertRaises(ValueError, parse_duration, bad)

    def test_sizes(self) -> None:
        self.assertEqual(parse_bytes("1000"), 1000)
        self.assertEqual(parse_bytes("4K"), 4096)
        self.assertEqual(parse_bytes("1M"), 1 << 20)
        self.assertRaises(ValueError, parse_bytes, "1.5K")

    def test_rates(self) -> None:
        """
        Rates are bytes per second; KB/s is decimal, kbit/s bits.
        """
        self.assertEqual(parse_rate("7000"), 7000)
        self.assertEqual(parse_rate("100KB/s"), 100_000)
        self.assertEqual(parse_rate("56kbit/s"), 7000)
        self.assertEqual(parse_rate("1MB/s"), 1_000_000)
        for bad in ("0", "fast", "10KB"):
            self.assertRaises(ValueError, parse_rate, bad)


class ProfileTests(TestCase):
    def test_the_brief_example(self) -> None:
        profile = parse_profile(
            "latency=200ms,jitter=20ms;reset-after=1000,p=0.5;seed=42"
        )
        self.assertEqual(profile.seed, 42)
        latency, reset = profile.faults
        self.assertEqual(
            (latency.name, latency.value, latency.p), ("latency", 0.2, 1.0)
        )
        self.assertEqual(latency.option("jitter"), 0.02)
        self.assertEqual((reset.name, reset.value, reset.p), ("reset-after", 1000, 0.5))
        self.assertEqual(reset.text, "reset-after=1000,p=0.5")

    def test_bytes_or_seconds(self) -> None:
        """
        close-after and reset-after take bytes (an int) or a duration (a float).
        """
        close, reset = parse_profile("close-after=2s;reset-after=10").faults
        self.assertEqual((close.value, type(close.value)), (2.0, float))
        self.assertEqual((reset.value, type(reset.value)), (10, int))

    def test_blackhole_value_optional(self) -> None:
        (fault,) = parse_profile("blackhole").faults
        self.assertIsNone(fault.value)
        (fault,) = parse_profile("blackhole=2s").faults
        self.assertEqual(fault.value, 2.0)

    def test_percent_probability(self) -> None:
        (fault,) = parse_profile("corrupt=100,p=25%").faults
        self.assertEqual(fault.p, 0.25)

    def test_refuse_is_the_listener_s(self) -> None:
        profile = parse_profile("refuse=5s,every=30s;delay=1s")
        self.assertEqual([f.name for f in profile.connection_faults()], ["delay"])
        refuse = profile.listener_fault("refuse")
        assert refuse is not None
        self.assertEqual((refuse.value, refuse.option("every")), (5.0, 30.0))

    def test_errors_name_the_bad_part(self) -> None:
        """
        Each error names the clause and says what was expected.
        """
        for text, expected in [
            (
                "latency=200",
                "'latency=200': latency takes a duration (200ms, 2s), not '200'",
            ),
            ("lag=1s", "unknown fault 'lag'"),
            ("delay=1s,p=2", "p takes a probability (0.5, 50%), not '2'"),
            ("delay=1s,jitter=1ms", "delay takes no jitter="),
            ("refuse=1s,p=0.5", "refuse takes no p="),
            ("delay=1s;;seed=1", "an empty clause"),
            ("seed=x", "seed takes a whole number"),
            ("seed=1", "no fault given"),
            ("delay=1s;delay=2s", "delay given twice"),
            ("bandwidth=1KB/s,direction=left", "direction takes down, up or both"),
            ("slice=0", "slice takes more than 0"),
            ("delay=1s,p", "'p' is not KEY=VALUE"),
        ]:
            with self.subTest(text=text):
                error = self.assertRaises(ProfileError, parse_profile, text)
                self.assertIn(expected, str(error))
                self.assertNotIn("\n", str(error))
