"""
Tests for L{twisted_echo._twisted.logpublisher}: a L{LogPublisher}'s
observers, read from its private list, and the fallback without them.
"""

from __future__ import annotations

import io
from typing import Any

from twisted.logger import LogPublisher
from twisted.trial.unittest import TestCase

from tests.test_stream import patched_logger, patched_time
from twisted_echo._twisted import logpublisher
from twisted_echo._twisted.logpublisher import log_publisher_misfit, observers_of
from twisted_echo.log.buffer import BufferedLogObserver, sole_text_observer
from twisted_echo.log.classic import ClassicText
from twisted_echo.services.echo import Echo


class _RenamedPublisher:
    """
    What a Twisted release that renamed C{_observers} would build.
    """

    def __init__(self, *observers: Any) -> None:
        self._listeners = list(observers)

    def addObserver(self, observer: Any) -> None:  # noqa: N802 (Twisted's name)
        self._listeners.append(observer)

    def removeObserver(self, observer: Any) -> None:  # noqa: N802 (Twisted's name)
        self._listeners.remove(observer)

    def __call__(self, event: dict[str, Any]) -> None:
        for observer in self._listeners:
            observer(event)


def _connection_line(out: io.StringIO) -> str:
    observer = BufferedLogObserver(out, ClassicText(), lambda: None, takes_lines=True)
    publisher = LogPublisher(observer)
    with patched_logger(publisher), patched_time(1e9):
        Echo()._log_connection(
            "{service} connection from {peer}", service="echo", peer="tcp:192.0.2.7:1"
        )
    observer.flush()
    return out.getvalue()


class LogPublisherTests(TestCase):
    """
    L{observers_of} follows a publisher's observers; a changed Twisted is
    noticed and every line then goes through the publisher.
    """

    def test_installed_twisted_fits(self) -> None:
        """
        The installed Twisted's publisher keeps its observers as sockecho
        reads them; this fails first when a Twisted release changes that.
        """
        self.assertIsNone(log_publisher_misfit())
        self.assertTrue(logpublisher.LOG_PUBLISHER_FITS)

    def test_follows_add_and_remove(self) -> None:
        """
        The observers are the publisher's, in order, as they are added and
        removed.
        """

        def first(event: object) -> None:
            pass

        def second(event: object) -> None:
            pass

        publisher = LogPublisher(first)  # type: ignore[arg-type]
        self.assertEqual(observers_of(publisher), [first])
        publisher.addObserver(second)  # type: ignore[arg-type]
        self.assertEqual(observers_of(publisher), [first, second])
        publisher.removeObserver(first)  # type: ignore[arg-type]
        self.assertEqual(observers_of(publisher), [second])
        self.assertIsNone(observers_of(object()))

    def test_changed_twisted_falls_back(self) -> None:
        """
        On a Twisted whose publisher keeps its observers elsewhere, the
        check says so; with the fast path off, sockecho's text observer is
        never taken as the only one, and a connection line still reaches
        the log, the same line as by the fast path.
        """
        fast = _connection_line(io.StringIO())
        self.patch(logpublisher, "LogPublisher", _RenamedPublisher)
        self.assertEqual(
            log_publisher_misfit(),
            "LogPublisher._observers is not its list of observers",
        )
        self.patch(logpublisher, "LOG_PUBLISHER_FITS", False)
        observer = BufferedLogObserver(
            io.StringIO(), ClassicText(), lambda: None, takes_lines=True
        )
        self.assertIsNone(sole_text_observer(LogPublisher(observer)))
        self.assertEqual(_connection_line(io.StringIO()), fast)
        self.assertIn("echo connection from tcp:192.0.2.7:1", fast)


class _Taker:
    """
    A line taker that only counts its lines.
    """

    def __init__(self) -> None:
        self.lines = 0

    def __call__(self, event: dict[str, Any]) -> None:
        pass

    def take_message(self, *args: object) -> None:
        self.lines += 1


class SoleLineTakerTests(TestCase):
    """
    L{logpublisher.sole_line_taker}, what the services ask (the stream
    base's connection lines): an observer added with
    L{logpublisher.add_line_taker} is found only while it is the
    publisher's one observer.
    """

    def setUp(self) -> None:
        self.patch(logpublisher, "_LINE_TAKERS", [])

    def test_alone(self) -> None:
        taker = _Taker()
        logpublisher.add_line_taker(taker)
        publisher = LogPublisher(taker)
        self.assertIs(logpublisher.sole_line_taker(publisher), taker)
        publisher.addObserver(lambda event: None)
        self.assertIsNone(logpublisher.sole_line_taker(publisher))

    def test_not_added(self) -> None:
        self.assertIsNone(logpublisher.sole_line_taker(LogPublisher(_Taker())))
        self.assertIsNone(logpublisher.sole_line_taker(object()))
