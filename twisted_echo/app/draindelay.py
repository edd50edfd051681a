# -*- test-case-name: tests.test_draindelay -*-
"""
C{--drain-delay T}: the wait between the signal to stop and the drain (the
Kubernetes C{preStop} pattern). From the signal on, C{/readyz} answers 503
(the server's C{drain_started} hooks run at once) while every listener
still accepts and serves; after C{T} seconds the drain starts as it would
have without the delay (C{--drain-timeout} counted from then). A load
balancer checking C{/readyz} takes the backend out of its rotation during
the delay, so no client it sends there meets a closed port.

A second SIGTERM or SIGINT during the delay (L{DrainDelay.cut_short},
called by L{twisted_echo.app.signals.SignalService}) starts the drain at
once. Used by L{twisted_echo.app.server.SockechoService} (one process) and
L{twisted_echo.app.supervisor.Supervisor} (C{--workers}: the supervisor
waits, its workers serve on, then it tells them to drain).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = ["DEFAULT_DRAIN_DELAY", "DrainDelay"]

_log = Logger()

#: C{--drain-delay}'s default, seconds: drain at once.
DEFAULT_DRAIN_DELAY = 0.0


class DrainDelay:
    """
    Waits C{delay} seconds before a drain, once.

    @ivar delay: seconds to wait, 0 or more (0: drain at once).
    @ivar clock: what keeps time (the reactor, or a L{twisted.internet.task.Clock}).
    """

    def __init__(self, delay: float, clock: IReactorTime) -> None:
        """
        @param delay: C{--drain-delay}, seconds, 0 or more.
        @param clock: schedules the end of the delay.
        @raise ValueError: when C{delay} is negative.
        """
        if delay < 0:
            raise ValueError(f"a drain delay is 0 seconds or more, not {delay!r}")
        self.delay = delay
        self.clock = clock
        self._call: IDelayedCall | None = None
        self._drain: Callable[[], object] | None = None

    @property
    def waiting(self) -> bool:
        """
        Whether the delay has started and the drain has not.
        """
        return self._call is not None

    def start(self, drain: Callable[[], object]) -> None:
        """
        Call C{drain} (without arguments) after the delay, or now when the
        delay is 0; with a delay, log one line saying so.

        @param drain: starts the drain.
        """
        if self.delay <= 0:
            drain()
            return
        _log.info(
            "shutting down in {delay} s (--drain-delay): /readyz answers 503 "
            "while every listener still accepts and serves; then the drain "
            "starts (a second SIGTERM or SIGINT starts it at once)",
            delay=self.delay,
        )
        self._drain = drain
        self._call = self.clock.callLater(self.delay, self._end)

    def cut_short(self, cause: str = "asked") -> bool:
        """
        Start the drain now, if the delay is running (a second signal),
        logging one line that says so and why.

        @param cause: why, for the log line (C{"received SIGTERM"}).
        @return: whether the delay was running (and so was cut short).
        """
        call = self._call
        if call is None:
            return False
        call.cancel()
        _log.info("{cause} during the drain delay; draining now", cause=cause)
        self._end()
        return True

    def cancel(self) -> None:
        """
        Forget the drain: it will not start (the server stopped otherwise,
        e.g. every worker ended during the delay).
        """
        call, self._call = self._call, None
        self._drain = None
        if call is not None and call.active():
            call.cancel()

    def _end(self) -> None:
        self._call = None
        drain, self._drain = self._drain, None
        if drain is not None:
            drain()
