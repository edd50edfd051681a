# -*- test-case-name: tests.test_logtext -*-
"""
twistd's classic text log line, made cheaply.

twistd writes each event as
C{"{time} [{system}] {message}\\n"} (L{twisted.logger.formatEventAsClassicLogText}).
sockecho logs two such lines per connection, so their cost is a cost per
connection: through L{twisted.logger.formatEvent} (a
L{string.Formatter} that parses the format in Python at every event) and
L{twisted.logger.formatTime} (a time zone and a C{datetime} per event) one line
took about 20 µs here. L{ClassicText} makes the very same text with
C{str.format_map} (C's parser, the same field syntax) and formats each second's
time stamp once, for about 4 µs a line.

Every event it cannot make the same way (no C{log_format}, a C{bytes} format,
a format Python's own parser rejects or that calls a field, as
C{"{name()}"}, a C{log_failure} whose traceback goes in, an already
flattened event) is handed to Twisted's own formatter, so the output is
byte for byte what twistd writes: C{tests.test_logtext} checks this against
L{twisted.logger.formatEventAsClassicLogText} on generated events.
"""

from __future__ import annotations

import math
from typing import Any

from twisted.logger import formatEvent, formatEventAsClassicLogText, formatTime


def message_text(event: dict[str, Any]) -> str:
    """
    @param event: a L{twisted.logger} event.
    @return: its message, as L{twisted.logger.formatEvent} makes it (no
        time stamp, no system, no traceback), through C{str.format_map}
        when that can make it.
    """
    fmt = event.get("log_format")
    if type(fmt) is str and "log_flattened" not in event:
        try:
            text = fmt.format_map(event)
        except Exception:
            pass
        else:
            if text:
                return text
    return formatEvent(event)


class ClassicText:
    """
    Format log events as twistd's text log does.

    @ivar time_format: the C{strftime} format of the time stamp (twistd's:
        RFC 3339 with a numeric offset), or L{None} for C{"-"}.
    """

    def __init__(self, time_format: str | None = "%Y-%m-%dT%H:%M:%S%z") -> None:
        self.time_format = time_format
        self._second: float | None = None
        self._stamp = "-"

    def format_time(self, when: float | None) -> str:
        """
        @param when: seconds since the epoch, or L{None}.
        @return: L{twisted.logger.formatTime}'s text for C{when}: computed
            once per whole second, as the format has no finer field (but
            for a time in a second's last microsecond, which C{datetime}
            rounds up).
        """
        if when is None or self.time_format is None:
            return "-"
        second = math.floor(when)
        if when - second >= 0.999999:  # datetime may round it up a second
            return formatTime(when, self.time_format)
        if second != self._second:
            self._stamp = formatTime(second, self.time_format)
            self._second = second
        return self._stamp

    def __call__(self, event: dict[str, Any]) -> str | None:
        """
        @param event: a L{twisted.logger} event.
        @return: its line, newline included (continuation lines indented by
            a tab), or L{None} for an event with no text, exactly as
            L{twisted.logger.formatEventAsClassicLogText} returns.
        """
        if "log_failure" in event:  # Twisted's text, with the traceback
            return formatEventAsClassicLogText(event, formatTime=self.format_time)
        text = message_text(event)
        if not text:
            return None
        system = event.get("log_system")
        if system is None:
            level = event.get("log_level")
            system = "{}#{}".format(
                event.get("log_namespace", "-"), "-" if level is None else level.name
            )
        else:
            try:
                system = str(system)
            except Exception:
                system = "UNFORMATTABLE"
        return self.line(event.get("log_time"), system, text)

    def line(self, when: float | None, system: str, text: str) -> str:
        """
        @param when: the event's time, seconds since the epoch, or L{None}.
        @param system: what goes between the brackets (C{namespace#level}).
        @param text: the message.
        @return: the classic line, newline included, continuation lines
            indented by a tab.
        """
        line = f"{self.format_time(when)} [{system}] {text}"
        if "\n" in line:
            line = line.replace("\n", "\n\t")
        return line + "\n"
