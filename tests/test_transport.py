"""
Tests of L{twisted_echo.transport}: the leaner TCP server transport, on real
sockets of 127.0.0.1.
"""

from __future__ import annotations

import gc
import os
import socket
import tracemalloc

from twisted.internet import reactor, tcp
from twisted.logger import Logger
from twisted.trial import unittest

from tests.loopback import exchange, listen_tcp, record_protocols, wait_until
from tests.process import temp_dir
from twisted_echo.echo import EchoFactory
from twisted_echo.limits import ConnectionLimits
from twisted_echo.stream import StreamProtocol
from twisted_echo.transport import Server, use_lean_transport


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

    async def test_heap_per_idle_connection(self) -> None:
        """
        An open echo connection that has echoed a byte holds under 1 KiB of
        Python heap in the server (measured with tracemalloc: protocol,
        transport, socket and bookkeeping). Twisted's own transport, or a
        protocol whose attributes outgrow CPython's shared-key layout, take
        1.1 KiB or more.
        """
        count = 200
        # Log events are kept by trial's log capture; count connections only.
        self.patch(StreamProtocol, "_log", Logger(observer=lambda event: None))
        factory = EchoFactory(reactor, limits=ConnectionLimits(0, 0))
        listening = reactor.listenTCP(  # type: ignore[attr-defined]
            0, factory, interface="127.0.0.1", backlog=count
        )
        self.addCleanup(listening.stopListening)
        use_lean_transport(listening)
        port = listening.getHost().port
        clients = [socket.socket() for _ in range(count)]
        for client in clients:
            self.addCleanup(client.close)
            client.setblocking(False)
        gc.collect()
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        before = tracemalloc.take_snapshot()
        for client in clients:
            client.connect_ex(("127.0.0.1", port))
        await wait_until(lambda: len(factory.open_protocols) == count)
        for client in clients:
            client.send(b"x")
        await wait_until(
            lambda: sum(p.bytes_out for p in factory.open_protocols) == count
        )
        gc.collect()
        after = tracemalloc.take_snapshot()
        grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        self.assertLess(grown / count, 1024)

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
