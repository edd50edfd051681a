# -*- test-case-name: tests.test_faults_refuse -*-
"""
The listener's fault: C{refuse=T[,every=S]} stops accepting connections
for T seconds from the moment the listener starts listening (and, with
C{every=}, for T seconds of every S). The listening socket stays open:
the kernel completes handshakes into the backlog (C{--backlog}) until it
is full, then drops SYNs, so a client's connect hangs or its first reply
waits; once the window ends the backlog is accepted. Twisted's
C{stopReading}/C{startReading} on the listening port do it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from twisted_echo.faults.profile import Fault

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
        held: Callable[[], bool] | None = None,
    ) -> None:
        """
        @param port: the listening port (C{stopReading}, C{startReading}).
        @param fault: the C{refuse} fault: seconds, C{every=} seconds.
        @param counts: where each window is counted (C{refuse}).
        @param label: the listener, for the log.
        @param held: whether the listener is paused otherwise (the admin
            API's C{listeners: pause}): a window's end does not resume it.
        """
        self.clock = clock
        self.port = port
        self.duration: float = fault.value
        self.every: float | None = fault.option("every")
        self.counts = counts
        self.label = label
        self.held = held
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
        self.port.stopReading()
        _log.info(
            "{listener}: fault refuse: not accepting for {duration:g} s",
            listener=self.label,
            duration=self.duration,
        )
        self.call = self.clock.callLater(self.duration, self._accept)

    def _accept(self) -> None:
        self.refusing = False
        if self.held is None or not self.held():
            self.port.startReading()
        self.call = None
        if self.every is not None:
            self.call = self.clock.callLater(
                max(0.0, self.every - self.duration), self._refuse
            )

    def stop(self) -> None:
        """
        Stop the windows (the listener stops).
        """
        call, self.call = self.call, None
        if call is not None and call.active():
            call.cancel()
