# -*- test-case-name: tests.test_faults_endings -*-
"""
Ending faults: how a connection is ended on purpose.

C{close-after} (FIN, once what was sent is delivered), C{reset-after} (RST:
C{SO_LINGER} with a zero timeout, then Twisted's C{abortConnection}, once
the peer has acknowledged the bytes sent, so it reads exactly them before
C{ECONNRESET}), C{half-close-after} (C{shutdown(SHUT_WR)}; reading goes
on), and C{blackhole} (nothing read or written).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from twisted_echo._twisted.writequeue import queued_bytes
from twisted_echo.listening.sendqueue import kernel_unsent

#: Seconds between checks that the peer has acknowledged every byte sent,
#: before a reset.
DELIVERY_POLL = 0.005
#: The longest wait for that, in seconds: then the reset is sent anyway
#: (a peer that reads nothing is the stall timeout's, but the wait must
#: end even with C{--stall-timeout 0}).
DELIVERY_WAIT_MAX = 30.0
#: C{struct linger} with the option on and a zero timeout: close sends RST.
_LINGER_RESET = struct.pack("ii", 1, 0)


def tcp_socket_of(transport: Any) -> socket.socket | None:
    """
    @return: the TCP socket under C{transport} (under the TLS layer for
        C{ssl:} listeners), or L{None}.
    """
    under = getattr(transport, "tcp_socket", None)
    if under is not None:
        found = under()
        return found if isinstance(found, socket.socket) else None
    handle = getattr(transport, "socket", None)
    return handle if isinstance(handle, socket.socket) else None


def undelivered(transport: Any) -> int:
    """
    @return: bytes written to C{transport} not yet acknowledged by the peer
        (queued in Twisted or in the kernel), where known; else those in
        Twisted's queue.
    """
    queued = queued_bytes(transport) or 0
    sock = tcp_socket_of(transport)
    unsent = kernel_unsent(sock) if sock is not None else None
    return queued + (unsent or 0)


def reset(transport: Any) -> None:
    """
    Abort the connection with a TCP RST (C{SO_LINGER} 0; RFC 9293 section
    3.10.7.1's abort), dropping anything unsent.
    """
    sock = tcp_socket_of(transport)
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass
    transport.abortConnection()


class DeliveryWait:
    """
    Calls C{then} once every byte written to C{transport} has been
    acknowledged by the peer (polling every L{DELIVERY_POLL} s), or after
    L{DELIVERY_WAIT_MAX} s; the stall timeout still aborts a peer that
    reads none of them.
    """

    def __init__(
        self, clock: IReactorTime, transport: Any, then: Callable[[], None]
    ) -> None:
        self.clock = clock
        self.transport = transport
        self.then = then
        self.call: IDelayedCall | None = None
        self.deadline = clock.seconds() + DELIVERY_WAIT_MAX
        self.check()

    def check(self) -> None:
        self.call = None
        if undelivered(self.transport) and self.clock.seconds() < self.deadline:
            self.call = self.clock.callLater(DELIVERY_POLL, self.check)
        else:
            self.then()

    def stop(self) -> None:
        call, self.call = self.call, None
        if call is not None and call.active():
            call.cancel()
