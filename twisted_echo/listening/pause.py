# -*- test-case-name: tests.test_pause -*-
"""
Pausing a server's listeners while it runs (issue 21, "Misbehaving as a
backend"): the admin API's C{{"listeners": "pause"}}
(L{twisted_echo.operations.health}).

A paused listener keeps its socket open but is no longer read, with
Twisted's C{stopReading}, as the C{refuse} fault does, through the same
L{pause_accepting} with its own reason
(L{ADMIN_REASON}), so neither undoes the other:

 - TCP (and TLS, PROXY-protocol, UNIX) listeners: the kernel still
   completes handshakes into the listen backlog (C{--backlog}); once it
   is full it drops further SYNs, so a client's connect waits (and is
   retried by its kernel). Nothing is accepted until the listener
   resumes, when the backlog is accepted and served. Open connections
   carry on.
 - UDP listeners: datagrams wait in the socket's receive buffer (the
   kernel drops what does not fit) and are answered once the listener
   resumes; none is answered meanwhile.

The metrics listener is never paused (it answers the probes). One small
function taking the service, so that a worker process can call it on its
own server (L{pause_listeners}).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

from twisted_echo.listening.listen import (
    DatagramListenerService,
    ListenerService,
    StreamListenerService,
)

__all__ = [
    "ADMIN_REASON",
    "accepting",
    "pause_accepting",
    "pause_listeners",
    "resume_accepting",
    "service_listeners",
]

#: The reason a listener is paused by the admin API, beside a C{refuse}
#: fault's (L{pause_accepting}).
ADMIN_REASON = "admin"


#: Why each paused listening port is not accepting (weakly: a port that
#: is gone takes its reasons with it).
_PAUSED: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


def pause_accepting(port: Any, reason: str) -> None:
    """
    Stop accepting connections on a listening port: the kernel's backlog
    (C{--backlog}) takes connects until it is full, then they hang.

    @param port: a listening port (Twisted's C{tcp.Port}, C{unix.Port}:
        C{stopReading} and C{startReading}).
    @param reason: why (C{"refuse"}...): the port accepts again once
        L{resume_accepting} lifted every reason given. Pausing twice for
        the same reason is pausing once.
    """
    reasons = _PAUSED.setdefault(port, set())
    if not reasons:
        port.stopReading()
    reasons.add(reason)


def resume_accepting(port: Any, reason: str) -> None:
    """
    Lift C{reason}'s pause of L{pause_accepting}; the port accepts again
    (the backlog first) when no other reason holds it. Nothing happens
    for a reason not in force, or a port that stopped listening.
    """
    reasons = _PAUSED.get(port)
    if not reasons or reason not in reasons:
        return
    reasons.discard(reason)
    if not reasons:
        del _PAUSED[port]
        if getattr(port, "connected", True):
            port.startReading()


def accepting(port: Any) -> bool:
    """
    @return: whether no L{pause_accepting} reason holds C{port}.
    """
    return not _PAUSED.get(port)



def service_listeners(service: Iterable[Any]) -> list[ListenerService]:
    """
    @param service: a server (a L{twisted.application.service.MultiService}
        whose children are its listeners).
    @return: its stream and datagram listeners, the metrics listener
        (and any other child) left out.
    """
    return [
        child
        for child in service
        if isinstance(child, (StreamListenerService, DatagramListenerService))
    ]


def pause_listeners(service: Iterable[Any], paused: bool) -> int:
    """
    Stop (C{paused}) or start again (not C{paused}) reading every
    listening port of C{service}'s stream and datagram listeners; each
    listener remembers it (its C{paused} attribute), so a listener's own
    C{refuse} fault window ending does not resume a paused listener, and
    resuming does not end a C{refuse} window early.

    @param service: the server (see L{service_listeners}).
    @param paused: whether to pause (else resume).
    @return: how many listening ports were paused or resumed (those not
        listening are left alone).
    """
    changed = 0
    for listener in service_listeners(service):
        listener.paused = paused
        port = listener.port
        if port is None:
            continue
        if paused:
            pause_accepting(port, ADMIN_REASON)
        else:
            resume_accepting(port, ADMIN_REASON)
        changed += 1
    return changed
