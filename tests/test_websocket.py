"""
Tests for L{twisted_echo.services.websocket}: the WebSocket echo (RFC 6455)
and its page; in memory with C{wsproto} as the client, over real sockets
with the C{websockets} library against a real C{twistd}, and the page in
headless Chromium.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import time
import unittest as pyunit
import urllib.error
import urllib.request
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from tests.memory import PEER, connect, run_clock
from tests.process import (
    CLEAN_SIGTERM_EXIT,
    HOST,
    IO_TIMEOUT,
    STARTUP_TIMEOUT,
    RunningServer,
    in_ci,
    missing,
    wait_until,
)
from tests.test_metrics import http_get, samples
from tests.tls_peers import make_certificate, ssl_description
from twisted_echo.app.options import Options
from twisted_echo.listening.proxyheader import ProxyHeaderProtocol
from twisted_echo.policies.counters import ServiceCounters
from twisted_echo.policies.limits import ConnectionLimits, Timeouts
from twisted_echo.services.websocket import (
    DEFAULT_MAX_MESSAGE,
    WebSocketEcho,
    WebSocketFactory,
)
from twisted_echo.services.websocket_http import (
    check_path,
    choose_subprotocol,
    flavour_paths,
)

MB = 1 << 20


class MemoryPeer:
    """
    A C{wsproto} client talking to a L{WebSocketEcho} on a StringTransport.
    """

    def __init__(
        self,
        factory: WebSocketFactory,
        path: str = "/",
        subprotocols: list[str] | None = None,
        extensions: list[Any] | None = None,
    ) -> None:
        self.protocol, self.transport = connect(factory, WebSocketEcho)
        self.client = WSConnection(ConnectionType.CLIENT)
        self.protocol.dataReceived(
            self.client.send(
                Request(
                    host="localhost",
                    target=path,
                    subprotocols=subprotocols or [],
                    extensions=extensions or [],
                )
            )
        )
        events = self.receive()
        assert isinstance(events[0], AcceptConnection), events
        #: The server's answer to the handshake.
        self.accepted: AcceptConnection = events[0]
        #: Events after it, in the same bytes (C{/whoami}'s report).
        self.first_events = events[1:]

    def receive(self) -> list[Event]:
        """
        @return: the events the server's bytes written so far make.
        """
        data = self.transport.value()
        self.transport.clear()
        self.client.receive_data(data)
        return list(self.client.events())

    def send(self, event: Event) -> list[Event]:
        self.protocol.dataReceived(self.client.send(event))
        return self.receive()


def messages(events: list[Event]) -> list[tuple[type, Any]]:
    """
    @return: the whole messages among C{events}, reassembled:
        C{(TextMessage or BytesMessage, data)}.
    """
    out: list[tuple[type, Any]] = []
    pending: Any = None
    for event in events:
        if isinstance(event, TextMessage | BytesMessage):
            pending = event.data if pending is None else pending + event.data
            if event.message_finished:
                out.append((type(event), pending))
                pending = None
    return out


def closes(events: list[Event]) -> list[tuple[int, str]]:
    return [(int(e.code), e.reason) for e in events if isinstance(e, CloseConnection)]


def make_factory(**kw: Any) -> tuple[WebSocketFactory, Clock]:
    clock = Clock()
    timeouts = kw.pop("timeouts", Timeouts(idle=60.0))
    factory = WebSocketFactory(
        clock, ServiceCounters(), ConnectionLimits(), timeouts, **kw
    )
    return factory, clock


class InMemoryTests(SynchronousTestCase):
    """
    The echo's logic, with a C{wsproto} client on a StringTransport.
    """

    def test_text_binary_empty(self) -> None:
        """
        Text comes back as text, binary as binary, 0-byte as 0-byte.
        """
        peer = MemoryPeer(make_factory()[0])
        events = peer.send(TextMessage("héllo"))
        events += peer.send(BytesMessage(b"\x00\xff"))
        events += peer.send(TextMessage(""))
        events += peer.send(BytesMessage(b""))
        self.assertEqual(
            messages(events),
            [
                (TextMessage, "héllo"),
                (BytesMessage, b"\x00\xff"),
                (TextMessage, ""),
                (BytesMessage, b""),
            ],
        )

    def test_fragmented_and_split_reads(self) -> None:
        """
        A message sent in fragments, and read a byte at a time, comes back
        whole (as fragments of one message).
        """
        peer = MemoryPeer(make_factory()[0])
        wire = peer.client.send(TextMessage("ab", message_finished=False))
        wire += peer.client.send(TextMessage("cß", message_finished=True))
        for i in range(len(wire)):
            peer.protocol.dataReceived(wire[i : i + 1])
        self.assertEqual(messages(peer.receive()), [(TextMessage, "abcß")])

    def test_upper_flavour(self) -> None:
        """
        At C{/upper} text is upper-cased as the TCP upper does; binary is not.
        """
        peer = MemoryPeer(make_factory()[0], "/upper")
        events = peer.send(TextMessage("straße"))
        events += peer.send(BytesMessage(b"abc"))
        self.assertEqual(
            messages(events), [(TextMessage, "STRASSE"), (BytesMessage, b"abc")]
        )

    def test_ping_and_close_echoed(self) -> None:
        """
        A ping gets a pong with its payload; the client's close code and
        reason come back, then the connection closes.
        """
        peer = MemoryPeer(make_factory()[0])
        events = peer.send(Ping(b"p1"))
        self.assertEqual([e.payload for e in events if isinstance(e, Pong)], [b"p1"])
        events = peer.send(CloseConnection(4001, "bye"))
        self.assertEqual(closes(events), [(4001, "bye")])
        self.assertTrue(peer.transport.disconnecting)

    def test_oversize_message_1009(self) -> None:
        """
        A message over the limit, even in fragments, gets close 1009 and is
        counted.
        """
        factory, _ = make_factory(max_message=10)
        peer = MemoryPeer(factory)
        events = peer.send(BytesMessage(b"x" * 6, message_finished=False))
        events += peer.send(BytesMessage(b"x" * 6, message_finished=True))
        self.assertEqual(closes(events)[0][0], 1009)
        self.assertTrue(peer.transport.disconnecting)
        self.assertEqual(factory.counters.refused["websocket_1009"], 1)

    def test_limit_is_per_message(self) -> None:
        """
        Messages each under the limit pass however many there are.
        """
        peer = MemoryPeer(make_factory(max_message=10)[0])
        events: list[Event] = []
        for _ in range(5):
            events += peer.send(BytesMessage(b"y" * 10))
        self.assertEqual(len(messages(events)), 5)
        self.assertEqual(closes(events), [])

    def test_invalid_utf8_1007(self) -> None:
        """
        Invalid UTF-8 in a text message: close 1007, counted.
        """
        factory, _ = make_factory()
        peer = MemoryPeer(factory)
        peer.protocol.dataReceived(masked_frame(0x1, b"\xff\xfe"))
        self.assertEqual(closes(peer.receive())[0][0], 1007)
        self.assertEqual(factory.counters.refused["websocket_1007"], 1)

    def test_unmasked_and_bad_opcode_1002(self) -> None:
        """
        An unmasked client frame, or an unknown opcode: close 1002.
        """
        for frame in (b"\x81\x02hi", masked_frame(0x3, b"x")):
            peer = MemoryPeer(make_factory()[0])
            peer.protocol.dataReceived(frame)
            self.assertEqual(closes(peer.receive())[0][0], 1002)
            self.assertTrue(peer.transport.disconnecting)

    def test_idle_timeout_closes_with_1000(self) -> None:
        factory, clock = make_factory(timeouts=Timeouts(idle=10.0))
        peer = MemoryPeer(factory)
        run_clock(clock, 30)
        self.assertEqual(closes(peer.receive()), [(1000, "idle timeout")])
        self.assertTrue(peer.transport.disconnecting)
        self.assertEqual(factory.counters.timeouts["idle"], 1)

    def test_drain_sends_1001(self) -> None:
        """
        Draining: an open WebSocket gets close 1001; it closes once the
        client answers.
        """
        factory, _ = make_factory()
        peer = MemoryPeer(factory)
        factory.drain(10.0)
        self.assertEqual(closes(peer.receive()), [(1001, "server shutting down")])
        self.assertFalse(peer.transport.disconnecting)
        peer.protocol.dataReceived(peer.client.send(CloseConnection(1001)))
        self.assertTrue(peer.transport.disconnecting)


class ProxyHeaderTests(SynchronousTestCase):
    def test_haproxy_listener(self) -> None:
        """
        On a C{haproxy:} listener the PROXY header comes first; the
        handshake and the echo follow, the log names the client it gave.
        """
        factory, _ = make_factory()
        header_reader = factory.buildProtocol(PEER, proxy_header=True)
        assert isinstance(header_reader, ProxyHeaderProtocol)
        transport = StringTransport(peerAddress=PEER)
        # As Twisted's TCP transport does, bytes go to the transport's
        # protocol: the header reader, which hands the transport over.
        transport.protocol = header_reader  # type: ignore[attr-defined]
        header_reader.makeConnection(transport)
        client = WSConnection(ConnectionType.CLIENT)
        header_reader.dataReceived(
            b"PROXY TCP4 198.51.100.1 127.0.0.1 50000 80\r\n"
            + client.send(Request(host="localhost", target="/"))
            + masked_frame(0x1, b"via proxy")
        )
        protocol = transport.protocol  # type: ignore[attr-defined]
        self.assertIsInstance(protocol, WebSocketEcho)
        client.receive_data(transport.value())
        events = list(client.events())
        self.assertIsInstance(events[0], AcceptConnection)
        self.assertEqual(messages(events), [(TextMessage, "via proxy")])
        self.assertEqual(protocol.client_text(), "tcp:198.51.100.1:50000")


def masked_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """
    @return: one client frame (masked, RFC 6455 section 5.2) of C{payload}
        (under 126 bytes) with C{opcode}.
    """
    mask = b"\x01\x02\x03\x04"
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + mask + body


class HTTPTests(SynchronousTestCase):
    """
    The HTTP side: the page, errors.
    """

    def request(self, data: bytes) -> tuple[bytes, StringTransport]:
        protocol, transport = connect(make_factory()[0], WebSocketEcho)
        protocol.dataReceived(data)
        return transport.value(), transport

    def test_page(self) -> None:
        """
        C{GET /} without C{Upgrade}: the page, self-contained, then close.
        """
        reply, transport = self.request(b"GET /?send=hi HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = reply.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertIn(b"Content-Type: text/html; charset=utf-8", head)
        self.assertIn(b"Content-Security-Policy: default-src 'none';", head)
        self.assertIn(b"<title>sockecho WebSocket echo</title>", body)
        self.assertNotIn(b"http://", body)
        self.assertNotIn(b"https://", body)
        self.assertTrue(transport.disconnecting)

    def test_errors(self) -> None:
        for request, status in [
            (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", b"404"),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b"405"),
            (b"NOT HTTP\r\n\r\n", b"400"),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\n\r\n",
                b"400",
            ),
        ]:
            reply, transport = self.request(request)
            self.assertTrue(reply.startswith(b"HTTP/1.1 " + status), (request, reply))
            self.assertTrue(transport.disconnecting)

    def test_request_head_too_large(self) -> None:
        reply, _ = self.request(b"GET / HTTP/1.1\r\nX: " + b"a" * 20000)
        self.assertTrue(reply.startswith(b"HTTP/1.1 400"), reply[:40])


class OptionsTests(SynchronousTestCase):
    def test_off_by_default(self) -> None:
        config = Options()
        config.parseOptions([])
        self.assertEqual(config.listeners["websocket"], [])
        self.assertEqual(config["websocket-max-message"], DEFAULT_MAX_MESSAGE)

    def test_alone(self) -> None:
        config = Options()
        config.parseOptions(
            [
                "--no-echo",
                "--no-upper",
                "--no-welcome",
                "--no-udp",
                "--websocket",
                "tcp:0",
                "--websocket-max-message",
                "64K",
            ]
        )
        self.assertEqual(config.listeners["websocket"], ["tcp:0"])
        self.assertEqual(config["websocket-max-message"], 65536)


# Real sockets: a real twistd, the websockets library as the client.


def require_websockets(case: pyunit.TestCase) -> Any:
    try:
        from websockets.sync import client
    except ImportError:
        missing(
            case, "the websockets library is not installed", "pip install -e '.[test]'"
        )
    return client


def start_websocket_server(
    case: pyunit.TestCase, *args: str, listener: str = f"tcp:0:interface={HOST}"
) -> tuple[RunningServer, int]:
    server = RunningServer(
        case,
        [
            "--no-echo",
            "--no-upper",
            "--no-welcome",
            "--no-udp",
            "--websocket",
            listener,
            *args,
        ],
    )
    match = server.wait_for(
        r"\] websocket listening on (tcp|ssl):127\.0\.0\.1:(\d+)$", STARTUP_TIMEOUT
    )
    port = int(match.group(2))
    return server, port


def raw_upgrade(port: int) -> socket.socket:
    """
    @return: a socket to the server, past a WebSocket handshake made by hand
        (so that the test can send frames no library would).
    """
    sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def read_close_code(sock: socket.socket) -> int:
    """
    @return: the code of the close frame the server sends next (other
        frames before it are skipped).
    """
    data = b""
    deadline = time.monotonic() + IO_TIMEOUT
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        while len(data) >= 2:
            opcode, length = data[0] & 0x0F, data[1] & 0x7F
            if length > 125 or len(data) < 2 + length:
                break
            payload, data = data[2 : 2 + length], data[2 + length :]
            if opcode == 0x8:
                code: int = struct.unpack("!H", payload[:2])[0]
                return code
    raise AssertionError(f"no close frame; got {data!r}")


class RealSocketTests(pyunit.TestCase):
    """
    A real C{twistd sockecho --websocket}, the C{websockets} library (an
    independent implementation) as the client.
    """

    def setUp(self) -> None:
        self.client = require_websockets(self)
        self.server, self.port = start_websocket_server(self)
        self.url = f"ws://{HOST}:{self.port}/"

    def tearDown(self) -> None:
        status = self.server.stop()
        self.assertIn(status, CLEAN_SIGTERM_EXIT)
        log = "\n".join(self.server.output + self.server.errors)
        self.assertNotIn("Traceback", log)

    def test_messages(self) -> None:
        """
        Text, binary, 0-byte, 1 MiB, fragmented; ping answered; the close
        code and reason echoed.
        """
        with self.client.connect(self.url, max_size=None) as ws:
            for message in [
                "héllo",
                b"\x00\x01\xff",
                "",
                b"",
                "x" * MB,
                os.urandom(MB),
            ]:
                ws.send(message)
                self.assertEqual(ws.recv(timeout=IO_TIMEOUT), message)
            ws.send(["frag", "ment", "ed"])
            self.assertEqual(ws.recv(timeout=IO_TIMEOUT), "fragmented")
            ws.send([b"a", b"b"])
            self.assertEqual(ws.recv(timeout=IO_TIMEOUT), b"ab")
            self.assertTrue(ws.ping(b"payload").wait(IO_TIMEOUT))
            ws.close(4321, "done here")
            self.assertEqual((ws.close_code, ws.close_reason), (4321, "done here"))
        with self.client.connect(self.url + "upper") as ws:
            ws.send("straße")
            self.assertEqual(ws.recv(timeout=IO_TIMEOUT), "STRASSE")

    def test_oversize_1009(self) -> None:
        from websockets.exceptions import ConnectionClosedError

        with self.client.connect(self.url, max_size=None) as ws:
            ws.send(b"z" * (DEFAULT_MAX_MESSAGE + 1))
            with self.assertRaises(ConnectionClosedError):
                ws.recv(timeout=IO_TIMEOUT)
            self.assertEqual(ws.close_code, 1009)
        self.server.wait_for(r"websocket connection from .*: close 1009")

    def test_bad_frames(self) -> None:
        """
        Invalid UTF-8 text: 1007; an unmasked frame, a bad opcode: 1002.
        """
        for frame, code in [
            (masked_frame(0x1, b"ok\xc3\x28"), 1007),
            (b"\x81\x02hi", 1002),
            (masked_frame(0xB, b""), 1002),
        ]:
            with raw_upgrade(self.port) as sock:
                sock.sendall(frame)
                self.assertEqual(read_close_code(sock), code, frame)

    def test_page_and_bad_handshake(self) -> None:
        page = f"http://{HOST}:{self.port}/"
        with urllib.request.urlopen(page, timeout=IO_TIMEOUT) as reply:
            self.assertEqual(reply.status, 200)
            self.assertIn(b"sockecho", reply.read())
        request = urllib.request.Request(
            page, headers={"Upgrade": "websocket", "Connection": "Upgrade"}
        )
        with self.assertRaises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=IO_TIMEOUT)
        self.assertEqual(caught.exception.code, 400)
        self.assertIn(b"bad WebSocket handshake", caught.exception.read())


class RealLimitsTests(pyunit.TestCase):
    def test_connection_limit(self) -> None:
        """
        Past C{--max-per-peer} a connection is refused; the open one echoes on.
        """
        client = require_websockets(self)
        server, port = start_websocket_server(self, "--max-per-peer", "1")
        url = f"ws://{HOST}:{port}/"
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        with client.connect(url) as first:
            # Refused: closed before any HTTP response (seen by the client
            # as no response, or as its request failing to send).
            with self.assertRaises((InvalidHandshake, ConnectionClosed, OSError)):
                with client.connect(url, open_timeout=IO_TIMEOUT):
                    pass
            first.send("still here")
            self.assertEqual(first.recv(timeout=IO_TIMEOUT), "still here")
        self.assertIn(server.stop(), CLEAN_SIGTERM_EXIT)

    def test_sigterm_drain_closes_with_1001(self) -> None:
        """
        On SIGTERM an open WebSocket gets close 1001 and the server exits
        cleanly once the client answers.
        """
        client = require_websockets(self)
        server, port = start_websocket_server(self)
        with client.connect(f"ws://{HOST}:{port}/") as ws:
            ws.send("before")
            self.assertEqual(ws.recv(timeout=IO_TIMEOUT), "before")
            server.process.send_signal(signal.SIGTERM)
            from websockets.exceptions import ConnectionClosed

            with self.assertRaises(ConnectionClosed):
                ws.recv(timeout=IO_TIMEOUT)
            self.assertEqual(ws.close_code, 1001)
        self.assertIn(server.process.wait(IO_TIMEOUT), CLEAN_SIGTERM_EXIT)

    def test_frames_crossing_the_drain_close(self) -> None:
        """
        Over a real socket, as the 1,000-client benchmark met it: frames
        the client sends after the server's close 1001 (a message, a ping,
        a fragment) get no answer and no traceback in the log; the
        client's own close ends the connection and the server exits
        cleanly.
        """
        server, port = start_websocket_server(self)
        sock = raw_upgrade(port)
        self.addCleanup(sock.close)
        server.process.send_signal(signal.SIGTERM)
        self.assertEqual(read_close_code(sock), 1001)
        sock.sendall(
            masked_frame(0x2, b"crossing")
            + masked_frame(0x9, b"ping")
            + masked_frame(0x1, b"text", fin=False)
            + masked_frame(0x0, b"more")
            + masked_frame(0x8, struct.pack("!H", 1001))
        )
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
        self.assertEqual(rest, b"")
        self.assertIn(server.process.wait(IO_TIMEOUT), CLEAN_SIGTERM_EXIT)
        self.assertIn(server.stop(), CLEAN_SIGTERM_EXIT)  # its log read whole
        log = "\n".join(server.output + server.errors)
        self.assertNotIn("Traceback", log)
        self.assertNotIn("LocalProtocolError", log)


class RealServingTests(pyunit.TestCase):
    """
    wss (an C{ssl:} listener), workers, metrics.
    """

    def test_wss(self) -> None:
        client = require_websockets(self)
        certificate = make_certificate(self)
        server, port = start_websocket_server(
            self, listener=ssl_description(certificate)
        )
        context = ssl.create_default_context(cafile=certificate.cert)
        with client.connect(
            f"wss://localhost:{port}/", ssl=context, max_size=None
        ) as ws:
            for message in ["over TLS", b"\x00" * MB]:
                ws.send(message)
                self.assertEqual(ws.recv(timeout=IO_TIMEOUT), message)
        self.assertIn(server.stop(), CLEAN_SIGTERM_EXIT)

    def test_metrics_and_workers(self) -> None:
        """
        With two workers, C{/metrics} counts the WebSocket connections under
        C{service="websocket"}.
        """
        client = require_websockets(self)
        server, port = start_websocket_server(
            self, "--workers", "2", "--metrics", f"tcp:0:interface={HOST}"
        )
        metrics_port = int(
            server.wait_for(r"\] metrics listening on tcp:127\.0\.0\.1:(\d+)$").group(1)
        )
        for _ in range(3):
            with client.connect(f"ws://{HOST}:{port}/") as ws:
                ws.send("counted")
                self.assertEqual(ws.recv(timeout=IO_TIMEOUT), "counted")

        def counted() -> bool:
            found = samples(http_get(metrics_port, "/metrics")[2])
            key = ("sockecho_connections_total", frozenset({("service", "websocket")}))
            return found.get(key) == 3

        self.assertTrue(wait_until(counted), "3 connections never counted")
        self.assertIn(server.stop(), CLEAN_SIGTERM_EXIT)


class RealFlowControlTests(pyunit.TestCase):
    def test_client_that_never_reads_is_not_read_from(self) -> None:
        """
        A client that sends messages and never reads their echo: once the
        echo is queued the server stops reading from it (a flow-control
        pause, counted), so it cannot grow the server's memory.
        """
        server, port = start_websocket_server(
            self, "--metrics", f"tcp:0:interface={HOST}"
        )
        metrics_port = int(
            server.wait_for(r"\] metrics listening on tcp:127\.0\.0\.1:(\d+)$").group(1)
        )
        key = (
            "sockecho_flow_control_pauses_total",
            frozenset({("service", "websocket")}),
        )
        payload = os.urandom(65000)
        frame = b"\x82\xfe" + struct.pack("!H", len(payload)) + b"\0\0\0\0" + payload
        sent = 0
        with raw_upgrade(port) as sock:
            sock.settimeout(2.0)
            # Bounded: at most 256 MiB, until the server stops reading.
            while sent < 256 * MB:
                try:
                    sock.sendall(frame)
                except TimeoutError:
                    break
                sent += len(frame)
            self.assertLess(sent, 256 * MB, "the server read everything")
            self.assertTrue(
                wait_until(
                    lambda: samples(http_get(metrics_port, "/metrics")[2]).get(key, 0)
                    >= 1
                ),
                "no pause counted",
            )
        self.assertIn(server.stop(), CLEAN_SIGTERM_EXIT)


# The page in a real browser.

#: Where the browser test saves its screenshot (printed too).
SCREENSHOT = os.environ.get(
    "SOCKECHO_WS_SCREENSHOT",
    os.path.join(tempfile.gettempdir(), "sockecho-websocket.png"),
)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def run_chromium(chromium: str, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tempfile.mkdtemp(prefix="sockecho-chromium-")
    try:
        return subprocess.run(
            [
                chromium,
                "--headless",
                "--disable-gpu",
                "--no-sandbox",
                "--no-first-run",
                "--disable-dev-shm-usage",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        shutil.rmtree(profile, True)


class BrowserTests(pyunit.TestCase):
    """
    The page in headless Chromium: it sends C{?send=...} on load and logs
    the echo, which the test reads back from the DOM.
    """

    def test_page_echoes_in_chromium(self) -> None:
        chromium = find_chromium()
        if chromium is None:
            missing(self, "chromium is not installed", "apt-get install -y chromium")
        assert chromium is not None
        server, port = start_websocket_server(self)
        url = f"http://{HOST}:{port}/?send=hello%20from%20chromium"
        # Headless Chromium dumps the page once its virtual time budget is
        # spent, and virtual time does not wait for a WebSocket: on a loaded
        # machine the echo can arrive after the dump. Load the page again
        # (at most 5 times, within 60 s) until it shows the echo.
        deadline = time.monotonic() + 60
        for attempt in range(5):
            budget = f"--virtual-time-budget={5000 * (attempt + 1)}"
            result = run_chromium(chromium, budget, "--dump-dom", url)
            dom = result.stdout
            if '<span class="kind">echo</span>' in dom or time.monotonic() > deadline:
                break
        self.assertIn('<span class="kind">echo</span>', dom, result.stderr[-2000:])
        echoed = '<span class="text">hello from chromium</span>'
        self.assertIn('<span class="kind">echo</span>' + echoed, dom)
        self.assertRegex(dom, r'<span class="rtt">[0-9.]+ ms</span>')
        server.wait_for(r"websocket connection from tcp:127\.0\.0\.1:\d+$")
        shot = run_chromium(
            chromium,
            "--virtual-time-budget=5000",
            "--window-size=900,360",
            "--hide-scrollbars",
            f"--screenshot={SCREENSHOT}",
            url,
        )
        self.assertTrue(os.path.exists(SCREENSHOT), shot.stderr[-2000:])
        print(f"\nscreenshot of the page: {SCREENSHOT}")
        self.assertIn(server.stop(), CLEAN_SIGTERM_EXIT)
        self.assertFalse(in_ci() and not os.path.getsize(SCREENSHOT))


# Paths, subprotocols, the handshake timeout, the message rate (issue 23).


class PathTests(SynchronousTestCase):
    """
    C{--websocket-path}: the echo and the page at PATH, the flavours
    relative to it.
    """

    def test_flavour_paths(self) -> None:
        self.assertEqual(
            flavour_paths("/"),
            {b"/": "echo", b"/upper": "upper", b"/whoami": "whoami"},
        )
        for base in ("/ws", "/ws/"):
            self.assertEqual(
                flavour_paths(base),
                {base.encode(): "echo", b"/ws/upper": "upper", b"/ws/whoami": "whoami"},
            )

    def test_served_under_the_path(self) -> None:
        """
        With C{path="/ws"}: the echo at C{/ws}, upper at C{/ws/upper}, the
        page at C{/ws}; C{/} and C{/upper} are 404 and name the paths.
        """
        factory, _ = make_factory(path="/ws")
        peer = MemoryPeer(factory, "/ws")
        self.assertEqual(messages(peer.send(TextMessage("a"))), [(TextMessage, "a")])
        peer = MemoryPeer(factory, "/ws/upper?x=1")
        self.assertEqual(messages(peer.send(TextMessage("a"))), [(TextMessage, "A")])
        for target in (b"/", b"/upper"):
            protocol, transport = connect(factory, WebSocketEcho)
            protocol.dataReceived(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = transport.value()
            self.assertTrue(reply.startswith(b"HTTP/1.1 404"), reply)
            self.assertIn(b"/ws, /ws/upper, /ws/whoami", reply)
        protocol, transport = connect(factory, WebSocketEcho)
        protocol.dataReceived(b"GET /ws?send=hi HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK"))

    def test_bad_path_refused(self) -> None:
        for path in ("ws", "/a b", "/a?b", "/é"):
            with self.assertRaises(ValueError) as caught:
                check_path(path)
            self.assertIn("--websocket-path", str(caught.exception))

    def test_option(self) -> None:
        config = Options()
        config.parseOptions(["--websocket", "tcp:0", "--websocket-path", "/ws"])
        self.assertEqual(config["websocket-path"], "/ws")
        with self.assertRaises(UsageError) as caught:
            Options().parseOptions(["--websocket-path", "ws"])
        self.assertIn("--websocket-path takes an absolute path", str(caught.exception))


class SubprotocolTests(SynchronousTestCase):
    """
    The first offered subprotocol, or the first offered in the server's
    list; none in the list: the handshake without the header.
    """

    def test_choose(self) -> None:
        self.assertEqual(choose_subprotocol(["b", "a"], None), "b")
        self.assertEqual(choose_subprotocol(["b", "a"], ("a", "b")), "b")
        self.assertEqual(choose_subprotocol(["c", "a"], ("a", "b")), "a")
        self.assertIsNone(choose_subprotocol(["c"], ("a",)))
        self.assertIsNone(choose_subprotocol([], None))

    def test_default_accepts_first_offered(self) -> None:
        peer = MemoryPeer(make_factory()[0], subprotocols=["chat", "superchat"])
        self.assertEqual(peer.accepted.subprotocol, "chat")

    def test_configured_list(self) -> None:
        factory, _ = make_factory(subprotocols=("superchat", "v2"))
        peer = MemoryPeer(factory, subprotocols=["chat", "v2", "superchat"])
        self.assertEqual(peer.accepted.subprotocol, "v2")

    def test_no_match_handshake_without_header(self) -> None:
        """
        RFC 6455 section 4.2.2: the server selects none; the handshake
        succeeds without C{Sec-WebSocket-Protocol}, and the echo works.
        """
        factory, _ = make_factory(subprotocols=("v2",))
        protocol, transport = connect(factory, WebSocketEcho)
        protocol.dataReceived(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
        )
        head = transport.value()
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        self.assertNotIn(b"sec-websocket-protocol", head.lower())

    def test_option(self) -> None:
        config = Options()
        config.parseOptions(["--websocket-subprotocols", "chat, v2"])
        self.assertEqual(config["websocket-subprotocols"], ("chat", "v2"))
        config = Options()
        config.parseOptions([])
        self.assertIsNone(config["websocket-subprotocols"])
        with self.assertRaises(UsageError) as caught:
            Options().parseOptions(["--websocket-subprotocols", "a b,"])
        self.assertIn("comma-separated names", str(caught.exception))


def partial_request() -> bytes:
    return b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"


class HandshakeTimeoutTests(SynchronousTestCase):
    """
    A connection that does not finish its HTTP request within the handshake
    timeout gets 408 and is closed; counted apart from the idle timeout.
    """

    def test_incomplete_request_closed(self) -> None:
        factory, clock = make_factory(
            handshake_timeout=5.0, timeouts=Timeouts(idle=60.0)
        )
        protocol, transport = connect(factory, WebSocketEcho)
        protocol.dataReceived(partial_request())
        clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.2)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 Request Timeout"))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(factory.counters.timeouts["websocket_handshake"], 1)
        self.assertEqual(factory.counters.timeouts["idle"], 0)

    def test_silent_connection_closed(self) -> None:
        """
        A client that sends nothing at all is closed at the handshake
        timeout too, before the (longer) idle timeout.
        """
        factory, clock = make_factory(handshake_timeout=2.0)
        _, transport = connect(factory, WebSocketEcho)
        clock.advance(2.0)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(factory.counters.timeouts["websocket_handshake"], 1)

    def test_upgraded_connection_not_timed_out(self) -> None:
        """
        Once upgraded, only the idle timeout applies.
        """
        factory, clock = make_factory(handshake_timeout=2.0)
        peer = MemoryPeer(factory)
        clock.advance(10.0)
        self.assertFalse(peer.transport.disconnecting)
        self.assertEqual(messages(peer.send(TextMessage("x"))), [(TextMessage, "x")])
        self.assertEqual(factory.counters.timeouts["websocket_handshake"], 0)
        # Only the idle sweep's timer is left.
        self.assertEqual(
            [call.func.__name__ for call in clock.getDelayedCalls()], ["_sweep"]
        )

    def test_zero_is_off(self) -> None:
        factory, clock = make_factory(handshake_timeout=0.0)
        _, transport = connect(factory, WebSocketEcho)
        clock.advance(30.0)
        self.assertFalse(transport.disconnecting)

    def test_option(self) -> None:
        config = Options()
        config.parseOptions([])
        self.assertEqual(config["websocket-handshake-timeout"], 10.0)
        config.parseOptions(["--websocket-handshake-timeout", "0.5"])
        self.assertEqual(config["websocket-handshake-timeout"], 0.5)


class MessageRateTests(SynchronousTestCase):
    """
    Over C{--websocket-max-messages-per-second} the server stops reading
    (backpressure) until the rate allows: nothing is lost.
    """

    def test_over_rate_pauses_then_catches_up(self) -> None:
        factory, clock = make_factory(message_rate=(2.0, 2))
        peer = MemoryPeer(factory)
        wire = b"".join(peer.client.send(TextMessage(f"m{i}")) for i in range(5))
        peer.protocol.dataReceived(wire)
        self.assertEqual(
            messages(peer.receive()), [(TextMessage, "m0"), (TextMessage, "m1")]
        )
        self.assertEqual(peer.transport.producerState, "paused")
        self.assertEqual(factory.counters.refused["websocket_rate"], 1)
        clock.advance(0.5)
        self.assertEqual(messages(peer.receive()), [(TextMessage, "m2")])
        self.assertEqual(peer.transport.producerState, "paused")
        clock.advance(0.5)
        clock.advance(0.5)
        self.assertEqual(
            messages(peer.receive()), [(TextMessage, "m3"), (TextMessage, "m4")]
        )
        self.assertEqual(peer.transport.producerState, "producing")
        self.assertFalse(peer.transport.disconnecting)

    def test_fragments_take_one_token(self) -> None:
        """
        A message's fragments take one token between them; pings take one.
        """
        factory, clock = make_factory(message_rate=(1.0, 2))
        peer = MemoryPeer(factory)
        wire = peer.client.send(TextMessage("a", message_finished=False))
        wire += peer.client.send(TextMessage("b", message_finished=False))
        wire += peer.client.send(TextMessage("c", message_finished=True))
        wire += peer.client.send(Ping(b"p"))
        wire += peer.client.send(TextMessage("d"))
        peer.protocol.dataReceived(wire)
        events = peer.receive()
        self.assertEqual(messages(events), [(TextMessage, "abc")])
        self.assertEqual([e.payload for e in events if isinstance(e, Pong)], [b"p"])
        clock.advance(1.0)
        self.assertEqual(messages(peer.receive()), [(TextMessage, "d")])

    def test_data_read_while_paused_is_kept(self) -> None:
        """
        Bytes read while paused (a read already under way) wait their turn.
        """
        factory, clock = make_factory(message_rate=(1.0, 1))
        peer = MemoryPeer(factory)
        peer.protocol.dataReceived(peer.client.send(TextMessage("1")))
        peer.protocol.dataReceived(peer.client.send(TextMessage("2")))
        peer.protocol.dataReceived(peer.client.send(TextMessage("3")))
        self.assertEqual(messages(peer.receive()), [(TextMessage, "1")])
        run_clock(clock, 2.0)
        self.assertEqual(
            messages(peer.receive()), [(TextMessage, "2"), (TextMessage, "3")]
        )

    def test_close_while_paused(self) -> None:
        factory, clock = make_factory(message_rate=(1.0, 1))
        peer = MemoryPeer(factory)
        wire = peer.client.send(TextMessage("1")) + peer.client.send(TextMessage("2"))
        peer.protocol.dataReceived(wire)
        peer.protocol.connectionLost(None)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_default_unlimited(self) -> None:
        peer = MemoryPeer(make_factory()[0])
        wire = b"".join(peer.client.send(BytesMessage(b"")) for _ in range(1000))
        peer.protocol.dataReceived(wire)
        self.assertEqual(len(messages(peer.receive())), 1000)

    def test_option(self) -> None:
        config = Options()
        config.parseOptions([])
        self.assertEqual(config["websocket-max-messages-per-second"], (0.0, 1))
        config.parseOptions(["--websocket-max-messages-per-second", "100/20"])
        self.assertEqual(config["websocket-max-messages-per-second"], (100.0, 20))
        with self.assertRaises(UsageError) as caught:
            Options().parseOptions(["--websocket-max-messages-per-second", "-1"])
        self.assertIn("RATE[/BURST] in messages per second", str(caught.exception))


class RealHandshakeTests(pyunit.TestCase):
    """
    Subprotocols, the path and the handshake timeout against a real
    C{twistd}, with the C{websockets} library and raw sockets.
    """

    def test_path_subprotocols_and_handshake_timeout(self) -> None:
        client = require_websockets(self)
        from websockets.exceptions import InvalidStatus

        server, port = start_websocket_server(
            self,
            "--websocket-path",
            "/ws",
            "--websocket-subprotocols",
            "v2,chat",
            "--websocket-handshake-timeout",
            "0.5",
            "--metrics",
            f"tcp:0:interface={HOST}",
        )
        metrics_port = int(
            server.wait_for(r"\] metrics listening on tcp:127\.0\.0\.1:(\d+)$").group(1)
        )
        base = f"ws://{HOST}:{port}/ws"
        with client.connect(base, subprotocols=["chat", "v2"]) as ws:
            self.assertEqual(ws.subprotocol, "chat")
            ws.send("under /ws")
            self.assertEqual(ws.recv(timeout=IO_TIMEOUT), "under /ws")
        with client.connect(base + "/upper") as ws:
            self.assertIsNone(ws.subprotocol)
            ws.send("up")
            self.assertEqual(ws.recv(timeout=IO_TIMEOUT), "UP")
        # No offered subprotocol listed: the server answers without the
        # header; the websockets client accepts that (subprotocol None).
        with client.connect(base, subprotocols=["other"]) as ws:
            self.assertIsNone(ws.subprotocol)
            ws.send("still echoed")
            self.assertEqual(ws.recv(timeout=IO_TIMEOUT), "still echoed")
        with self.assertRaises(InvalidStatus) as caught:
            with client.connect(f"ws://{HOST}:{port}/"):
                pass
        self.assertEqual(caught.exception.response.status_code, 404)
        # A client that connects and never sends its request.
        with socket.create_connection((HOST, port), timeout=IO_TIMEOUT) as sock:
            sock.sendall(partial_request())
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
        self.assertTrue(reply.startswith(b"HTTP/1.1 408 "), reply)
        server.wait_for(
            r"websocket connection from tcp:127\.0\.0\.1:\d+: no complete HTTP "
            r"request within 0\.5 s; closing"
        )
        key = (
            "sockecho_connection_timeouts_total",
            frozenset({("service", "websocket"), ("reason", "websocket_handshake")}),
        )
        self.assertEqual(samples(http_get(metrics_port, "/metrics")[2]).get(key), 1)
        self.assertIn(server.stop(), CLEAN_SIGTERM_EXIT)
        self.assertNotIn("Traceback", "\n".join(server.output + server.errors))

    def test_rate_limit_slows_a_fast_client(self) -> None:
        """
        A client sending 20 messages at once with a rate of 10/s and burst
        5 gets every one back, in order; the pause is logged.
        """
        client = require_websockets(self)
        server, port = start_websocket_server(
            self,
            "--websocket-max-messages-per-second",
            "10/5",
            "--metrics",
            f"tcp:0:interface={HOST}",
        )
        metrics_port = int(
            server.wait_for(r"\] metrics listening on tcp:127\.0\.0\.1:(\d+)$").group(1)
        )
        with client.connect(f"ws://{HOST}:{port}/") as ws:
            for i in range(20):
                ws.send(f"m{i}")
            got = [ws.recv(timeout=IO_TIMEOUT) for _ in range(20)]
        self.assertEqual(got, [f"m{i}" for i in range(20)])
        server.wait_for(r"websocket connection from .*: over 10 messages/s")
        key = (
            "sockecho_refused_connections_total",
            frozenset({("service", "websocket"), ("reason", "websocket_rate")}),
        )
        self.assertGreaterEqual(
            samples(http_get(metrics_port, "/metrics")[2]).get(key, 0), 1
        )
        self.assertIn(server.stop(), CLEAN_SIGTERM_EXIT)


class ClosingTests(SynchronousTestCase):
    """
    Once the server has sent its close frame (drain, idle timeout,
    C{/whoami}), what the client still sends before it reads that close is
    not answered (RFC 6455 section 5.5.1: no data frame after a close), and
    raises nothing.
    """

    def test_messages_and_ping_after_drain_close(self) -> None:
        factory, _ = make_factory()
        peer = MemoryPeer(factory)
        factory.drain(10.0)
        self.assertEqual(closes(peer.receive()), [(1001, "server shutting down")])
        # The client has not read the close yet: its messages cross it.
        wire = masked_frame(0x2, b"crossing") + masked_frame(0x9, b"ping")
        wire += masked_frame(0x1, b"text", fin=False) + masked_frame(0x0, b"more")
        peer.protocol.dataReceived(wire)
        self.assertEqual(peer.transport.value(), b"")
        self.assertFalse(peer.transport.disconnecting)
        # Its close ends the connection.
        peer.protocol.dataReceived(b"\x88\x82\0\0\0\0\x03\xe9")
        self.assertTrue(peer.transport.disconnecting)

    def test_bad_frame_after_drain_close(self) -> None:
        """
        A frame wsproto cannot parse, after the server's close: the
        connection closes, nothing more is sent.
        """
        factory, _ = make_factory()
        peer = MemoryPeer(factory)
        factory.drain(10.0)
        peer.receive()
        peer.protocol.dataReceived(b"\x81\x02hi")  # unmasked
        self.assertEqual(peer.transport.value(), b"")
        self.assertTrue(peer.transport.disconnecting)


class FairnessTests(SynchronousTestCase):
    """
    One read full of tiny messages is answered a slice per reactor turn, so
    that one client cannot hold the reactor for seconds.
    """

    def test_events_per_turn(self) -> None:
        factory, clock = make_factory()
        factory.events_per_turn = 100
        peer = MemoryPeer(factory)
        peer.protocol.dataReceived(masked_frame(0x2, b"") * 250)
        self.assertEqual(len(messages(peer.receive())), 100)
        self.assertEqual(peer.transport.producerState, "paused")
        # The rest at the next turns (Clock runs them all in one advance;
        # the reactor does its I/O between them).
        self.assertIn(0.0, [c.getTime() for c in clock.getDelayedCalls()])
        clock.advance(0)
        self.assertEqual(len(messages(peer.receive())), 150)
        self.assertEqual(peer.transport.producerState, "producing")
        self.assertEqual(factory.counters.refused["websocket_rate"], 0)

    def test_with_a_rate_limit(self) -> None:
        factory, clock = make_factory(message_rate=(1000.0, 150))
        factory.events_per_turn = 100
        peer = MemoryPeer(factory)
        peer.protocol.dataReceived(masked_frame(0x2, b"") * 250)
        self.assertEqual(len(messages(peer.receive())), 100)
        clock.advance(0)
        self.assertEqual(len(messages(peer.receive())), 50)  # burst spent
        clock.advance(0.1)
        self.assertEqual(len(messages(peer.receive())), 100)
        self.assertEqual(peer.transport.producerState, "producing")


class BrowserPathTests(pyunit.TestCase):
    """
    The page under C{--websocket-path /ws} in headless Chromium: it echoes
    through C{/ws} and shows C{/ws/whoami}'s report (C{?whoami}).
    """

    def test_page_under_path_with_whoami(self) -> None:
        chromium = find_chromium()
        if chromium is None:
            missing(self, "chromium is not installed", "apt-get install -y chromium")
        assert chromium is not None
        server, port = start_websocket_server(self, "--websocket-path", "/ws")
        url = f"http://{HOST}:{port}/ws?send=under%20ws&whoami"
        wanted = ('<span class="text">under ws</span>', '"service": "websocket"')
        # As in BrowserTests: load again (at most 5 times, within 60 s)
        # until the dump shows both, for virtual time does not wait for a
        # WebSocket.
        deadline = time.monotonic() + 60
        for attempt in range(5):
            budget = f"--virtual-time-budget={5000 * (attempt + 1)}"
            result = run_chromium(chromium, budget, "--dump-dom", url)
            dom = result.stdout
            if all(w in dom for w in wanted) or time.monotonic() > deadline:
                break
        for text in wanted:
            self.assertIn(text, dom, result.stderr[-2000:])
        self.assertIn('"request": "GET /ws/whoami HTTP/1.1"', dom)
        self.assertIn(server.stop(), CLEAN_SIGTERM_EXIT)
