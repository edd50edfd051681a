"""
Tests for L{twisted_echo.services.websocket_whoami}: the WebSocket
service's C{/whoami}, in memory (a C{wsproto} client, a PROXY header) and
against a real C{twistd} over ws and wss with the C{websockets} library.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import unittest as pyunit
from typing import Any

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from tests.memory import PEER
from tests.process import CLEAN_SIGTERM_EXIT, HOST, IO_TIMEOUT
from tests.test_websocket import (
    MemoryPeer,
    closes,
    make_factory,
    masked_frame,
    messages,
    require_websockets,
    start_websocket_server,
)
from tests.tls_peers import make_certificate, ssl_description
from twisted_echo import __version__
from twisted_echo.listening.proxyheader import ProxyHeaderProtocol
from twisted_echo.services.whoami import WhoamiInfo


def report_of(events: list[Any]) -> dict[str, Any]:
    (message,) = messages(events)
    assert message[0] is TextMessage
    report: dict[str, Any] = json.loads(message[1])
    return report


class InMemoryTests(SynchronousTestCase):
    def test_report_then_close_1000(self) -> None:
        """
        One JSON text message: the request line and headers as read, the
        client and local addresses, no proxy, no TLS; then close 1000.
        """
        factory, _ = make_factory(info=WhoamiInfo(worker=3))
        peer = MemoryPeer(factory, "/whoami?x=1", subprotocols=["chat"])
        report = report_of(peer.first_events)
        self.assertEqual(report["service"], "websocket")
        self.assertEqual(report["request"], "GET /whoami?x=1 HTTP/1.1")
        names = [name.lower() for name, _ in report["headers"]]
        self.assertIn("sec-websocket-key", names)
        self.assertIn(["Host", "localhost"], report["headers"])
        self.assertEqual(report["client"], "tcp:192.0.2.7:40000")
        self.assertEqual(report["client_port"], 40000)
        self.assertEqual(report["local"], "tcp:127.0.0.1:7007")
        self.assertIsNone(report["proxy"])
        self.assertIsNone(report["tls"])
        self.assertEqual(report["subprotocol"], "chat")
        self.assertEqual(report["extensions"], [])
        self.assertEqual(report["worker"], 3)
        self.assertEqual(report["version"], __version__)
        self.assertEqual(report["pid"], os.getpid())
        self.assertEqual(closes(peer.first_events), [(1000, "")])
        # The client's answer to the close ends the connection.
        peer.protocol.dataReceived(peer.client.send(CloseConnection(1000)))
        self.assertTrue(peer.transport.disconnecting)

    def test_messages_not_echoed(self) -> None:
        """
        A message the client sends before it reads the close is not echoed.
        """
        peer = MemoryPeer(make_factory()[0], "/whoami")
        peer.protocol.dataReceived(masked_frame(0x1, b"ignored"))
        self.assertEqual(peer.transport.value(), b"")

    def test_relative_to_path(self) -> None:
        peer = MemoryPeer(make_factory(path="/ws")[0], "/ws/whoami")
        self.assertEqual(
            report_of(peer.first_events)["request"], "GET /ws/whoami HTTP/1.1"
        )

    def test_after_proxy_header(self) -> None:
        """
        On a C{haproxy:} listener: the client is the one the PROXY header
        names, the proxy the connection's peer.
        """
        factory, _ = make_factory()
        reader = factory.buildProtocol(PEER, proxy_header=True)
        assert isinstance(reader, ProxyHeaderProtocol)
        transport = StringTransport(peerAddress=PEER)
        transport.protocol = reader  # type: ignore[attr-defined]
        reader.makeConnection(transport)
        client = WSConnection(ConnectionType.CLIENT)
        reader.dataReceived(
            b"PROXY TCP4 198.51.100.1 127.0.0.1 50000 80\r\n"
            + client.send(Request(host="localhost", target="/whoami"))
        )
        client.receive_data(transport.value())
        events = list(client.events())
        self.assertIsInstance(events[0], AcceptConnection)
        report = report_of(events[1:])
        self.assertEqual(report["client"], "tcp:198.51.100.1:50000")
        self.assertEqual(report["proxy"], "tcp:192.0.2.7:40000")


class RealWhoamiTests(pyunit.TestCase):
    def test_ws_and_wss(self) -> None:
        """
        Over ws: the report names the client's own port and its
        User-Agent; over wss: the TLS version, cipher, SNI and ALPN (none:
        the C{ssl:} listener offers no ALPN).
        """
        client = require_websockets(self)
        from websockets.exceptions import ConnectionClosedOK

        server, port = start_websocket_server(self)
        # The client's port is read from a socket of the test's own: the
        # server closes right after its report, and the client library may
        # close its socket before the test could ask it.
        sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
        self.addCleanup(sock.close)
        local_port = sock.getsockname()[1]
        with client.connect(f"ws://{HOST}:{port}/whoami", sock=sock) as ws:
            report = json.loads(ws.recv(timeout=IO_TIMEOUT))
            with self.assertRaises(ConnectionClosedOK) as closed:
                ws.recv(timeout=IO_TIMEOUT)
            assert closed.exception.rcvd is not None
            self.assertEqual(closed.exception.rcvd.code, 1000)
        self.assertEqual(report["client"], f"tcp:127.0.0.1:{local_port}")
        agents = [v for k, v in report["headers"] if k.lower() == "user-agent"]
        self.assertTrue(agents and "websockets" in agents[0].lower(), report)
        self.assertEqual(report["extensions"], ["permessage-deflate"])
        self.assertIsNone(report["tls"])
        self.assertIn(server.stop(), CLEAN_SIGTERM_EXIT)

        certificate = make_certificate(self)
        server, port = start_websocket_server(
            self, listener=ssl_description(certificate)
        )
        context = ssl.create_default_context(cafile=certificate.cert)
        with client.connect(f"wss://localhost:{port}/whoami", ssl=context) as ws:
            report = json.loads(ws.recv(timeout=IO_TIMEOUT))
        tls = report["tls"]
        self.assertEqual(tls["version"], "TLSv1.3")
        self.assertTrue(tls["cipher"])
        self.assertEqual(tls["sni"], "localhost")
        self.assertIsNone(tls["alpn"])
        self.assertIn(server.stop(), CLEAN_SIGTERM_EXIT)
