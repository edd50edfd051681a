"""
Tests for L{twisted_echo.policies.counters}.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from twisted_echo.policies.counters import ServiceCounters


class ServiceCountersTests(TestCase):
    def test_summary_lists_what_happened(self) -> None:
        counters = ServiceCounters(connections_total=3, bytes_in=10, bytes_out=10)
        counters.dropped["loop_port"] += 2
        self.assertEqual(
            counters.summary(),
            "connections=3 bytes_in=10 bytes_out=10 dropped[loop_port]=2",
        )

    def test_summary_of_nothing(self) -> None:
        self.assertEqual(ServiceCounters().summary(), "idle")
