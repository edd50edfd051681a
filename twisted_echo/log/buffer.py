# -*- test-case-name: tests.test_logbuffer -*-
"""
A log observer that filters by level, formats, and writes in batches.

Twisted's L{twisted.logger.FileLogObserver} writes and flushes every event:
a C{write(2)} system call per log line, two per connection for sockecho.
L{BufferedLogObserver} gathers the lines while the reactor runs and writes
them together at most L{FLUSH_INTERVAL} seconds after the first of them was
logged; it writes at once:
 - a warning, an error or a critical event (and what came before it);
 - when L{MAX_BUFFER} bytes are waiting;
 - when the reactor is not running (start-up, after it stopped, a crash of
   the loop), and from any thread but the reactor's;
 - at the reactor's shutdown (after the drain's last lines) and at the
   process's exit (C{atexit}), so nothing is lost on C{SIGTERM} or when
   the reactor loop dies.
Events below the chosen level (C{--log-level}) are dropped before they are
formatted.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Mapping
from typing import IO, Any

from twisted.logger import ILogObserver, LogLevel
from zope.interface import implementer

from twisted_echo._twisted.logpublisher import add_line_taker, sole_line_taker
from twisted_echo.log.classic import ClassicText, format_escaped

#: Seconds between a line's logging and its write, at most.
FLUSH_INTERVAL = 0.1
#: Characters of waiting lines that are written at once.
MAX_BUFFER = 64 * 1024
#: The levels, least severe first, by the names C{--log-level} takes.
LEVELS = {level.name: level for level in LogLevel.iterconstants()}
_ORDER = list(LEVELS.values())
_URGENT = frozenset(_ORDER[_ORDER.index(LogLevel.warn) :])


def levels_from(name: str) -> frozenset[LogLevel]:
    """
    @param name: a L{twisted.logger.LogLevel} name (C{debug}, C{info},
        C{warn}, C{error}, C{critical}).
    @return: that level and the more severe ones.
    @raise KeyError: for another name.
    """
    return frozenset(_ORDER[_ORDER.index(LEVELS[name]) :])


def sole_text_observer(publisher: object) -> BufferedLogObserver | None:
    """
    @param publisher: a L{twisted.logger.LogPublisher} (the global one).
    @return: the L{BufferedLogObserver} writing twistd's text lines if it
        is the only observer of C{publisher} now (so a line it is handed
        directly is all any observer would have made of the event); else
        L{None}. Reads the publisher's observers
        (L{twisted_echo._twisted.logpublisher.sole_line_taker}, which the
        services ask directly); where they are not known (another
        Twisted), always L{None}.
    """
    observer = sole_line_taker(publisher)
    assert observer is None or isinstance(observer, BufferedLogObserver)
    return observer


@implementer(ILogObserver)
class BufferedLogObserver:
    """
    Write events as text lines to a stream, in batches (see the module).

    @ivar levels: the levels written; events of others are dropped. An
        event with no level is written.
    """

    def __init__(
        self,
        stream: IO[Any],
        format_event: Callable[[dict[str, Any]], str | None],
        get_reactor: Callable[[], Any],
        levels: frozenset[LogLevel] = frozenset(_ORDER),
        takes_lines: bool = False,
    ) -> None:
        """
        @param stream: where lines go (C{write} and C{flush} are called),
            as a text stream; a L{twisted.python.logfile.LogFile} rotates.
        @param format_event: makes an event's line (newline included), or
            L{None} for an event with nothing to write.
        @param get_reactor: returns the reactor once one is installed, or
            L{None}: this module imports none, so logging never chooses it.
        @param levels: see L{levels}.
        @param takes_lines: whether code may hand it lines directly when it
            is the only observer (L{sole_text_observer}): only for
            twistd's classic text lines, made by L{ClassicText}.
        """
        self.stream = stream
        self.format_event = format_event
        self.get_reactor = get_reactor
        self.levels = levels
        self._lines: list[str] = []
        self._size = 0
        self._flush_call: Any = None
        self._shutdown_hooked = False
        self._writing = False
        self._thread = threading.get_ident()
        atexit.register(self.flush)
        self._classic: ClassicText | None = None
        if takes_lines:
            assert isinstance(format_event, ClassicText)
            self._classic = format_event
            add_line_taker(self)

    def __call__(self, event: dict[str, Any]) -> None:
        """
        Take one event: drop it, write it, or keep it for the next batch.

        @param event: a L{twisted.logger} event.
        """
        level = event.get("log_level")
        if level is not None and level not in self.levels:
            return
        line = self.format_event(event)
        if line:
            self.take_line(line, level)

    def take_message(
        self,
        namespace: str,
        level: LogLevel,
        format: str,
        fields: Mapping[str, object],
        when: float,
    ) -> None:
        """
        Write (or keep) the classic line of an event of C{namespace} and
        C{level} whose message is C{format} with C{fields}, made without
        the event: the same line L{ClassicText} makes of it, the fields'
        text escaped (L{twisted_echo.log.classic.escape}). For a text observer
        only (C{takes_lines}).

        @param format: the message's PEP 3101 format (no C{"{name()}"}).
        @param fields: its fields.
        @param when: the event's time, seconds since the epoch.
        @raise Exception: what C{format.format_map(fields)} raises.
        """
        if level in self.levels:
            assert self._classic is not None
            system = f"{namespace}#{level.name}"
            text = format_escaped(format, fields)
            self.take_line(self._classic.line(when, system, text), level)

    def take_line(self, line: str, level: LogLevel | None) -> None:
        """
        Write a line made already, or keep it for the next batch.

        @param line: the text, newline included.
        @param level: its level (not filtered here), or L{None}.
        """
        self._lines.append(line)
        self._size += len(line)
        if (
            level in _URGENT
            or self._size >= MAX_BUFFER
            or threading.get_ident() != self._thread
            or (self._flush_call is None and not self._schedule())
        ):
            self.flush()

    def _schedule(self) -> bool:
        """
        Make sure a flush is due within L{FLUSH_INTERVAL}.

        @return: whether one is (the reactor is running), else the caller
            writes at once.
        """
        if self._flush_call is not None:
            return True
        reactor = self.get_reactor()
        if reactor is None or not reactor.running:
            return False
        if not self._shutdown_hooked:
            self._shutdown_hooked = True
            reactor.addSystemEventTrigger("after", "shutdown", self.flush)
        self._flush_call = reactor.callLater(FLUSH_INTERVAL, self._timed_flush)
        return True

    def _timed_flush(self) -> None:
        self._flush_call = None
        self.flush()

    def flush(self) -> None:
        """
        Write and flush every waiting line, in the order logged. A stream
        that fails (a full disk) loses the batch rather than the process.
        """
        call, self._flush_call = self._flush_call, None
        if call is not None and call.active():
            call.cancel()
        if self._writing:
            # Called again while writing: by a signal handler that logged
            # (twistd's SIGTERM handler does) while the write was
            # interrupted. The outer call writes this line after its own.
            # No lock here: a signal handler runs in the thread it
            # interrupted, so a lock it waits for would never be released.
            return
        self._writing = True
        try:
            while self._lines:
                lines = self._lines
                self._lines, self._size = [], 0
                try:
                    self.stream.write("".join(lines))
                    self.stream.flush()
                except (OSError, ValueError):
                    pass
        finally:
            self._writing = False
