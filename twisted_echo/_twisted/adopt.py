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

L{AdoptedUNIXPort} (a worker's UNIX listener, whose socket and path the
supervisor owns) is here too: it stops without C{unix.Port}'s removal of
the path and sets C{tcp.Port}'s private C{_shouldShutdown} (no
C{shutdown(2)} of the shared socket).

L{adoption_misfit} checks, once, when a socket is first adopted, on real
sockets bound to 127.0.0.1 and to
a temporary UNIX path, that each class method still builds a port of the
class asked for, listening on the socket given, and that an
L{AdoptedUNIXPort} stopped leaves its socket's path in place and the
socket accepting (L{shared_socket_misfit}). When it does not,
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

from twisted.internet import tcp, udp, unix
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_echo._twisted.fastpaths import note

__all__ = [
    "AdoptedUNIXPort",
    "adopt_datagram_port",
    "adopt_unix_port",
    "adoption_misfit",
    "shared_socket_misfit",
]

_log = Logger()


class _StandInReactor:
    """
    Enough of a reactor for a port started only to be looked at.
    """

    def addReader(self, reader: object) -> None:  # noqa: N802 (Twisted's name)
        pass

    def removeReader(self, reader: object) -> None:  # noqa: N802 (Twisted's name)
        pass

    def removeWriter(self, writer: object) -> None:  # noqa: N802 (Twisted's name)
        pass


class AdoptedUNIXPort(unix.Port):
    """
    A UNIX socket listener a worker adopted from its supervisor, which owns
    the socket and its path: stopping it (a worker's drain, e.g. when a
    reload replaces it) neither shuts the shared socket down nor removes
    its path, as Twisted's L{unix.Port} would, so the other workers go on
    accepting on it. Built by L{adopt_unix_port}.
    """

    #: C{tcp.Port}'s private flag: close the socket without C{shutdown(2)}
    #: (checked by L{shared_socket_misfit}).
    _shouldShutdown = False

    def connectionLost(self, reason: Any) -> None:  # noqa: N802 (Twisted's name)
        """
        Stop as L{unix.Port} does, without removing the socket's path.
        """
        if self.lockFile is not None:
            self.lockFile.unlock()
        tcp.Port.connectionLost(self, reason)


def shared_socket_misfit(port_class: type[unix.Port] = AdoptedUNIXPort) -> str | None:
    """
    Check, on a listening UNIX socket in a temporary directory, that
    C{unix.Port._fromListeningDescriptor} builds a C{port_class} listening
    on it, and that the port, stopped, leaves the socket's path in place
    and the socket accepting, as L{AdoptedUNIXPort} must for the workers
    that share it.

    @param port_class: the class to check (tests give a changed one).
    @return: L{None} when it does, else what does not.
    """

    class Quiet(port_class):  # type: ignore[valid-type,misc]
        def _logConnectionLostMsg(self) -> None:  # noqa: N802 (Twisted's name)
            pass  # the check's port is no listener to log the close of

    class CheckFactory(Factory):
        noisy = False
        protocol = Protocol

        def logPrefix(self) -> str:  # noqa: N802 (Twisted's name)
            return "sockecho's adoption check"

    name = port_class.__name__
    try:
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "s")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.bind(path)
                sock.listen(1)
                sock.setblocking(False)
                port = Quiet._fromListeningDescriptor(
                    _StandInReactor(), sock.fileno(), CheckFactory()
                )
                if type(port) is not Quiet:
                    return (
                        f"{name}._fromListeningDescriptor does not build the "
                        "class asked for"
                    )
                port.startListening()
                if port.socket.getsockname() != sock.getsockname():
                    port.socket.close()
                    return f"{name} adopted does not listen on the socket"
                port.connectionLost(Failure(ConnectionDone()))
                if not os.path.exists(path):
                    return f"{name} stopped removes its socket's path"
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                    client.setblocking(False)
                    try:
                        client.connect(path)
                    except OSError as error:
                        return f"{name} stopped shuts its socket down ({error})"
    except Exception as error:
        return f"stopping an adopted {name} raised {error!r}"
    return None


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
    listening on the socket C{fd}, and that an L{AdoptedUNIXPort} stopped
    keeps its shared socket (L{shared_socket_misfit}); checked once, then
    remembered.

    @return: L{None} when they fit, else what does not.
    """

    class Datagram(udp.Port):
        pass

    class Check(DatagramProtocol):
        noisy = False

        def logPrefix(self) -> str:  # noqa: N802 (Twisted's name)
            return "sockecho's adoption check"

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            reason = _check(Datagram, sock, socket.AF_INET, Check(), 2048)
        if reason is not None:
            return reason
    except Exception as error:
        return f"adopting a listening socket raised {error!r}"
    return shared_socket_misfit()


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
