"""
Tests of L{twisted_echo.reactor}: the epoll reactor without per-event log
context, driven by hand in-process, and chosen by C{twistd sockecho} unless
C{-r} names another.
"""

from __future__ import annotations

import os
import socket
import sys

from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from tests.process import HOST, start_server, tcp_exchange
from twisted_echo.echo import EchoFactory
from twisted_echo.reactor import REACTOR_NAME

if sys.platform == "linux":
    from twisted_echo.reactor import EventReactor


class Broken(Protocol):
    """
    Raises on every byte received: a protocol bug.
    """

    def dataReceived(self, data: bytes) -> None:
        raise ZeroDivisionError("bug in dataReceived")


def exchange_on(reactor: EventReactor, port: int, payload: bytes) -> bytes:
    """
    Send C{payload} to C{port}, half-close, and run C{reactor} by hand until
    the server closes (at most 2,000 iterations of 10 ms).

    @return: what came back.
    """
    client = socket.create_connection((HOST, port), timeout=5)
    client.setblocking(False)
    received = bytearray()
    view = memoryview(payload)
    try:
        for _ in range(2000):
            if view:
                try:
                    view = view[client.send(view) :]
                except BlockingIOError:
                    pass
                if not view:
                    client.shutdown(socket.SHUT_WR)
            reactor.iterate(0.01)
            try:
                chunk = client.recv(1 << 20)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                return bytes(received)
            if not chunk:
                return bytes(received)
            received += chunk
        raise AssertionError("server did not close")
    finally:
        client.close()


class EventReactorTests(unittest.TestCase):
    """
    L{EventReactor} serves connections as Twisted's epoll reactor does.
    """

    if sys.platform != "linux":
        skip = "epoll is Linux only"

    def make_reactor(self) -> EventReactor:
        reactor = EventReactor()
        self.addCleanup(reactor.disconnectAll)
        return reactor

    def test_echo_with_half_close(self) -> None:
        """
        2 MiB sent, then half-closed, comes back whole through it.
        """
        reactor = self.make_reactor()
        listening = reactor.listenTCP(0, EchoFactory(reactor), interface=HOST)
        payload = os.urandom(2 << 20)
        self.assertEqual(
            exchange_on(reactor, listening.getHost().port, payload), payload
        )

    def test_protocol_error_is_logged_and_closes(self) -> None:
        """
        An exception from C{dataReceived} is logged with its traceback and
        ends that connection; the reactor goes on serving.
        """
        reactor = self.make_reactor()
        broken = reactor.listenTCP(0, Factory.forProtocol(Broken), interface=HOST)
        self.assertEqual(exchange_on(reactor, broken.getHost().port, b"x"), b"")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        echo = reactor.listenTCP(0, EchoFactory(reactor), interface=HOST)
        self.assertEqual(exchange_on(reactor, echo.getHost().port, b"still"), b"still")


class ReactorChoiceTests(unittest.TestCase):
    """
    Which reactor C{twistd sockecho} runs on.
    """

    def test_default(self) -> None:
        """
        Without C{-r}, sockecho runs on its own reactor (on Linux), and says
        so in the log.
        """
        server = start_server(self)
        if sys.platform == "linux":
            server.wait_for(rf"reactor class: {REACTOR_NAME}\.$", start=0)
        self.assertEqual(tcp_exchange(server.ports["echo"], b"ping"), b"ping")

    def test_reactor_chosen_with_r(self) -> None:
        """
        C{twistd -r epoll sockecho} runs on Twisted's epoll reactor.
        """
        if sys.platform != "linux":
            raise unittest.SkipTest("epoll is Linux only")
        server = start_server(self, twistd_options=["-r", "epoll"])
        server.wait_for(
            r"reactor class: twisted\.internet\.epollreactor\.EPollReactor\.$"
        )
        self.assertEqual(tcp_exchange(server.ports["echo"], b"ping"), b"ping")
