"""
Tests for L{twisted_echo.log.buffer}: lines written in batches at most 0.1 s
after they are logged, at once when urgent or when the reactor is not
running, and none lost at shutdown; levels below C{--log-level} dropped.
"""

from __future__ import annotations

import io
import threading
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import LogLevel, LogPublisher, formatTime
from twisted.trial.unittest import TestCase

from twisted_echo.log.buffer import (
    FLUSH_INTERVAL,
    MAX_BUFFER,
    BufferedLogObserver,
    levels_from,
    sole_text_observer,
)
from twisted_echo.log.classic import ClassicText


class FakeReactor(Clock):
    """
    A clock with the reactor's C{running} flag and system event triggers.
    """

    def __init__(self) -> None:
        super().__init__()
        self.running = True
        self.triggers: list[tuple[str, str, Any]] = []

    def addSystemEventTrigger(self, phase: str, event: str, f: Any) -> None:  # noqa: N802
        self.triggers.append((phase, event, f))

    def shut_down(self) -> None:
        self.running = False
        for phase, event, f in self.triggers:
            if (phase, event) == ("after", "shutdown"):
                f()


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def line_of(event: dict[str, Any]) -> str:
    return f"{event['text']}\n"


def event(text: str, level: LogLevel | None = LogLevel.info) -> dict[str, Any]:
    return {"text": text} if level is None else {"text": text, "log_level": level}


class BufferedLogObserverTests(TestCase):
    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.stream = CountingStream()
        self.observer = BufferedLogObserver(
            self.stream, line_of, lambda: self.reactor, levels_from("info")
        )

    def test_lines_wait_at_most_the_flush_interval(self) -> None:
        """
        While the reactor runs, lines logged together are written together,
        one write, no later than L{FLUSH_INTERVAL} after the first.
        """
        for n in range(100):
            self.observer(event(f"line {n}"))
        self.assertEqual(self.stream.getvalue(), "")
        self.reactor.advance(FLUSH_INTERVAL * 0.99)
        self.assertEqual(self.stream.getvalue(), "")
        self.reactor.advance(FLUSH_INTERVAL * 0.01)
        self.assertEqual(
            self.stream.getvalue(), "".join(f"line {n}\n" for n in range(100))
        )
        self.assertEqual(self.stream.writes, 1)
        self.assertLessEqual(FLUSH_INTERVAL, 0.1)

    def test_a_later_line_gets_its_own_deadline(self) -> None:
        self.observer(event("a"))
        self.reactor.advance(FLUSH_INTERVAL)
        self.reactor.advance(FLUSH_INTERVAL / 2)
        self.observer(event("b"))
        self.assertEqual(self.stream.getvalue(), "a\n")
        self.reactor.advance(FLUSH_INTERVAL)
        self.assertEqual(self.stream.getvalue(), "a\nb\n")

    def test_warnings_and_worse_are_written_at_once_after_what_came_before(
        self,
    ) -> None:
        for level in (LogLevel.warn, LogLevel.error, LogLevel.critical):
            self.observer(event("before"))
            self.observer(event(level.name, level))
            self.assertTrue(self.stream.getvalue().endswith(f"before\n{level.name}\n"))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_a_full_buffer_is_written_at_once(self) -> None:
        big = "x" * (MAX_BUFFER // 4)
        for _ in range(4):
            self.observer(event(big))
        self.assertEqual(len(self.stream.getvalue()), 4 * (len(big) + 1))

    def test_nothing_waits_while_the_reactor_is_not_running(self) -> None:
        self.reactor.running = False
        self.observer(event("starting"))
        self.assertEqual(self.stream.getvalue(), "starting\n")
        observer = BufferedLogObserver(io.StringIO(), line_of, lambda: None)
        observer(event("no reactor yet"))
        self.assertEqual(observer.stream.getvalue(), "no reactor yet\n")

    def test_shutdown_writes_what_waits(self) -> None:
        """
        The reactor's shutdown (after the drain) writes the waiting lines;
        lines after it, as the reactor stops, are written at once.
        """
        self.observer(event("last connection closed"))
        self.reactor.shut_down()
        self.assertEqual(self.stream.getvalue(), "last connection closed\n")
        self.observer(event("Main loop terminated."))
        self.assertEqual(
            self.stream.getvalue(), "last connection closed\nMain loop terminated.\n"
        )

    def test_levels_below_the_chosen_one_are_dropped(self) -> None:
        observer = BufferedLogObserver(
            self.stream, line_of, lambda: None, levels_from("warn")
        )
        observer(event("debug", LogLevel.debug))
        observer(event("info", LogLevel.info))
        observer(event("warn", LogLevel.warn))
        observer(event("no level", None))
        self.assertEqual(self.stream.getvalue(), "warn\nno level\n")

    def test_levels_from(self) -> None:
        self.assertEqual(levels_from("debug"), frozenset(LogLevel.iterconstants()))
        self.assertEqual(levels_from("critical"), {LogLevel.critical})
        self.assertRaises(KeyError, levels_from, "loud")

    def test_other_threads_write_at_once(self) -> None:
        thread = threading.Thread(target=self.observer, args=(event("thread"),))
        thread.start()
        thread.join(10)
        self.assertEqual(self.stream.getvalue(), "thread\n")

    def test_a_failing_stream_loses_the_batch_not_the_process(self) -> None:
        class Full(io.StringIO):
            def write(self, text: str) -> int:
                raise OSError(28, "No space left on device")

        observer = BufferedLogObserver(Full(), line_of, lambda: None)
        observer(event("lost"))
        observer.flush()

    def test_a_line_logged_while_writing_waits_for_that_write(self) -> None:
        """
        A signal handler that logs while a batch is being written (twistd's
        SIGTERM handler logs) neither deadlocks nor writes in the middle of
        that batch: its line follows it.
        """
        observer = self.observer

        class Interrupted(io.StringIO):
            interrupted = False

            def write(self, text: str) -> int:
                if not self.interrupted:
                    self.interrupted = True
                    observer(event("Received SIGTERM", LogLevel.warn))
                return super().write(text)

        observer.stream = Interrupted()
        observer(event("a"))
        observer(event("b"))
        observer.flush()
        self.assertEqual(observer.stream.getvalue(), "a\nb\nReceived SIGTERM\n")


class SoleTextObserverTests(TestCase):
    """
    L{sole_text_observer} finds sockecho's text observer only when it is
    the only observer of a publisher; it reads the publisher's private
    C{_observers}, so this fails first if Twisted changes it.
    """

    def test_alone(self) -> None:
        observer = BufferedLogObserver(
            io.StringIO(), ClassicText(), lambda: None, takes_lines=True
        )
        publisher = LogPublisher(observer)
        self.assertIs(sole_text_observer(publisher), observer)
        publisher.addObserver(lambda event: None)
        self.assertIsNone(sole_text_observer(publisher))

    def test_only_observers_that_take_lines(self) -> None:
        observer = BufferedLogObserver(io.StringIO(), ClassicText(), lambda: None)
        self.assertIsNone(sole_text_observer(LogPublisher(observer)))
        self.assertIsNone(sole_text_observer(object()))

    def test_take_message_filters_by_level(self) -> None:
        out = io.StringIO()
        observer = BufferedLogObserver(
            out, ClassicText(), lambda: None, levels_from("warn"), takes_lines=True
        )
        observer.take_message("ns", LogLevel.info, "dropped", {}, 0.0)
        observer.take_message("ns", LogLevel.warn, "{a}", {"a": "kept"}, 0.0)
        self.assertEqual(out.getvalue(), f"{formatTime(0.0)} [ns#warn] kept\n")
