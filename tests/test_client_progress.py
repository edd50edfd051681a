"""
Tests for L{twisted_echo.client.progress}.
"""

from __future__ import annotations

import io

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from twisted_echo.client.progress import INTERVAL, LiveProgress
from twisted_echo.client.stats import LoadStats


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class LiveProgressTests(TestCase):
    def test_draws_on_a_terminal(self) -> None:
        clock = Clock()
        stats = LoadStats()
        terminal = FakeTerminal()
        progress = LiveProgress(clock, stats, 2.0, terminal)
        self.assertTrue(progress.enabled)
        progress.start()
        stats.record_latency(0.001)
        clock.advance(INTERVAL)
        self.assertIn("1 req, 0 errors, 0 mismatches", terminal.getvalue())
        progress.stop()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_silent_elsewhere(self) -> None:
        clock = Clock()
        for stream in (io.StringIO(), None):
            progress = LiveProgress(clock, LoadStats(), 1.0, stream)
            self.assertFalse(progress.enabled)
            progress.start()
            progress.update()
            clock.advance(1)
            progress.stop()
            self.assertEqual(clock.getDelayedCalls(), [])
        plain = io.StringIO()
        LiveProgress(clock, LoadStats(), 1.0, plain).start()
        self.assertEqual(plain.getvalue(), "")
