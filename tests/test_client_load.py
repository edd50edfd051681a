"""
Tests for L{twisted_echo.client.load}: in memory, then on loopback against
sockecho's own services and a corrupting echo server.

L{serve_tcp} and L{serve_udp} start in-process servers on 127.0.0.1 port 0
that the test cleans up; the other client test modules use them too.
"""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from twisted_echo.client.contracts import ReplyChecker, WelcomeChecker
from twisted_echo.client.load import (
    LoadConfig,
    LoadConnection,
    LoadError,
    LoadRun,
    format_report,
    run_load,
    run_stream_load,
)
from twisted_echo.services.echo import EchoFactory
from twisted_echo.services.udp import UDPEcho
from twisted_echo.services.upper import UpperFactory
from twisted_echo.services.welcome import WelcomeFactory


def serve_tcp(test: TestCase, factory: Factory) -> int:
    """
    Listen with C{factory} on 127.0.0.1, port 0, until the test ends; at the
    end, wait (at most 5 s) for the server's connections to close, then
    abort what is left.

    @return: the port number.
    """
    open_protocols: set[Protocol] = set()
    base = factory.protocol
    assert base is not None

    class Tracked(base):  # type: ignore[valid-type,misc]
        def connectionMade(self) -> None:
            open_protocols.add(self)
            base.connectionMade(self)

        def connectionLost(self, reason: Failure = connectionDone) -> None:
            open_protocols.discard(self)
            base.connectionLost(self, reason)

    factory.protocol = Tracked
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")

    async def cleanup() -> None:
        await maybeDeferred(port.stopListening)
        for _ in range(500):
            if not open_protocols:
                return
            await deferLater(reactor, 0.01, lambda: None)
        for protocol in list(open_protocols):
            protocol.transport.abortConnection()
        # Twisted reports an abort on a later reactor turn.
        for _ in range(500):
            if not open_protocols:
                return
            await deferLater(reactor, 0.01, lambda: None)

    test.addCleanup(lambda: Deferred.fromCoroutine(cleanup()))
    number: int = port.getHost().port
    return number


def serve_udp(test: TestCase) -> int:
    """
    Run sockecho's UDP echo on 127.0.0.1, port 0, until the test ends.

    @return: the port number.
    """
    port = reactor.listenUDP(0, UDPEcho(), interface="127.0.0.1", maxPacketSize=65535)
    test.addCleanup(port.stopListening)
    number: int = port.getHost().port
    return number


class CorruptEcho(Protocol):
    """
    Echoes, but flips the lowest bit of the 100th byte of the connection.
    """

    seen = 0

    def dataReceived(self, data: bytes) -> None:
        start, self.seen = self.seen, self.seen + len(data)
        if start <= 99 < self.seen:
            i = 99 - start
            data = data[:i] + bytes([data[i] ^ 1]) + data[i + 1 :]
        self.transport.write(data)  # type: ignore[union-attr]


class HalfCloseTransport(StringTransport):
    """
    A L{StringTransport} that records C{loseWriteConnection}.
    """

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


def _config(**kwargs: Any) -> LoadConfig:
    kwargs.setdefault("endpoint", "tcp:127.0.0.1:1")
    return LoadConfig(**kwargs)


class LoadConnectionMemoryTests(TestCase):
    """
    One load connection on a L{StringTransport}, time from a L{Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def connect(
        self, run: LoadRun, checker: ReplyChecker, in_flight: int = 1
    ) -> tuple[LoadConnection, HalfCloseTransport]:
        connection = LoadConnection(run, checker, b"ping", in_flight)
        transport = HalfCloseTransport()
        connection.makeConnection(transport)
        return connection, transport

    def test_request_response_timed(self) -> None:
        run = LoadRun(_config(), self.clock, self.clock.seconds)
        connection, transport = self.connect(run, ReplyChecker())
        self.assertEqual(transport.value(), b"ping")
        transport.clear()
        self.clock.advance(0.000250)
        connection.dataReceived(b"pi")
        self.assertEqual(transport.value(), b"")
        connection.dataReceived(b"ng")
        self.assertEqual(transport.value(), b"ping")
        self.assertEqual(run.stats.latencies_us, [250])
        self.assertEqual(run.stats.requests, 1)

    def test_stop_half_closes_when_idle(self) -> None:
        run = LoadRun(_config(), self.clock, self.clock.seconds)
        connection, transport = self.connect(run, ReplyChecker())
        run.stop()
        # A reply is still owed: no half-close yet.
        self.assertFalse(transport.write_closed)
        connection.dataReceived(b"ping")
        self.assertTrue(transport.write_closed)
        self.assertEqual(transport.value(), b"ping")
        connection.readConnectionLost()
        connection.connectionLost(Failure(connectionDone.value))
        self.assertTrue(run.stats.ok)
        self.assertEqual(run.stats.connections, 1)

    def test_budget_bounds_requests(self) -> None:
        run = LoadRun(_config(max_requests=3), self.clock, self.clock.seconds)
        connection, transport = self.connect(run, ReplyChecker(), in_flight=10)
        self.assertEqual(transport.value(), b"ping" * 3)
        self.assertTrue(transport.write_closed)

    def test_mismatch_aborts(self) -> None:
        run = LoadRun(_config(), self.clock, self.clock.seconds)
        connection, transport = self.connect(run, ReplyChecker())
        connection.dataReceived(b"pong")
        self.assertTrue(transport.disconnecting)
        connection.connectionLost(Failure(connectionDone.value))
        self.assertEqual(run.stats.mismatches, 1)
        self.assertEqual(run.stats.lost_bytes, 0)
        self.assertFalse(run.stats.ok)
        self.assertIn("reply byte 1 differs", run.stats.problems[0])

    def test_close_with_reply_owed_is_loss(self) -> None:
        run = LoadRun(_config(), self.clock, self.clock.seconds)
        connection, transport = self.connect(run, ReplyChecker())
        connection.dataReceived(b"pi")
        connection.connectionLost(Failure(connectionDone.value))
        self.assertEqual(run.stats.lost_bytes, 2)
        self.assertFalse(run.stats.ok)

    def test_abort_counts_owed_bytes(self) -> None:
        run = LoadRun(_config(), self.clock, self.clock.seconds)
        connection, transport = self.connect(run, ReplyChecker())
        run.abort_all("timed out")
        connection.connectionLost(Failure(connectionDone.value))
        self.assertEqual(run.stats.lost_bytes, 4)
        self.assertIn("timed out", run.stats.problems[0])

    def test_welcome_waits_for_banner(self) -> None:
        run = LoadRun(_config(service="welcome"), self.clock, self.clock.seconds)
        connection = LoadConnection(run, WelcomeChecker(), b"hi\n")
        transport = HalfCloseTransport()
        connection.makeConnection(transport)
        self.assertEqual(transport.value(), b"")
        connection.dataReceived(b"Welcome\r\n")
        self.assertEqual(transport.value(), b"hi\n")
        connection.dataReceived(b"OK...hi\r\n")
        self.assertEqual(run.stats.requests, 1)
        self.assertTrue(run.stats.ok)


class LoadLoopbackTests(TestCase):
    """
    Short, bounded runs against real servers on 127.0.0.1.
    """

    async def run_load(self, factory: Factory, **kwargs: Any) -> dict[str, Any]:
        port = serve_tcp(self, factory)
        kwargs.setdefault("duration", 0.3)
        kwargs.setdefault("max_requests", 2000)
        config = LoadConfig(endpoint=f"tcp:127.0.0.1:{port}", **kwargs)
        out = io.StringIO()
        status = await run_load(reactor, config, True, out)
        report: dict[str, Any] = json.loads(out.getvalue())
        self.assertEqual(status, 0 if report["ok"] else 1)
        return report

    async def test_rr_echo(self) -> None:
        report = await self.run_load(EchoFactory(reactor), connections=3, size=100)
        self.assertTrue(report["ok"], report["problems"])
        self.assertGreater(report["requests"], 0)
        self.assertEqual(report["connections"], 3)
        self.assertEqual(report["bytes_received"], report["requests"] * 100)
        self.assertLessEqual(report["requests"], 2000)
        self.assertGreater(report["latency_us"]["max"], 0)

    async def test_stream_upper(self) -> None:
        report = await self.run_load(
            UpperFactory(reactor),
            connections=2,
            size=1000,
            mode="stream",
            service="upper",
        )
        self.assertTrue(report["ok"], report["problems"])
        self.assertGreater(report["requests"], 0)

    async def test_connect_welcome(self) -> None:
        report = await self.run_load(
            WelcomeFactory(reactor, banner="hello"),
            connections=2,
            size=20,
            mode="connect",
            service="welcome",
            banner=b"hello",
            max_requests=50,
        )
        self.assertTrue(report["ok"], report["problems"])
        self.assertEqual(report["connections"], report["requests"])
        self.assertGreater(report["connections_per_s"], 0)

    async def test_wrong_service_is_a_mismatch(self) -> None:
        report = await self.run_load(EchoFactory(reactor), service="upper")
        self.assertFalse(report["ok"])
        self.assertEqual(report["mismatches"], 1)

    async def test_corrupt_byte_found(self) -> None:
        report = await self.run_load(
            Factory.forProtocol(CorruptEcho), size=64, mode="stream"
        )
        self.assertFalse(report["ok"])
        self.assertEqual(report["mismatches"], 1)
        self.assertIn("reply byte 99 differs", report["problems"][0])

    async def test_refused(self) -> None:
        # A port just freed: nothing listens there any more.
        listening = reactor.listenTCP(0, EchoFactory(reactor), interface="127.0.0.1")
        free = listening.getHost().port
        await listening.stopListening()
        run = LoadRun(_config(endpoint=f"tcp:127.0.0.1:{free}"), reactor)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", free)
        e = await self.assertFailure(
            Deferred.fromCoroutine(run_stream_load(endpoint, run)), LoadError
        )
        self.assertIn("connection refused", str(e))

    async def test_udp(self) -> None:
        port = serve_udp(self)
        config = LoadConfig(
            endpoint=f"udp:127.0.0.1:{port}",
            connections=2,
            size=512,
            duration=0.3,
            mode="udp",
            max_requests=500,
        )
        out = io.StringIO()
        status = await run_load(reactor, config, True, out)
        report = json.loads(out.getvalue())
        self.assertEqual(status, 0, report)
        self.assertGreater(report["requests"], 0)
        self.assertEqual(report["bytes_received"], report["requests"] * 512)

    def test_text_report(self) -> None:
        run = LoadRun(_config(), Clock())
        run.stats.record_latency(0.001)
        text = format_report(run.config, run.stats.report(1.0))
        self.assertIn("p50 1000", text)
        self.assertTrue(text.endswith("OK"))
