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
C{"{name()}"}, an already flattened event) is handed to Twisted's own
formatter, and a C{log_failure}'s traceback is Twisted's, so the output is
byte for byte what twistd writes: C{tests.test_logtext} checks this against
L{twisted.logger.formatEventAsClassicLogText} on generated events.

With one difference: the text every field puts in a line is escaped
(L{escape}), so that one event is one line whatever its fields hold, and
reads back exactly. Fields carry what peers send (a PROXY header's UNIX
path, a worker's line that carries one, an exception's message): a CR, an
LF or an ESC in one must not start a forged line or drive the terminal that
shows the log. Characters that are not printable (C{str.isprintable}: C0
and C1 controls, DEL, line and paragraph separators, format characters,
lone surrogates) are written C{\\r}, C{\\n}, C{\\t}, C{\\xNN},
C{\\uNNNN} or C{\\UNNNNNNNN}, and a backslash that would read as the
start of one of those is doubled (C{tcp6:\\:\\:1:7007} stays as it is; a
line with nothing to escape is written as it is, its backslashes reading as
themselves). The format's own text is left alone (a line break in it still
makes a continuation line, indented by a tab, as Twisted writes it), and so
is a failure's traceback, but for its unprintable characters. The JSON log
keeps every value exact (JSON escapes them).

The escaping is done here, for every field of every event (and for the
connection lines made without an event, L{format_escaped}), so that no log
line can forget it. A line with nothing to escape costs a check more: for
plain ASCII without a backslash a byte-table check (L{_MARK_SPECIAL}), else
one C{str.isprintable}, and a regular expression search when it holds a
backslash, as IPv6 addresses do: 0.2 to 0.5 µs (0.5 to 0.9 µs for IPv6)
here, in CPU time with C{benchmarks/logline.py}; a line with something to
escape is made again through L{string.Formatter}: 8 µs more on the
connection lines' direct path, 14 µs more through an event.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping
from typing import Any

from twisted.logger import eventAsText, formatEvent, formatTime

#: A backslash that would read as the start of an escape (L{escape}).
_AMBIGUOUS = re.compile(r"\\(?=[\\xuUrnt]|$)")
#: Escapes of the unprintable characters that have a short one.
_SHORT = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}


def _code(char: str) -> str:
    short = _SHORT.get(char)
    if short is not None:
        return short
    number = ord(char)
    if number < 0x100:
        return f"\\x{number:02x}"
    if number < 0x10000:
        return f"\\u{number:04x}"
    return f"\\U{number:08x}"


#: Each byte of printable ASCII (0x20 to 0x7E) but the backslash as it is;
#: every other byte (C0 controls, DEL, the backslash, any byte past ASCII)
#: a backslash. For an ASCII C{text}, C{0x5C not in
#: text.encode().translate(_MARK_SPECIAL)} says it holds only printable
#: characters and no backslash, so L{escape} leaves it as it is: the fast
#: check of L{is_plain} (and L{format_escaped}), false saying nothing (the
#: full check decides). C{str.isascii} tests one flag and
#: C{bytes.translate} looks each byte up in this table, where
#: C{str.isprintable} looks each character up in Unicode's tables: 1,300
#: instructions less for a connection's two lines (cachegrind).
_MARK_SPECIAL = bytes(
    c if 0x20 <= c <= 0x7E and c != 0x5C else 0x5C for c in range(256)
)


def is_plain(text: str) -> bool:
    """
    @return: whether L{escape} leaves C{text} as it is.
    """
    if text.isascii() and 0x5C not in text.encode().translate(_MARK_SPECIAL):
        return True  # plain ASCII (_MARK_SPECIAL)
    return text.isprintable() and ("\\" not in text or _AMBIGUOUS.search(text) is None)


def escape(text: str) -> str:
    """
    Write C{text} on one line, so that it reads back exactly.

    @param text: any text (a field's, possibly a peer's).
    @return: C{text} with each character that is not printable
        (C{str.isprintable}) written C{\\r}, C{\\n}, C{\\t}, C{\\xNN},
        C{\\uNNNN} or C{\\UNNNNNNNN} (as Python writes them), and each
        backslash followed by a backslash, C{x}, C{u}, C{U}, C{r}, C{n},
        C{t}, an unprintable character or nothing, doubled; other text as
        it is (C{straße}, C{tcp6:\\:\\:1:7007}).
    """
    if is_plain(text):
        return text
    return _SPECIAL.sub(_replace, text)


#: What L{escape} looks at: a backslash that may need doubling, a control
#: character, any character past ASCII (most are printable, kept).
_SPECIAL = re.compile(
    r"\\(?=[\\xuUrnt\x00-\x1f\x7f-\U0010ffff]|$)|[\x00-\x1f\x7f-\U0010ffff]"
)


def _replace(match: re.Match[str]) -> str:
    char = match.group()
    if char == "\\":
        end = match.end()
        after = match.string[end : end + 1]
        if after and after not in "\\xuUrnt" and after.isprintable():
            return char
        return "\\\\"
    return char if char.isprintable() else _code(char)


def _escape_controls(text: str, keep: str = "") -> str:
    """
    @param keep: C{"\\n"} to keep line feeds (a traceback's lines stay
        lines, continuation lines in the log).
    @return: C{text} with its unprintable characters escaped as L{escape}
        does, backslashes left as they are (text Twisted made, with
        C{repr}'s escapes in it).
    """
    if text.replace(keep, "").isprintable() if keep else text.isprintable():
        return text
    return "".join(c if c == keep or c.isprintable() else _code(c) for c in text)


class _EscapingFormatter(string.Formatter):
    """
    Python's formatting, each field's text escaped (L{escape}).
    """

    def format_field(self, value: Any, format_spec: str) -> str:
        return escape(super().format_field(value, format_spec))


_ESCAPING = _EscapingFormatter()


class _CallMapping(Mapping[str, Any]):
    """
    An event's fields as Twisted's formatter sees them: C{"{name()}"} calls
    the field C{name} (C{twisted.logger._format.formatWithCall}).
    """

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self._fields = fields

    def __getitem__(self, key: str) -> Any:
        if key.endswith("()"):
            return self._fields[key[:-2]]()
        return self._fields[key]

    def __iter__(self) -> Any:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)


def format_escaped(format: str, fields: Mapping[str, Any]) -> str:
    """
    @param format: a PEP 3101 format.
    @param fields: its fields.
    @return: C{format.format_map(fields)}, each field's text escaped
        (L{escape}).
    @raise Exception: whatever C{format.format_map(fields)} raises.
    """
    text = format.format_map(fields)
    # is_plain's fast check (_MARK_SPECIAL) inlined: the connection lines'
    # direct path makes no call for plain ASCII.
    if (
        text.isascii() and 0x5C not in text.encode().translate(_MARK_SPECIAL)
    ) or is_plain(text):
        return text
    return _ESCAPING.vformat(format, (), fields)


def escaped_message(event: dict[str, Any]) -> str:
    """
    @param event: a L{twisted.logger} event.
    @return: L{message_text}, each field's text escaped (L{escape}); for
        an event Python's formatter cannot make (flattened, or a format
        Twisted reports as unformattable) the unprintable characters of its
        whole text, line feeds included.
    """
    text = message_text(event)
    if is_plain(text):
        return text
    fmt = event.get("log_format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode("utf-8", "replace")
    if isinstance(fmt, str) and "log_flattened" not in event:
        try:
            return _ESCAPING.vformat(fmt, (), _CallMapping(event))
        except Exception:
            pass
    return _escape_controls(text)


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
            L{twisted.logger.formatEventAsClassicLogText} returns but for
            the fields' text, escaped (L{escape}).
        """
        text = escaped_message(event)
        if "log_failure" in event:  # Twisted's traceback after the message
            trace = eventAsText(
                {"log_failure": event["log_failure"]},
                includeTimestamp=False,
                includeSystem=False,
            )
            text += _escape_controls(trace, "\n")
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
        if not system.isprintable():
            system = escape(system)
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
