"""
Tests for L{twisted_echo._twisted.exitsignal}: the signal twistd ends by.
"""

from __future__ import annotations

import signal

from twisted.application import app
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from twisted_echo._twisted.exitsignal import exit_signal_misfit, set_exit_signal


class ExitSignalTests(SynchronousTestCase):
    """
    twistd reads the reactor's C{_exitSignal} after it stops; a changed
    Twisted is noticed and the drain still stops the reactor.
    """

    def test_installed_twisted_fits(self) -> None:
        """
        The installed Twisted's epoll reactor captures its exit signal and
        twistd reads it; this fails first when a Twisted release changes
        that.
        """
        reactor = EPollReactor()
        self.addCleanup(reactor._poller.close)  # type: ignore[attr-defined]
        self.assertIsNone(exit_signal_misfit(reactor))

    def test_twistd_ends_by_the_signal_set(self) -> None:
        """
        After L{set_exit_signal}, twistd's runner takes the signal from the
        reactor it ran, as it does after a SIGTERM.
        """
        reactor = EPollReactor()
        self.addCleanup(reactor._poller.close)  # type: ignore[attr-defined]
        self.assertTrue(set_exit_signal(reactor, signal.SIGHUP))
        runner = app.ApplicationRunner(
            {"profile": False, "profiler": "cprofile", "debug": False, "nodaemon": True}
        )
        self.patch(app, "runReactorWithLogging", lambda *args: None)
        runner.startReactor(reactor, None, None)
        self.assertEqual(runner._exitSignal, signal.SIGHUP)  # type: ignore[attr-defined]

    def test_changed_twisted_is_noticed(self) -> None:
        """
        On a reactor that does not capture its exit signal (a test
        reactor, or a changed Twisted), the check says so; the attribute is
        still set, as before the check, and nothing else changes.
        """
        reactor = MemoryReactorClock()
        self.assertEqual(
            exit_signal_misfit(reactor),
            "MemoryReactorClock does not capture its exit signal",
        )
        self.assertFalse(set_exit_signal(reactor, signal.SIGHUP))
        self.assertEqual(reactor._exitSignal, signal.SIGHUP)  # type: ignore[attr-defined]
        self.patch(app.ApplicationRunner, "startReactor", lambda self, *args: None)
        reactor = EPollReactor()
        self.addCleanup(reactor._poller.close)  # type: ignore[attr-defined]
        self.assertEqual(
            exit_signal_misfit(reactor), "twistd no longer reads reactor._exitSignal"
        )
