"""
Tests for L{twisted_echo.listening.nodelay}: the one TCP_NODELAY rule, on
real connections (TCP and UNIX sockets).
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from twisted_echo.listening.nodelay import no_delay


class Keep(Protocol):
    """
    Hands its transport over once connected.
    """

    def __init__(self, arrived: Deferred[Any]) -> None:
        self.arrived = arrived

    def connectionMade(self) -> None:
        self.arrived.callback(self.transport)


class NoDelayTests(TestCase):
    timeout = 10
    """
    L{no_delay} switches Nagle's algorithm off on TCP, and only there.
    """

    def accept(
        self, listen: Callable[[Factory], Any], connect: Callable[[Any], socket.socket]
    ) -> Deferred[Any]:
        connected: Deferred[Any] = Deferred()
        port = listen(Factory.forProtocol(lambda: Keep(connected)))
        self.addCleanup(port.stopListening)
        client = connect(port.getHost())
        self.addCleanup(client.close)
        return connected

    async def test_tcp(self) -> None:
        transport = await self.accept(
            lambda f: reactor.listenTCP(0, f, interface="127.0.0.1"),  # type: ignore[attr-defined]
            lambda a: socket.create_connection(("127.0.0.1", a.port), timeout=5),
        )
        self.addCleanup(transport.loseConnection)
        option = (socket.IPPROTO_TCP, socket.TCP_NODELAY)
        self.assertEqual(transport.socket.getsockopt(*option), 0)
        self.assertTrue(no_delay(transport))
        self.assertNotEqual(transport.socket.getsockopt(*option), 0)

    async def test_unix(self) -> None:
        path = os.path.join(tempfile.mkdtemp(), "s.sock")

        def connect(address: Any) -> socket.socket:
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(path)
            return client

        transport = await self.accept(
            lambda f: reactor.listenUNIX(path, f),  # type: ignore[attr-defined]
            connect,
        )
        self.addCleanup(transport.loseConnection)
        self.assertFalse(no_delay(transport))

    def test_not_a_socket(self) -> None:
        self.assertFalse(no_delay(StringTransport()))
