"""
Tests of L{twisted_echo._twisted.transport}: the leaner TCP server transport, on real
sockets of 127.0.0.1; the layout that keeps a connection small; the
start-up check that it fits the installed Twisted.
"""

from __future__ import annotations

import os
import socket

from twisted.internet import reactor, tcp
from twisted.logger import capturedLogs, formatEvent
from twisted.trial import unittest

from tests.loopback import exchange, listen_tcp, record_protocols, wait_until
from tests.process import temp_dir
from twisted_echo._twisted.transport import (
    Server,
    lean_transport_misfit,
    use_lean_transport,
)
from twisted_echo.policies.limits import ConnectionLimits
from twisted_echo.services.echo import EchoFactory
from twisted_echo.services.stream import StreamFactory, StreamProtocol
from twisted_echo.services.upper import UpperFactory
from twisted_echo.services.welcome import WelcomeFactory


def fail_once(test: unittest.TestCase, cls: type, name: str, after: bool) -> None:
    """
    Make the next call of method C{name} of C{cls} raise
    L{ZeroDivisionError}, before or C{after} calling the method; undone at
    test cleanup.
    """
    original = getattr(cls, name)
    own = vars(cls).get(name)
    armed = [True]

    def failing(self: object, *args: object) -> object:
        if armed[0] and not after:
            armed[0] = False
            raise ZeroDivisionError(f"bug in {name}")
        result = original(self, *args)
        if armed[0]:
            armed[0] = False
            raise ZeroDivisionError(f"bug in {name}")
        return result

    setattr(cls, name, failing)
    if own is None:
        test.addCleanup(delattr, cls, name)
    else:
        test.addCleanup(setattr, cls, name, own)


def closed_by_peer(client: socket.socket) -> bool:
    """
    @return: whether the non-blocking C{client} finds its connection closed
        (end of stream or reset) without data.
    """
    try:
        return client.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


class LeanServerTests(unittest.TestCase):
    """
    L{Server} behaves as L{tcp.Server} does, with less stored.
    """

    async def test_echo_and_half_close(self) -> None:
        """
        Through the lean transport, 1 MiB sent and half-closed comes back
        whole, and the connection described as Twisted describes it.
        """
        factory = EchoFactory(reactor)
        built = record_protocols(factory)
        port = listen_tcp(self, factory)
        payload = os.urandom(1 << 20)
        client = await exchange(port, payload)
        self.assertEqual(b"".join(client.received), payload)
        transport = built[0].transport
        self.assertIsInstance(transport, Server)
        self.assertEqual(transport.hostname, "127.0.0.1")  # type: ignore[union-attr]
        self.assertRegex(repr(transport), rf"^<closed #\d+ on {port}>$")
        # Lost: its descriptor reads as closed, as Twisted's does.
        self.assertEqual(transport.fileno(), -1)  # type: ignore[union-attr]

    async def test_descriptions_while_open(self) -> None:
        """
        C{repr}, C{logPrefix} and C{fileno} of an open connection give what
        L{tcp.Server} gives, without storing them per connection.
        """
        factory = EchoFactory(reactor)
        built = record_protocols(factory)
        port = listen_tcp(self, factory)
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.addCleanup(client.close)
        await wait_until(lambda: built)
        transport = built[0].transport
        self.assertRegex(repr(transport), rf"^<Echo #\d+ on {port}>$")
        self.assertRegex(transport.logPrefix(), r"^Echo,\d+,127\.0\.0\.1$")  # type: ignore[union-attr]
        self.assertEqual(transport.fileno(), transport.socket.fileno())  # type: ignore[union-attr]
        for stored in ("repstr", "logstr", "hostname", "fileno"):
            self.assertNotIn(stored, vars(transport))

    async def test_layout_of_idle_connection(self) -> None:
        """
        What keeps an idle connection small (the module's figure), for each
        TCP service, once it has answered data: the protocol has no
        attribute but those its C{__init__} sets and C{factory} (one first
        set later would give every instance its own attribute dict instead
        of CPython's shared-key layout), the transport stores none of
        Twisted's per-connection strings and bound method, and the peer's
        host is one string shared by protocol and transport.
        """
        for factory in (
            EchoFactory(reactor),
            UpperFactory(reactor),
            WelcomeFactory(reactor),
        ):
            protocol = await self.answered_connection(factory)
            self.assertEqual(
                set(vars(protocol)), set(vars(factory.protocol())) | {"factory"}
            )
            transport = protocol.transport
            self.assertIsInstance(transport, Server)
            for stored in ("repstr", "logstr", "hostname", "fileno"):
                self.assertNotIn(stored, vars(transport))
            self.assertIs(transport.client[0], protocol.peer_host)  # type: ignore[union-attr]

    async def answered_connection(self, factory: StreamFactory) -> StreamProtocol:
        """
        Listen with C{factory}, connect, send a line and wait until the
        server has read it and answered.

        @return: the server's protocol of that open connection.
        """
        built = record_protocols(factory)
        port = listen_tcp(self, factory)
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.addCleanup(client.close)
        line = b"data\r\n"
        client.sendall(line)
        await wait_until(lambda: built and built[0].bytes_in == len(line))  # type: ignore[attr-defined]
        [protocol] = built
        assert isinstance(protocol, StreamProtocol)
        self.assertGreater(protocol.bytes_out, 0)
        return protocol

    async def assert_failed_start_released(self, name: str, after: bool) -> None:
        """
        The lean transport's constructor raises once (from C{Server.name},
        before or C{after} calling it) for the first connection: the error
        is logged, that connection's limits slot is given back and its socket
        closed, and the listener serves the next connection, which a limit
        of one connection would refuse had the slot leaked.
        """
        factory = EchoFactory(reactor, limits=ConnectionLimits(1, 1))
        port = listen_tcp(self, factory)
        fail_once(self, Server, name, after)
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.addCleanup(client.close)
        client.setblocking(False)
        errors: list[object] = []
        await wait_until(
            lambda: errors.extend(self.flushLoggedErrors(ZeroDivisionError)) or errors
        )
        self.assertEqual(len(errors), 1)
        await wait_until(lambda: factory.limits.open_total == 0)
        await wait_until(lambda: closed_by_peer(client))
        self.assertEqual(factory.counters.connections_open, 0)
        self.assertEqual(factory.counters.connections_total, 0)
        next_client = await exchange(port, b"next")
        self.assertEqual(b"".join(next_client.received), b"next")
        self.assertEqual(factory.limits.open_total, 0)

    async def test_failed_start_before_reading(self) -> None:
        """
        The constructor fails before the transport is registered with the
        reactor (computing the log prefix): the slot is released.
        """
        await self.assert_failed_start_released("_getLogPrefix", after=False)

    async def test_failed_start_after_reading(self) -> None:
        """
        The constructor fails once the transport is registered with the
        reactor (C{startReading}): it is unregistered, the slot released,
        and the protocol never told of a connection it did not have.
        """
        await self.assert_failed_start_released("startReading", after=True)

    def test_only_plain_tcp_ports_change(self) -> None:
        """
        A UNIX socket port keeps its own transport; a TCP port builds
        L{Server} from then on.
        """
        unix_port = reactor.listenUNIX(  # type: ignore[attr-defined]
            os.path.join(temp_dir(self), "s"), EchoFactory(reactor)
        )
        self.addCleanup(unix_port.stopListening)
        self.assertFalse(use_lean_transport(unix_port))
        self.assertIsNot(unix_port.transport, Server)
        tcp_port = reactor.listenTCP(0, EchoFactory(reactor), interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(tcp_port.stopListening)
        self.assertIs(tcp_port.transport, tcp.Server)
        self.assertTrue(use_lean_transport(tcp_port))
        self.assertIs(tcp_port.transport, Server)


class FitTests(unittest.TestCase):
    """
    L{use_lean_transport} checks that L{Server} fits the installed Twisted
    and keeps Twisted's transport when it does not.
    """

    def listen(self) -> tcp.Port:
        port = reactor.listenTCP(0, EchoFactory(reactor), interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        assert isinstance(port, tcp.Port)
        return port

    def test_fits_installed_twisted(self) -> None:
        """
        The installed Twisted's C{tcp.Server} is as L{Server} expects: when a
        Twisted release changes it, this test fails (and sockecho uses
        Twisted's transport until L{Server} is updated).
        """
        self.assertIsNone(lean_transport_misfit(self.listen()))

    def test_misfit_keeps_tcp_server(self) -> None:
        """
        When C{tcp.Server} no longer stores what L{Server} drops, the port
        keeps building C{tcp.Server} transports, and the log says why.
        """
        init = tcp.Server.__init__

        def changed(self: tcp.Server, *args: object) -> None:
            init(self, *args)  # type: ignore[arg-type]
            del self.logstr

        self.patch(tcp.Server, "__init__", changed)
        port = self.listen()
        self.assertEqual(
            lean_transport_misfit(port), "tcp.Server no longer stores logstr"
        )
        with capturedLogs() as events:
            self.assertFalse(use_lean_transport(port))
        self.assertIs(port.transport, tcp.Server)
        [event] = events
        self.assertEqual(
            formatEvent(event),
            "sockecho's lean TCP transport does not fit this Twisted "
            "(tcp.Server no longer stores logstr); using Twisted's tcp.Server",
        )

    def test_misfits_found(self) -> None:
        """
        A transport constructor that raises or stores less, a lean transport
        that describes the connection otherwise than C{tcp.Server}, or a
        port whose C{_realPortNumber} is not its number does not fit, and
        the reason says what.
        """
        port = self.listen()
        init = tcp.Server.__init__

        def raising(self: tcp.Server, *args: object) -> None:
            raise TypeError("changed")

        self.patch(tcp.Server, "__init__", raising)
        self.assertEqual(
            lean_transport_misfit(port),
            "building a transport raised TypeError('changed')",
        )

        def bare(
            self: tcp.Server,
            sock: socket.socket,
            protocol: object,
            client: object,
            server: object,
            sessionno: int,
            reactor: object,
        ) -> None:
            tcp.Connection.__init__(self, sock, protocol, reactor)  # type: ignore[arg-type]

        self.patch(tcp.Server, "__init__", bare)
        self.assertEqual(
            lean_transport_misfit(port),
            "tcp.Server no longer stores repstr, logstr, hostname, client, "
            "sessionno, server",
        )
        self.patch(tcp.Server, "__init__", init)

        def other_repr(self: Server) -> str:
            return "<other>"

        self.patch(Server, "__repr__", other_repr)
        self.assertRegex(
            lean_transport_misfit(port) or "",
            r"^repr <other> is not <Protocol #7 on \d+>$",
        )
        self.patch(port, "_realPortNumber", None)
        self.assertEqual(
            lean_transport_misfit(port),
            "tcp.Port._realPortNumber is not the port's number",
        )
