"""
Tests for L{twisted_echo.services.websocket_deflate}: permessage-deflate
(RFC 7692) on the WebSocket service, its inflating bounded; in memory with
C{wsproto} as the client, and against a real C{twistd} with the
C{websockets} library and a deflate bomb over a raw socket.
"""

from __future__ import annotations

import socket
import struct
import tracemalloc
import unittest as pyunit
import zlib
from functools import cache

from twisted.trial.unittest import SynchronousTestCase
from wsproto.events import BytesMessage, Ping, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate

from tests.process import CLEAN_SIGTERM_EXIT, HOST, IO_TIMEOUT
from tests.test_metrics import http_get, samples
from tests.test_websocket import (
    MB,
    MemoryPeer,
    closes,
    make_factory,
    messages,
    read_close_code,
    require_websockets,
    start_websocket_server,
)
from twisted_echo.app.options import Options
from twisted_echo.services.websocket_deflate import (
    BOTH,
    OFF,
    RECEIVE,
    deflate_extensions,
)

#: What the deflate bomb inflates to: over 100 MiB.
BOMB_SIZE = 128 * MB


@cache
def deflate_bomb(size: int = BOMB_SIZE) -> bytes:
    """
    @return: raw deflate data (RFC 7692 section 7.2.1: without its final
        C{00 00 ff ff}) of C{size} zero bytes: about C{size / 1000} bytes.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(MB)
    parts = [compressor.compress(chunk) for _ in range(size // MB)]
    parts.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    data = b"".join(parts)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


def compressed_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """
    @return: one client frame, FIN and RSV1 ("compressed") set, masked with
        a zero key (RFC 6455 section 5.3 allows any key), of C{payload}.
    """
    head = bytes([0x80 | 0x40 | opcode])
    if len(payload) < 126:
        head += bytes([0x80 | len(payload)])
    elif len(payload) < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", len(payload))
    return head + b"\0\0\0\0" + payload


def deflate_peer(**kw: object) -> MemoryPeer:
    factory, _ = make_factory(**kw)
    return MemoryPeer(factory, extensions=[PerMessageDeflate()])


class NegotiationTests(SynchronousTestCase):
    def test_accepted_by_default_with_client_no_context_takeover(self) -> None:
        """
        The server accepts permessage-deflate and asks the client not to
        keep its compression context between messages (so the server's
        inflate state lives only while a message arrives).
        """
        peer = deflate_peer()
        (extension,) = peer.accepted.extensions
        self.assertEqual(extension.name, "permessage-deflate")
        assert isinstance(extension, PerMessageDeflate)
        self.assertTrue(extension.client_no_context_takeover)

    def test_off(self) -> None:
        peer = deflate_peer(deflate=OFF)
        self.assertEqual(peer.accepted.extensions, [])
        self.assertEqual(
            messages(peer.send(TextMessage("plain"))), [(TextMessage, "plain")]
        )

    def test_unknown_mode(self) -> None:
        with self.assertRaises(ValueError):
            deflate_extensions("sometimes", 10)
        with self.assertRaises(ValueError):
            make_factory(deflate="sometimes")

    def test_option(self) -> None:
        config = Options()
        config.parseOptions([])
        self.assertEqual(config["websocket-deflate"], RECEIVE)
        config.parseOptions(["--websocket-deflate", "both"])
        self.assertEqual(config["websocket-deflate"], BOTH)


class EchoTests(SynchronousTestCase):
    def test_receive_mode_replies_uncompressed(self) -> None:
        """
        Mode C{receive}: compressed messages are inflated and echoed, the
        echo sent uncompressed (RSV1 clear).
        """
        peer = deflate_peer()
        text = "compress me " * 1000
        wire = peer.client.send(TextMessage(text))
        self.assertLess(len(wire), 200)
        peer.protocol.dataReceived(wire)
        raw = peer.transport.value()
        self.assertEqual(raw[0], 0x81)  # FIN, text, RSV1 clear
        self.assertEqual(messages(peer.receive()), [(TextMessage, text)])

    def test_both_mode_replies_compressed(self) -> None:
        peer = deflate_peer(deflate=BOTH)
        data = b"\x00\x01" * 50000
        peer.protocol.dataReceived(peer.client.send(BytesMessage(data)))
        raw = peer.transport.value()
        self.assertEqual(raw[0], 0xC2)  # FIN, RSV1, binary
        self.assertLess(len(raw), 2000)
        self.assertEqual(messages(peer.receive()), [(BytesMessage, data)])
        # No context kept: the next message compresses from scratch.
        peer.protocol.dataReceived(peer.client.send(BytesMessage(data)))
        self.assertEqual(messages(peer.receive()), [(BytesMessage, data)])

    def test_many_messages(self) -> None:
        peer = deflate_peer()
        events = []
        for i in range(20):
            events += peer.send(TextMessage(f"message {i} " * 50))
        self.assertEqual(
            messages(events), [(TextMessage, f"message {i} " * 50) for i in range(20)]
        )

    def test_ping_between_compressed_fragments(self) -> None:
        """
        A ping between two frames of a compressed message (RFC 6455 section
        5.4) is answered, and the message is still inflated whole:
        wsproto's own extension forgets there that the message is
        compressed.
        """
        peer = deflate_peer()
        wire = peer.client.send(TextMessage("first half, ", message_finished=False))
        wire += peer.client.send(Ping(b"in between"))
        wire += peer.client.send(TextMessage("second half", message_finished=True))
        peer.protocol.dataReceived(wire)
        events = peer.receive()
        self.assertEqual(
            [e.payload for e in events if isinstance(e, Pong)], [b"in between"]
        )
        self.assertEqual(messages(events), [(TextMessage, "first half, second half")])

    def test_not_deflate_data_1007(self) -> None:
        factory, _ = make_factory()
        peer = MemoryPeer(factory, extensions=[PerMessageDeflate()])
        peer.protocol.dataReceived(compressed_frame(b"\xff\xff\xff\xff"))
        self.assertEqual(closes(peer.receive())[0][0], 1007)


class BombTests(SynchronousTestCase):
    """
    A compressed message that inflates beyond the limit: close 1009, without
    inflating it all.
    """

    def test_deflate_bomb_1009_bounded(self) -> None:
        """
        A ~130 KiB frame inflating to 128 MiB, with a 1 MiB limit: close
        1009, counted as C{refused[websocket_1009_inflated]}; the server's
        allocations peak under 8 MiB while it reads it (wsproto's own
        extension inflates each read whole: 64 MiB per 64 KiB read).
        """
        bomb = deflate_bomb()
        self.assertLess(len(bomb), 200 * 1024)
        factory, _ = make_factory(max_message=MB)
        peer = MemoryPeer(factory, extensions=[PerMessageDeflate()])
        frame = compressed_frame(bomb)
        tracemalloc.start()
        try:
            # As a socket delivers it: 64 KiB reads.
            for i in range(0, len(frame), 65536):
                peer.protocol.dataReceived(frame[i : i + 65536])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(peak, 8 * MB)
        self.assertEqual(
            closes(peer.receive()),
            [(1009, f"message inflates to over {MB} bytes")],
        )
        self.assertTrue(peer.transport.disconnecting)
        self.assertEqual(factory.counters.refused["websocket_1009_inflated"], 1)
        self.assertEqual(factory.counters.refused["websocket_1009"], 0)

    def test_limit_counts_the_whole_message(self) -> None:
        """
        Fragments each under the limit, inflating to more than it together:
        1009.
        """
        factory, _ = make_factory(max_message=1000)
        peer = MemoryPeer(factory, extensions=[PerMessageDeflate()])
        wire = peer.client.send(BytesMessage(bytes(600), message_finished=False))
        wire += peer.client.send(BytesMessage(bytes(600), message_finished=True))
        peer.protocol.dataReceived(wire)
        self.assertEqual(closes(peer.receive())[0][0], 1009)

    def test_exactly_the_limit_passes(self) -> None:
        factory, _ = make_factory(max_message=1000)
        peer = MemoryPeer(factory, extensions=[PerMessageDeflate()])
        events = peer.send(BytesMessage(bytes(1000)))
        events += peer.send(BytesMessage(bytes(1000)))
        self.assertEqual(messages(events), [(BytesMessage, bytes(1000))] * 2)

    def test_no_limit(self) -> None:
        peer = MemoryPeer(
            make_factory(max_message=0)[0], extensions=[PerMessageDeflate()]
        )
        events = peer.send(BytesMessage(bytes(3 * MB)))
        self.assertEqual(messages(events), [(BytesMessage, bytes(3 * MB))])


def peak_rss(pid: int) -> int:
    """
    @return: the process's peak resident set size (C{VmHWM}), bytes.
    """
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


class RealDeflateTests(pyunit.TestCase):
    def test_websockets_negotiates_and_bomb_is_bounded(self) -> None:
        """
        The C{websockets} client negotiates permessage-deflate (its
        default) and gets its messages back; a deflate bomb over a raw
        socket gets close 1009 and the server's peak RSS grows by less than
        32 MiB (inflated whole it would be 64 MiB a read, 128 MiB in all).
        """
        client = require_websockets(self)
        server, port = start_websocket_server(
            self, "--metrics", f"tcp:0:interface={HOST}"
        )
        metrics_port = int(
            server.wait_for(r"\] metrics listening on tcp:127\.0\.0\.1:(\d+)$").group(1)
        )
        with client.connect(f"ws://{HOST}:{port}/", max_size=None) as ws:
            extensions = ws.response.headers["Sec-WebSocket-Extensions"]
            self.assertIn("permessage-deflate", extensions)
            self.assertIn("client_no_context_takeover", extensions)
            for message in ["deflated " * 10000, bytes(MB // 2)]:
                ws.send(message)
                self.assertEqual(ws.recv(timeout=IO_TIMEOUT), message)
        before = peak_rss(server.pid)
        with socket.create_connection((HOST, port), timeout=IO_TIMEOUT) as sock:
            sock.sendall(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
            )
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(1)
                self.assertTrue(chunk, head)
                head += chunk
            self.assertIn(b"permessage-deflate", head)
            try:
                sock.sendall(compressed_frame(deflate_bomb()))
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed before the bomb was all sent
            self.assertEqual(read_close_code(sock), 1009)
        server.wait_for(r"close 1009 \(message inflates to over 1048576 bytes\)")
        self.assertLess(peak_rss(server.pid) - before, 32 * MB)
        key = (
            "sockecho_refused_connections_total",
            frozenset(
                {("service", "websocket"), ("reason", "websocket_1009_inflated")}
            ),
        )
        self.assertEqual(samples(http_get(metrics_port, "/metrics")[2]).get(key), 1)
        self.assertIn(server.stop(), CLEAN_SIGTERM_EXIT)
        self.assertNotIn("Traceback", "\n".join(server.output + server.errors))
