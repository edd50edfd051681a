# -*- test-case-name: tests.test_reactor -*-
"""
The reactor sockecho runs on unless C{twistd -r} names another: Twisted's
epoll reactor, dispatching each socket event without a log context.

Twisted's L{EPollReactor} wraps every read or write event in
L{twisted.python.log.callWithLogger}, which asks the transport for its log
prefix and pushes a copy of the legacy log context (a dict) for the call:
about 1.5 microseconds per event on this project's benchmark machine, a
sixth of the server's time per request with 50 connections of 1 KiB
requests. That context only names the connection in the C{system} field of
legacy C{twisted.python.log} messages; sockecho logs through
L{twisted.logger} with the peer in every message. Here an event goes
straight to the transport. An error a protocol raises is still caught and
logged, and the reactor goes on, as in Twisted's reactor: from C{dataReceived}
it ends that connection, from C{connectionLost} it is only logged. Only the
C{system} field of such a traceback reads C{-} instead of the connection's
prefix.

L{EventReactor} relies on internals of L{EPollReactor} (its poller, its map
of selectables, C{_doReadOrWrite}, C{_disconnectSelectable}). At start-up
L{event_reactor_misfit} checks they are still there as expected; if a Twisted
release changed them, L{install_if_unchosen} installs Twisted's own
L{EPollReactor} instead, logs why (a warning, in twistd's log once it
starts) and keeps the reason in L{fallback_reason}.

C{twistd -r epoll} (or any other C{-r}) runs sockecho on that reactor
unchanged.
"""

from __future__ import annotations

import errno
import inspect
import sys
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

#: The C{reactor class} twistd logs when sockecho's reactor runs.
REACTOR_NAME = "twisted_echo._twisted.reactor.EventReactor"

_log = Logger()

#: Why L{install_if_unchosen} installed Twisted's L{EPollReactor} instead of
#: L{EventReactor} (for the log), or L{None}.
fallback_reason: str | None = None

if sys.platform == "linux":
    from select import EPOLLIN

    from twisted.internet.epollreactor import EPollReactor
    from twisted.python import log

    class EventReactor(EPollReactor):
        """
        L{EPollReactor} whose C{doPoll} calls each ready selectable's
        C{doRead}/C{doWrite} without pushing a log context for the call, and
        calls C{doRead} directly for an event that is only "readable" (most
        events of a busy server).

        It adds no state to L{EPollReactor}, only this method.
        """

        def doPoll(self, timeout: float | None) -> None:
            """
            Wait up to C{timeout} seconds (L{None}: without limit) for socket
            events and dispatch them. An exception from handling one event
            (a protocol's C{connectionLost}, say) is logged and the next
            event is handled, as L{EPollReactor} does.

            @raise OSError: if C{epoll_wait} fails other than by C{EINTR}.
            """
            try:
                events = self._poller.poll(
                    -1 if timeout is None else timeout, len(self._selectables)
                )
            except OSError as err:
                if err.errno == errno.EINTR:
                    return
                raise
            selectables = self._selectables
            dispatch: Any = self._doReadOrWrite
            disconnect: Any = self._disconnectSelectable
            for fd, event in events:
                selectable = selectables.get(fd)
                if selectable is None:
                    continue
                # What log.callWithLogger does around _doReadOrWrite in
                # EPollReactor, less the log context.
                try:
                    if event != EPOLLIN:
                        dispatch(selectable, fd, event)
                        continue
                    # The common case, only data to read: what
                    # _doReadOrWrite does for it, less its check that
                    # fileno() is not -1.
                    try:
                        why = selectable.doRead()
                    except BaseException:
                        why = sys.exc_info()[1]
                        log.err()
                    if why:
                        disconnect(selectable, why, True)
                except KeyboardInterrupt:
                    raise
                except BaseException:
                    log.err()

        doIteration = doPoll


def _takes(function: Any, names: list[str]) -> bool:
    """
    @return: whether C{function}'s parameters are C{names}, then only
        optional ones.
    """
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return False
    optional = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [p.name for p in parameters[: len(names)]] == names and all(
        p.default is not p.empty or p.kind in optional for p in parameters[len(names) :]
    )


def event_reactor_misfit(reactor: object | None = None) -> str | None:
    """
    Check that Twisted's L{EPollReactor} still has what L{EventReactor}
    relies on: C{doIteration} that is C{doPoll(timeout)}, which
    L{EventReactor} replaces; C{_doReadOrWrite(selectable, fd, event)} and
    C{_disconnectSelectable(selectable, why, isRead)}, which it calls;
    C{_POLL_IN} being C{EPOLLIN}; and, given a reactor built by
    C{EPollReactor.__init__}, its C{_poller} with a C{poll} method and its
    C{_selectables} dict.

    @param reactor: a reactor to check as well, or L{None} for the class
        only.
    @return: L{None} when L{EventReactor} fits, else what does not.
    """
    if sys.platform != "linux":
        return "epoll is Linux only"
    cls: Any = EPollReactor
    expected = {
        "doPoll": ["self", "timeout"],
        "_doReadOrWrite": ["self", "selectable", "fd", "event"],
        "_disconnectSelectable": ["self", "selectable", "why", "isRead"],
    }
    for name, parameters in expected.items():
        function = getattr(cls, name, None)
        if not callable(function):
            return f"EPollReactor.{name} is missing"
        if not _takes(function, parameters):
            return f"EPollReactor.{name} does not take ({', '.join(parameters)})"
    if getattr(cls, "doIteration", None) is not cls.doPoll:
        return "EPollReactor.doIteration is not doPoll"
    if getattr(cls, "_POLL_IN", None) != EPOLLIN:
        return "EPollReactor._POLL_IN is not EPOLLIN"
    if reactor is not None:
        if not callable(getattr(getattr(reactor, "_poller", None), "poll", None)):
            return "EPollReactor._poller.poll is missing"
        if not isinstance(getattr(reactor, "_selectables", None), dict):
            return "EPollReactor._selectables is not a dict"
    return None


def build_reactor(
    misfit: Callable[[object | None], str | None] = event_reactor_misfit,
) -> tuple[Any, str | None]:
    """
    Build the reactor sockecho runs on, without installing it: an
    L{EventReactor} when C{misfit} finds that it fits Twisted's
    L{EPollReactor}, else a stock L{EPollReactor} (and a warning saying
    why).

    @param misfit: the check (L{event_reactor_misfit}), called with L{None}
        before building and with the reactor built.
    @return: the reactor, and L{None} or why it is Twisted's own.
    """
    reason = misfit(None)
    if reason is None:
        event_reactor: Any = EventReactor
        reactor = event_reactor()
        reason = misfit(reactor)
        if reason is None:
            return reactor, None
        # EventReactor adds no state to the EPollReactor its __init__ built:
        # this makes it exactly the stock reactor.
        reactor.__class__ = EPollReactor
    else:
        reactor = EPollReactor()
    _log.warn(
        "sockecho's EventReactor does not fit this Twisted ({reason}); "
        "running on Twisted's EPollReactor",
        reason=reason,
    )
    return reactor, reason


def install_if_unchosen() -> bool:
    """
    Install L{EventReactor} as the global reactor (or, when it does not fit
    the installed Twisted, Twisted's L{EPollReactor}, noting why in
    L{fallback_reason}), unless a reactor is installed already
    (C{twistd -r}, trial, an earlier import of C{twisted.internet.reactor})
    or this platform has no epoll.

    @return: whether a reactor was installed.
    """
    global fallback_reason
    if "twisted.internet.reactor" in sys.modules or sys.platform != "linux":
        return False
    from twisted.internet.main import installReactor

    reactor, fallback_reason = build_reactor()
    installReactor(reactor)
    return True
