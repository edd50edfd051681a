# -*- test-case-name: tests.test_stream -*-
"""
Idle timeouts for many connections with one timer.

Twisted's L{twisted.protocols.policies.TimeoutMixin} gives every connection
its own L{twisted.internet.base.DelayedCall} and reschedules it on every
read: about 0.45 KiB per connection (a third of an idle connection's memory
here) and a clock read per chunk. L{IdleSweeper} instead checks every
connection of a factory in one sweep, C{TICKS} times per timeout; a
connection only clears its C{quiet_ticks} counter when it has traffic. A
connection is closed after between 1 and 1 + 1/C{TICKS} timeouts without
traffic.

L{StallSweeper} is the same one timer for the stall timeout: it asks each
connection, a few times per stall timeout, whether bytes it sent since the
last sweep still wait in the kernel's send queue (see
L{twisted_echo.services.stream.StreamProtocol.sweep_stall}), which neither Twisted's
queue nor its flow control shows; a reply costs nothing more.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol as TypingProtocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: Sweeps per timeout.
TICKS = 4


def cancel_call(call: IDelayedCall | None) -> None:
    """
    Cancel C{call} if it is still pending.
    """
    if call is not None and call.active():
        call.cancel()


class Sweepable(TypingProtocol):
    """
    What L{IdleSweeper} needs of a connection.

    @ivar quiet_ticks: sweeps since the connection last had traffic; the
        connection sets it to 0 on traffic.
    """

    quiet_ticks: int

    def timeoutConnection(self) -> None:
        """
        Called once the connection has been quiet for the timeout.
        """


class IdleSweeper:
    """
    Closes the quiet connections among C{connections}, sweeping them
    periodically while there are any.

    @param clock: the reactor's clock.
    @param connections: the live set of connections to watch (the caller
        adds and removes them, and calls L{wake} when it adds one).
    """

    def __init__(self, clock: IReactorTime, connections: Collection[Sweepable]) -> None:
        self._clock = clock
        self._connections = connections
        self._timeout = 0.0
        self._call: IDelayedCall | None = None

    def set_timeout(self, timeout: float) -> None:
        """
        Close connections quiet for C{timeout} seconds from now on (0: never);
        every connection's quiet time starts afresh.
        """
        self.stop()
        self._timeout = timeout
        for connection in self._connections:
            connection.quiet_ticks = 0
        self.wake()

    def wake(self) -> None:
        """
        Make sure a sweep is scheduled, if there is anything to sweep.
        """
        if self._call is None and self._timeout and self._connections:
            self._call = self._clock.callLater(self._timeout / TICKS, self._sweep)

    def stop(self) -> None:
        """
        Cancel the next sweep (call when the last connection has closed).
        """
        call, self._call = self._call, None
        cancel_call(call)

    def _sweep(self) -> None:
        self._call = None
        for connection in list(self._connections):
            connection.quiet_ticks += 1
            if connection.quiet_ticks > TICKS:
                connection.timeoutConnection()
        self.wake()


class StallSweepable(TypingProtocol):
    """
    What L{StallSweeper} needs of a connection.
    """

    def sweep_stall(self) -> None:
        """
        Called at each sweep: start watching for a stall if the peer owes
        an acknowledgement.
        """


class StallSweeper:
    """
    Calls C{sweep_stall()} on each of C{connections} every C{interval}
    seconds while there are any.

    @param clock: the reactor's clock.
    @param connections: the live set of connections to sweep (the caller
        adds and removes them, and calls L{wake} when it adds one).
    @param interval: seconds between sweeps (0: never sweep).
    """

    def __init__(
        self,
        clock: IReactorTime,
        connections: Collection[StallSweepable],
        interval: float,
    ) -> None:
        self._clock = clock
        self._connections = connections
        self._interval = interval
        self._call: IDelayedCall | None = None

    def wake(self) -> None:
        """
        Make sure a sweep is scheduled, if there is anything to sweep.
        """
        if self._call is None and self._interval and self._connections:
            self._call = self._clock.callLater(self._interval, self._sweep)

    def stop(self) -> None:
        """
        Cancel the next sweep (call when the last connection has closed).
        """
        call, self._call = self._call, None
        cancel_call(call)

    def _sweep(self) -> None:
        self._call = None
        for connection in list(self._connections):
            connection.sweep_stall()
        self.wake()
