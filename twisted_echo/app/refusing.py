# -*- test-case-name: tests.test_faults_refuse -*-
"""
A stream listener with a C{refuse} fault (C{--faults SERVICE=refuse=T}):
L{twisted_echo.faults.refuse.RefuseWindows} on its listening port from
the moment it listens (its C{windows}, which a change at run time,
L{twisted_echo.faults.runtime.StreamFaultSlot}, stops or replaces).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet.interfaces import IListeningPort, IReactorTime

from twisted_echo.faults.profile import Fault
from twisted_echo.faults.refuse import RefuseWindows
from twisted_echo.listening.listen import StreamListenerService


class RefusingListenerService(StreamListenerService):
    """
    A stream listener with a C{refuse} fault.
    """

    def __init__(
        self,
        *args: Any,
        fault: Fault,
        clock: IReactorTime,
        counts: Counter[str],
    ) -> None:
        super().__init__(*args)
        self.fault = fault
        self.clock = clock
        self.counts = counts

    def listen(self) -> IListeningPort:
        port = super().listen()
        self.windows = RefuseWindows(
            self.clock,
            port,
            self.fault,
            self.counts,
            f"{self.service_name} listener {self.description}",
        )
        self.windows.start()
        return port
