# -*- test-case-name: tests.test_transport -*-
"""
A TCP server transport that holds less per connection than Twisted's.

Twisted's L{twisted.internet.tcp.Server} stores, for every connection, a
bound C{fileno} method, a C{repr} string, a log-prefix string and the peer's
host string, about 0.27 KiB of a connection's 1.1 KiB of Python heap. With
10,000 idle connections that is 2.7 MiB. L{Server} computes those on demand
instead and shares one copy of each peer host string. It is used for plain
TCP listeners only (L{use_lean_transport}); its behaviour, including
half-close, TLS and flow control, is L{tcp.Server}'s.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp


def _closed_fileno() -> int:
    return -1


class Server(tcp.Server):
    """
    L{tcp.Server} without the per-connection strings and bound method.

    Its arguments are L{tcp.Server}'s: the accepted socket, the protocol,
    the peer address tuple C{(host, port[, flowinfo, scope_id])}, the
    listening port, the session number and the reactor.
    """

    def __init__(self, *args: Any) -> None:
        tcp.Server.__init__(self, *args)
        del self.repstr, self.logstr
        host, *rest = self.client
        if isinstance(host, str):
            self.client = (sys.intern(host), *rest)

    @property
    def fileno(self) -> Callable[[], int]:
        """
        The socket's C{fileno} method; after the connection is lost, one
        that returns -1 (what L{twisted.internet.abstract.FileDescriptor}
        does for a closed descriptor).
        """
        try:
            return self.socket.fileno
        except AttributeError:
            return _closed_fileno

    @fileno.setter
    def fileno(self, value: Callable[[], int]) -> None:
        # tcp.Connection.__init__ stores the socket's fileno; it is derived
        # from the socket instead.
        pass

    @fileno.deleter
    def fileno(self) -> None:
        # tcp.Connection.connectionLost deletes it with the socket.
        pass

    @property
    def hostname(self) -> object:
        """
        The peer's host (L{tcp.Server} stores it per connection).
        """
        return self.client[0]

    @hostname.setter
    def hostname(self, value: object) -> None:
        # tcp.Server.__init__ stores client[0]; it is read from client.
        pass

    def logPrefix(self) -> str:
        """
        C{"<protocol prefix>,<session number>,<peer host>"}, as
        L{tcp.Server} gives it.
        """
        protocol = getattr(self, "protocol", None)
        prefix = "-" if protocol is None else self._getLogPrefix(protocol)
        return f"{prefix},{self.sessionno},{self.client[0]}"

    def __repr__(self) -> str:
        """
        C{"<Echo #3 on 7007>"}, as L{tcp.Server} gives it.
        """
        protocol = getattr(self, "protocol", None)
        name = type(protocol).__name__ if protocol is not None else "closed"
        port = self.server._realPortNumber if self.server is not None else "?"
        return f"<{name} #{self.sessionno} on {port}>"


def use_lean_transport(port: object) -> bool:
    """
    Make a listening TCP port build L{Server} transports for the connections
    it accepts from now on.

    @param port: a listening port from a stream endpoint.
    @return: whether it was changed: only a plain L{tcp.Port} (C{tcp},
        C{tcp6}, C{ssl}, C{systemd} endpoints) building L{tcp.Server}
        transports is; others (UNIX sockets...) are left as they are.
    """
    if isinstance(port, tcp.Port) and port.transport is tcp.Server:
        port.transport = Server  # type: ignore[assignment]
        return True
    return False
