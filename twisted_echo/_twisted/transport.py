# -*- test-case-name: tests.test_transport -*-
"""
A TCP server transport that holds less per connection than Twisted's.

Twisted's L{twisted.internet.tcp.Server} stores, for every connection, a
bound C{fileno} method, a C{repr} string, a log-prefix string and the peer's
host string: about 0.27 KiB per connection, 2.7 MiB for 10,000 idle
connections. L{Server} computes those on demand instead and shares one copy
of each peer host string. Measured with tracemalloc, an idle echo
connection that has echoed a byte held 1.1 KiB of Python heap in the server
with L{tcp.Server} and 0.89 KiB with L{Server}. The tests pin the layout
behind that figure rather than measure it: L{Server} stores none of those
attributes, and a protocol sets every attribute in its C{__init__} (see
L{twisted_echo.services.stream.StreamProtocol}). It is used for plain TCP listeners
only (L{use_lean_transport}); its behaviour, including half-close, TLS and
flow control, is L{tcp.Server}'s.

L{Server} relies on what C{tcp.Server.__init__} stores and on
C{_getLogPrefix} and the port's C{_realPortNumber}, internals of Twisted.
L{use_lean_transport} checks them first (L{lean_transport_misfit}) and,
if a Twisted release changed them, leaves Twisted's own transport in place
and logs why.

A constructor that raises (a bug, or a changed Twisted) after the factory
built the protocol would leave the protocol never told: L{Server} then
closes the socket and calls the protocol's C{connection_failed_to_start}
method, if it has one, before re-raising for the port to log, so that a
connection limit's place taken in C{buildProtocol} is given back.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import IProtocol, IReactorFDSet
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from twisted_echo._twisted.fastpaths import note

_log = Logger()

#: What C{tcp.Server.__init__} stores that L{Server} relies on or drops.
SERVER_ATTRIBUTES = (
    "repstr",
    "logstr",
    "hostname",
    "fileno",
    "client",
    "sessionno",
    "server",
)


def _closed_fileno() -> int:
    return -1


class Server(tcp.Server):
    """
    L{tcp.Server} without the per-connection strings and bound method.

    Its arguments are L{tcp.Server}'s: the accepted socket, the protocol,
    the peer address tuple C{(host, port[, flowinfo, scope_id])}, the
    listening port, the session number and the reactor.
    """

    def __init__(
        self,
        sock: socket.socket,
        protocol: IProtocol,
        client: tuple[object, ...],
        server: tcp.Port,
        sessionno: int,
        reactor: IReactorFDSet,
    ) -> None:
        try:
            tcp.Server.__init__(
                self, sock, protocol, client, server, sessionno, reactor
            )
            del self.repstr, self.logstr
            host, *rest = self.client
            if isinstance(host, str):
                self.client = (sys.intern(host), *rest)
        except BaseException:
            self._failed_to_start(sock, protocol)
            raise

    def _failed_to_start(self, sock: socket.socket, protocol: object) -> None:
        """
        Undo what the constructor did before it raised: stop reading (if it
        got that far), close the socket, and tell the protocol, which will
        never be connected (C{connection_failed_to_start}, if it has it).
        """
        try:
            if getattr(self, "reactor", None) is not None and "socket" in vars(self):
                stop_reading: Any = self.stopReading
                stop_reading()
            sock.close()
        except Exception:
            _log.failure("closing a connection whose transport failed")
        failed = getattr(protocol, "connection_failed_to_start", None)
        if failed is not None:
            try:
                failed()
            except Exception:
                _log.failure("{protocol}.connection_failed_to_start", protocol=protocol)

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


class _ProbeReactor:
    """
    Enough of a reactor for a transport built only to be looked at.
    """

    def addReader(self, reader: object) -> None:
        pass

    def removeReader(self, reader: object) -> None:
        pass

    def addWriter(self, writer: object) -> None:
        pass

    def removeWriter(self, writer: object) -> None:
        pass


def _probe(transport_class: type[tcp.Server], port: tcp.Port) -> tcp.Server:
    """
    Build a C{transport_class} on a fresh unconnected socket, for a plain
    L{Protocol} from 127.0.0.1 on C{port}, without a reactor; close its
    socket.
    """
    with socket.socket() as sock:
        reactor: Any = _ProbeReactor()
        return transport_class(sock, Protocol(), ("127.0.0.1", 1), port, 7, reactor)


def lean_transport_misfit(port: tcp.Port) -> str | None:
    """
    Check that L{Server} fits the installed Twisted, by building one of each
    transport, not connected: that C{tcp.Server.__init__} still stores
    L{SERVER_ATTRIBUTES}, that C{_getLogPrefix} is there and
    C{port._realPortNumber} is the port's number, and that L{Server} stores
    none of the strings and describes the connection as L{tcp.Server} does.

    @param port: the listening port whose transports would change.
    @return: L{None} when it fits, else what does not.
    """
    if getattr(port, "_realPortNumber", None) != port.getHost().port:
        return "tcp.Port._realPortNumber is not the port's number"
    if not callable(getattr(tcp.Server, "_getLogPrefix", None)):
        return "tcp.Server._getLogPrefix is missing"
    try:
        stock = _probe(tcp.Server, port)
        missing = [name for name in SERVER_ATTRIBUTES if name not in vars(stock)]
        if missing:
            return f"tcp.Server no longer stores {', '.join(missing)}"
        lean = _probe(Server, port)
    except Exception as error:
        return f"building a transport raised {error!r}"
    stored = [name for name in SERVER_ATTRIBUTES[:4] if name in vars(lean)]
    if stored:
        return f"the lean transport stores {', '.join(stored)}"
    if repr(lean) != repr(stock):
        return f"repr {lean!r} is not {stock!r}"
    if lean.logPrefix() != stock.logPrefix():
        return f"logPrefix {lean.logPrefix()!r} is not {stock.logPrefix()!r}"
    return None


def use_lean_transport(port: object) -> bool:
    """
    Make a listening TCP port build L{Server} transports for the connections
    it accepts from now on, if L{Server} fits the installed Twisted
    (L{lean_transport_misfit}); if not, log why and leave it.

    @param port: a listening port from a stream endpoint.
    @return: whether it was changed: only a plain L{tcp.Port} (C{tcp},
        C{tcp6}, C{ssl}, C{systemd} endpoints) building L{tcp.Server}
        transports is; others (UNIX sockets...) are left as they are.
    """
    if not (isinstance(port, tcp.Port) and port.transport is tcp.Server):
        return False
    reason = lean_transport_misfit(port)
    note("lean transport", reason)
    if reason is not None:
        _log.warn(
            "sockecho's lean TCP transport does not fit this Twisted "
            "({reason}); using Twisted's tcp.Server",
            reason=reason,
        )
        return False
    port.transport = Server
    return True
