# -*- test-case-name: tests.test_signals -*-
"""
What sockecho does on the signals a user or a terminal sends, beyond the
SIGTERM and SIGINT twistd's reactor handles (both drain, see
L{twisted_echo.app.server}):

 - SIGHUP: with C{--workers}, replace the workers one by one with fresh
   processes on the same listeners (L{twisted_echo.app.supervisor.Supervisor.reload});
   without, drain as on SIGTERM and then end by SIGHUP as twistd ends by the
   signal it stopped on. Neither twistd nor Twisted's reactor handles
   SIGHUP, whose default action ends a process at once.
 - SIGTERM or SIGINT once the drain has started (L{stop_again}): during
   C{--drain-delay}'s wait, start the drain at once
   (L{twisted_echo.app.draindelay}); during the drain itself, a log line
   and nothing else (the drain timeout already bounds it).
 - SIGUSR1: log a status summary (L{log_status}); when twistd logs to a
   file, it keeps rotating that file on SIGUSR1 first
   (C{twisted.scripts._twistd_unix.UnixAppLogger}), so the summary opens
   the new file. Its default action, too, would end the process.

The table of every signal is in C{docs/operations.md}.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger

from twisted_echo._twisted.exitsignal import set_exit_signal
from twisted_echo.app.interfaces import IServer
from twisted_echo.policies.counters import ServiceCounters

_log = Logger()

#: A C{signal.signal} handler.
Handler = Callable[[int, FrameType | None], Any]


def status_counters(server: Any) -> Mapping[str, ServiceCounters]:
    """
    @param server: an L{IServer} (L{IServer.status_counters}: the single
        process's counters, held bytes measured now, or the supervisor's
        summed over the workers as they last reported, every service
        listed); or any object with C{counters}.
    @return: each service's counters, by name.
    """
    if IServer.providedBy(server):
        return dict(server.status_counters())
    return dict(server.counters)


def log_status(server: Any) -> None:
    """
    Log the status of C{server}: with workers, one line for the workers
    serving (number, pid, seconds up); then one line per service with its
    counters so far (L{ServiceCounters.summary}: C{status: echo:
    connections=12 open=2 bytes_in=...}).

    @param server: as for L{status_counters}.
    """
    workers = getattr(server, "workers", None)
    if workers is not None:
        now = server.reactor.seconds()
        serving = [
            f"{w.number} (pid {w.pid}, up {now - w.ready_at:.0f} s)"
            for w in sorted(workers.values(), key=lambda w: w.number)
            if w.ready_at is not None
        ]
        _log.info(
            "status: {count} worker(s) serving: {workers}",
            count=len(serving),
            workers=", ".join(serving) or "none",
        )
    for name, counters in status_counters(server).items():
        _log.info(
            "status: {service}: {summary}", service=name, summary=counters.summary()
        )


class SignalService(Service):
    """
    Installs sockecho's SIGHUP and SIGUSR1 handlers while it runs (in the
    process twistd runs, before any listener starts), and puts the
    previous handlers back when stopped.

    @ivar server: the L{twisted_echo.app.server.SockechoService} or the
        L{twisted_echo.app.supervisor.Supervisor}.
    @ivar draining: set once the drain has started (L{drain_started}): a
        SIGHUP then changes nothing.
    """

    def __init__(self, server: Any, reactor: Any) -> None:
        self.server = server
        self.reactor = reactor
        self.draining = False
        self._previous: dict[int, Any] = {}

    def privilegedStartService(self) -> None:
        """
        Install the handlers (only from the main thread, where Python lets
        a program set them).
        """
        Service.privilegedStartService(self)
        if self._previous or threading.current_thread() is not threading.main_thread():
            return
        self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hup)
        self._previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self._on_usr1)

    def startService(self) -> None:
        Service.startService(self)
        if not self._previous:
            self.privilegedStartService()

    def stopService(self) -> None:
        """
        Put the previous handlers back.
        """
        Service.stopService(self)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def drain_started(self) -> None:
        """
        The drain (or C{--drain-delay}'s wait before it) has started: SIGHUP
        is logged and changes nothing; SIGTERM and SIGINT are handled here
        from now on (L{stop_again}), instead of by the reactor, which has
        already stopped and would log a C{ReactorNotRunning} traceback.
        """
        self.draining = True
        if not self._previous:
            return  # no handlers installed (not the main thread)
        for signum in (signal.SIGTERM, signal.SIGINT):
            if signum not in self._previous:
                self._previous[signum] = signal.signal(signum, self._on_stop_again)

    def _on_stop_again(self, signum: int, frame: FrameType | None) -> None:
        self.reactor.callFromThread(self.stop_again, signum)

    def stop_again(self, signum: int) -> None:
        """
        SIGTERM or SIGINT arrived once the drain had started (called in the
        reactor thread): end C{--drain-delay}'s wait now
        (L{IServer.end_drain_delay}); during the drain itself, nothing.

        @param signum: the signal's number.
        """
        name = signal.Signals(signum).name
        if not self.server.end_drain_delay(f"received {name}"):
            _log.info("received {signal} while draining; ignored", signal=name)

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self.reactor.callFromThread(self.hang_up)

    def _on_usr1(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous.get(signal.SIGUSR1)
        if callable(previous):
            previous(signum, frame)  # twistd's log rotation
        self.reactor.callFromThread(log_status, self.server)

    def hang_up(self) -> None:
        """
        SIGHUP arrived (called in the reactor thread): replace the workers
        (L{twisted_echo.app.supervisor.Supervisor.reload}), or drain and stop
        as SIGTERM does; during a drain, nothing.
        """
        if self.draining:
            _log.info("received SIGHUP while draining; ignored")
            return
        reload = getattr(self.server, "reload", None)
        if reload is not None:
            _log.info("received SIGHUP, replacing the workers")
            reload()
            return
        _log.info("received SIGHUP, draining as for SIGTERM")
        self.draining = True
        # twistd ends by the signal the reactor stopped on
        # (twisted.application.app._exitWithSignal), as for SIGTERM.
        set_exit_signal(self.reactor, signal.SIGHUP)
        self.reactor.stop()
