"""
Tests for L{twisted_echo.services.echo}: RFC 862 TCP echo.
"""

from __future__ import annotations

import hashlib
import os
import socket

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.loopback import (
    connect_stalled_reader,
    exchange,
    listen_tcp,
    record_protocols,
    wait_until,
)
from tests.memory import connect, cut
from tests.socketpair import TRANSPORTS, clock_for, converse
from twisted_echo.services.echo import Echo, EchoFactory


class EchoProtocolTests(TestCase):
    """
    The echo protocol, in memory.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.factory = EchoFactory(self.clock)
        self.protocol, self.transport = connect(self.factory, Echo)

    def test_every_byte_value_comes_back(self) -> None:
        """
        All 256 byte values come back unchanged, in order, whatever the
        chunking.
        """
        payload = bytes(range(256)) * 3
        for start in range(0, len(payload), 100):
            self.protocol.dataReceived(payload[start : start + 100])
        self.assertEqual(self.transport.value(), payload)

    @given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=20))
    def test_any_chunking_comes_back_identical(
        self, data: bytes, cuts: list[int]
    ) -> None:
        """
        For any bytes cut anywhere, exactly the same bytes come back, and
        all of them once the peer half-closes.
        """
        protocol, transport = connect(EchoFactory(Clock()), Echo)
        for chunk in cut(data, cuts):
            protocol.dataReceived(chunk)
        protocol.readConnectionLost()
        self.assertEqual(transport.value(), data)
        self.assertTrue(transport.disconnecting)

    def test_half_close_sends_everything_then_closes(self) -> None:
        """
        When the peer shuts down its sending side, what was echoed stays
        queued and the transport is asked to close after flushing it, with
        the flow-control producer unregistered so that a paused transport
        still closes.
        """
        self.protocol.dataReceived(b"last words")
        self.protocol.readConnectionLost()
        self.assertEqual(self.transport.value(), b"last words")
        self.assertTrue(self.transport.disconnecting)
        self.assertIsNone(self.transport.producer)

    def test_counts_connection_and_bytes(self) -> None:
        """
        The service counters record the connection and its bytes.
        """
        self.protocol.dataReceived(b"12345")
        counters = self.factory.counters
        self.assertEqual(
            (counters.connections_total, counters.connections_open), (1, 1)
        )
        self.clock.advance(2.5)
        self.protocol.readConnectionLost()
        self.protocol.connectionLost(None)
        self.assertEqual(
            (counters.connections_total, counters.connections_open), (1, 0)
        )
        self.assertEqual((counters.bytes_in, counters.bytes_out), (5, 5))


class EchoLoopbackTests(TestCase):
    """
    The echo service on a real loopback socket.
    """

    def setUp(self) -> None:
        self.factory = EchoFactory(reactor)  # type: ignore[arg-type]
        self.port = listen_tcp(self, self.factory)

    async def test_20_mb_with_half_close_arrives_intact(self) -> None:
        """
        A client that sends 20 MB and then shuts down its sending side gets
        every byte back (sha256) before the server closes.
        """
        payload = os.urandom(20 * 1000 * 1000)
        client = await exchange(self.port, payload)
        self.assertEqual(client.count, len(payload))
        self.assertEqual(client.digest.digest(), hashlib.sha256(payload).digest())

    async def test_nagle_is_off(self) -> None:
        """
        Replies leave at once: the server's side of a TCP connection has
        C{TCP_NODELAY} set (as asyncio and uvloop servers do), so a small
        reply is never held back waiting for the peer's delayed ACK.
        """
        built = record_protocols(self.factory)
        client = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.addCleanup(client.close)
        await wait_until(lambda: built)
        self.assertTrue(built[0].transport.getTcpNoDelay())  # type: ignore[union-attr]

    async def test_eight_clients_at_once(self) -> None:
        """
        Eight clients connected at the same time each get exactly their own
        bytes back.
        """
        payloads = [os.urandom(300_000) + bytes([i]) for i in range(8)]
        clients = await gatherResults(
            [Deferred.fromCoroutine(exchange(self.port, p)) for p in payloads]
        )
        for client, payload in zip(clients, payloads, strict=True):
            self.assertEqual(b"".join(client.received), payload)

    async def test_client_that_does_not_read_is_paused(self) -> None:
        """
        A client that writes and does not read stops being read from once
        the server's write buffer is full (flow control), so it cannot make
        the server buffer without bound; when it reads again, every byte
        arrives.
        """
        servers = record_protocols(self.factory)
        client = await connect_stalled_reader(self.port)

        def both_held_back() -> bool:
            # The server stopped reading (flow control), and so the client's
            # own writes are held back by its full socket.
            return bool(
                servers
                and servers[0].transport.producerPaused  # type: ignore[union-attr]
                and not client.producing
            )

        await client.fill(limit=128 * 1024 * 1024, until=both_held_back)
        self.assertTrue(both_held_back())
        # Only kernel socket buffers and one transport buffer were filled.
        self.assertLess(client.sent, 64 * 1024 * 1024)
        await client.drain()
        self.assertEqual(client.received, client.sent)
        self.assertEqual(client.digest_in.digest(), client.digest_out.digest())


class EchoRealPathsTests(TestCase):
    """
    Echo's key protocol tests over L{StringTransport} and over a real
    socketpair adopted by the reactor (L{tests.socketpair}).
    """

    async def test_byte_exact_with_half_close(self) -> None:
        """
        Every byte value, in several reads, comes back unchanged; after the
        half-close everything is delivered, then the connection closes and
        gives back all it held.
        """
        chunks = [bytes(range(256)) * 4, os.urandom(100_000), b"tail"]
        for over in TRANSPORTS:
            conversation = await converse(over, EchoFactory(clock_for(over)), chunks)
            self.assertEqual(conversation.received, b"".join(chunks), over)
            self.assertTrue(conversation.closed, over)
            conversation.assert_released(self)
