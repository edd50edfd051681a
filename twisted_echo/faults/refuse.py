# -*- test-case-name: tests.test_faults_refuse -*-
"""
The listener's fault: C{refuse=T[,every=S]} stops accepting connections
for T seconds from the moment the listener starts listening (and, with
C{every=}, for T seconds of every S). The listening socket stays open:
the kernel completes handshakes into the backlog (C{--backlog}) until it
is full, then drops SYNs, so a client's connect hangs or its first reply
waits; once the window ends the backlog is accepted. Twisted's
C{stopReading}/C{startReading} on the listening port do it, through
L{twisted_echo.listening.pause.pause_accepting} and C{resume_accepting}:
a port accepts again only once every reason it was paused for is lifted,
so a C{refuse} window and another switch (the admin API's
C{"listeners": "pause"}) do not undo each other.

A profile with C{refuse} set or cleared at run time
(L{twisted_echo.faults.runtime}) starts its windows from the change on,
or ends the one in force.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from twisted_echo.faults.profile import Fault
from twisted_echo.listening.pause import (
    accepting,
    pause_accepting,
    resume_accepting,
)

__all__ = ["RefuseWindows", "accepting", "pause_accepting", "resume_accepting"]

_log = Logger(namespace="twisted_echo.faults")

class RefuseWindows:
    """
    Stops a listening port's accepting for C{refuse}'s windows.

    @ivar refusing: whether the port is not accepting now.
    """

    def __init__(
        self,
        clock: IReactorTime,
        port: Any,
        fault: Fault,
        counts: Counter[str],
        label: str,
    ) -> None:
        """
        @param port: the listening port (C{stopReading}, C{startReading}).
        @param fault: the C{refuse} fault: seconds, C{every=} seconds.
        @param counts: where each window is counted (C{refuse}).
        @param label: the listener, for the log.
        """
        self.clock = clock
        self.port = port
        self.duration: float = fault.value
        self.every: float | None = fault.option("every")
        self.counts = counts
        self.label = label
        self.refusing = False
        self.call: IDelayedCall | None = None

    def start(self) -> None:
        """
        Start the first window now.
        """
        self._refuse()

    def _refuse(self) -> None:
        self.refusing = True
        self.counts["refuse"] += 1
        pause_accepting(self.port, "refuse")
        _log.info(
            "{listener}: fault refuse: not accepting for {duration:g} s",
            listener=self.label,
            duration=self.duration,
        )
        self.call = self.clock.callLater(self.duration, self._accept)

    def _accept(self) -> None:
        self.refusing = False
        resume_accepting(self.port, "refuse")
        self.call = None
        if self.every is not None:
            self.call = self.clock.callLater(
                max(0.0, self.every - self.duration), self._refuse
            )

    def stop(self) -> None:
        """
        Stop the windows (the listener stops, or its profile changed at
        run time): no more of them, and the one in force ends now.
        """
        call, self.call = self.call, None
        if call is not None and call.active():
            call.cancel()
        if self.refusing:
            self.refusing = False
            resume_accepting(self.port, "refuse")
