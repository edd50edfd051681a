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

The same sweep, and so the same one timer, serves the stall timeout: at
each sweep it asks each connection whether bytes it sent since the last sweep
still wait in the kernel's send queue (see
L{twisted_echo.services.stream.StreamProtocol.sweep_stall}), which neither
Twisted's queue nor its flow control shows; a reply costs nothing more. One
timer, not one per duty: a factory whose connections come and go one at a
time starts and cancels it per connection, and a second timer cost 20,000
instructions per short connection (C{benchmarks/run.py --count}, connect:
300k with two timers, 280k with one).
"""

from __future__ import annotations

import math
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

    def sweep_stall(self) -> None:
        """
        Called at each sweep while a stall timeout is set: start watching
        for a stall if the peer owes an acknowledgement.
        """


class IdleSweeper:
    """
    Closes the quiet connections among C{connections}, and asks them to
    check for stalls, sweeping them periodically while there are any: every
    C{timeout / TICKS} seconds, or every C{stall_interval} seconds when that
    is shorter. A connection is closed at the first sweep after it has been
    quiet for C{timeout} seconds (within one sweep period after it).

    @param clock: the reactor's clock.
    @param connections: the live set of connections to watch (the caller
        adds and removes them, and calls L{wake} when it adds one).
    @param stall_interval: seconds between stall sweeps at most (0: no
        stall sweeps).
    """

    def __init__(
        self,
        clock: IReactorTime,
        connections: Collection[Sweepable],
        stall_interval: float = 0.0,
    ) -> None:
        self._clock = clock
        self._connections = connections
        self._timeout = 0.0
        self._stall_interval = stall_interval
        #: Seconds between sweeps (0: no sweeps).
        self._period = 0.0
        #: Sweeps a connection may stay quiet before it is closed (0: never).
        self._quiet_ticks = 0
        self._call: IDelayedCall | None = None
        self._plan()

    def _plan(self) -> None:
        periods = [p for p in (self._timeout / TICKS, self._stall_interval) if p > 0]
        self._period = min(periods) if periods else 0.0
        self._quiet_ticks = (
            math.ceil(self._timeout / self._period - 1e-9) if self._timeout else 0
        )

    def set_timeout(self, timeout: float) -> None:
        """
        Close connections quiet for C{timeout} seconds from now on (0: never);
        every connection's quiet time starts afresh.
        """
        self.stop()
        self._timeout = timeout
        self._plan()
        for connection in self._connections:
            connection.quiet_ticks = 0
        self.wake()

    def wake(self) -> None:
        """
        Make sure a sweep is scheduled, if there is anything to sweep.
        """
        if self._call is None and self._period and self._connections:
            self._call = self._clock.callLater(self._period, self._sweep)

    def stop(self) -> None:
        """
        Cancel the next sweep (call when the last connection has closed).
        """
        call, self._call = self._call, None
        cancel_call(call)

    def _sweep(self) -> None:
        self._call = None
        quiet_ticks = self._quiet_ticks
        stalls = self._stall_interval > 0
        for connection in list(self._connections):
            if stalls:
                connection.sweep_stall()
            if quiet_ticks:
                connection.quiet_ticks += 1
                if connection.quiet_ticks > quiet_ticks:
                    connection.timeoutConnection()
        self.wake()
