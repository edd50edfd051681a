"""
Acceptance of issue 22's close causes: each cause produced by a real client
against a real sockecho (a C{twistd} process started with
L{twisted_echo.testing.spawn.start_sockecho}, asserted on through its
C{/records} with the fixtures' helpers), appearing in the records exactly
once, with the bytes the client saw. The drain is tested in this process's
reactor (the trial helper), whose records outlive the server's stop.

Not produced here: C{server_error} (no client makes sockecho's code raise;
tested on a L{StringTransport} in C{tests.test_records}).
"""

from __future__ import annotations

import atexit
import json
import socket
import ssl
import struct
import time
import unittest
from typing import Any, ClassVar

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase as TrialTestCase

from twisted_echo.records.schema import problems
from twisted_echo.testing import start_services
from twisted_echo.testing.spawn import SockechoProcess, start_sockecho

IO_TIMEOUT = 10.0
HOST = "127.0.0.1"


def read_all(sock: socket.socket, timeout: float = IO_TIMEOUT) -> bytes:
    """
    @return: every byte C{sock} receives until the server closes (or
        resets: an abort).
    """
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def described(address: tuple[str, int]) -> str:
    """
    @return: C{address} as records give it: C{tcp:HOST:PORT}.
    """
    return f"tcp:{address[0]}:{address[1]}"


def reset_on_close(sock: socket.socket) -> None:
    """
    Make C{sock}'s close send a reset (RST) instead of a FIN.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def fill(sock: socket.socket, deadline: float, most: int = 256 << 20) -> int:
    """
    Send to C{sock} without reading until the kernel takes no more (the
    peer stopped reading), within C{most} bytes and until C{deadline}.

    @return: the bytes sent.
    """
    sock.setblocking(False)
    sent = 0
    block = b"x" * 65536
    idle_since = time.monotonic()
    while sent < most and time.monotonic() < deadline:
        try:
            sent += sock.send(block)
            idle_since = time.monotonic()
        except ConnectionError:
            break  # the server aborted (a stall timeout shorter than the wait)
        except BlockingIOError:
            # Full: once it stays full for a moment, the server has stopped
            # reading too (flow control).
            if time.monotonic() - idle_since > 0.5:
                break
            time.sleep(0.01)
    sock.setblocking(True)
    return sent


#: The server of each test class, started by its first test and stopped
#: when the test process exits (trial runs no C{setUpClass}).
_SERVERS: dict[type, SockechoProcess] = {}


class ServerTestCase(unittest.TestCase):
    """
    One server for the class (C{options}), its records reset before each
    test, as a session fixture's are.
    """

    options: ClassVar[dict[str, Any]] = {}
    server: SockechoProcess

    def setUp(self) -> None:
        server = _SERVERS.get(type(self))
        if server is None:
            server = _SERVERS[type(self)] = start_sockecho(**self.options)
            atexit.register(server.stop)
        self.server = server
        server.reset_records()

    def connect(self, service: str, index: int = 0) -> socket.socket:
        sock = socket.create_connection(
            self.server.address(service, index), timeout=IO_TIMEOUT
        )
        self.addCleanup(sock.close)
        return sock

    def only_record(self, cause: str, service: str) -> dict[str, Any]:
        """
        @return: the one record of the test, after checking it is the only
            one, ended with C{cause} and fits the schema.
        """
        record = self.server.expect_close(cause, service)
        found = self.server.wait_for(1)
        self.assertEqual([r["id"] for r in found], [record["id"]])
        self.assertEqual(problems(record), [])
        return record


class PlainCausesTests(ServerTestCase):
    """
    The causes of plain TCP connections, over one server logging JSON.
    """

    options: ClassVar[dict[str, Any]] = {
        "echo": [f"tcp:0:interface={HOST}", f"haproxy:tcp:0:interface={HOST}"],
        "whoami": True,
        "idle_timeout": 2,
        "line_timeout": 1,
        "max_line": 16,
        "record_bytes": 8,
        "log_format": "json",
    }

    def test_client_fin(self) -> None:
        """
        A client that sends, half-closes and reads every reply: C{client_fin},
        with its bytes, reads and first bytes.
        """
        sock = self.connect("echo")
        sock.sendall(b"hello\x1b world")
        sock.shutdown(socket.SHUT_WR)
        got = read_all(sock)
        record = self.only_record("client_fin", "echo")
        self.assertEqual((record["bytes_in"], record["bytes_out"]), (12, len(got)))
        self.assertEqual(record["first_bytes"], "hello\\x1b w")
        self.assertEqual(record["client"], described(sock.getsockname()))
        self.assertEqual(record["local"], described(self.server.echo))
        self.assertIsNone(record["proxy"])
        self.assertIsNotNone(record["first_in"])

    def test_client_reset(self) -> None:
        """
        A client that reads its reply, then resets: C{client_reset}.
        """
        sock = self.connect("echo")
        sock.sendall(b"ping")
        self.assertEqual(sock.recv(4), b"ping")
        reset_on_close(sock)
        sock.close()
        record = self.only_record("client_reset", "echo")
        self.assertEqual((record["bytes_in"], record["bytes_out"]), (4, 4))

    def test_client_left_unsent(self) -> None:
        """
        A client that sends without reading until sockecho stops reading,
        then resets: C{client_left_unsent}; sockecho read no more than was
        sent and the client received nothing.
        """
        sock = self.connect("echo")
        sent = fill(sock, time.monotonic() + 20)
        reset_on_close(sock)
        sock.close()
        record = self.only_record("client_left_unsent", "echo")
        self.assertLessEqual(record["bytes_in"], sent)
        self.assertGreater(record["bytes_in"], 0)

    def test_service_close(self) -> None:
        """
        whoami answers and closes: C{service_close}, with the bytes of the
        answer.
        """
        sock = self.connect("whoami")
        got = read_all(sock)
        record = self.only_record("service_close", "whoami")
        self.assertEqual((record["bytes_in"], record["bytes_out"]), (0, len(got)))
        self.assertIsNone(record["first_in"])

    def test_idle_timeout(self) -> None:
        sock = self.connect("echo")
        sock.sendall(b"x")
        got = read_all(sock)
        record = self.only_record("idle_timeout", "echo")
        self.assertEqual((record["bytes_in"], record["bytes_out"]), (1, len(got)))
        self.assertGreaterEqual(record["duration"], 2)

    def test_line_timeout(self) -> None:
        sock = self.connect("welcome")
        sock.sendall(b"abc")
        got = read_all(sock)
        self.assertIn(b"ERROR: line not finished", got)
        record = self.only_record("line_timeout", "welcome")
        self.assertEqual((record["bytes_in"], record["bytes_out"]), (3, len(got)))

    def test_line_limit(self) -> None:
        """
        A welcome line over C{--max-line}: C{limit_refusal} naming
        C{max_line}.
        """
        sock = self.connect("welcome")
        sock.sendall(b"y" * 40 + b"\n")
        got = read_all(sock)
        self.assertIn(b"ERROR: line too long", got)
        record = self.only_record("limit_refusal", "welcome")
        self.assertEqual(record["limit"], "max_line")
        self.assertEqual((record["bytes_in"], record["bytes_out"]), (41, len(got)))

    def test_proxy_header(self) -> None:
        """
        Through a PROXY header: the client and local addresses it names,
        the proxy's, and the bytes after the header.
        """
        sock = self.connect("echo", 1)
        sock.sendall(b"PROXY TCP4 198.51.100.7 203.0.113.9 5555 80\r\nhi")
        sock.shutdown(socket.SHUT_WR)
        got = read_all(sock)
        record = self.only_record("client_fin", "echo")
        self.assertEqual(
            (record["client"], record["local"], record["proxy"]),
            (
                "tcp:198.51.100.7:5555",
                "tcp:203.0.113.9:80",
                described(sock.getsockname()),
            ),
        )
        self.assertEqual(got, b"hi")
        self.assertEqual((record["bytes_in"], record["bytes_out"]), (2, 2))
        self.assertEqual(self.server.records(), [record])

    def test_proxy_header_invalid(self) -> None:
        sock = self.connect("echo", 1)
        sock.sendall(b"HELLO there\r\n")
        self.assertEqual(read_all(sock), b"")
        record = self.only_record("proxy_header_invalid", "echo")
        self.assertEqual((record["bytes_in"], record["bytes_out"]), (13, 0))

    def test_proxy_header_timeout(self) -> None:
        """
        No PROXY header within 5 s: C{proxy_header_timeout}.
        """
        sock = self.connect("echo", 1)
        self.assertEqual(read_all(sock, 30), b"")
        record = self.only_record("proxy_header_timeout", "echo")
        self.assertEqual((record["bytes_in"], record["bytes_out"]), (0, 0))

    def test_filters_and_json_log(self) -> None:
        """
        Records are filtered by service and client; the JSON log holds
        each one as an event, the same object as C{/records}.
        """
        echo = self.connect("echo")
        echo.shutdown(socket.SHUT_WR)
        read_all(echo)
        upper = self.connect("upper")
        upper.shutdown(socket.SHUT_WR)
        read_all(upper)
        self.server.wait_for(2)
        (record,) = self.server.records("upper")
        self.assertEqual(record["client"], described(upper.getsockname()))
        view = self.server.records_view
        matched = view._get(client=described(upper.getsockname())[4:])["records"]
        self.assertEqual(matched, [record])

        def logged() -> list[dict[str, Any]]:
            found = []
            for line in self.server.log_lines():
                if line.startswith("{") and '"record"' in line:
                    found.append(json.loads(line)["record"])
            return found

        deadline = time.monotonic() + IO_TIMEOUT
        while record not in logged() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertIn(record, logged())

    def test_assert_no_connections(self) -> None:
        """
        C{assert_no_connections} passes with none, and fails listing them.
        """
        self.server.assert_no_connections()
        sock = self.connect("echo")
        sock.shutdown(socket.SHUT_WR)
        read_all(sock)
        self.server.wait_for(1)
        self.server.assert_no_connections("upper")
        with self.assertRaises(AssertionError) as caught:
            self.server.assert_no_connections("echo")
        self.assertIn("expected no echo connection; 1 closed:", str(caught.exception))
        self.assertIn("client_fin, 0 bytes in, 0 bytes out", str(caught.exception))

    def test_wait_for_failure_lists_what_came(self) -> None:
        sock = self.connect("echo")
        sock.shutdown(socket.SHUT_WR)
        read_all(sock)
        with self.assertRaises(AssertionError) as caught:
            self.server.wait_for(2, timeout=1)
        message = str(caught.exception)
        self.assertIn(
            "waited 1 s for 2 closed sockecho connection(s); 1 arrived:", message
        )
        self.assertIn("echo from tcp:", message)

    def test_expect_close_mismatch(self) -> None:
        sock = self.connect("echo")
        sock.shutdown(socket.SHUT_WR)
        read_all(sock)
        with self.assertRaises(AssertionError) as caught:
            self.server.expect_close("idle_timeout")
        self.assertIn(
            "closed by idle_timeout; it closed by client_fin", str(caught.exception)
        )


class StallTests(ServerTestCase):
    options: ClassVar[dict[str, Any]] = {"stall_timeout": 0.5, "idle_timeout": 0}

    def test_stall_timeout(self) -> None:
        """
        A client that sends and never reads: aborted at the stall timeout,
        C{stall_timeout}; sockecho read no more than was sent.
        """
        sock = self.connect("echo")
        sent = fill(sock, time.monotonic() + 20)
        record = self.only_record("stall_timeout", "echo")
        self.assertLessEqual(record["bytes_in"], sent)


class TLSTests(ServerTestCase):
    options: ClassVar[dict[str, Any]] = {"tls": True, "handshake_timeout": 0.5}

    def test_tls_fields(self) -> None:
        """
        A TLS echo: its version, cipher and SNI in the record, and the
        plaintext bytes.
        """
        context = ssl.create_default_context(cafile=self.server.ca_file)
        raw = self.connect("echo")
        sock = context.wrap_socket(raw, server_hostname="localhost")
        sock.sendall(b"secret")
        self.assertEqual(sock.recv(6), b"secret")
        version = sock.version()
        sock.close()
        record = self.server.wait_for(1)[0]
        self.assertEqual(problems(record), [])
        self.assertEqual(record["tls"]["version"], version)
        self.assertEqual(record["tls"]["sni"], "localhost")
        self.assertIsNone(record["tls"]["client_subject"])
        self.assertTrue(record["listener"].startswith("ssl:"))
        self.assertEqual((record["bytes_in"], record["bytes_out"]), (6, 6))

    def test_handshake_timeout(self) -> None:
        sock = self.connect("echo")
        self.assertEqual(read_all(sock), b"")
        record = self.only_record("handshake_timeout", "echo")
        self.assertEqual((record["bytes_in"], record["bytes_out"]), (0, 0))

    def test_tls_error(self) -> None:
        """
        Bytes that are not TLS on a TLS listener: C{tls_error}.
        """
        sock = self.connect("echo")
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        read_all(sock)
        record = self.only_record("tls_error", "echo")
        self.assertEqual((record["bytes_in"], record["bytes_out"]), (0, 0))


class MemoryBudgetTests(ServerTestCase):
    """
    A welcome line the memory budget cannot admit: sockecho stops reading
    it (C{--max-buffer} 64 KiB: one welcome connection is promised 32 KiB,
    the line may hold the other 32 KiB), and the line timeout ends the
    connection while it is not read: C{memory_budget}, not the client's
    slow line (C{line_timeout}).
    """

    options: ClassVar[dict[str, Any]] = {
        "max_buffer": 65536,
        "max_line": 1 << 20,
        "line_timeout": 1,
        "idle_timeout": 0,
    }

    def test_line_over_the_budget(self) -> None:
        sock = self.connect("welcome")
        sent = fill(sock, time.monotonic() + 20, most=200_000)
        got = read_all(sock)
        self.assertIn(b"ERROR: line not finished", got)
        record = self.only_record("memory_budget", "welcome")
        self.assertEqual(record["bytes_out"], len(got))
        # The budget let the line grow past the 32 KiB left, then stopped
        # reading: the server read more than that, and not all that was sent.
        self.assertGreater(record["bytes_in"], 32768)
        self.assertLess(record["bytes_in"], sent)

    def test_slow_line_within_the_budget(self) -> None:
        """
        A short unfinished line, read whole: still C{line_timeout}.
        """
        sock = self.connect("welcome")
        sock.sendall(b"x" * 1000)
        got = read_all(sock)
        record = self.only_record("line_timeout", "welcome")
        self.assertEqual((record["bytes_in"], record["bytes_out"]), (1000, len(got)))


class LimitTests(ServerTestCase):
    options: ClassVar[dict[str, Any]] = {"max_per_peer": 1}

    def test_max_per_peer(self) -> None:
        """
        A second connection from one address: refused with a line,
        C{limit_refusal} naming C{max_per_peer}, the line's bytes counted.
        """
        first = self.connect("welcome")
        second = self.connect("welcome")
        got = read_all(second)
        self.assertIn(b"too many connections (max_per_peer)", got)
        record = self.server.expect_close("limit_refusal", "welcome")
        self.assertEqual(record["limit"], "max_per_peer")
        self.assertEqual((record["bytes_in"], record["bytes_out"]), (0, len(got)))
        first.shutdown(socket.SHUT_WR)
        read_all(first)
        self.server.expect_close("client_fin", "welcome")
        self.assertEqual(len(self.server.records()), 2)


class Idle(Protocol):
    """
    Connects, sends a byte, and stays: C{done} fires when the server closes.
    """

    def __init__(self) -> None:
        self.done: Deferred[None] = Deferred()
        self.received = b""

    def connectionMade(self) -> None:
        self.transport.write(b"z")  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        self.done.callback(None)


class FaultTests(ServerTestCase):
    options: ClassVar[dict[str, Any]] = {"faults": "echo=close-after=5"}

    def test_fault(self) -> None:
        """
        A fault profile that closes the connection after 5 reply bytes:
        C{fault}, the fault named, the 5 bytes the client got counted out.
        """
        sock = self.connect("echo")
        sock.sendall(b"0123456789")
        got = read_all(sock)
        self.assertEqual(got, b"01234")
        record = self.only_record("fault", "echo")
        self.assertEqual(record["faults"], ["close-after"])
        self.assertEqual((record["bytes_in"], record["bytes_out"]), (10, 5))


class DrainTests(TrialTestCase):
    """
    The drain at shutdown, with the trial helper (its records stay
    readable once the server has stopped).
    """

    async def test_drain(self) -> None:
        """
        A client still connected at shutdown is closed by the drain:
        C{drain}, with the byte it sent and its echo; C{wait_for} and
        C{expect_close} as L{Deferred}s.
        """
        services = await start_services(
            "--no-upper", "--no-welcome", "--no-udp", reactor=reactor
        )
        client = Idle()
        endpoint = clientFromString(reactor, services.echo_endpoint)
        await endpoint.connect(Factory.forProtocol(lambda: client))
        stopped = services.stop()
        await client.done
        await stopped
        record = await services.expect_close("drain", "echo", timeout=5)
        self.assertEqual((record["bytes_in"], record["bytes_out"]), (1, 1))
        self.assertEqual(client.received, b"z")
        self.assertEqual(len(await services.wait_for(1, timeout=5)), 1)
        services.assert_no_connections("upper")
