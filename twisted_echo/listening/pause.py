# -*- test-case-name: tests.test_pause -*-
"""
Pausing a server's listeners while it runs (issue 21, "Misbehaving as a
backend"): the admin API's C{{"listeners": "pause"}}
(L{twisted_echo.operations.health}).

A paused listener keeps its socket open but is no longer read, with
Twisted's C{stopReading}, as the C{refuse} fault does
(L{twisted_echo.faults.refuse}):

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

from collections.abc import Iterable
from typing import Any

from twisted_echo.listening.listen import (
    DatagramListenerService,
    ListenerService,
    StreamListenerService,
)

__all__ = ["pause_listeners", "service_listeners"]


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
            port.stopReading()
        elif not _refusing(listener):
            port.startReading()
        changed += 1
    return changed


def _refusing(listener: ListenerService) -> bool:
    windows = getattr(listener, "windows", None)
    return bool(windows is not None and windows.refusing)
