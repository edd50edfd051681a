# -*- test-case-name: tests.test_supervisor -*-
"""
Listening sockets opened by one process and used by another: how the
supervisor (L{twisted_echo.app.supervisor}) opens every listener once, and how
each worker listens on the sockets it inherited.

A stream listener's address is found by Twisted's own endpoint parser: the
description is listened on with L{RecordingReactor}, which records the
C{listenTCP}/C{listenUNIX} call instead of making it. The supervisor then
opens the socket itself (L{open_stream_sockets}); in a worker,
L{InheritingReactor} answers that same call by adopting the inherited
socket (C{adoptStreamPort}), so C{tcp:}, C{tcp6:}, C{unix:} and C{ssl:}
(sockecho's TLS layer listens through C{listenTCP}) all work unchanged.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from zope.interface import implementer

from twisted_echo._twisted.adopt import AdoptedUNIXPort, adopt_unix_port

#: Endpoint types whose listener each worker gets its own copy of
#: (C{SO_REUSEPORT}, so the kernel spreads connections evenly); others (UNIX
#: sockets) are one socket shared by every worker.
REUSEPORT_KINDS = frozenset({"tcp"})


@dataclass(frozen=True)
class StreamAddress:
    """
    Where a stream endpoint listens, as its parser asked the reactor.

    @ivar kind: C{"tcp"} (TCP over IPv4 or IPv6) or C{"unix"}.
    @ivar address: C{(interface, port)} for TCP, the path for UNIX.
    @ivar backlog: the listen queue length.
    """

    kind: str
    address: Any
    backlog: int


@implementer(IListeningPort)
class _NoPort:
    def startListening(self) -> None:
        pass

    def stopListening(self) -> None:
        pass

    def getHost(self) -> Any:
        return None


class RecordingReactor:
    """
    A reactor for endpoint parsers that records where they would listen.

    @ivar recorded: the L{StreamAddress} of the last listen call, or
        L{None}.
    """

    def __init__(self) -> None:
        self.recorded: StreamAddress | None = None

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> _NoPort:
        self.recorded = StreamAddress("tcp", (interface, port), backlog)
        return _NoPort()

    def listenUNIX(
        self, address: str, factory: Any, backlog: int = 50, *args: Any, **kw: Any
    ) -> _NoPort:
        self.recorded = StreamAddress("unix", address, backlog)
        return _NoPort()

    def listenSSL(
        self,
        port: int,
        factory: Any,
        contextFactory: Any,  # noqa: N803
        backlog: int = 50,
        interface: str = "",
    ) -> _NoPort:
        return self.listenTCP(port, factory, backlog, interface)


def stream_address(
    make_endpoint: Callable[[Any], IStreamServerEndpoint],
) -> StreamAddress | None:
    """
    @param make_endpoint: builds the listener's endpoint for a reactor.
    @return: where it would listen, or L{None} for endpoints that do not
        listen through C{listenTCP}/C{listenUNIX} (C{systemd:}).
    """
    recorder = RecordingReactor()
    make_endpoint(recorder).listen(Factory())
    return recorder.recorded


def open_stream_sockets(where: StreamAddress, count: int) -> list[socket.socket]:
    """
    Open and bind the listening sockets of one stream listener.

    @param where: the listener's address.
    @param count: how many workers will listen: TCP gets one
        C{SO_REUSEPORT} socket each, all on the same port (port 0: the port
        the first one was given); UNIX one socket for all.
    @return: the listening sockets (not inheritable; the caller passes
        their descriptors on).
    @raise OSError: when a socket cannot be bound (busy port...).
    """
    if where.kind == "unix":
        path = where.address
        if os.path.exists(path) and _stale_unix_socket(path):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.bind(path)
        sock.listen(where.backlog)
        return [sock]
    interface, port = where.address
    return _reuseport_sockets(socket.SOCK_STREAM, interface, port, count, where.backlog)


def _stale_unix_socket(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return True
    finally:
        probe.close()
    return False


def open_datagram_sockets(interface: str, port: int, count: int) -> list[socket.socket]:
    """
    Open and bind C{count} UDP sockets on one address with C{SO_REUSEPORT}
    (one per worker; the kernel spreads datagrams by their source).

    @raise OSError: when a socket cannot be bound.
    """
    return _reuseport_sockets(socket.SOCK_DGRAM, interface, port, count)


def _reuseport_sockets(
    kind: int, interface: str, port: int, count: int, backlog: int | None = None
) -> list[socket.socket]:
    """
    Open C{count} non-blocking C{SO_REUSEPORT} sockets of C{kind} bound to
    one address (port 0: the port the first one was given), listening with
    C{backlog} when it is given; close them all if one fails.

    @raise OSError: when a socket cannot be bound.
    """
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, kind)
            sockets.append(sock)
            sock.setblocking(False)
            if backlog is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((interface, port))
            port = sock.getsockname()[1]
            if backlog is not None:
                sock.listen(backlog)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class InheritingReactor:
    """
    The reactor a worker gives to the parser of one stream listener: its
    C{listenTCP}/C{listenUNIX} adopt the listening socket C{fd} the
    supervisor opened; everything else is the reactor's.
    """

    def __init__(self, reactor: Any, fd: int, family: int) -> None:
        self._reactor = reactor
        self._fd = fd
        self._family = family

    def _adopt(self, factory: Any) -> Any:
        if self._family == socket.AF_UNIX:
            return adopt_unix_port(AdoptedUNIXPort, self._reactor, self._fd, factory)
        return self._reactor.adoptStreamPort(self._fd, self._family, factory)

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> Any:
        return self._adopt(factory)

    def listenUNIX(self, address: str, factory: Any, *args: Any, **kw: Any) -> Any:
        return self._adopt(factory)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)
