"""
Tests for L{twisted_echo.logtext}: twistd's classic text lines, made
cheaply, byte for byte as Twisted makes them.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import (
    LogLevel,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from twisted_echo.logtext import ClassicText, message_text

FORMATS = [
    "{service} connection from {peer}{via}",
    "{service} connection from {peer} closed: {bytes_in} bytes in, "
    "{bytes_out} bytes out, {duration:.3f} s",
    "{log_text}",
    "plain text, no fields",
    "{a!r} and {b!s:>8}",
    "{a.real}",
    "{a[0]}",
    "{missing}",
    "{a()}",
    "{}",
    "{a:{b}}",
    "unbalanced {",
    "",
    "two\nlines {a}",
]
VALUES = st.one_of(
    st.text(max_size=12),
    st.integers(),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=2),
    st.just(None),
)


def twisteds(event: dict[str, Any]) -> str | None:
    return formatEventAsClassicLogText(event)


class SameTextAsTwistedTests(TestCase):
    """
    Every event comes out as L{formatEventAsClassicLogText} makes it.
    """

    @settings(max_examples=400, deadline=None)
    @given(
        fmt=st.one_of(st.sampled_from(FORMATS), st.text(max_size=20), st.none()),
        fields=st.dictionaries(
            st.sampled_from(
                ["service", "peer", "via", "bytes_in", "bytes_out", "a", "b"]
            ),
            VALUES,
        ),
        when=st.one_of(
            st.none(), st.floats(min_value=0, max_value=4e9, allow_nan=False)
        ),
        level=st.one_of(st.none(), st.sampled_from(list(LogLevel.iterconstants()))),
        namespace=st.one_of(st.none(), st.text(max_size=10)),
        system=st.one_of(st.none(), st.text(max_size=10)),
    )
    def test_generated_events(
        self,
        fmt: str | None,
        fields: dict[str, Any],
        when: float | None,
        level: LogLevel | None,
        namespace: str | None,
        system: str | None,
    ) -> None:
        event = dict(fields)
        for key, value in (
            ("log_format", fmt),
            ("log_time", when),
            ("log_level", level),
            ("log_namespace", namespace),
            ("log_system", system),
        ):
            if value is not None:
                event[key] = value
        self.assertEqual(ClassicText()(dict(event)), twisteds(dict(event)))
        self.assertEqual(message_text(dict(event)), formatEvent(dict(event)))

    def test_connection_lines(self) -> None:
        """
        The two lines logged per connection, with a real time stamp.
        """
        event = {
            "log_format": FORMATS[1],
            "log_time": 1796000000.25,
            "log_level": LogLevel.info,
            "log_namespace": "twisted_echo.echo.Echo",
            "service": "echo",
            "peer": "tcp:127.0.0.1:52730",
            "bytes_in": 64,
            "bytes_out": 64,
            "duration": 0.0012,
        }
        line = ClassicText()(event)
        self.assertEqual(line, twisteds(event))
        self.assertTrue(line and line.endswith(
            " [twisted_echo.echo.Echo#info] echo connection from "
            "tcp:127.0.0.1:52730 closed: 64 bytes in, 64 bytes out, 0.001 s\n"
        ))  # fmt: skip

    def test_failure_traceback_is_twisteds(self) -> None:
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            failure = Failure()
        event = {"log_format": "oops {a}", "a": 1, "log_failure": failure}
        line = ClassicText()(event)
        self.assertEqual(line, twisteds(event))
        self.assertIn("ZeroDivisionError", line or "")

    def test_time_stamp_per_second(self) -> None:
        """
        Stamps change with the second, and are Twisted's for each.
        """
        text = ClassicText()
        for when in (100.0, 100.999, 101.0, 99.5, 100.5, 1.9999995231628418):
            self.assertEqual(text.format_time(when), formatTime(when))
        self.assertEqual(text.format_time(None), "-")
        self.assertEqual(ClassicText(time_format=None).format_time(5.0), "-")
