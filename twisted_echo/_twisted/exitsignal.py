# -*- test-case-name: tests.test_exitsignal -*-
"""
The signal twistd ends by: the reactor's private C{_exitSignal}, which
C{twisted.application.app} reads after the reactor stops (when the reactor
provides C{_ISupportsExitSignalCapturing}) and re-raises at exit, so that
a service stopped by SIGTERM ends "killed by SIGTERM". sockecho's SIGHUP
drain (L{twisted_echo.app.signals}) ends the same way, by SIGHUP.

L{exit_signal_misfit} checks that twistd still reads it: the reactor
provides Twisted's C{_ISupportsExitSignalCapturing} and has C{_exitSignal},
and C{ApplicationRunner.startReactor} reads C{reactor._exitSignal}. Where it does
not fit, the attribute is still set (as before this check) but twistd
exits 0 after a SIGHUP drain, as after C{reactor.stop()}.
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["exit_signal_misfit", "set_exit_signal"]


def exit_signal_misfit(reactor: Any) -> str | None:
    """
    @param reactor: the running reactor (or another of its class).
    @return: L{None} when twistd takes the signal it ends by from
        C{reactor._exitSignal}, else what does not fit.
    """
    from twisted.application import app
    from twisted.internet import interfaces

    capturing = getattr(interfaces, "_ISupportsExitSignalCapturing", None)
    if capturing is None:
        return "twisted.internet.interfaces._ISupportsExitSignalCapturing is missing"
    try:
        source = inspect.getsource(app.ApplicationRunner.startReactor)
    except (OSError, TypeError):
        return "twistd's ApplicationRunner.startReactor has no source to check"
    if "_exitSignal" not in source:
        return "twistd no longer reads reactor._exitSignal"
    if not capturing.providedBy(reactor) or not hasattr(reactor, "_exitSignal"):
        return f"{type(reactor).__name__} does not capture its exit signal"
    return None


def set_exit_signal(reactor: Any, number: int) -> bool:
    """
    Make twistd end by signal C{number} once C{reactor} stops (call before
    C{reactor.stop()}): sets C{reactor._exitSignal}.

    @param number: a signal number, e.g. C{signal.SIGHUP}.
    @return: whether twistd will read it (L{False} where
        L{exit_signal_misfit} says why not, e.g. on a test reactor).
    """
    reactor._exitSignal = number
    return exit_signal_misfit(reactor) is None
