"""
Tests for L{twisted_echo.system.malloc}: the heap trimmed after bursts of freed
memory (issue 19: closed TLS connections), and glibc's C{malloc_trim} reached.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from twisted_echo.system.malloc import (
    TRIM_AFTER,
    TRIM_DELAY,
    HeapTrimmer,
    trim_heap,
)

MIB = 1 << 20


class HeapTrimmerTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.trimmed: list[float] = []
        self.trimmer = HeapTrimmer(
            self.clock, trim=lambda: self.trimmed.append(self.clock.seconds())
        )

    def test_one_trim_per_burst(self) -> None:
        """
        A burst of frees past L{TRIM_AFTER} is trimmed once, L{TRIM_DELAY}
        seconds after it crossed it.
        """
        for _ in range(1000):
            self.trimmer.freed(48 * 1024)
        self.assertEqual(self.trimmed, [])
        self.clock.advance(TRIM_DELAY)
        self.assertEqual(self.trimmed, [TRIM_DELAY])
        self.assertEqual(self.trimmer.trims, 1)
        self.clock.advance(60)
        self.assertEqual(self.trimmed, [TRIM_DELAY])

    def test_little_freed_no_trim(self) -> None:
        self.trimmer.freed(TRIM_AFTER - 1)
        self.clock.advance(60)
        self.assertEqual(self.trimmed, [])
        self.trimmer.freed(1)
        self.clock.advance(TRIM_DELAY)
        self.assertEqual(len(self.trimmed), 1)

    def test_at_most_one_trim_per_delay(self) -> None:
        """
        Frees that go on all the time trim once per L{TRIM_DELAY} at most.
        """
        for _ in range(100):
            self.trimmer.freed(TRIM_AFTER)
            self.clock.advance(TRIM_DELAY / 10)
        self.assertLessEqual(len(self.trimmed), 10)
        self.assertGreaterEqual(len(self.trimmed), 9)

    def test_stopped_schedules_nothing(self) -> None:
        self.trimmer.freed(TRIM_AFTER)
        self.trimmer.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.trimmer.freed(TRIM_AFTER)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.trimmer.start()
        self.trimmer.freed(TRIM_AFTER)
        self.clock.advance(TRIM_DELAY)
        self.assertEqual(len(self.trimmed), 1)


class LibcTests(TestCase):
    def test_trim_heap(self) -> None:
        """
        C{malloc_trim} is reached where the C library has it (glibc); the
        answer is whether memory was handed back.
        """
        self.assertIsInstance(trim_heap(), bool)
