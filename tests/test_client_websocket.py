"""
Tests for the client's WebSocket side (L{twisted_echo.client.websocket},
L{twisted_echo.client.ws_check}, L{twisted_echo.client.ws_load},
L{twisted_echo.client.ws_chat}): URLs; the client on a StringTransport
against C{wsproto}'s server side; C{check} against a real C{twistd sockecho
--websocket} (ws and wss) and against an independent C{websockets} echo
server (ws and wss), and failing against a deliberately broken one; C{load}
against sockecho with its counts checked; C{chat} through standard input
in a subprocess.
"""

from __future__ import annotations

import io
import json

from twisted.internet import reactor
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from tests.test_client_main import run_client
from tests.test_websocket import start_websocket_server
from tests.tls_peers import make_certificate, ssl_description
from tests.ws_peers import start_websockets_peer
from twisted_echo.client.__main__ import build_parser
from twisted_echo.client.endpoints import EndpointError
from twisted_echo.client.load import LoadConfig, LoadRun
from twisted_echo.client.tls import TLSSettings
from twisted_echo.client.websocket import (
    WebSocketClient,
    WebSocketURL,
    parse_websocket_url,
    websocket_endpoint,
)
from twisted_echo.client.ws_check import (
    CLOSE_CODE,
    CONCURRENT,
    run_websocket_check,
    run_websocket_checks,
    websocket_checks,
)
from twisted_echo.client.ws_load import run_websocket_load

#: Every check's name, with the default limit.
ROW_COUNT = 9


class URLTests(SynchronousTestCase):
    def test_parse(self) -> None:
        """
        ws:// and wss:// URLs give the endpoint, Host header and resource.
        """
        url = parse_websocket_url("ws://127.0.0.1:8080/upper?x=1")
        self.assertEqual(url, WebSocketURL(False, "127.0.0.1", 8080, "/upper?x=1"))
        self.assertEqual(url.endpoint_description, "tcp:127.0.0.1:8080")
        self.assertEqual(url.host_header, "127.0.0.1:8080")
        url = parse_websocket_url("WSS://example.org")
        self.assertEqual(url, WebSocketURL(True, "example.org", 443, "/"))
        self.assertEqual(url.endpoint_description, "ssl:example.org:443")
        self.assertEqual(url.host_header, "example.org")
        url = parse_websocket_url("ws://[::1]:7/")
        self.assertEqual(url.endpoint_description, "tcp:\\:\\:1:7")
        self.assertEqual(url.host_header, "[::1]:7")
        self.assertEqual(str(url), "ws://[::1]:7/")

    def test_bad(self) -> None:
        """
        A URL that cannot be used is one line naming it.
        """
        for bad, why in [
            ("http://x/", "not ws:// or wss://"),
            ("ws:///path", "no host"),
            ("ws://x:99999/", "out of range"),
            ("ws://x/#frag", "fragment"),
            ("ws://u:p@x/", "user information"),
            ("ws://x:0/", "port 0"),
        ]:
            with self.assertRaises(EndpointError) as caught:
                parse_websocket_url(bad)
            self.assertIn(why, str(caught.exception))
            self.assertIn(repr(bad), str(caught.exception))


class InMemoryClientTests(SynchronousTestCase):
    """
    The client against C{wsproto}'s server side, on a StringTransport.
    """

    def setUp(self) -> None:
        self.client = WebSocketClient(parse_websocket_url("ws://h:1/p"))
        self.transport = StringTransport()
        self.client.makeConnection(self.transport)
        self.server = WSConnection(ConnectionType.SERVER)
        self.server.receive_data(self.take())
        [request] = self.server.events()
        assert isinstance(request, Request)
        self.assertEqual((request.host, request.target), ("h:1", "/p"))
        self.client.dataReceived(self.server.send(AcceptConnection()))
        self.assertTrue(self.client.opened.called)

    def take(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def test_fragments_reassembled(self) -> None:
        """
        A message in several frames is one message, its frames counted.
        """
        received = []
        self.client.receive().addCallback(received.append)
        self.client.dataReceived(
            self.server.send(TextMessage("ab", message_finished=False))
            + self.server.send(TextMessage("c", message_finished=True))
        )
        self.assertEqual([(m.data, m.frames) for m in received], [("abc", 2)])

    def test_ping_answered_and_close_echoed(self) -> None:
        """
        The client answers a ping with a pong, and the server's close with
        the same code, then closes.
        """
        self.client.dataReceived(self.server.send(Ping(b"p")))
        self.server.receive_data(self.take())
        self.assertEqual(list(self.server.events()), [Pong(b"p")])
        self.client.dataReceived(self.server.send(CloseConnection(1001, "bye")))
        self.server.receive_data(self.take())
        [close] = self.server.events()
        assert isinstance(close, CloseConnection)
        self.assertEqual(close.code, 1001)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.client.close_code, 1001)

    def test_binary_sent(self) -> None:
        self.client.send_message(b"\x00\xff")
        self.server.receive_data(self.take())
        self.assertEqual(list(self.server.events()), [BytesMessage(b"\x00\xff")])


def _assert_all_passed(case: TestCase, results: list) -> None:  # type: ignore[type-arg]
    case.assertEqual(len(results), ROW_COUNT, results)
    for result in results:
        case.assertTrue(result.passed, result)


class CheckSockechoTests(TestCase):
    """
    Every row passes against a real C{twistd sockecho --websocket}.
    """

    async def test_ws(self) -> None:
        server, port = start_websocket_server(self)
        self.addCleanup(server.stop)
        url = parse_websocket_url(f"ws://127.0.0.1:{port}/")
        results = await run_websocket_checks(
            reactor, url, websocket_endpoint(reactor, url), timeout=30
        )
        _assert_all_passed(self, results)
        server.stop()
        self.assertNotIn("Traceback", "\n".join(server.output + server.errors))
        names = [r.name for r in results]
        self.assertIn("message of 1048577 bytes refused with 1009", names)
        self.assertIn(f"{CONCURRENT} concurrent connections", names)

    async def test_wss_and_a_smaller_limit(self) -> None:
        """
        Over wss (the test certificate trusted with C{--ca}); with the
        server's limit at 64 KiB and C{--max-message 65536}, the 1 MiB row
        fails (refused) and the 65537-byte one passes.
        """
        certificate = make_certificate(self)
        server, port = start_websocket_server(
            self,
            "--websocket-max-message",
            "65536",
            listener=ssl_description(certificate),
        )
        self.addCleanup(server.stop)
        out = io.StringIO()
        status = await run_websocket_check(
            reactor,
            f"wss://localhost:{port}/",
            30,
            out,
            json_output=True,
            tls=TLSSettings(ca_file=certificate.cert),
            max_message=65536,
        )
        results = {r["name"]: r for r in json.loads(out.getvalue())}
        self.assertEqual(status, 1)
        failed = {name for name, r in results.items() if not r["passed"]}
        self.assertEqual(failed, {"1 MiB text and binary messages"})
        self.assertIn("1009", results["1 MiB text and binary messages"]["detail"])
        self.assertTrue(results["message of 65537 bytes refused with 1009"]["passed"])


class CheckWebsocketsLibraryTests(TestCase):
    """
    The checker checked against another implementation: the C{websockets}
    library's asyncio server.
    """

    async def test_ws(self) -> None:
        port = start_websockets_peer(self)
        url = parse_websocket_url(f"ws://127.0.0.1:{port}/")
        results = await run_websocket_checks(
            reactor, url, websocket_endpoint(reactor, url), timeout=30
        )
        _assert_all_passed(self, results)

    async def test_wss(self) -> None:
        certificate = make_certificate(self)
        port = start_websockets_peer(self, "--tls", certificate.cert, certificate.key)
        url = parse_websocket_url(f"wss://localhost:{port}/")
        endpoint = websocket_endpoint(
            reactor, url, TLSSettings(ca_file=certificate.cert)
        )
        results = await run_websocket_checks(reactor, url, endpoint, timeout=30)
        _assert_all_passed(self, results)

    async def test_broken_server_fails_the_close_row(self) -> None:
        """
        A server that answers every close with 1000 FAILs the close row
        only, and the exit status says so.
        """
        port = start_websockets_peer(self, "--broken-close")
        out, err, code = await run_client(self, "check", f"ws://127.0.0.1:{port}/")
        self.assertEqual(code, 1, (out, err))
        failed = [line for line in out.splitlines() if "  FAIL  " in line]
        self.assertEqual(len(failed), 1, out)
        self.assertIn(f"close code {CLOSE_CODE} echoed", failed[0])
        self.assertIn("the server's close frame has code 1000", failed[0])
        self.assertIn("result: 1 of 9 checks FAILED", out)


class LoadTests(TestCase):
    async def test_counts_match(self) -> None:
        """
        A bounded load against sockecho: every message counted once, every
        byte sent came back, every connection closed cleanly.
        """
        server, port = start_websocket_server(self)
        self.addCleanup(server.stop)
        config = LoadConfig(
            f"ws://127.0.0.1:{port}/",
            connections=20,
            size=1024,
            duration=30,
            mode="websocket",
            max_requests=500,
            timeout=10,
        )
        run = LoadRun(config, reactor)
        url = parse_websocket_url(config.endpoint)
        await run_websocket_load(reactor, websocket_endpoint(reactor, url), url, run)
        report = run.stats.report(1.0)
        self.assertTrue(report["ok"], report)
        self.assertEqual(report["requests"], 500)
        self.assertEqual(report["bytes_sent"], 500 * 1024)
        self.assertEqual(report["bytes_received"], 500 * 1024)
        self.assertEqual(report["connections"], 20)

    async def test_cli_json_and_paced(self) -> None:
        server, port = start_websocket_server(self)
        self.addCleanup(server.stop)
        out, err, code = await run_client(
            self, "load", f"ws://127.0.0.1:{port}/", "-c", "4", "-s", "100", "-n", "40",
            "--rate", "400", "--json",
        )  # fmt: skip
        self.assertEqual(code, 0, err)
        report = json.loads(out)
        self.assertEqual(
            (report["mode"], report["requests"], report["connections"]),
            ("websocket", 40, 4),
        )
        self.assertEqual(report["rate"], 400)

    async def test_wrong_echo_counted(self) -> None:
        """
        Against a server that changes a byte of some echoes, the load counts
        mismatches, names the problem and exits 1.
        """
        port = start_websockets_peer(self, "--broken-echo")
        out, err, code = await run_client(
            self, "load", f"ws://127.0.0.1:{port}/", "-c", "2", "-n", "400", "--json"
        )
        self.assertEqual(code, 1, err)
        report = json.loads(out)
        self.assertGreater(report["mismatches"], 0)
        self.assertFalse(report["ok"])
        self.assertIn("came back as 64 different bytes", report["problems"][0])

    async def test_refused_handshake_is_one_line(self) -> None:
        server, port = start_websocket_server(self)
        self.addCleanup(server.stop)
        out, err, code = await run_client(
            self, "load", f"ws://127.0.0.1:{port}/nowhere"
        )
        self.assertEqual(code, 1)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("did not upgrade to WebSocket: HTTP 404", err)


class ChatTests(TestCase):
    async def test_lines_in_messages_out(self) -> None:
        """
        Each input line is a text message; each echo is printed on its own
        line; the end of input closes cleanly (exit 0).
        """
        server, port = start_websocket_server(self)
        self.addCleanup(server.stop)
        out, err, code = await run_client(
            self, "chat", f"ws://127.0.0.1:{port}/upper", stdin=b"hello\nw\xc3\xb6rld\n"
        )
        self.assertEqual((out, err, code), ("HELLO\nWÖRLD\n", "", 0))

    async def test_binary_and_server_close(self) -> None:
        """
        With C{--binary} lines go as binary messages, printed as they come;
        a server that closes first (1009 for an oversize message) is one
        line on standard error and exit status 1.
        """
        server, port = start_websocket_server(self, "--websocket-max-message", "10")
        self.addCleanup(server.stop)
        url = f"ws://127.0.0.1:{port}/"
        out, err, code = await run_client(
            self, "chat", "--binary", url, stdin=b"\x00ab\n"
        )
        self.assertEqual((out, err, code), ("\x00ab\n", "", 0))
        out, err, code = await run_client(self, "chat", url, stdin=b"x" * 20 + b"\n")
        self.assertEqual(code, 1)
        self.assertIn("the server closed with code 1009", err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)


class OptionTests(TestCase):
    async def test_websocket_options_elsewhere(self) -> None:
        """
        The WebSocket-only options with a TCP endpoint, and a bad URL, are
        one line and exit status 2.
        """
        for args, words in [
            (("chat", "--binary", "tcp:127.0.0.1:1"), "--binary is for ws://"),
            (("load", "--rate", "5", "tcp:127.0.0.1:1"), "--rate is for ws://"),
            (("load", "-m", "stream", "ws://127.0.0.1:1/"), "its own mode"),
            (("check", "ws://127.0.0.1:99999/"), "bad URL"),
            (("check", "--insecure", "ws://127.0.0.1:1/"), "wss:// URLs"),
        ]:
            out, err, code = await run_client(self, *args)
            self.assertEqual(code, 2, (args, err))
            self.assertIn(words, err)
            self.assertEqual(len(err.strip().splitlines()), 1, err)


class MaxMessageTests(SynchronousTestCase):
    def test_sizes(self) -> None:
        """
        C{--max-message} takes bytes, C{K} or C{M}; 0 leaves the oversize
        row out; the default is 1 MiB.
        """
        parser = build_parser()
        for given, size in [("1048576", 1 << 20), ("64K", 65536), ("2m", 2 << 20)]:
            args = parser.parse_args(["check", "--max-message", given, "ws://h/"])
            self.assertEqual(args.max_message, size)
        default = parser.parse_args(["check", "ws://h/"]).max_message
        self.assertEqual(default, 1 << 20)
        names = [name for name, _ in websocket_checks(default)]
        self.assertIn("message of 1048577 bytes refused with 1009", names)
        self.assertEqual(len(names), ROW_COUNT)
        names = [name for name, _ in websocket_checks(0)]
        self.assertEqual(len(names), ROW_COUNT - 1)
        self.assertFalse([n for n in names if "1009" in n])
