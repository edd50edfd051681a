# -*- test-case-name: tests.test_logpublisher -*-
"""
The observers of a L{twisted.logger.LogPublisher}: its private
C{_observers} list, which sockecho reads to hand a connection's log line
straight to its text observer when that is the only observer
(L{sole_line_taker}, L{twisted_echo.log.buffer.sole_text_observer}: the
two lines of a connection 17.5 µs → 7.5 µs). The services ask
L{sole_line_taker}; the text observer adds itself with L{add_line_taker}.

L{log_publisher_misfit} checks, once at import, that the list still is
the publisher's observers, in order, as C{addObserver} and
C{removeObserver} change them, and that an event published reaches them.
L{LOG_PUBLISHER_FITS} is the result; when it is false, L{observers_of}
says L{None} and every line goes through the publisher.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from twisted.logger import LogLevel, LogPublisher

__all__ = [
    "LOG_PUBLISHER_FITS",
    "LOG_PUBLISHER_MISFIT",
    "LineTaker",
    "add_line_taker",
    "log_publisher_misfit",
    "observers_of",
    "sole_line_taker",
]


class LineTaker(Protocol):
    """
    A log observer that also takes a line made without an event
    (L{twisted_echo.log.buffer.BufferedLogObserver.take_message}).
    """

    def take_message(
        self,
        namespace: str,
        level: LogLevel,
        format: str,
        fields: Mapping[str, object],
        when: float,
    ) -> None: ...


#: The observers L{sole_line_taker} may return (text observers that were
#: asked to take lines made without an event: L{add_line_taker}).
_LINE_TAKERS: list[LineTaker] = []


def add_line_taker(observer: LineTaker) -> None:
    """
    Let L{sole_line_taker} return C{observer} when it is the only observer
    of a publisher.
    """
    _LINE_TAKERS.append(observer)


def sole_line_taker(publisher: object) -> LineTaker | None:
    """
    @param publisher: a L{twisted.logger.LogPublisher} (the global one).
    @return: the observer added with L{add_line_taker} if it is the only
        observer of C{publisher} now (so a line it is handed directly is
        all any observer would have made of the event); else L{None}.
        Reads the publisher's observers (L{observers_of}); where they are
        not known (another Twisted), always L{None}.
    """
    observers = observers_of(publisher)
    if observers is not None and len(observers) == 1:
        observer = observers[0]
        if observer in _LINE_TAKERS:
            return observer  # type: ignore[no-any-return]
    return None


def observers_of(publisher: object) -> list[Any] | None:
    """
    @param publisher: a L{LogPublisher} (the global one, say).
    @return: its observers now, in the order they were added (the
        publisher's own list: do not change it), or L{None} when that is
        not known (another kind of publisher, or a Twisted whose publisher
        does not keep them as L{log_publisher_misfit} expects).
    """
    observers = getattr(publisher, "_observers", None)
    if not LOG_PUBLISHER_FITS or type(observers) is not list:
        return None
    return observers


def log_publisher_misfit() -> str | None:
    """
    Check on a fresh L{LogPublisher} that C{_observers} lists its
    observers: the one it was built with, one added, not one removed; and
    that an event published reaches each of them.

    @return: L{None} when it fits, else what does not.
    """
    seen: list[str] = []

    def first(event: dict[str, Any]) -> None:
        seen.append("first")

    def second(event: dict[str, Any]) -> None:
        seen.append("second")

    observer_one: Any = first
    observer_two: Any = second
    try:
        publisher = LogPublisher(observer_one)
        if getattr(publisher, "_observers", None) != [first]:
            return "LogPublisher._observers is not its list of observers"
        publisher.addObserver(observer_two)
        if publisher._observers != [first, second]:
            return "LogPublisher._observers does not follow addObserver"
        publisher({"log_format": "check"})
        if seen != ["first", "second"]:
            return "an event published does not reach the observers listed"
        publisher.removeObserver(observer_one)
        if publisher._observers != [second]:
            return "LogPublisher._observers does not follow removeObserver"
    except Exception as error:
        return f"a LogPublisher raised {error!r}"
    return None


#: Why L{observers_of} cannot be trusted on this Twisted, or L{None}.
LOG_PUBLISHER_MISFIT = log_publisher_misfit()
#: Whether L{observers_of} reads this Twisted's publishers.
LOG_PUBLISHER_FITS = LOG_PUBLISHER_MISFIT is None
