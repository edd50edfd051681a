"""
Tests of L{twisted_echo._twisted.reactor}: the epoll reactor without per-event log
context, driven by hand in-process (and the same tests on Twisted's own, the
behaviour to keep), its start-up check and fallback, and its choice by
C{twistd sockecho} unless C{-r} names another.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
from collections.abc import Callable

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial import unittest

from tests.process import HOST, shared_server, start_server, tcp_exchange
from twisted_echo._twisted.reactor import (
    REACTOR_NAME,
    build_reactor,
    event_reactor_misfit,
    install_if_unchosen,
)
from twisted_echo.services.echo import EchoFactory

if sys.platform == "linux":
    from twisted.internet.epollreactor import EPollReactor

    from twisted_echo._twisted.reactor import EventReactor


class Broken(Protocol):
    """
    Raises on every byte received: a protocol bug.
    """

    def dataReceived(self, data: bytes) -> None:
        raise ZeroDivisionError("bug in dataReceived")


def close_reactor(reactor: EPollReactor) -> None:
    """
    Close what a reactor built by a test holds: its connections and ports,
    its waker's pipe and its epoll descriptor.
    """
    reactor.disconnectAll()
    reactor.removeReader(reactor.waker)
    reactor.waker.connectionLost(None)
    reactor._poller.close()


class LossBug(Protocol):
    """
    Raises from C{connectionLost}: a protocol bug Twisted's reactor logs.
    """

    def connectionLost(self, reason: Failure | None = None) -> None:
        raise ZeroDivisionError("bug in connectionLost")


def exchange_on(reactor: EPollReactor, port: int, payload: bytes) -> bytes:
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


def iterate_until(reactor: EPollReactor, condition: Callable[[], object]) -> None:
    """
    Iterate C{reactor} by hand (10 ms at most each) until C{condition()}.

    @raise AssertionError: if it is still false after 1,000 iterations.
    """
    for _ in range(1000):
        if condition():
            return
        reactor.iterate(0.01)
    raise AssertionError("condition not met in 1,000 iterations")


def open_connection(
    reactor: EPollReactor, factory: Factory
) -> tuple[socket.socket, list[Protocol]]:
    """
    Listen with C{factory} on C{HOST}, connect a client, and iterate
    C{reactor} until the server has accepted it.

    @return: the client socket (close it) and the protocols built so far.
    """
    built: list[Protocol] = []
    build = factory.buildProtocol

    def record(addr: object) -> Protocol | None:
        protocol = build(addr)
        if protocol is not None:
            built.append(protocol)
        return protocol

    factory.buildProtocol = record  # type: ignore[method-assign]
    listening = reactor.listenTCP(0, factory, interface=HOST)
    client = socket.create_connection((HOST, listening.getHost().port), timeout=5)
    iterate_until(reactor, lambda: built)
    return client, built


class EventReactorTests(unittest.TestCase):
    """
    L{EventReactor} serves connections as Twisted's epoll reactor does.
    """

    if sys.platform != "linux":
        skip = "epoll is Linux only"

    reactor_class: type[EPollReactor] | None = None

    def make_reactor(self) -> EPollReactor:
        reactor = (self.reactor_class or EventReactor)()
        self.addCleanup(close_reactor, reactor)
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

    def assert_loss_bug_logged(
        self, reactor: EPollReactor, lose: Callable[[socket.socket], None]
    ) -> None:
        """
        A connection whose protocol raises from C{connectionLost} is ended by
        C{lose} (on the client socket); iterating C{reactor} logs the error
        once and does not raise, and an echo connection opened before goes on
        being served.
        """
        other, _ = open_connection(reactor, EchoFactory(reactor))
        self.addCleanup(other.close)
        other.setblocking(False)
        client, built = open_connection(reactor, Factory.forProtocol(LossBug))
        self.addCleanup(client.close)
        lose(client)
        iterate_until(reactor, lambda: built[0].transport.disconnected)  # type: ignore[union-attr]
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        other.send(b"served")
        received = bytearray()

        def echoed() -> bool:
            try:
                received.extend(other.recv(100))
            except BlockingIOError:
                pass
            return received == b"served"

        iterate_until(reactor, echoed)

    def test_connection_lost_error_after_close_is_logged(self) -> None:
        """
        The peer closes (a plain readable event, the fast path) and the
        protocol's C{connectionLost} raises: the error is logged, as Twisted's
        epoll reactor logs it, and the reactor goes on serving.
        """
        reactor = self.make_reactor()

        def close(client: socket.socket) -> None:
            client.shutdown(socket.SHUT_WR)

        self.assert_loss_bug_logged(reactor, close)

    def test_connection_lost_error_after_reset_is_logged(self) -> None:
        """
        The peer resets the connection (an event more than readable, handed
        to Twisted's C{_doReadOrWrite}) and the protocol's C{connectionLost}
        raises: the error is logged and the reactor goes on serving.
        """
        reactor = self.make_reactor()

        def reset(client: socket.socket) -> None:
            client.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            client.close()

        self.assert_loss_bug_logged(reactor, reset)


class StockEPollReactorTests(EventReactorTests):
    """
    The same tests pass on Twisted's L{EPollReactor}: the behaviour
    L{EventReactor} must keep.
    """

    if sys.platform == "linux":
        reactor_class = EPollReactor


class ReactorFitTests(unittest.TestCase):
    """
    L{event_reactor_misfit} checks at start-up that Twisted's epoll reactor
    still has what L{EventReactor} relies on; L{build_reactor} falls back to
    Twisted's own reactor when it does not.
    """

    if sys.platform != "linux":
        skip = "epoll is Linux only"

    def test_fits_installed_twisted(self) -> None:
        """
        The installed Twisted has what L{EventReactor} relies on: when a
        Twisted release changes it, this test fails (and sockecho runs on
        Twisted's own reactor until L{EventReactor} is updated).
        """
        self.assertIsNone(event_reactor_misfit())
        reactor = EventReactor()
        self.addCleanup(close_reactor, reactor)
        self.assertIsNone(event_reactor_misfit(reactor))

    def test_misfits_found(self) -> None:
        """
        A changed signature, a C{doIteration} that is more than C{doPoll}, a
        missing method, or a reactor without the expected poller or map of
        selectables does not fit, and the reason says what.
        """

        def changed(self: object, selectable: object, event: int) -> None:
            pass

        for name, value, reason in [
            (
                "_doReadOrWrite",
                changed,
                "EPollReactor._doReadOrWrite does not take "
                "(self, selectable, fd, event)",
            ),
            ("doIteration", changed, "EPollReactor.doIteration is not doPoll"),
            (
                "_disconnectSelectable",
                None,
                "EPollReactor._disconnectSelectable is missing",
            ),
        ]:
            own = vars(EPollReactor).get(name)
            setattr(EPollReactor, name, value)
            try:
                self.assertEqual(event_reactor_misfit(), reason)
            finally:
                # Put back what the class had, inherited or its own.
                if own is None:
                    delattr(EPollReactor, name)
                else:
                    setattr(EPollReactor, name, own)
        self.assertIsNone(event_reactor_misfit())
        reactor = EventReactor()
        self.addCleanup(close_reactor, reactor)
        self.patch(reactor, "_selectables", [])
        self.assertEqual(
            event_reactor_misfit(reactor), "EPollReactor._selectables is not a dict"
        )
        self.patch(reactor, "_poller", object())
        self.assertEqual(
            event_reactor_misfit(reactor), "EPollReactor._poller.poll is missing"
        )

    def test_build_event_reactor(self) -> None:
        """
        On the installed Twisted, sockecho's reactor is L{EventReactor}.
        """
        reactor, reason = build_reactor()
        self.addCleanup(close_reactor, reactor)
        self.assertIs(type(reactor), EventReactor)
        self.assertIsNone(reason)

    def test_fall_back_before_building(self) -> None:
        """
        When the class does not fit, sockecho's reactor is Twisted's own
        L{EPollReactor}, with the reason, which is logged.
        """
        with capturedLogs() as events:
            reactor, reason = build_reactor(lambda reactor: "changed")
        self.addCleanup(close_reactor, reactor)
        self.assertIs(type(reactor), EPollReactor)
        self.assertEqual(reason, "changed")
        [event] = events
        self.assertEqual(
            formatEvent(event),
            "sockecho's EventReactor does not fit this Twisted (changed); "
            "running on Twisted's EPollReactor",
        )

    def test_fall_back_after_building(self) -> None:
        """
        When the reactor built does not fit, it becomes Twisted's own
        L{EPollReactor}, which serves connections.
        """
        reactor, reason = build_reactor(
            lambda reactor: None if reactor is None else "changed"
        )
        self.addCleanup(close_reactor, reactor)
        self.assertIs(type(reactor), EPollReactor)
        self.assertEqual(reason, "changed")
        echo = reactor.listenTCP(0, EchoFactory(reactor), interface=HOST)
        self.assertEqual(exchange_on(reactor, echo.getHost().port, b"ok"), b"ok")

    def test_installed_already(self) -> None:
        """
        With a reactor installed (trial's), nothing is installed.
        """
        self.assertFalse(install_if_unchosen())


class ReactorChoiceTests(unittest.TestCase):
    """
    Which reactor C{twistd sockecho} runs on.
    """

    def test_default(self) -> None:
        """
        Without C{-r}, sockecho runs on its own reactor (on Linux), and says
        so in the log.
        """
        server = shared_server()
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
