"""
Tests for L{twisted_echo.listening.tls}: sockecho's TLS layer against real peers
(Python's C{ssl} module, C{openssl s_client}, a C{twistd sockecho}
process), half-close over TLS 1.3 and 1.2, flow control, the timeouts and
limits of connections that never finish their handshake, and the check that
Twisted's internals still fit.
"""

from __future__ import annotations

import gc
import hashlib
import os
import random
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.logger import capturedLogs, formatEvent
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tests.paced import PacedClient, ProgressWatch
from tests.process import IO_TIMEOUT, RunningServer, temp_dir
from tests.tls_peers import (
    HOST,
    Certificate,
    make_certificate,
    python_half_close,
    require_openssl,
    s_client_exchange,
    serve_tls,
    ssl_description,
)
from twisted_echo._twisted.tlsmemorybio import HookedTLSMemoryBIOProtocol
from twisted_echo.app.options import Options, makeService
from twisted_echo.client.endpoints import stream_endpoint
from twisted_echo.client.tls import TLSSettings
from twisted_echo.listening import tls
from twisted_echo.listening.tls import (
    HalfCloseTLSFactory,
    HalfCloseTLSProtocol,
    StockTLSFactory,
    TLSListeningReactor,
    forget_traceback,
    server_tls_factory,
    tls_layer_misfit,
)
from twisted_echo.policies.budget import MemoryBudget
from twisted_echo.policies.counters import ServiceCounters
from twisted_echo.policies.limits import ConnectionLimits, Timeouts
from twisted_echo.services.echo import EchoFactory
from twisted_echo.services.stream import READ_SIZE, StreamFactory, queued_bytes
from twisted_echo.services.upper import UpperFactory
from twisted_echo.services.welcome import WelcomeFactory

MIB = 1 << 20
BANNER = b"Welcome to the server. Type something and hit enter\r\n"
#: The test certificate command of docs/tls.md.
MAKE_CERT = (
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
    "-days 30 -subj /CN=localhost "
    "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 "
    "-keyout key.pem -out cert.pem"
)


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


async def poll(
    condition: Callable[[], object], timeout: float = IO_TIMEOUT, what: str = ""
) -> None:
    """
    Wait, reactor running, until C{condition()} is true.

    @raise AssertionError: if it is not within C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or condition}")
        await deferLater(reactor, 0.01, lambda: None)


def wait_closed(sock: socket.socket, timeout: float) -> float:
    """
    Read from C{sock} (discarding) until the server closes it.

    @return: seconds it took.
    @raise AssertionError: if it did not close within C{timeout} seconds.
    """
    started = time.monotonic()
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the server did not close within {timeout} s") from None
    return time.monotonic() - started


class TLSLayerCheckTests(TestCase):
    """
    The start-up check of the Twisted internals the layer relies on.
    """

    def test_fits_this_twisted(self) -> None:
        """
        Fails when a Twisted release changes what L{HalfCloseTLSProtocol}
        relies on: then sockecho falls back to Twisted's own TLS.
        """
        self.assertIsNone(tls_layer_misfit())

    def test_finds_close_notify_closing_at_once(self) -> None:
        """
        The probe sees Twisted's own handling of a close_notify (answer and
        close at once).
        """
        self.patch(
            HalfCloseTLSProtocol,
            "close_notify_received",
            HookedTLSMemoryBIOProtocol.close_notify_received,
        )
        problem = tls_layer_misfit()
        assert problem is not None
        self.assertIn("close_notify", problem)

    def test_finds_close_waiting_for_the_peer(self) -> None:
        self.patch(
            HalfCloseTLSProtocol,
            "shutdown_tls",
            HookedTLSMemoryBIOProtocol.shutdown_tls,
        )
        self.assertEqual(
            tls_layer_misfit(), "closing did not send close_notify and close at once"
        )

    def test_finds_a_greeting_hanging_the_handshake(self) -> None:
        self.patch(
            HalfCloseTLSProtocol,
            "buffered_write",
            HookedTLSMemoryBIOProtocol.buffered_write,
        )
        problem = tls_layer_misfit()
        assert problem is not None
        self.assertIn("handshake did not finish", problem)

    def test_finds_a_missing_internal(self) -> None:
        self.patch(TLSMemoryBIOProtocol, "_unbufferPendingWrites", None)
        self.assertEqual(
            tls_layer_misfit(), "TLSMemoryBIOProtocol._unbufferPendingWrites is missing"
        )

    def test_falls_back_to_twisted_and_says_so(self) -> None:
        """
        When the check fails, listeners use Twisted's own TLS (still named
        C{ssl:}) and one warning says why and what is lost.
        """
        self.patch(tls, "tls_layer_problem", lambda: "forced by the test")
        with capturedLogs() as events:
            factory = server_tls_factory(
                CertificateOptions(), EchoFactory(reactor), reactor, "ssl:7207"
            )
        self.assertIsInstance(factory, StockTLSFactory)
        [warning] = [e for e in events if e.get("problem")]
        self.assertEqual(warning["log_level"].name, "warn")
        self.assertEqual(warning["problem"], "forced by the test")
        self.assertEqual(warning["what"], "ssl:7207")
        self.assertIn(
            "close_notify closes the connection at once", warning["log_format"]
        )

    def test_uses_the_layer_when_it_fits(self) -> None:
        factory = server_tls_factory(
            CertificateOptions(), EchoFactory(reactor), reactor
        )
        self.assertIsInstance(factory, HalfCloseTLSFactory)
        self.assertEqual(tls.TLS_READ_SIZE, READ_SIZE)


class HalfCloseTests(TestCase):
    """
    A client's close_notify is an end of input: every byte owed comes back,
    then the server's close_notify.
    """

    def setUp(self) -> None:
        self.certificate = make_certificate(self)

    def serve(self, factory: StreamFactory) -> int:
        port: int = serve_tls(self, factory, self.certificate).getHost().port
        return port

    async def half_close(self, port: int, data: bytes, **options: Any) -> Any:
        return await deferToThread(
            python_half_close, port, data, self.certificate.cert, **options
        )

    async def test_tls13_1mib(self) -> None:
        """
        Python's C{ssl} sends 1 MiB over TLS 1.3, then close_notify, and
        still reads all of it back, then the server's close_notify.
        """
        counters = ServiceCounters()
        port = self.serve(EchoFactory(reactor, counters))
        data = payload(MIB)
        result = await self.half_close(port, data)
        self.assertEqual(result.version, "TLSv1.3")
        self.assertEqual(len(result.received), MIB)
        self.assertEqual(result.received, data)
        self.assertTrue(result.close_notify)
        self.assertTrue(result.eof)
        await poll(lambda: counters.connections_open == 0)
        self.assertEqual((counters.bytes_in, counters.bytes_out), (MIB, MIB))

    async def test_tls13_close_notify_then_fin(self) -> None:
        """
        A TCP FIN after the close_notify (the sending side shut down for
        good) changes nothing: 8 MiB come back.
        """
        port = self.serve(EchoFactory(reactor))
        data = payload(8 * MIB, seed=1)
        result = await self.half_close(port, data, fin=True)
        self.assertEqual(hashlib.sha256(result.received).hexdigest(),
                         hashlib.sha256(data).hexdigest())  # fmt: skip
        self.assertTrue(result.close_notify)

    async def test_tls12_with_an_openssl_client(self) -> None:
        """
        Over TLS 1.2 the server does the same; an OpenSSL-based client
        (Python's C{ssl}) reads the reply after its close_notify, though
        RFC 5246 lets other TLS 1.2 peers discard it.
        """
        port = self.serve(EchoFactory(reactor))
        data = payload(MIB, seed=2)
        result = await self.half_close(port, data, version=ssl.TLSVersion.TLSv1_2)
        self.assertEqual(result.version, "TLSv1.2")
        self.assertEqual(result.received, data)
        self.assertTrue(result.close_notify)

    async def test_upper_and_welcome(self) -> None:
        """
        The line services answer what came before the close_notify: upper
        upper-cases, welcome sends its banner and answers the last line.
        """
        upper = self.serve(UpperFactory(reactor))
        result = await self.half_close(upper, "straße héllo".encode())
        self.assertEqual(result.received, "STRASSE HÉLLO".encode())
        welcome = self.serve(WelcomeFactory(reactor))
        result = await self.half_close(welcome, b"one\ntwo")
        self.assertEqual(result.received, BANNER + b"OK...one\r\nOK...two\r\n")
        self.assertTrue(result.close_notify)

    async def test_fin_without_close_notify_is_a_lost_connection(self) -> None:
        """
        A TCP FIN without a close_notify is a truncated stream (RFC 8446
        section 6.1): the connection is dropped, as Twisted reports it, and
        no close_notify answers it.
        """
        counters = ServiceCounters()
        port = self.serve(EchoFactory(reactor, counters))
        result = await self.half_close(port, b"x" * 1000, fin=True, notify=False)
        self.assertFalse(result.close_notify)
        self.assertTrue(result.eof)
        await poll(lambda: counters.connections_open == 0)


@implementer(IHalfCloseableProtocol)
class NonReader(Protocol):
    """
    A TLS client that, once told to, reads nothing until resumed; counts
    and hashes what comes back.
    """

    def __init__(self) -> None:
        self.received = 0
        self.digest = hashlib.sha256()
        self.done: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self.digest.update(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(None)


class FlowControlTests(TestCase):
    async def test_a_client_that_does_not_read_is_not_read_from(self) -> None:
        """
        The echo protocol is the TLS transport's producer: when the client
        reads nothing, the server's TCP queue fills, the server stops
        reading, and holds a bounded amount; once the client reads, every
        byte comes back.
        """
        certificate = make_certificate(self)
        factory = EchoFactory(reactor)
        port = serve_tls(self, factory, certificate).getHost().port
        endpoint = stream_endpoint(
            reactor, f"ssl:{HOST}:{port}", TLSSettings(ca_file=certificate.cert)
        )
        client = NonReader()
        await endpoint.connect(Factory.forProtocol(lambda: client))
        transport: Any = client.transport
        transport.pauseProducing()
        data = payload(8 * MIB, seed=3)
        transport.write(data)
        await poll(lambda: factory.open_protocols, what="the connection")
        [server] = factory.open_protocols
        server_tcp: Any = server.transport.transport  # type: ignore[union-attr]
        await poll(lambda: server_tcp.producerPaused, what="the server paused")
        queued = queued_bytes(server.transport)
        assert queued is not None
        self.assertLessEqual(queued, 3 * READ_SIZE)
        self.assertLess(server.bytes_in, len(data))
        transport.resumeProducing()
        transport.loseWriteConnection()
        await client.done
        self.assertEqual(client.received, len(data))
        self.assertEqual(client.digest.hexdigest(), hashlib.sha256(data).hexdigest())


def tls_client(port: int, cafile: str) -> ssl.SSLSocket:
    """
    Connect to 127.0.0.1:C{port} with Python's C{ssl} (default socket
    buffers) and finish the handshake (blocking: call from a thread).
    """
    context = ssl.create_default_context(cafile=cafile)
    sock = socket.create_connection((HOST, port), IO_TIMEOUT)
    return context.wrap_socket(sock, server_hostname="localhost")


class StallTests(TestCase):
    """
    The stall timeout on TLS connections counts what the peer acknowledged
    on the TCP socket under the TLS layer (issue 19 item 1).
    """

    def setUp(self) -> None:
        self.certificate = make_certificate(self)

    async def connect(
        self, factory: StreamFactory, size: int, read_per_tick: int,
        read_total: int | None,
    ) -> PacedClient:  # fmt: skip
        port = serve_tls(self, factory, self.certificate).getHost().port
        sock = await deferToThread(tls_client, port, self.certificate.cert)
        client = PacedClient(
            sock, payload(64 * 1024, seed=5), size, read_per_tick, 0.1,
            read_total=read_total, timeout=40,
        )  # fmt: skip
        self.addCleanup(client.stop)
        return client

    async def test_slow_reader_gets_every_byte(self) -> None:
        """
        The plain TCP test of L{tests.test_stream.KernelQueueLoopbackTests},
        over TLS: 6 MiB echoed to a client reading 100 KB every 0.1 s,
        stall timeout 1 s (the issue's 10 MiB at 100 KB/s and 3 s, scaled).
        It gets every byte and no stall is counted.
        """
        factory = EchoFactory(reactor, timeouts=Timeouts(stall=1.0))
        total = 6 * MIB
        client = await self.connect(factory, total, 100_000, None)
        client.until = lambda: client.received >= total
        outcome = await client.finished
        self.assertEqual(
            (outcome, client.received, factory.counters.timeouts["stall"]),
            ("done", total, 0),
        )
        expected = hashlib.sha256(payload(64 * 1024, seed=5) * 96).hexdigest()
        self.assertEqual(client.digest.hexdigest(), expected)

    async def test_reader_that_stops_with_all_owed_in_the_kernel(self) -> None:
        """
        A TLS client sends 3 MiB, reads 1 MiB of the echo and then nothing:
        what it is owed waits in the kernel under the TLS layer, and it is
        aborted 3 to 4 s after its last progress (the last time the bytes
        it acknowledged on the TCP socket moved, polled every 10 ms).
        """
        factory = EchoFactory(reactor, timeouts=Timeouts(stall=3.0))
        client = await self.connect(factory, 3 * MIB, 1 * MIB, 1 * MIB)
        await poll(lambda: factory.open_protocols, what="the connection")
        [server] = factory.open_protocols
        sock = server.transport.transport.socket  # type: ignore[union-attr]
        watch = ProgressWatch(
            server, sock, lambda: bool(factory.open_protocols), timeout=12
        )
        await watch.finished
        self.assertIsNotNone(watch.closed_at, "the stalled peer was never aborted")
        assert watch.closed_at is not None
        waited = watch.closed_at - watch.last_progress
        self.assertEqual(factory.counters.timeouts["stall"], 1)
        self.assertGreaterEqual(waited, 3.0 - 0.05)
        self.assertLessEqual(waited, 4.0)
        self.assertGreaterEqual(client.received, MIB)


class TransportTests(TestCase):
    async def test_buffer_size_reaches_tcp(self) -> None:
        """
        Setting the TLS transport's C{bufferSize} (what the memory budget
        sets) sets the TCP transport's: its read size and flow-control
        threshold. The TCP transport starts at the plain services' read size,
        with C{TCP_NODELAY}.
        """
        certificate = make_certificate(self)
        factory = EchoFactory(reactor)
        port = serve_tls(self, factory, certificate).getHost().port
        # (The protocols are built when TCP connects, before the handshake.)
        sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
        self.addCleanup(sock.close)
        await poll(lambda: factory.open_protocols, what="the connection")
        [server] = factory.open_protocols
        layer: Any = server.transport
        self.assertTrue(layer.forwards_buffer_size)
        self.assertEqual(layer.transport.bufferSize, READ_SIZE)
        nodelay = layer.transport.socket.getsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY
        )
        self.assertTrue(nodelay)
        layer.bufferSize = 4096
        self.assertEqual((layer.bufferSize, layer.transport.bufferSize), (4096, 4096))
        sock.close()
        await poll(lambda: not factory.open_protocols, what="the close")


class UnfinishedHandshakeTests(TestCase):
    """
    A client that connects and never finishes its handshake is closed by
    the idle timeout and counts toward the connection limits meanwhile.
    """

    def setUp(self) -> None:
        self.certificate = make_certificate(self)

    async def connect_raw(self, port: int, send: bytes = b"") -> socket.socket:
        sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
        self.addCleanup(sock.close)
        if send:
            sock.sendall(send)
        return sock

    async def test_idle_timeout_closes_it(self) -> None:
        counters = ServiceCounters()
        limits = ConnectionLimits()
        factory = EchoFactory(reactor, counters, limits, Timeouts(idle=0.4))
        port = serve_tls(self, factory, self.certificate).getHost().port
        silent = await self.connect_raw(port)
        # The start of a ClientHello record, never finished.
        partial = await self.connect_raw(port, b"\x16\x03\x01\x02\x00\x01\x00")
        for sock in (silent, partial):  # closed by a deadline (wait_closed)
            await deferToThread(wait_closed, sock, 0.4 * 1.25 + 1.0)
        await poll(lambda: counters.connections_open == 0)
        self.assertEqual(counters.timeouts["idle"], 2)
        self.assertEqual(limits.open_total, 0)

    async def test_welcome_banner_waiting_for_it(self) -> None:
        """
        The welcome banner, written at once, waits for the handshake; the
        idle timeout's close gives the handshake
        L{HalfCloseTLSFactory.close_grace} more seconds, then aborts.
        """
        self.patch(HalfCloseTLSFactory, "close_grace", 0.3)
        counters = ServiceCounters()
        factory = WelcomeFactory(reactor, counters, timeouts=Timeouts(idle=0.4))
        port = serve_tls(self, factory, self.certificate).getHost().port
        sock = await self.connect_raw(port)
        await deferToThread(wait_closed, sock, 0.4 * 1.25 + 0.3 + 1.0)
        await poll(lambda: counters.connections_open == 0)

    async def test_counts_toward_the_limits(self) -> None:
        """
        With room for one connection, one that has not finished its
        handshake holds it: the next is refused at once. When it goes, a
        TLS client is served again.
        """
        counters = ServiceCounters()
        limits = ConnectionLimits(max_connections=1)
        factory = EchoFactory(reactor, counters, limits)
        port = serve_tls(self, factory, self.certificate).getHost().port
        holder = await self.connect_raw(port)
        await poll(lambda: limits.open_total == 1)
        refused = await self.connect_raw(port)
        await deferToThread(wait_closed, refused, 2.0)
        self.assertEqual(counters.refused["max_connections"], 1)
        holder.close()
        await poll(lambda: limits.open_total == 0)
        result = await deferToThread(
            python_half_close, port, b"again", self.certificate.cert
        )
        self.assertEqual(result.received, b"again")

    async def test_refused_welcome_client_gets_its_line(self) -> None:
        """
        A welcome client over the limit is told why once its handshake is
        done, then closed with a close_notify.
        """
        limits = ConnectionLimits(max_connections=1)
        factory = WelcomeFactory(reactor, limits=limits)
        port = serve_tls(self, factory, self.certificate).getHost().port
        await self.connect_raw(port)
        await poll(lambda: limits.open_total == 1)
        result = await deferToThread(
            python_half_close, port, b"", self.certificate.cert
        )
        self.assertEqual(
            result.received,
            b"ERROR: too many connections (max_connections); try again later\r\n",
        )
        self.assertTrue(result.close_notify)

    async def test_refused_welcome_client_without_handshake(self) -> None:
        self.patch(HalfCloseTLSFactory, "close_grace", 0.3)
        limits = ConnectionLimits(max_connections=1)
        factory = WelcomeFactory(reactor, limits=limits)
        port = serve_tls(self, factory, self.certificate).getHost().port
        await self.connect_raw(port)
        await poll(lambda: limits.open_total == 1)
        refused = await self.connect_raw(port)
        await deferToThread(wait_closed, refused, 0.3 + 1.0)


class ListenerTests(TestCase):
    """
    C{twistd sockecho --echo ssl:...}: the options, the listener and the
    log lines name TLS listeners and connections C{ssl:HOST:PORT}.
    """

    async def test_named_ssl_in_the_log(self) -> None:
        certificate = make_certificate(self)
        options = Options()
        options.parseOptions(
            ["--echo", ssl_description(certificate), "--no-upper", "--no-welcome",
             "--no-udp"]
        )  # fmt: skip
        service = makeService(options, reactor)
        with capturedLogs() as events:
            service.privilegedStartService()
            service.startService()
            self.addCleanup(service.stopService)
            [listener] = list(service)
            port = listener.port.getHost().port  # type: ignore[attr-defined]
            self.assertIsInstance(
                listener.port.factory,  # type: ignore[attr-defined]
                HalfCloseTLSFactory,
            )
            result = await deferToThread(
                python_half_close, port, b"hello", certificate.cert
            )
            self.assertEqual(result.received, b"hello")
            await poll(lambda: any("closed" in e.get("log_format", "") for e in events))
        addresses = [e["address"] for e in events if "address" in e]
        self.assertEqual(addresses, [f"ssl:127.0.0.1:{port}"])
        peers = {e["peer"] for e in events if "peer" in e}
        [peer] = peers
        self.assertRegex(peer, r"^ssl:127\.0\.0\.1:\d+$")

    def test_parsing_installs_no_reactor(self) -> None:
        description = ssl_description(make_certificate(self))
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys\n"
                "from twisted_echo.app.options import Options\n"
                f"Options().parseOptions(['--echo', {description!r}])\n"
                "print('twisted.internet.reactor' in sys.modules)\n",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.stdout.strip(), "False", result.stderr)


class OpenSSLClientTests(TestCase):
    """
    C{openssl s_client} (Debian's OpenSSL) against sockecho's TLS listeners.
    """

    async def exchange(self, *options: str) -> tuple[bytes, str, int]:
        openssl = require_openssl(self)
        certificate = make_certificate(self)
        counters = ServiceCounters()
        port = serve_tls(self, WelcomeFactory(reactor, counters), certificate)
        out, err, status = await deferToThread(
            s_client_exchange,
            openssl,
            port.getHost().port,
            certificate.cert,
            b"hello\n",
            b"OK...hello",
            options,
        )
        await poll(lambda: counters.connections_open == 0)
        return out, err, status

    async def test_tls13(self) -> None:
        out, err, status = await self.exchange("-tls1_3")
        self.assertEqual(status, 0, err)
        self.assertEqual(out, BANNER + b"OK...hello\r\n")
        self.assertIn("Protocol version: TLSv1.3", err)
        self.assertIn("Verification: OK", err)

    async def test_tls12(self) -> None:
        out, err, status = await self.exchange("-tls1_2")
        self.assertEqual(status, 0, err)
        self.assertEqual(out, BANNER + b"OK...hello\r\n")
        self.assertIn("Protocol version: TLSv1.2", err)


class TwistdTests(TestCase):
    """
    The whole path: a test certificate made as docs/tls.md says, a real
    C{twistd -n sockecho} with C{ssl:} listeners, C{sockecho-client}.
    """

    def test_docs_make_the_certificate_tested(self) -> None:
        docs = os.path.join(os.path.dirname(__file__), "..", "docs", "tls.md")
        with open(docs, encoding="utf-8") as f:
            text = f.read()
        block = text.split("```sh\n", 1)[1].split("```", 1)[0]
        self.assertEqual(block.replace("\\\n", " ").split(), MAKE_CERT.split())

    def test_check_chat_and_errors(self) -> None:
        openssl = require_openssl(self)
        directory = temp_dir(self)
        made = subprocess.run(
            MAKE_CERT.replace("openssl", openssl, 1).split(),
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(made.returncode, 0, made.stderr)
        certificate = Certificate(
            os.path.join(directory, "key.pem"), os.path.join(directory, "cert.pem")
        )
        server = RunningServer(
            self,
            ["--echo", ssl_description(certificate), "--upper",
             ssl_description(certificate), "--no-welcome", "--no-udp"],
        )  # fmt: skip
        ports = {
            service: int(
                server.wait_for(
                    rf"\] {service} listening on ssl:127\.0\.0\.1:(\d+)$"
                ).group(1)
            )
            for service in ("echo", "upper")
        }
        client = os.path.join(os.path.dirname(sys.executable), "sockecho-client")

        def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [client, *args], input=stdin, capture_output=True, text=True,
                timeout=120,
            )  # fmt: skip

        echo = f"ssl:127.0.0.1:{ports['echo']}"
        check = run("check", echo, "--ca", certificate.cert)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        rows = [line for line in check.stdout.splitlines() if "  PASS  " in line]
        self.assertEqual(len(rows), 6, check.stdout)
        chat = run(
            "chat", f"ssl:localhost:{ports['upper']}", "--ca", certificate.cert,
            stdin="straße\n",
        )  # fmt: skip
        self.assertEqual((chat.returncode, chat.stdout), (0, "STRASSE\n"), chat.stderr)
        untrusted = run("check", echo)
        self.assertEqual(untrusted.returncode, 1)
        self.assertEqual(untrusted.stdout, "")
        [line] = untrusted.stderr.splitlines()
        self.assertIn(
            "TLS handshake failed: certificate not trusted: self-signed "
            "certificate (CN=localhost)",
            line,
        )
        server.wait_for(r"echo connection from ssl:127\.0\.0\.1:\d+ closed")


class _Client(Protocol):
    """
    The client side of an in-memory TLS conversation: records what it gets.
    """

    def __init__(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class HandshakeTimeoutUnitTests(TestCase):
    """
    C{--handshake-timeout} and the memory budget of handshakes under way, in
    memory with L{Clock}: a server's connection that has not finished its
    handshake within the timeout is aborted, counted and logged; one that
    has is not; the budget holds L{tls.HANDSHAKE_BYTES} per handshake under
    way.
    """

    def setUp(self) -> None:
        # TLS 1.3 with a throwaway certificate, as the start-up check's.
        self.server_options = tls._ProbeCreator(*tls.self_signed_certificate())
        self.clock = Clock()
        self.counters = ServiceCounters()
        self.budget = MemoryBudget(64 * MIB)
        self.echo = EchoFactory(self.clock, self.counters, budget=self.budget)

    def serve(self, timeout: float = 10.0) -> tuple[Any, StringTransport]:
        factory = HalfCloseTLSFactory(
            self.server_options, False, self.echo, self.clock, timeout
        )
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        protocol.makeConnection(transport)
        return protocol, transport

    def lose(self, protocol: Any, transport: StringTransport) -> None:
        """
        Report the connection lost, as a TCP transport does once it closed.
        """
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionAborted()))

    def handshake(self, server: Any, server_wire: StringTransport) -> _Client:
        """
        Finish a TLS handshake with C{server} from an in-memory client
        (that verifies nothing).
        """
        client = _Client()
        client_factory = HalfCloseTLSFactory(
            tls._ProbeCreator(), True, tls._Prebuilt(client), self.clock
        )
        client_tls = client_factory.buildProtocol(None)
        client_wire = StringTransport()
        client_tls.makeConnection(client_wire)
        for _ in range(10):
            for source, target in ((client_wire, server), (server_wire, client_tls)):
                data = source.value()
                source.clear()
                if data:
                    target.dataReceived(data)
        self.assertTrue(server.handshake_done)
        return client

    def test_silent_client_aborted_counted_logged(self) -> None:
        """
        A client that sends nothing is aborted once the handshake timeout
        has passed (not before), counted as C{timeouts[handshake]} and
        logged with the reason.
        """
        protocol, transport = self.serve(10.0)
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        with capturedLogs() as events:
            self.clock.advance(0.2)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.counters.timeouts, {"handshake": 1})
        [event] = [e for e in events if "handshake" in e.get("log_format", "")]
        self.assertEqual(
            formatEvent(event),
            "echo connection from ssl:127.0.0.1:40000: no TLS handshake "
            "within 10.0 s; aborting",
        )
        self.lose(protocol, transport)
        self.assertEqual(self.counters.connections_open, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_started_handshake_is_not_extended(self) -> None:
        """
        Bytes of an unfinished ClientHello do not put the deadline off.
        """
        protocol, transport = self.serve(10.0)
        for _ in range(4):
            self.clock.advance(2.5)
            protocol.dataReceived(b"\x16")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.counters.timeouts["handshake"], 1)

    def test_finished_handshake_not_timed_out(self) -> None:
        """
        A client that finishes its handshake in time is served however
        long it stays.
        """
        protocol, transport = self.serve(10.0)
        self.clock.advance(5)
        self.handshake(protocol, transport)
        self.clock.advance(60)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.counters.timeouts, {})

    def test_zero_is_no_limit(self) -> None:
        protocol, transport = self.serve(0)
        self.clock.advance(299)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.counters.timeouts, {})

    def test_option_default_and_given(self) -> None:
        """
        C{--handshake-timeout} defaults to 10 s and reaches the listener's
        TLS factory.
        """
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["handshake-timeout"], 10.0)
        self.assertEqual(HalfCloseTLSFactory.handshake_timeout, 10.0)
        options.parseOptions(["--handshake-timeout", "0.5"])
        listening = TLSListeningReactor(self.clock, options["handshake-timeout"])
        self.assertEqual(listening._handshake_timeout, 0.5)

    def test_budget_holds_each_handshake_under_way(self) -> None:
        """
        Each handshake under way holds L{tls.HANDSHAKE_BYTES} of the memory
        budget, promised like an allowance; it is given back once the
        handshake finishes, or when the connection closes without one.
        """
        first, first_wire = self.serve()
        second, second_wire = self.serve()
        self.assertEqual(self.budget.handshake_bytes, 2 * tls.HANDSHAKE_BYTES)
        self.assertEqual(
            self.budget.promised(),
            2 * 2 * self.budget.base + 2 * tls.HANDSHAKE_BYTES,
        )
        self.handshake(first, first_wire)
        self.assertEqual(self.budget.handshake_bytes, tls.HANDSHAKE_BYTES)
        second_wire.loseConnection()
        self.lose(second, second_wire)
        self.assertEqual(self.budget.handshake_bytes, 0)
        first_wire.loseConnection()
        self.lose(first, first_wire)
        self.assertEqual(self.budget.promised(), 0)

    def test_handshakes_shrink_the_allowances(self) -> None:
        """
        Enough handshakes under way shrink every connection's allowance so
        that all stays within C{--max-buffer}.
        """
        self.budget = MemoryBudget(4 * MIB)
        self.echo = EchoFactory(self.clock, self.counters, budget=self.budget)
        connections = [self.serve() for _ in range(40)]
        # 40 echo connections of weight 2: 3 MiB / 80 alone would be 32 KiB;
        # 40 handshakes of 48 KiB leave (3 MiB - 1.875 MiB) / 80: 8 KiB.
        self.assertEqual(self.budget.base, 8192)
        self.assertLessEqual(self.budget.promised(), 4 * MIB)
        for protocol, wire in connections:
            self.handshake(protocol, wire)
        self.assertEqual(self.budget.base, 32768)


class HandshakeMemoryTests(TestCase):
    """
    A server's TLS connections let go of their OpenSSL state at close,
    without the cyclic garbage collector, however they end.
    """

    COUNT = 20

    def setUp(self) -> None:
        self.certificate = make_certificate(self)
        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)

    async def closed_without_gc(
        self,
        client: Callable[[int], socket.socket | None],
        timeout: float | None = None,
    ) -> None:
        """
        Run C{client(port)} C{COUNT} times in a thread and wait until the
        server has closed every connection; check that none of their
        C{SSL.Connection} objects is left (the garbage collector disabled).
        """
        from OpenSSL import SSL

        if timeout is not None:
            self.patch(HalfCloseTLSFactory, "handshake_timeout", timeout)
        counters = ServiceCounters()
        factory = EchoFactory(reactor, counters)
        port = serve_tls(self, factory, self.certificate)
        tls_factory = port.factory
        seen: list[weakref.ref[SSL.Connection]] = []
        original = HalfCloseTLSProtocol.makeConnection

        def note(protocol: Any, transport: Any) -> None:
            original(protocol, transport)
            seen.append(weakref.ref(protocol.getHandle()))

        self.patch(HalfCloseTLSProtocol, "makeConnection", note)
        socks = await deferToThread(
            lambda: [client(port.getHost().port) for _ in range(self.COUNT)]
        )
        await poll(lambda: counters.connections_total == self.COUNT, what="accepts")
        for sock in socks:
            if sock is not None:
                sock.close()
        await poll(lambda: counters.connections_open == 0, what="the closes")
        await poll(lambda: not tls_factory.protocols, what="the TLS closes")
        self.assertEqual(len(seen), self.COUNT)
        left = [ref for ref in seen if ref() is not None]
        self.assertEqual(len(left), 0, "SSL.Connection objects left after close")
        still = [
            o for o in gc.get_objects()
            if isinstance(o, SSL.Connection) and any(o is ref() for ref in seen)
        ]  # fmt: skip
        self.assertEqual(still, [])

    async def test_client_closes_without_hello(self) -> None:
        await self.closed_without_gc(
            lambda port: socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
        )

    async def test_client_closes_mid_hello(self) -> None:
        def partial(port: int) -> socket.socket:
            sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
            sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00")
            return sock

        await self.closed_without_gc(partial)

    async def test_handshake_timeout_closes(self) -> None:
        held: list[socket.socket] = []

        def silent(port: int) -> None:
            sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
            self.addCleanup(sock.close)
            held.append(sock)

        await self.closed_without_gc(silent, timeout=0.3)

    async def test_session_cut_without_close_notify(self) -> None:
        """
        A client that finished its handshake and drops its TCP connection
        without a close_notify (what many clients do).
        """
        context = ssl.create_default_context(cafile=self.certificate.cert)

        def cut(port: int) -> socket.socket:
            sock = context.wrap_socket(
                socket.create_connection((HOST, port), timeout=IO_TIMEOUT),
                server_hostname="localhost",
            )
            sock.sendall(b"x")
            assert sock.recv(1) == b"x"
            return sock

        await self.closed_without_gc(cut)

    async def test_finished_session(self) -> None:
        """
        A session closed the TLS way (close_notify both ways).
        """
        cafile = self.certificate.cert

        def session(port: int) -> None:
            result = python_half_close(port, b"x", cafile)
            assert result.received == b"x", result

        await self.closed_without_gc(session)


class HandshakeMemoryKeptExcInfoTests(HandshakeMemoryTests):
    """
    L{HandshakeMemoryTests} with every L{Failure} also keeping the
    C{sys.exc_info()} current when it was made, as pytest's patch of
    C{Failure.__init__} does on Twisted 24 and older (CI's floor run): the
    failures a closed connection made still let its C{SSL.Connection} go
    without the cyclic garbage collector.
    """

    def setUp(self) -> None:
        super().setUp()
        original = Failure.__init__

        def keeping(
            failure: Failure,
            exc_value: BaseException | None = None,
            exc_type: type[BaseException] | None = None,
            exc_tb: TracebackType | None = None,
            *args: Any,
            **kwargs: Any,
        ) -> None:
            if exc_value is None:
                raw: tuple[Any, ...] = sys.exc_info()
            else:
                raw = (
                    exc_type or type(exc_value),
                    exc_value,
                    exc_tb or sys.exc_info()[2],
                )
            failure._twisted_raw_excinfo = raw  # type: ignore[attr-defined]
            original(failure, exc_value, exc_type, exc_tb, *args, **kwargs)

        self.patch(Failure, "__init__", keeping)


class ForgetTracebackTests(TestCase):
    """
    L{forget_traceback} lets go of every traceback a failure holds.
    """

    def test_tracebacks_stored_beside_dropped(self) -> None:
        """
        A copy of C{sys.exc_info()} stored on the failure (pytest's, on
        Twisted 24) keeps its type and value, not its traceback; the
        failure still says what happened.
        """
        try:
            raise ValueError("bad record")
        except ValueError:
            failure = Failure()
            failure.raw = sys.exc_info()  # type: ignore[attr-defined]
            failure.tb_alone = sys.exc_info()[2]  # type: ignore[attr-defined]
        forget_traceback(failure)
        held = list(vars(failure).values())
        self.assertFalse(
            [v for v in held if isinstance(v, TracebackType)]
            + [v for v in held if isinstance(v, tuple)
               and any(isinstance(i, TracebackType) for i in v)]
        )  # fmt: skip
        self.assertEqual(failure.raw[:2], (ValueError, failure.value))  # type: ignore[attr-defined]
        self.assertIsNone(failure.value.__traceback__)
        self.assertIn("bad record", failure.getTraceback())


class HandshakeTimeoutTwistdTests(TestCase):
    """
    C{twistd sockecho --handshake-timeout 0.5} over real sockets.
    """

    def test_silent_client_closed_counted_logged(self) -> None:
        """
        A TCP client that never sends a ClientHello is closed once the
        timeout has passed, logged and counted in C{/metrics} with reason
        C{handshake}; a client whose handshake finished stays served.
        """
        certificate = make_certificate(self)
        server = RunningServer(
            self,
            ["--echo", ssl_description(certificate), "--no-upper", "--no-welcome",
             "--no-udp", "--metrics", f"tcp:0:interface={HOST}",
             "--handshake-timeout", "0.5"],
        )  # fmt: skip
        port = int(
            server.wait_for(r"\] echo listening on ssl:127\.0\.0\.1:(\d+)$").group(1)
        )
        metrics_port = int(
            server.wait_for(r"\] metrics listening on tcp:127\.0\.0\.1:(\d+)$").group(1)
        )
        context = ssl.create_default_context(cafile=certificate.cert)
        with context.wrap_socket(
            socket.create_connection((HOST, port), timeout=IO_TIMEOUT),
            server_hostname="localhost",
        ) as served:
            with socket.create_connection((HOST, port), timeout=IO_TIMEOUT) as silent:
                took = wait_closed(silent, 5.0)
            self.assertGreaterEqual(took, 0.4)
            server.wait_for(
                r"echo connection from ssl:127\.0\.0\.1:\d+: no TLS handshake "
                r"within 0\.5 s; aborting"
            )
            # Longer than the timeout after its handshake: still served.
            served.sendall(b"still here")
            received = b""
            while len(received) < 10:
                received += served.recv(100)
            self.assertEqual(received, b"still here")
        with urllib.request.urlopen(
            f"http://{HOST}:{metrics_port}/metrics", timeout=IO_TIMEOUT
        ) as response:
            text = response.read().decode()
        self.assertIn(
            'sockecho_connection_timeouts_total{reason="handshake",service="echo"} 1.0',
            text,
        )
