"""
Tests for L{twisted_echo.log.jsontext}: C{eventAsJSON}'s JSON, byte for byte,
with the flattening worked out once per format.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import Logger, LogLevel, eventAsJSON
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from twisted_echo.log import jsontext as logjson
from twisted_echo.log.jsontext import event_as_json
from twisted_echo.services.echo import Echo

FORMATS = [
    "{service} connection from {peer}{via}",
    "{service} connection from {peer} closed: {bytes_in} bytes in, "
    "{bytes_out} bytes out, {duration:.3f} s",
    "{log_text}",
    "plain",
    "{a!r} and {a} and {a!s} and {a!r}",
    "{a.real} {a[0]}",
    "{b()}",
    "{missing}",
    "{}",
    "{a:{b}}",
    "unbalanced {",
    "",
]
VALUES = st.one_of(
    st.text(max_size=8),
    st.integers(),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=2),
    st.none(),
    st.binary(max_size=4),
)


def both(event: dict[str, Any]) -> tuple[object, object]:
    """
    @return: what each of C{eventAsJSON} and L{event_as_json} gives for a
        copy of C{event}: its text, or the exception's type.
    """
    results = []
    for function in (eventAsJSON, event_as_json):
        mine = copy.copy(event)
        try:
            results.append(function(mine))
        except Exception as error:
            results.append(type(error))
    return results[0], results[1]


class SameJSONAsTwistedTests(TestCase):
    @settings(max_examples=500, deadline=None)
    @given(
        fmt=st.one_of(st.sampled_from(FORMATS), st.text(max_size=16), st.none()),
        fields=st.dictionaries(
            st.sampled_from(["service", "peer", "via", "a", "b", "bytes_in"]), VALUES
        ),
        level=st.one_of(st.none(), st.sampled_from(list(LogLevel.iterconstants()))),
        when=st.floats(0, 4e9, allow_nan=False),
    )
    def test_generated_events(
        self,
        fmt: str | None,
        fields: dict[str, Any],
        level: LogLevel | None,
        when: float,
    ) -> None:
        event: dict[str, Any] = dict(fields, log_time=when, log_namespace="ns")
        if fmt is not None:
            event["log_format"] = fmt
        if level is not None:
            event["log_level"] = level
        if "b" in fields and fmt == "{b()}":
            event["b"] = lambda: fields["b"]
        twisteds, ours = both(event)
        self.assertEqual(ours, twisteds)

    def test_connection_event(self) -> None:
        """
        A connection line's event (a Logger, a protocol as source, a level)
        comes out as Twisted writes it.
        """
        event = {
            "service": "echo",
            "peer": "tcp:127.0.0.1:1",
            "bytes_in": 64,
            "bytes_out": 64,
            "duration": 0.0012,
            "log_logger": Logger(),
            "log_level": LogLevel.info,
            "log_namespace": "twisted_echo.services.echo.Echo",
            "log_source": Echo(),
            "log_format": FORMATS[1],
            "log_time": 1796000000.5,
        }
        twisteds, ours = both(event)
        self.assertEqual(ours, twisteds)
        self.assertIn('"duration!s:.3f": "0.0012"', str(ours))

    def test_already_flattened_and_failures_are_twisteds(self) -> None:
        try:
            raise ValueError("boom")
        except ValueError:
            failure = Failure()
        for event in (
            {"log_format": "{a}", "a": 1, "log_flattened": {"a!s:": "1", "a!:": 1}},
            {"log_format": "oops", "log_failure": failure},
            {"log_format": b"bytes {a}", "a": 1},
        ):
            twisteds, ours = both(event)
            self.assertEqual(ours, twisteds)

    def test_without_twisteds_private_flattener(self) -> None:
        """
        Where Twisted's C{KeyFlattener} is not found, every event goes to
        C{eventAsJSON}.
        """
        self.patch(logjson, "FLATTENER", None)
        event = {"log_format": "{a}", "a": 1, "log_level": LogLevel.warn}
        twisteds, ours = both(event)
        self.assertEqual(ours, twisteds)
