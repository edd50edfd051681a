# -*- test-case-name: tests.test_server -*-
"""
C{--log-format json}: twistd's log as one JSON object per line
(L{twisted.logger.jsonFileLogObserver}: RFC 7464 JSON text sequences, each
record an RS byte, a JSON object and a newline), for log shippers.

twistd's C{--logger} option names an observer factory by its Python name and
calls it without arguments; L{use_json_log} points it at L{json_observer}.
"""

from __future__ import annotations

import sys
from collections.abc import MutableMapping
from typing import IO, Any

from twisted.logger import ILogObserver, jsonFileLogObserver

_logfile: str | None = None


def use_json_log(twistd_options: MutableMapping[str, Any]) -> None:
    """
    Make twistd log JSON lines where it would have logged text.

    @param twistd_options: twistd's own options (C{--logfile} is read,
        C{--logger} is set).
    """
    global _logfile
    _logfile = twistd_options.get("logfile")
    twistd_options["logger"] = f"{__name__}.json_observer"


def json_observer() -> ILogObserver:
    """
    @return: an observer writing JSON lines to twistd's C{--logfile}
        (appending), or to standard output when that is C{-} or unset.
    """
    stream: IO[str]
    if not _logfile or _logfile == "-":
        stream = sys.stdout
    else:
        stream = open(_logfile, "a", encoding="utf-8")  # noqa: SIM115
    return jsonFileLogObserver(stream)
