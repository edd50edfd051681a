"""
Tests for L{twisted_echo.operations.httpbounds}: the metrics listener's connection
limit, request-read timeout and one response in flight, on a
L{task.Clock} and over real sockets (in process and with C{twistd}).
"""

from __future__ import annotations

import socket
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from tests.process import HOST, IO_TIMEOUT, start_server, tcp_exchange
from tests.test_metrics import http_get, samples, value
from twisted_echo.operations.metrics import Readiness, metrics_registry, metrics_site
from twisted_echo.services.stream import queued_bytes


def site(clock: Any = None, **kwargs: Any) -> Any:
    registry = metrics_registry(_EmptyCollector(), process=False)
    if clock is not None:
        kwargs["reactor"] = clock
    return metrics_site(registry, Readiness(), **kwargs)


class _EmptyCollector:
    def collect(self) -> list[Any]:
        return []


def connect(made: Any, transport: StringTransport | None = None) -> Any:
    channel = made.buildProtocol(None)
    channel.makeConnection(transport or StringTransport())
    return channel


class TimeoutTests(unittest.TestCase):
    """
    The request-read timeout, on a L{Clock}.
    """

    def test_trickled_request_closed(self) -> None:
        """
        A request line sent one byte every few seconds is aborted
        C{request_timeout} seconds after its first byte, however often bytes
        come (Twisted's own timeout restarts at every byte), and counted.
        """
        clock = Clock()
        made = site(clock, request_timeout=10.0)
        channel = connect(made)
        for byte in b"GET /metr":
            channel.dataReceived(bytes([byte]))
            clock.advance(1)
            self.assertFalse(channel.transport.disconnecting)
        clock.advance(0.5)
        self.assertFalse(channel.transport.disconnecting)
        clock.advance(0.5)
        self.assertTrue(channel.transport.disconnecting)
        self.assertEqual(made.counters.timeouts["request"], 1)

    def test_complete_requests_not_timed_out(self) -> None:
        """
        Requests completed in time are answered; the timeout of each starts
        at its own first byte.
        """
        clock = Clock()
        made = site(clock, request_timeout=10.0)
        channel = connect(made)
        for _ in range(3):
            channel.dataReceived(b"GET /healthz HTTP/1.1\r\n")
            clock.advance(9)
            channel.dataReceived(b"Host: x\r\n\r\n")
        clock.advance(9)
        self.assertFalse(channel.transport.disconnecting)
        self.assertEqual(channel.transport.value().count(b"200 OK"), 3)
        self.assertEqual(made.counters.timeouts["request"], 0)


class QueuingTransport(StringTransport):
    """
    A L{StringTransport} that says how much it holds unsent the way
    Twisted's socket transports do (L{queued_bytes}), until L{flush}.
    """

    dataBuffer = b""
    offset = 0
    producerPaused = False
    flushed = 0

    @property
    def _tempDataLen(self) -> int:  # noqa: N802
        return len(self.value()) - self.flushed

    def flush(self) -> None:
        self.flushed = len(self.value())
        if self.producerPaused:
            self.producerPaused = False
            self.producer.resumeProducing()


class OneResponseTests(unittest.TestCase):
    """
    At most one response in flight per connection, on a L{Clock}.
    """

    def test_pipelined_held_until_flushed(self) -> None:
        """
        Of three pipelined requests, the second is answered only once the
        first response is flushed, and reading stops meanwhile.
        """
        transport = QueuingTransport()
        self.assertIsNotNone(queued_bytes(transport))
        clock = Clock()
        channel = connect(site(clock), transport)
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        channel.dataReceived(request * 3)
        self.assertEqual(transport.value().count(b"200 OK"), 1)
        self.assertEqual(transport.producerState, "paused")
        transport.flush()
        self.assertEqual(transport.value().count(b"200 OK"), 2)
        transport.flush()
        self.assertEqual(transport.value().count(b"200 OK"), 3)
        transport.flush()
        self.assertEqual(transport.producerState, "producing")

    def test_response_not_taken(self) -> None:
        """
        A response the client does not take within the request timeout
        aborts the connection.
        """
        transport = QueuingTransport()
        clock = Clock()
        made = site(clock, request_timeout=5.0)
        channel = connect(made, transport)
        channel.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
        clock.advance(5)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(made.counters.timeouts["response"], 1)

    def test_large_body_refused(self) -> None:
        """
        A declared body over the cap aborts the connection at once; what
        follows it is not parsed.
        """
        channel = connect(site(Clock()))
        channel.dataReceived(
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 9999999\r\n\r\n"
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        self.assertTrue(channel.transport.disconnecting)
        self.assertNotIn(b"200 OK", channel.transport.value())


class LimitTests(unittest.TestCase):
    """
    The connection limit, in process.
    """

    def test_over_limit_refused(self) -> None:
        """
        Beyond C{max_connections} open channels, a new connection gets no
        channel (Twisted closes it) and is counted; once one closes, the
        next is served.
        """
        made = site(Clock(), max_connections=2)
        first = connect(made)
        connect(made)
        self.assertIsNone(made.buildProtocol(None))
        self.assertEqual(made.counters.refused["max_connections"], 1)
        first.connectionLost(None)
        self.assertIsNotNone(made.buildProtocol(None))
        self.assertEqual(made.counters.connections_open, 2)


class PipeliningClient(Protocol):
    """
    Writes C{count} pipelined requests and reads nothing until told to.
    """

    MARK = b"HTTP/1.1 200 OK"

    def __init__(self, request: bytes, count: int) -> None:
        self.request = request
        self.count = count
        self.received = 0
        self.responses = 0
        self._tail = b""
        self.done: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.pauseProducing()  # type: ignore[union-attr]
        self.transport.write(self.request * self.count)  # type: ignore[union-attr]

    def read(self) -> None:
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        # A status line may be cut between two reads.
        seen = self._tail + data
        self.responses += seen.count(self.MARK)
        keep = len(self.MARK) - 1
        self._tail = seen[-keep:] if not seen.endswith(self.MARK) else b""
        if self.responses == self.count and not self.done.called:
            self.done.callback(None)


class PipeliningTests(unittest.TestCase):
    """
    A client pipelining requests without reading, over a real socket.
    """

    @inlineCallbacks
    def test_pipelined_not_read(self) -> Any:
        """
        The server stops reading a client that pipelines 400 C{/metrics}
        requests and reads nothing: it answers only what the kernel's
        buffers take (made small here: 4 KiB each way) and holds at most
        one response unsent, however long it waits; once the client reads,
        every request is answered in turn.
        """
        from twisted.internet.protocol import Factory

        registry = metrics_registry(_EmptyCollector(), process=True)
        made = metrics_site(registry, Readiness())
        page = len(http_page(made))
        channels: list[Any] = []
        build = made.buildProtocol

        def record(addr: Any) -> Any:
            channel = build(addr)
            channels.append(channel)
            return channel

        made.buildProtocol = record  # type: ignore[method-assign]
        port = reactor.listenTCP(0, made, interface=HOST)  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        # Accepted sockets take the listener's send buffer size.
        port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        count = 400
        client = PipeliningClient(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", count)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((HOST, port.getHost().port))
        sock.setblocking(False)
        reactor.adoptStreamConnection(  # type: ignore[attr-defined]
            sock.fileno(), socket.AF_INET, Factory.forProtocol(lambda: client)
        )
        sock.close()  # Twisted holds its own duplicate
        self.addCleanup(lambda: client.transport.abortConnection())  # type: ignore[union-attr]
        # Wait until the server has held a response unsent for a second on
        # end: the kernel's buffers are full (bounded in count and time).
        deadline = time.monotonic() + IO_TIMEOUT
        most = 0
        steady = 0
        while time.monotonic() < deadline and steady < 20:
            yield deferLater(reactor, 0.05, lambda: None)
            if not channels:
                continue
            # Twisted's stock Site wraps its channel.
            transport = getattr(channels[0], "_channel", channels[0]).transport
            most = max(most, queued_bytes(transport) or 0)
            held = getattr(channels[0], "_held", None) is not None
            steady = steady + 1 if held else 0
        self.assertLess(most, 2 * page)
        self.assertEqual(steady, 20)
        client.read()
        yield client.done
        self.assertLess(made.counters.timeouts["response"], 1)
        self.assertEqual(client.responses, count)


def http_page(made: Any) -> bytes:
    """
    @return: a C{/metrics} response of C{made}, as a client gets it.
    """
    transport = StringTransport()
    channel = made.buildProtocol(None)
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    channel.connectionLost(None)
    return transport.value()


class ProcessTests(unittest.TestCase):
    """
    The real server's metrics listener.
    """

    def start(self, *args: str) -> tuple[Any, int]:
        server = start_server(self, ["--metrics", f"tcp:0:interface={HOST}", *args])
        match = server.wait_for(r"\] metrics listening on tcp:127\.0\.0\.1:(\d+)$")
        return server, int(match.group(1))

    def test_over_limit_refused(self) -> None:
        """
        With 70 idle connections open to the metrics listener (the default
        limit is 64), the ones beyond the limit are closed at once, echo
        keeps serving, the refusal is logged once and counted.
        """
        server, port = self.start()
        held = []
        closed = 0
        for _ in range(70):
            sock = socket.create_connection((HOST, port), IO_TIMEOUT)
            self.addCleanup(sock.close)
            held.append(sock)
        for sock in held[64:]:
            sock.settimeout(IO_TIMEOUT)
            try:
                if sock.recv(1) == b"":
                    closed += 1
            except ConnectionResetError:
                closed += 1
        self.assertEqual(closed, 6)
        self.assertEqual(tcp_exchange(server.ports["echo"], b"still"), b"still")
        server.wait_for(r"metrics listener full \(64 connections open")
        for sock in held[:64]:
            sock.close()
        server.wait_for(r"metrics listener accepting again \(6 refused while full\)")
        found = samples(http_get(port, "/metrics")[2])
        self.assertEqual(
            value(
                found,
                "sockecho_metrics_refused_connections_total",
                reason="max_connections",
            ),
            6,
        )

    def test_trickled_request_closed(self) -> None:
        """
        With C{--metrics-request-timeout 1}, a request line that never ends
        is closed, logged and counted, while its connection keeps sending.
        """
        server, port = self.start("--metrics-request-timeout", "1")
        sock = socket.create_connection((HOST, port), IO_TIMEOUT)
        self.addCleanup(sock.close)
        sock.settimeout(0.2)
        deadline = time.monotonic() + IO_TIMEOUT
        ended = False
        while not ended and time.monotonic() < deadline:
            try:
                sock.sendall(b"G")
                ended = sock.recv(1) == b""
            except TimeoutError:
                pass
            except OSError:
                ended = True
        self.assertTrue(ended)
        server.wait_for(
            r"metrics connection from tcp:127\.0\.0\.1:\d+: request not complete "
            r"within 1\.0 s; closed"
        )
        found = samples(http_get(port, "/metrics")[2])
        self.assertEqual(
            value(
                found, "sockecho_metrics_connection_timeouts_total", reason="request"
            ),
            1,
        )
