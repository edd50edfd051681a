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
straight to the transport, and an error a protocol raises is still caught,
logged and ends that connection, as in Twisted's reactor; only the
C{system} field of such a traceback reads C{-} instead of the connection's
prefix.

C{twistd -r epoll} (or any other C{-r}) runs sockecho on that reactor
unchanged.
"""

from __future__ import annotations

import errno
import sys
from typing import Any

#: The C{reactor class} twistd logs when sockecho's reactor runs.
REACTOR_NAME = "twisted_echo.reactor.EventReactor"

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
        """

        def doPoll(self, timeout: float | None) -> None:
            """
            Wait up to C{timeout} seconds (L{None}: without limit) for socket
            events and dispatch them.

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
                if event != EPOLLIN:
                    dispatch(selectable, fd, event)
                    continue
                # The common case, only data to read: what _doReadOrWrite
                # does for it, less its check that fileno() is not -1.
                try:
                    why = selectable.doRead()
                except BaseException:
                    why = sys.exc_info()[1]
                    log.err()
                if why:
                    disconnect(selectable, why, True)

        doIteration = doPoll


def install_if_unchosen() -> bool:
    """
    Install L{EventReactor} as the global reactor, unless a reactor is
    installed already (C{twistd -r}, trial, an earlier import of
    C{twisted.internet.reactor}) or this platform has no epoll.

    @return: whether it was installed.
    """
    if "twisted.internet.reactor" in sys.modules or sys.platform != "linux":
        return False
    from twisted.internet.main import installReactor

    reactor_class: Any = EventReactor
    installReactor(reactor_class())
    return True
