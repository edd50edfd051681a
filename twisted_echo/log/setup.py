# -*- test-case-name: tests.test_logformat -*-
"""
twistd's log, written by sockecho's own observer: C{--log-format text} (the
default: twistd's classic lines, L{twisted_echo.log.classic}) or C{json} (one
object per line, L{twisted.logger.eventAsJSON}: RFC 7464 JSON text
sequences, each record an RS byte, a JSON object and a newline, for log
shippers), both filtered by C{--log-level} and written in batches at most
0.1 s apart (L{twisted_echo.log.buffer}).

The records go where twistd would write its text log, chosen as twistd's
C{UnixAppLogger} chooses: with C{-n} and no C{--logfile}, or with
C{--logfile=-}, standard output; otherwise C{--logfile} (C{twistd.log} by
default), a L{twisted.python.logfile.LogFile} that rotates at 1 MB and on
C{SIGUSR1}. twistd's own C{--logger} and C{--syslog}, when given, are left
in charge (and get twistd's text format, unbuffered, every level).

twistd's C{--logger} option names an observer factory by its Python name and
calls it without arguments; L{use_log} points it at L{text_observer} or
L{json_observer}.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Mapping, MutableMapping
from types import FrameType
from typing import IO, Any

from twisted.logger import ILogObserver, LogLevel
from twisted.python.logfile import LogFile

from twisted_echo.log.buffer import BufferedLogObserver, levels_from
from twisted_echo.log.classic import ClassicText
from twisted_echo.log.jsontext import event_as_json

#: twistd's options, as L{use_log} last saw them.
_twistd_options: Mapping[str, Any] = {}
#: The levels written, as L{use_log} last saw them.
_levels: frozenset[LogLevel] = levels_from("info")


def use_log(
    twistd_options: MutableMapping[str, Any], log_format: str, log_level: str
) -> bool:
    """
    Make twistd log through sockecho's observer (text or JSON records,
    filtered by level, in batches) where it would have logged text.

    @param twistd_options: twistd's own options (C{--logfile},
        C{--nodaemon} are read; C{--logger} is set).
    @param log_format: C{"text"} or C{"json"}.
    @param log_level: the least severe level written (a
        L{twisted.logger.LogLevel} name).
    @return: whether it was set up: not when the user chose C{--logger} or
        C{--syslog}, which keep twistd's own observer.
    """
    global _twistd_options, _levels
    if twistd_options.get("logger") or twistd_options.get("syslog"):
        return False
    _twistd_options = dict(twistd_options)
    _levels = levels_from(log_level)
    twistd_options["logger"] = f"{__name__}.{log_format}_observer"
    return True


def log_stream(twistd_options: Mapping[str, Any]) -> IO[Any]:
    """
    Open where twistd would write its log, as twistd's C{UnixAppLogger}
    does.

    @param twistd_options: twistd's options (C{logfile}, C{nodaemon}).
    @return: standard output, or a rotating L{LogFile} (rotated on
        C{SIGUSR1} too, unless that signal already has a handler).
    @raise SystemExit: for a daemon told to log to standard output, with
        twistd's message.
    """
    name = twistd_options.get("logfile")
    daemon = not twistd_options.get("nodaemon")
    if name == "-":
        if daemon:
            sys.exit("Daemons cannot log to stdout, exiting!")
        return sys.stdout
    if not daemon and not name:
        return sys.stdout
    log_file: Any = LogFile.fromFullPath(name or "twistd.log")
    if not signal.getsignal(signal.SIGUSR1):

        def rotate(signum: int, frame: FrameType | None) -> None:
            from twisted.internet import reactor

            reactor.callFromThread(log_file.rotate)  # type: ignore[attr-defined]

        signal.signal(signal.SIGUSR1, rotate)
    stream: IO[Any] = log_file
    return stream


def _installed_reactor() -> Any:
    """
    @return: the reactor if one is installed yet, else L{None} (logging
        must not choose one).
    """
    return sys.modules.get("twisted.internet.reactor")


def text_observer() -> ILogObserver:
    """
    @return: an observer writing twistd's classic text lines where twistd
        would write its text log (see L{log_stream}).
    """
    return BufferedLogObserver(
        log_stream(_twistd_options),
        ClassicText(),
        _installed_reactor,
        _levels,
        takes_lines=True,
    )


def json_record(event: dict[str, Any]) -> str:
    """
    @param event: a L{twisted.logger} event.
    @return: its RFC 7464 record, as L{twisted.logger.jsonFileLogObserver}
        writes it (its JSON made by L{twisted_echo.log.jsontext.event_as_json}).
    """
    return f"\x1e{event_as_json(event)}\n"


def json_observer() -> ILogObserver:
    """
    @return: an observer writing JSON records where twistd would write its
        text log (see L{log_stream}).
    """
    return BufferedLogObserver(
        log_stream(_twistd_options), json_record, _installed_reactor, _levels
    )
