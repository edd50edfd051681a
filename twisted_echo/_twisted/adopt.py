# -*- test-case-name: tests.test_adopt -*-
"""
Ports of sockecho's own classes around a listening socket someone else
opened (systemd, or the supervisor for its workers), through Twisted's
private C{_fromListeningDescriptor} class methods of L{udp.Port} and
L{unix.Port}. Twisted's public C{adoptDatagramPort} and C{adoptStreamPort}
build only Twisted's own port classes; sockecho's subclasses
(C{DatagramPort}: one receive buffer, replies from the destination address;
C{AdoptedUNIXPort}: leaves the shared socket to the supervisor) need the
private constructor.

L{adoption_misfit} checks, once, when a socket is first adopted, on real
sockets bound to 127.0.0.1 and to
a temporary UNIX path, that each class method still builds a port of the
class asked for, listening on the socket given. When it does not,
L{adopt_datagram_port} and L{adopt_unix_port} fall back to the reactor's
public C{adoptDatagramPort} / C{adoptStreamPort} (Twisted's classes, which
serve the same bytes) and log why.
"""

from __future__ import annotations

import os
import socket
import tempfile
from functools import cache
from typing import Any

from twisted.internet import udp, unix
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger

from twisted_echo._twisted.fastpaths import note

__all__ = ["adopt_datagram_port", "adopt_unix_port", "adoption_misfit"]

_log = Logger()


class _StandInReactor:
    """
    Enough of a reactor for a port started only to be looked at.
    """

    def addReader(self, reader: object) -> None:  # noqa: N802 (Twisted's name)
        pass

    def removeReader(self, reader: object) -> None:  # noqa: N802 (Twisted's name)
        pass


def _check(port_class: Any, sock: socket.socket, *args: Any) -> str | None:
    name = port_class.__name__
    adopt = getattr(port_class, "_fromListeningDescriptor", None)
    if not callable(adopt):
        return f"{port_class.__module__}.{name}._fromListeningDescriptor is missing"
    port = adopt(_StandInReactor(), sock.fileno(), *args)
    if type(port) is not port_class:
        return f"{name}._fromListeningDescriptor does not build the class asked for"
    port.startListening()
    try:
        if port.getHost() is None or port.socket.getsockname() != sock.getsockname():
            return f"{name}._fromListeningDescriptor does not listen on the socket"
    finally:
        port.socket.close()
    return None


@cache
def adoption_misfit() -> str | None:
    """
    Check that C{udp.Port._fromListeningDescriptor(reactor, fd, family,
    protocol, maxPacketSize)} and C{unix.Port._fromListeningDescriptor(
    reactor, fd, factory)} build a port of the class they are called on,
    listening on the socket C{fd} (checked once, then remembered).

    @return: L{None} when they fit, else what does not.
    """

    class Datagram(udp.Port):
        pass

    class Check(DatagramProtocol):
        noisy = False

        def logPrefix(self) -> str:  # noqa: N802 (Twisted's name)
            return "sockecho's adoption check"

    class CheckFactory(Factory):
        noisy = False
        protocol = Protocol

        def logPrefix(self) -> str:  # noqa: N802 (Twisted's name)
            return "sockecho's adoption check"

    class Stream(unix.Port):
        pass

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            reason = _check(Datagram, sock, socket.AF_INET, Check(), 2048)
        if reason is not None:
            return reason
        with tempfile.TemporaryDirectory() as directory:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.bind(os.path.join(directory, "s"))
                sock.listen(1)
                sock.setblocking(False)
                return _check(Stream, sock, CheckFactory())
    except Exception as error:
        return f"adopting a listening socket raised {error!r}"


def _fell_back(what: str, reason: str) -> None:
    _log.warn(
        "sockecho's {what} does not fit this Twisted ({reason}); "
        "adopting the socket with Twisted's own port",
        what=what,
        reason=reason,
    )


def adopt_datagram_port(
    port_class: type[udp.Port],
    reactor: Any,
    fd: int,
    family: int,
    protocol: Any,
    max_packet_size: int,
) -> IListeningPort:
    """
    A started C{port_class} (a L{udp.Port} subclass) around the bound UDP
    socket C{fd}, or, where L{adoption_misfit} says it cannot be built,
    the reactor's own (C{adoptDatagramPort}).

    @param family: the socket's address family (C{AF_INET}, C{AF_INET6}).
    @param max_packet_size: the largest datagram read, in bytes.
    @raise OSError: when C{fd} is not a socket.
    """
    reason = adoption_misfit()
    note("socket adoption", reason)
    if reason is not None:
        _fell_back(port_class.__name__, reason)
        adopted: IListeningPort = reactor.adoptDatagramPort(
            fd, family, protocol, max_packet_size
        )
        return adopted
    port: IListeningPort = port_class._fromListeningDescriptor(
        reactor, fd, family, protocol, maxPacketSize=max_packet_size
    )
    port.startListening()
    return port


def adopt_unix_port(
    port_class: type[unix.Port], reactor: Any, fd: int, factory: Any
) -> IListeningPort:
    """
    A started C{port_class} (a L{unix.Port} subclass) around the listening
    UNIX socket C{fd}, or, where L{adoption_misfit} says it cannot be
    built, the reactor's own (C{adoptStreamPort}).

    @raise OSError: when C{fd} is not a socket.
    """
    reason = adoption_misfit()
    note("socket adoption", reason)
    if reason is not None:
        _fell_back(port_class.__name__, reason)
        stream: IListeningPort = reactor.adoptStreamPort(fd, socket.AF_UNIX, factory)
        return stream
    port: IListeningPort = port_class._fromListeningDescriptor(reactor, fd, factory)
    port.startListening()
    return port
