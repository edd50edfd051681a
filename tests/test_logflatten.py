"""
Tests for L{twisted_echo._twisted.logflatten}: C{twisted.logger}'s private
C{KeyFlattener} and C{objectSaveHook}, checked against C{eventAsJSON}.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.logger import LogLevel, eventAsJSON
from twisted.trial.unittest import SynchronousTestCase

from twisted_echo._twisted import logflatten
from twisted_echo._twisted.logflatten import log_flatten_misfit
from twisted_echo.log import jsontext


class _OtherKeys:
    """
    A C{KeyFlattener} of a Twisted release that changed its keys.
    """

    def flatKey(self, name: str, spec: str, conversion: str) -> str:  # noqa: N802
        return f"{name}/{conversion}"


def _event() -> dict[str, Any]:
    return {
        "log_format": "{service} connection from {peer!r}",
        "log_level": LogLevel.info,
        "log_namespace": "test",
        "service": "echo",
        "peer": "tcp:192.0.2.7:1",
    }


class LogFlattenTests(SynchronousTestCase):
    """
    The helpers are used only while they do what C{eventAsJSON} does.
    """

    def test_installed_twisted_fits(self) -> None:
        """
        The installed Twisted's helpers fit; this fails first when a
        Twisted release changes them.
        """
        self.assertIsNone(log_flatten_misfit())
        self.assertIsNotNone(logflatten.key_flattener)
        self.assertIsNotNone(logflatten.object_save_hook)

    def test_json_line_is_twisteds(self) -> None:
        """
        With the helpers, a connection line in JSON is C{eventAsJSON}'s,
        byte for byte.
        """
        self.assertIsNotNone(jsontext.FLATTENER)
        self.assertEqual(jsontext.event_as_json(_event()), eventAsJSON(_event()))

    def test_changed_twisted_is_noticed(self) -> None:
        """
        A flattener giving other keys, a save hook giving another form, or
        neither found: the check says what.
        """
        self.assertEqual(
            log_flatten_misfit(flattener=_OtherKeys),
            "KeyFlattener's keys are not the ones flattenEvent stores",
        )
        self.assertEqual(
            log_flatten_misfit(save_hook=lambda level: {"name": "?"}),
            "eventAsJSON does not write objectSaveHook(debug)",
        )
        self.assertEqual(
            log_flatten_misfit(flattener=None),
            "twisted.logger._flatten or _json is not found",
        )

    def test_fallback_serves(self) -> None:
        """
        Without the helpers (C{FLATTENER} is L{None}), every event goes to
        C{eventAsJSON}: the same JSON.
        """
        self.patch(jsontext, "FLATTENER", None)
        line = jsontext.event_as_json(_event())
        self.assertEqual(line, eventAsJSON(_event()))
        self.assertEqual(json.loads(line)["service"], "echo")
