# -*- test-case-name: tests.test_logflatten -*-
"""
C{twisted.logger}'s private helpers behind C{eventAsJSON}:
C{twisted.logger._flatten.KeyFlattener} (the keys C{flattenEvent} gives a
format's fields) and C{twisted.logger._json.objectSaveHook} (the JSON form
of an object JSON cannot hold, such as a L{LogLevel}). sockecho's
C{--log-format json} works a format's keys out once with them
(L{twisted_echo.log.jsontext}: 33 → 15 µs per connection line).

L{log_flatten_misfit} checks, once at import, that they still do what
C{eventAsJSON} does: the keys C{KeyFlattener} gives are the ones
C{flattenEvent} stores, and a level's saved form is what C{eventAsJSON}
writes for it. L{key_flattener} and L{object_save_hook} are L{None} when
they are not found or do not fit; C{--log-format json} then hands every
event to C{eventAsJSON}.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from twisted.logger import LogLevel, eventAsJSON, formatEvent

__all__ = [
    "LOG_FLATTEN_MISFIT",
    "key_flattener",
    "log_flatten_misfit",
    "object_save_hook",
]

key_flattener: Any
object_save_hook: Any
_found_flattener: Any
_found_save_hook: Any
_flatten_event: Any
try:
    from twisted.logger import _flatten, _json

    _found_flattener = _flatten.KeyFlattener
    _flatten_event = _flatten.flattenEvent
    _found_save_hook = _json.objectSaveHook
except (ImportError, AttributeError):  # pragma: no cover - another Twisted
    _found_flattener = _found_save_hook = _flatten_event = None


def log_flatten_misfit(
    flattener: Any = _found_flattener, save_hook: Any = _found_save_hook
) -> str | None:
    """
    Check C{flattener} (C{KeyFlattener}) and C{save_hook}
    (C{objectSaveHook}) against Twisted's public behaviour: an event of
    format C{"{a!r} {b} {c.d}"} flattened by C{flattenEvent} has exactly
    the keys C{flattener().flatKey} gives its fields, and C{eventAsJSON}
    writes C{save_hook(level)} for each L{LogLevel}.

    @return: L{None} when they fit, else what does not.
    """
    if flattener is None or save_hook is None or _flatten_event is None:
        return "twisted.logger._flatten or _json is not found"
    try:
        event: dict[str, Any] = {
            "log_format": "{a!r} {b} {c.d}",
            "a": 1,
            "b": "two",
            "c": SimpleNamespace(d=3.5),
        }
        _flatten_event(event)
        keys = flattener()
        expected = {
            keys.flatKey("a", "", "r"),
            keys.flatKey("a", "", ""),
            keys.flatKey("b", "", "s"),
            keys.flatKey("b", "", ""),
            keys.flatKey("c.d", "", "s"),
            keys.flatKey("c.d", "", ""),
        }
        if set(event.get("log_flattened", ())) != expected:
            return "KeyFlattener's keys are not the ones flattenEvent stores"
        if formatEvent(event) != formatEvent(dict(event, a=None, b=None)):
            return "a flattened event is not formatted from its flattened keys"
        for level in LogLevel.iterconstants():
            written = json.loads(eventAsJSON({"log_level": level}))["log_level"]
            if written != save_hook(level):
                return f"eventAsJSON does not write objectSaveHook({level.name})"
    except Exception as error:
        return f"checking KeyFlattener and objectSaveHook raised {error!r}"
    return None


#: Why the helpers are not used on this Twisted, or L{None}.
LOG_FLATTEN_MISFIT = log_flatten_misfit()
#: C{KeyFlattener} and C{objectSaveHook} where they fit, else L{None}.
if LOG_FLATTEN_MISFIT is None:
    key_flattener = _found_flattener
    object_save_hook = _found_save_hook
else:
    key_flattener = object_save_hook = None
