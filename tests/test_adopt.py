"""
Tests for L{twisted_echo._twisted.adopt}: sockecho's port classes around
listening sockets opened elsewhere, on real loopback sockets.
"""

from __future__ import annotations

import os
import socket
import tempfile

from twisted.internet import reactor, tcp, udp, unix
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from tests.loopback import wait_until
from twisted_echo._twisted import adopt, fastpaths
from twisted_echo._twisted.adopt import (
    AdoptedUNIXPort,
    adopt_datagram_port,
    adopt_unix_port,
    adoption_misfit,
)
from twisted_echo.listening.datagram import DatagramPort
from twisted_echo.services.udp import UDPEcho


class Greeting(Protocol):
    def connectionMade(self) -> None:  # noqa: N802 (Twisted's name)
        self.transport.write(b"hello")  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]


class AdoptionTests(TestCase):
    """
    An adopted socket serves through sockecho's class when Twisted's
    private constructor fits, through Twisted's own class when not.
    """

    def setUp(self) -> None:
        adoption_misfit.cache_clear()
        self.addCleanup(adoption_misfit.cache_clear)
        self.addCleanup(fastpaths._noted.pop, "socket adoption", None)

    def bound_udp(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        return sock

    def listening_unix(self) -> tuple[socket.socket, str]:
        directory = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, directory)
        path = os.path.join(directory, "s")
        self.addCleanup(lambda: os.path.exists(path) and os.unlink(path))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.bind(path)
        sock.listen(5)
        sock.setblocking(False)
        return sock, path

    async def greeted_at(self, path: str) -> None:
        """
        Connect to the UNIX socket C{path}: L{Greeting} must answer.
        """
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(client.close)
        client.connect(path)
        client.setblocking(False)
        received = bytearray()

        def greeted() -> bool:
            try:
                received.extend(client.recv(100))
            except BlockingIOError:
                pass
            return bytes(received) == b"hello"

        await wait_until(greeted)

    async def echo_through(self, port: object, address: tuple[str, int]) -> bytes:
        self.addCleanup(port.stopListening)  # type: ignore[attr-defined]
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(client.close)
        client.setblocking(False)
        client.sendto(b"ping", address)
        replies: list[bytes] = []

        def answered() -> bool:
            try:
                replies.append(client.recv(100))
            except BlockingIOError:
                pass
            return bool(replies)

        await wait_until(answered)
        return replies[0]

    def test_installed_twisted_fits(self) -> None:
        """
        The installed Twisted's C{_fromListeningDescriptor} builds the
        class asked for around the socket given; this fails first when a
        Twisted release changes it.
        """
        self.assertIsNone(adoption_misfit())

    async def test_datagram_port_adopted(self) -> None:
        """
        A bound UDP socket adopted as a L{DatagramPort} echoes a datagram.
        """
        sock = self.bound_udp()
        port = adopt_datagram_port(
            DatagramPort, reactor, sock.fileno(), socket.AF_INET, UDPEcho(), 2048
        )
        self.assertIsInstance(port, DatagramPort)
        self.assertEqual(await self.echo_through(port, sock.getsockname()), b"ping")

    async def test_unix_port_adopted(self) -> None:
        """
        A listening UNIX socket adopted as an L{AdoptedUNIXPort} serves a
        connection.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, directory)
        path = os.path.join(directory, "s")
        self.addCleanup(lambda: os.path.exists(path) and os.unlink(path))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.bind(path)
        sock.listen(5)
        sock.setblocking(False)
        port = adopt_unix_port(
            AdoptedUNIXPort, reactor, sock.fileno(), Factory.forProtocol(Greeting)
        )
        self.addCleanup(port.stopListening)
        self.assertIsInstance(port, AdoptedUNIXPort)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(client.close)
        client.connect(path)
        client.setblocking(False)
        received = bytearray()

        def greeted() -> bool:
            try:
                received.extend(client.recv(100))
            except BlockingIOError:
                pass
            return bytes(received) == b"hello"

        await wait_until(greeted)

    async def test_changed_twisted_falls_back(self) -> None:
        """
        On a Twisted whose C{udp.Port._fromListeningDescriptor} no longer
        builds the subclass it is called on, the check says so and the
        socket is adopted by Twisted's own L{udp.Port} (the reactor's
        C{adoptDatagramPort}), which still echoes; the start-up line says
        it fell back.
        """
        stored = vars(udp.Port)["_fromListeningDescriptor"]
        original = stored.__func__

        def builds_udp_port(cls: object, *args: object, **kwargs: object) -> object:
            return original(udp.Port, *args, **kwargs)

        # Not self.patch: it would put back a method bound to udp.Port.
        udp.Port._fromListeningDescriptor = classmethod(builds_udp_port)  # type: ignore[assignment]
        self.addCleanup(setattr, udp.Port, "_fromListeningDescriptor", stored)
        reason = adoption_misfit()
        self.assertEqual(
            reason,
            "Datagram._fromListeningDescriptor does not build the class asked for",
        )
        sock = self.bound_udp()
        port = adopt_datagram_port(
            DatagramPort, reactor, sock.fileno(), socket.AF_INET, UDPEcho(), 2048
        )
        self.assertIs(type(port), udp.Port)
        self.assertEqual(await self.echo_through(port, sock.getsockname()), b"ping")
        self.assertEqual(fastpaths._noted["socket adoption"], reason)
        self.assertIn(
            f"socket adoption ({reason})",
            fastpaths.fast_paths_line(fastpaths.fast_paths(reactor)),
        )
        self.assertIs(adopt.adoption_misfit(), adoption_misfit())

    async def test_stopped_unix_port_keeps_the_shared_socket(self) -> None:
        """
        An L{AdoptedUNIXPort} stopped (a worker's drain) leaves the socket
        the supervisor shares with the other workers: its path is still
        there, and a port adopted on it next serves a connection.
        """
        sock, path = self.listening_unix()
        factory = Factory.forProtocol(Greeting)
        port = adopt_unix_port(AdoptedUNIXPort, reactor, sock.fileno(), factory)
        await port.stopListening()
        self.assertTrue(os.path.exists(path))
        again = adopt_unix_port(AdoptedUNIXPort, reactor, sock.fileno(), factory)
        self.addCleanup(again.stopListening)
        await self.greeted_at(path)

    def test_changed_unix_port_found(self) -> None:
        """
        L{adopt.shared_socket_misfit} names a port that, stopped, removes
        the shared socket's path (Twisted's own L{unix.Port}) or shuts the
        socket down; this fails first when a Twisted release changes what
        L{AdoptedUNIXPort} relies on.
        """
        self.assertIsNone(adopt.shared_socket_misfit())

        class ShutsDown(unix.Port):
            _shouldShutdown = True

            def connectionLost(self, reason: object) -> None:  # noqa: N802
                tcp.Port.connectionLost(self, reason)

        self.assertEqual(
            adopt.shared_socket_misfit(unix.Port),
            "Port stopped removes its socket's path",
        )
        self.assertIn(
            "ShutsDown stopped shuts its socket down",
            str(adopt.shared_socket_misfit(ShutsDown)),
        )

    async def test_unix_port_falls_back(self) -> None:
        """
        Where L{AdoptedUNIXPort} does not fit, a UNIX socket is adopted by
        the reactor's own port (C{adoptStreamPort}), which still serves;
        the start-up line says socket adoption fell back.
        """
        reason = "AdoptedUNIXPort stopped removes its socket's path"
        self.patch(adopt, "shared_socket_misfit", lambda: reason)
        self.assertEqual(adoption_misfit(), reason)
        sock, path = self.listening_unix()
        port = adopt_unix_port(
            AdoptedUNIXPort, reactor, sock.fileno(), Factory.forProtocol(Greeting)
        )
        self.addCleanup(port.stopListening)
        self.assertIs(type(port), unix.Port)
        await self.greeted_at(path)
        self.assertEqual(fastpaths._noted["socket adoption"], reason)
