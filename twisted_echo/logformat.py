# -*- test-case-name: tests.test_logformat -*-
"""
C{--log-format json}: twistd's log as one JSON object per line
(L{twisted.logger.jsonFileLogObserver}: RFC 7464 JSON text sequences, each
record an RS byte, a JSON object and a newline), for log shippers.

The records go where twistd would write its text log, chosen as twistd's
C{UnixAppLogger} chooses: with C{-n} and no C{--logfile}, or with
C{--logfile=-}, standard output; otherwise C{--logfile} (C{twistd.log} by
default), a L{twisted.python.logfile.LogFile} that rotates at 1 MB and on
C{SIGUSR1}. twistd's own C{--logger} and C{--syslog}, when given, are left
in charge (and get twistd's text format).

twistd's C{--logger} option names an observer factory by its Python name and
calls it without arguments; L{use_json_log} points it at L{json_observer}.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Mapping, MutableMapping
from types import FrameType
from typing import IO, Any

from twisted.logger import ILogObserver, jsonFileLogObserver
from twisted.python.logfile import LogFile

#: twistd's options, as L{use_json_log} last saw them.
_twistd_options: Mapping[str, Any] = {}


def use_json_log(twistd_options: MutableMapping[str, Any]) -> bool:
    """
    Make twistd log JSON records where it would have logged text.

    @param twistd_options: twistd's own options (C{--logfile},
        C{--nodaemon} are read; C{--logger} is set).
    @return: whether it was set up: not when the user chose C{--logger} or
        C{--syslog}, which keep their own format.
    """
    global _twistd_options
    if twistd_options.get("logger") or twistd_options.get("syslog"):
        return False
    _twistd_options = dict(twistd_options)
    twistd_options["logger"] = f"{__name__}.json_observer"
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


def json_observer() -> ILogObserver:
    """
    @return: an observer writing JSON records where twistd would write its
        text log (see L{log_stream}).
    """
    return jsonFileLogObserver(log_stream(_twistd_options))
