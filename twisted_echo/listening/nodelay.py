# -*- test-case-name: tests.test_nodelay -*-
"""
The one TCP_NODELAY rule: replies go out at once, as asyncio and uvloop
send them. Nagle's algorithm (RFC 896) would hold a small reply while an
earlier one is unacknowledged, up to the peer's delayed-ACK time (40 ms on
Linux). Used by the plain stream services
(L{twisted_echo.services.stream}) and the TLS layer
(L{twisted_echo.listening.tls}).
"""

from __future__ import annotations

from twisted.internet import tcp, unix


def no_delay(transport: object) -> bool:
    """
    Switch Nagle's algorithm off on C{transport} when it is a TCP connection
    (a UNIX socket has no such option; other transports are left alone).

    @param transport: a connection's transport (for TLS, the TCP one under
        the TLS layer).
    @return: whether it was switched off; a socket already closed (C{OSError})
        is left as it is.
    """
    if not isinstance(transport, tcp.Connection) or isinstance(transport, unix.Server):
        return False
    try:
        transport.setTcpNoDelay(True)
    except OSError:
        return False
    return True


__all__ = ["no_delay"]
