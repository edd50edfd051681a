# -*- test-case-name: tests.test_logformat -*-
"""
C{--log-format json}: twistd's log as one JSON object per line
(L{twisted.logger.jsonFileLogObserver}), for log shippers.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import IO

from twisted.logger import ILogObserver, jsonFileLogObserver


def json_observer_factory(logfile: str | None) -> Callable[[], ILogObserver]:
    """
    Make the observer factory twistd's C{--logger} option takes.

    @param logfile: twistd's C{--logfile}: a path, or C{"-"} / L{None} for
        standard output.
    @return: a callable returning a JSON-lines observer writing there
        (appending to a file).
    """

    def observer() -> ILogObserver:
        stream: IO[str]
        if not logfile or logfile == "-":
            stream = sys.stdout
        else:
            stream = open(logfile, "a", encoding="utf-8")  # noqa: SIM115
        return jsonFileLogObserver(stream)

    return observer
