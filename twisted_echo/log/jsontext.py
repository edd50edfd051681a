# -*- test-case-name: tests.test_logjson -*-
"""
L{twisted.logger.eventAsJSON}'s JSON, made with less work per event.

C{--log-format json} writes every event as C{eventAsJSON} makes it. That
function first "flattens" the event: it parses the event's format with
L{string.Formatter}, names a key for each field with a new C{KeyFlattener}
and stores each field's C{str}/C{repr} under it; then C{json.dumps} calls
back for every object JSON cannot hold (the L{twisted.logger.Logger}, the
source, the level), and the level's saver formats its class's UUID each
time. About 29 µs per connection line here, 16 of them flattening.

The keys depend on the format string alone, so L{event_as_json} works them
out once per format (the same C{KeyFlattener}, the same loop) and only reads
the fields per event; each level's JSON form is made once. The text is the
same, byte for byte: C{tests.test_logjson} compares it with C{eventAsJSON}
on generated events. An event it cannot take that way (a flattened one
already, a format that is not C{str}, a field that raises) goes to
C{eventAsJSON} itself, which gives Twisted's result or raises as it does.

It uses C{KeyFlattener} and C{objectSaveHook}, private to
C{twisted.logger}, through L{twisted_echo._twisted.logflatten}; if a Twisted
release moves or changes them, L{FLATTENER} is L{None} and every event goes
to C{eventAsJSON}.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from string import Formatter
from typing import Any

from twisted.logger import LogLevel, eventAsJSON

from twisted_echo._twisted.logflatten import key_flattener, object_save_hook

#: C{twisted.logger}'s C{KeyFlattener}, or L{None} where it is not found
#: or does not fit (L{twisted_echo._twisted.logflatten}).
FLATTENER = key_flattener

_FORMATTER = Formatter()

#: One field of a format: its flattened key, its structured key, its name
#: (without C{"()"}), whether it is called, and its conversion.
Step = tuple[str, str, str, bool, Callable[[object], str]]


@lru_cache(maxsize=512)
def flatten_plan(fmt: str) -> tuple[Step, ...]:
    """
    What C{twisted.logger}'s C{flattenEvent} does for events of format
    C{fmt}, as steps: its loop, run once without an event.

    @param fmt: a PEP 3101 format.
    @raise ValueError: for a format C{string.Formatter} cannot parse.
    """
    assert FLATTENER is not None
    flattener = FLATTENER()
    seen: set[str] = set()
    steps = []
    for _literal, name, spec, conversion in _FORMATTER.parse(fmt):
        if name is None:
            continue
        if conversion != "r":
            conversion = "s"
        flat = flattener.flatKey(name, spec, conversion)
        structured = flattener.flatKey(name, spec, "")
        if flat in seen:
            continue
        seen.update((flat, structured))
        call = name.endswith("()")
        convert = repr if conversion == "r" else str
        steps.append((flat, structured, name[:-2] if call else name, call, convert))
    return tuple(steps)


def _saved_levels() -> dict[LogLevel, Any]:
    if FLATTENER is None:
        return {}
    return {level: object_save_hook(level) for level in LogLevel.iterconstants()}


#: Each level's JSON form, as C{objectSaveHook} makes it.
_LEVELS = _saved_levels()


def _default(unencodable: object) -> object:
    """
    What C{eventAsJSON} gives C{json.dumps} for objects JSON cannot hold.
    """
    if isinstance(unencodable, bytes):
        return unencodable.decode("charmap")
    try:
        saved = _LEVELS.get(unencodable)  # type: ignore[call-overload]
    except TypeError:  # unhashable
        saved = None
    return saved if saved is not None else object_save_hook(unencodable)


def event_as_json(event: dict[str, Any]) -> str:
    """
    @param event: a L{twisted.logger} event; flattened in place, as
        C{eventAsJSON} does.
    @return: C{eventAsJSON(event)}.
    @raise Exception: what C{eventAsJSON} raises for C{event}.
    """
    fmt = event.get("log_format")
    if FLATTENER is None or (fmt is not None and type(fmt) is not str):
        return eventAsJSON(event)
    if "log_flattened" in event:
        return eventAsJSON(event)
    if fmt is not None:
        fields: dict[str, object] = {}
        try:
            for flat, structured, name, call, convert in flatten_plan(fmt):
                if name.isidentifier():
                    value = event[name]
                else:
                    value = _FORMATTER.get_field(name, (), event)[0]
                if call:
                    value = value()
                fields[flat] = convert(value)
                fields[structured] = value
        except Exception:
            return eventAsJSON(event)
        if fields:
            event["log_flattened"] = fields
    return json.dumps(event, default=_default, skipkeys=True)
