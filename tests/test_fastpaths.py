"""
Tests for L{twisted_echo._twisted.fastpaths}: the start-up line saying
which of sockecho's Twisted fast paths are on and which fell back.
"""

from __future__ import annotations

from typing import Any

from twisted.conch import telnet
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.process import shared_server
from twisted_echo._twisted import fastpaths, writequeue
from twisted_echo._twisted.fastpaths import fast_paths, fast_paths_line, log_fast_paths
from twisted_echo._twisted.reactor import build_reactor

#: The fall-back reason expected on the installed Twisted: conch bounds a
#: telnet subnegotiation since 24.10, not on 24.7 (the floor).
EXPECTED: dict[str, str | None] = {
    "telnet bound": (
        None
        if hasattr(telnet.Telnet, "_MAX_SUBNEGOTIATION_LENGTH")
        else "conch's Telnet has no subnegotiation bound"
    )
}
FELL_BACK = "; ".join(f"{n} ({r})" for n, r in EXPECTED.items() if r) or "none"

NAMES = [
    "reactor",
    "write queue",
    "log publisher",
    "log flatten",
    "line buffer",
    "telnet bound",
    "exit signal",
    "TLS internals",
    "HTTP channel",
]


class FastPathsTests(SynchronousTestCase):
    """
    One line, at start-up, names each fast path on or off and why those
    off fell back.
    """

    def setUp(self) -> None:
        self.reactor, reason = build_reactor()
        self.assertIsNone(reason)
        self.addCleanup(self.reactor._poller.close)
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def test_all_on(self) -> None:
        """
        On the installed Twisted and sockecho's reactor every fast path is
        on (but the telnet bound on Twisted 24.7), and the line, logged once
        at info level, says so.
        """
        results = fast_paths(self.reactor)
        self.assertEqual(list(results)[: len(NAMES)], NAMES)
        self.assertEqual(
            {name: results[name] for name in NAMES},
            {name: EXPECTED.get(name) for name in NAMES},
        )
        if FELL_BACK != "none":
            raise SkipTest(f"this Twisted falls back: {FELL_BACK}")
        line = log_fast_paths(self.reactor)
        self.assertTrue(
            line.startswith("Twisted fast paths: reactor on, write queue on, ")
        )
        self.assertTrue(line.endswith("; fell back: none"), line)
        (event,) = [e for e in self.events if "Twisted fast paths" in formatEvent(e)]
        self.assertEqual(formatEvent(event), line)
        self.assertEqual(event["log_level"], LogLevel.info)

    def test_fell_back_named(self) -> None:
        """
        A fast path whose check failed is off, and named with its reason;
        the line is then a warning.
        """
        self.patch(writequeue, "WRITE_QUEUE_MISFIT", "5 bytes written are not 5 queued")
        line = log_fast_paths(self.reactor)
        self.assertIn("write queue off", line)
        self.assertIn(
            "; fell back: write queue (5 bytes written are not 5 queued)", line
        )
        (event,) = [e for e in self.events if "Twisted fast paths" in formatEvent(e)]
        self.assertEqual(event["log_level"], LogLevel.warn)

    def test_noted_where_taken(self) -> None:
        """
        Checks made where a fast path is taken are added once they ran; the
        first reason to fall back is kept.
        """
        self.addCleanup(fastpaths._noted.pop, "test path", None)
        fastpaths.note("test path", None)
        fastpaths.note("test path", "changed")
        fastpaths.note("test path", None)
        self.assertEqual(fast_paths(self.reactor)["test path"], "changed")
        self.assertEqual(
            fast_paths_line({"a": None, "b": "why"}),
            "Twisted fast paths: a on, b off; fell back: b (why)",
        )

    def test_twistd_logs_the_line(self) -> None:
        """
        A real C{twistd -n sockecho} logs the line once its listeners are
        open: every fast path on, the lean TCP transport among them.
        """
        server = shared_server()
        match = server.wait_for(
            r"Twisted fast paths: (.*); fell back: (.*)$", start=0
        )
        self.assertEqual(match.group(2), FELL_BACK)
        self.assertIn("lean transport on", match.group(1))
        for name in NAMES:
            state = "off" if EXPECTED.get(name) else "on"
            self.assertIn(f"{name} {state}", match.group(1))
