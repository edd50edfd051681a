"""
Tests for L{twisted_echo.services.whoami}: one JSON line (TCP, TLS) or datagram (UDP)
telling the client how the server sees it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import time
import unittest as pyunit
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport, StringTransport
from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.trial.unittest import TestCase

from tests.loopback import exchange, listen_tcp, wait_until
from tests.memory import PEER, connect
from tests.process import (
    CLEAN_SIGTERM_EXIT,
    HOST,
    IO_TIMEOUT,
    RunningServer,
    tcp_exchange,
    udp_socket,
)
from tests.socketpair import TRANSPORTS, clock_for, converse
from tests.tls_peers import make_certificate, serve_tls
from twisted_echo import __version__
from twisted_echo.app.options import Options, listener_keys, makeService
from twisted_echo.listening.listen import DatagramListenerService, UDPAddress
from twisted_echo.listening.proxyheader import ProxyHeaderEndpoint, ProxyHeaderProtocol
from twisted_echo.policies.counters import ServiceCounters
from twisted_echo.policies.limits import ConnectionLimits
from twisted_echo.policies.loopguard import LoopGuard
from twisted_echo.policies.ratelimit import SourceRateLimiter, TokenBucket
from twisted_echo.services.whoami import (
    Whoami,
    WhoamiFactory,
    WhoamiInfo,
    WhoamiUDP,
    address_fields,
    worker_number,
)

#: Bound on every wait, in seconds.
TIMEOUT = 5.0
#: The fields of every answer, in order.
FIELDS = [
    "service",
    "client",
    "client_host",
    "client_port",
    "proxy",
    "proxy_host",
    "proxy_port",
    "local",
    "local_host",
    "local_port",
    "host",
    "pid",
    "worker",
    "version",
    "tls",
]


def one_line(data: bytes) -> dict[str, Any]:
    """
    @param data: what the server sent.
    @return: the JSON object of its one line.
    @raise AssertionError: unless C{data} is exactly one C{\\n}-ended line.
    """
    assert data.endswith(b"\n") and data.count(b"\n") == 1, data
    fields: dict[str, Any] = json.loads(data.decode("utf-8"))
    assert list(fields) == FIELDS, list(fields)
    return fields


class WhoamiProtocolTests(TestCase):
    """
    The TCP protocol, in memory.
    """

    def test_one_json_line_then_close(self) -> None:
        """
        On connection the client gets one JSON line naming its address,
        the address it reached, the host, process and version; then the
        connection closes.
        """
        factory = WhoamiFactory(Clock())
        protocol, transport = connect(factory, Whoami)
        fields = one_line(transport.value())
        self.assertEqual(
            fields,
            {
                "service": "whoami",
                "client": "tcp:192.0.2.7:40000",
                "client_host": "192.0.2.7",
                "client_port": 40000,
                "proxy": None,
                "proxy_host": None,
                "proxy_port": None,
                "local": "tcp:127.0.0.1:7007",
                "local_host": "127.0.0.1",
                "local_port": 7007,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "worker": None,
                "version": __version__,
                "tls": None,
            },
        )
        self.assertTrue(transport.disconnecting)
        self.assertEqual(factory.counters.connections_total, 1)
        self.assertEqual(protocol.bytes_out, len(transport.value()))

    def test_input_is_ignored(self) -> None:
        """
        What the client sends changes nothing; its end of input neither.
        """
        protocol, transport = connect(WhoamiFactory(Clock()), Whoami)
        sent = transport.value()
        protocol.dataReceived(b"hello\n" * 100)
        protocol.readConnectionLost()
        self.assertEqual(transport.value(), sent)
        self.assertEqual(protocol.bytes_in, 600)

    def test_worker_number(self) -> None:
        """
        The factory's L{WhoamiInfo} gives the worker number.
        """
        factory = WhoamiFactory(Clock(), info=WhoamiInfo(worker=2))
        _, transport = connect(factory, Whoami)
        self.assertEqual(one_line(transport.value())["worker"], 2)

    def test_proxy_and_client_come_from_one_place(self) -> None:
        """
        A subclass overriding L{Whoami.client_address} and
        L{Whoami.proxy_address} (a PROXY header's addresses) changes the
        client and proxy fields.
        """

        class Proxied(Whoami):
            def client_address(self) -> object:
                return IPv6Address("TCP", "2001:db8::5", 443)

            def proxy_address(self) -> object:
                return PEER

        class ProxiedFactory(WhoamiFactory):
            protocol = Proxied

        _, transport = connect(ProxiedFactory(Clock()), Proxied)
        fields = one_line(transport.value())
        self.assertEqual(fields["client"], "tcp6:2001\\:db8\\:\\:5:443")
        self.assertEqual(fields["client_host"], "2001:db8::5")
        self.assertEqual(fields["proxy"], "tcp:192.0.2.7:40000")
        self.assertEqual(fields["proxy_port"], 40000)

    def test_proxy_header(self) -> None:
        """
        On a C{haproxy:} listener the client is the one the PROXY header
        names and the proxy is the peer; the answer waits for the header.
        """
        factory = WhoamiFactory(Clock())
        protocol = factory.buildProtocol(PEER, proxy_header=True)
        assert isinstance(protocol, ProxyHeaderProtocol)
        assert isinstance(protocol.service, Whoami)
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 7010), peerAddress=PEER
        )
        protocol.makeConnection(transport)
        self.assertEqual(transport.value(), b"")
        protocol.dataReceived(b"PROXY TCP4 198.51.100.1 203.0.113.2 56324 443\r\n")
        fields = one_line(transport.value())
        self.assertEqual(fields["client"], "tcp:198.51.100.1:56324")
        self.assertEqual(fields["client_host"], "198.51.100.1")
        self.assertEqual(fields["proxy"], "tcp:192.0.2.7:40000")
        self.assertEqual(fields["local"], "tcp:127.0.0.1:7010")


class HelperTests(pyunit.TestCase):
    """
    L{worker_number} and L{address_fields}.
    """

    def test_worker_number(self) -> None:
        self.assertIsNone(worker_number({}))
        self.assertEqual(worker_number({"SOCKECHO_WORKER": '{"number": 3}'}), 3)
        self.assertIsNone(worker_number({"SOCKECHO_WORKER": "not json"}))
        self.assertIsNone(worker_number({"SOCKECHO_WORKER": "[1]"}))

    def test_address_fields(self) -> None:
        self.assertEqual(
            address_fields(IPv4Address("UDP", "127.0.0.1", 9)),
            ("udp:127.0.0.1:9", "127.0.0.1", 9),
        )
        self.assertEqual(
            address_fields(UNIXAddress("/run/s.sock")), ("unix:/run/s.sock", None, None)
        )
        self.assertEqual(address_fields(UNIXAddress(None)), (None, None, None))
        self.assertEqual(address_fields(None), (None, None, None))


class _BoundTransport(FakeDatagramTransport):
    """
    A fake datagram transport bound to 127.0.0.1:7010.
    """

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", "127.0.0.1", 7010)


class WhoamiUDPTests(TestCase):
    """
    The UDP protocol, in memory: UDP echo's checks, the JSON reply.
    """

    def make(self, **kw: Any) -> tuple[WhoamiUDP, _BoundTransport]:
        protocol = WhoamiUDP(ServiceCounters(), **kw)
        transport = _BoundTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_answers_each_datagram(self) -> None:
        protocol, transport = self.make(info=WhoamiInfo(worker=1))
        protocol.datagramReceived(b"x", ("127.0.0.9", 40000))
        protocol.datagramReceived(b"", ("127.0.0.9", 40001))
        self.assertEqual(len(transport.written), 2)
        reply, addr = transport.written[0]
        self.assertEqual(addr, ("127.0.0.9", 40000))
        fields = one_line(reply)
        self.assertEqual(fields["client"], "udp:127.0.0.9:40000")
        self.assertEqual(fields["local"], "udp:127.0.0.1:7010")
        self.assertEqual(fields["worker"], 1)
        self.assertIsNone(fields["tls"])
        counters = protocol.counters
        self.assertEqual((counters.datagrams_in, counters.datagrams_out), (2, 2))
        self.assertEqual(counters.bytes_in, 1)
        self.assertEqual(counters.bytes_out, sum(len(r) for r, _ in transport.written))

    def test_loop_guard(self) -> None:
        """
        Privileged source ports, sockecho's ports (7007, 7010) and the
        listener's own port are never answered.
        """
        protocol, transport = self.make(loop_guard=LoopGuard())
        for port in (53, 7007, 7010):
            protocol.datagramReceived(b"x", ("127.0.0.9", port))
        self.assertEqual(transport.written, [])
        self.assertEqual(protocol.counters.dropped["loop_port"], 3)
        guard = LoopGuard(frozenset())
        protocol, transport = self.make(loop_guard=guard)
        protocol.datagramReceived(b"x", ("127.0.0.9", 7010))
        self.assertEqual(protocol.counters.dropped["own_port"], 1)

    def test_rate_limits(self) -> None:
        clock = Clock()
        protocol, transport = self.make(
            source_limit=SourceRateLimiter(1, 1, clock),
            global_limit=TokenBucket(1, 2, clock),
        )
        protocol.datagramReceived(b"x", ("127.0.0.9", 40000))
        protocol.datagramReceived(b"x", ("127.0.0.9", 40000))
        protocol.datagramReceived(b"x", ("127.0.0.8", 40000))
        protocol.datagramReceived(b"x", ("127.0.0.7", 40000))
        self.assertEqual(len(transport.written), 2)
        self.assertEqual(protocol.counters.dropped["rate_source"], 1)
        self.assertEqual(protocol.counters.dropped["rate_global"], 1)


class OptionsTests(pyunit.TestCase):
    """
    C{--whoami} and the listeners it adds.
    """

    def parse(self, *args: str) -> Options:
        options = Options()
        options.parseOptions(list(args))  # type: ignore[no-untyped-call]
        return options

    def test_off_by_default(self) -> None:
        options = self.parse()
        self.assertEqual(options.listeners["whoami"], [])
        self.assertNotIn("whoami", [key[0] for key in listener_keys(options)])
        self.assertNotIn("whoami", makeService(options, reactor).counters)

    def test_tcp_and_udp_repeatable(self) -> None:
        options = self.parse(
            "--whoami",
            "tcp:7010:interface=127.0.0.1",
            "--whoami",
            "udp:7010:interface=127.0.0.1",
            "--whoami",
            "unix:/tmp/whoami.sock",
        )
        self.assertEqual(
            listener_keys(options)[-3:],
            [
                ("whoami", 0, "tcp:7010:interface=127.0.0.1"),
                ("whoami", 1, "unix:/tmp/whoami.sock"),
                ("whoami-udp", 0, "udp:7010:interface=127.0.0.1"),
            ],
        )

    def test_whoami_alone(self) -> None:
        """
        Every default service off and whoami on is something to run.
        """
        options = self.parse(
            "--no-echo", "--no-upper", "--no-welcome", "--no-udp",
            "--whoami", "udp:0",
        )  # fmt: skip
        self.assertEqual(listener_keys(options), [("whoami-udp", 0, "udp:0")])
        service = makeService(options, reactor)
        self.assertEqual(list(service.counters), ["whoami"])

    def test_bad_addresses(self) -> None:
        for bad, says in (
            ("tcp:7010:interfase=127.0.0.1", "unknown parameter 'interfase'"),
            ("udp:70100", "out of range"),
        ):
            with self.assertRaises(usage.UsageError) as caught:
                self.parse("--whoami", bad)
            self.assertIn(f"bad address for --whoami {bad!r}", str(caught.exception))
            self.assertIn(says, str(caught.exception))


class RealSocketTests(TestCase):
    """
    Whoami on real sockets of 127.0.0.1.
    """

    async def test_tcp(self) -> None:
        factory = WhoamiFactory(reactor)
        port = listen_tcp(self, factory)
        client = await exchange(port, b"ignored")
        fields = one_line(b"".join(client.received))
        self.assertEqual(fields["local"], f"tcp:127.0.0.1:{port}")
        self.assertEqual(fields["client_host"], "127.0.0.1")
        self.assertNotEqual(fields["client_port"], port)
        await wait_until(lambda: not factory.open_protocols, TIMEOUT)
        self.assertEqual(factory.counters.connections_total, 1)

    async def test_proxy_header_answer_closes_after_the_read(self) -> None:
        """
        On a C{haproxy:} listener whoami answers and closes from inside the
        read that brought the PROXY header (its C{connectionMade} runs
        there): every client gets its line naming the header's client, and
        afterwards no connection, limits place or budget weight is left.
        """
        limits = ConnectionLimits(0, 2)
        factory = WhoamiFactory(reactor, limits=limits)
        endpoint = ProxyHeaderEndpoint(
            TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        )
        port = await endpoint.listen(factory)
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        for client_port in range(40000, 40020):
            header = b"PROXY TCP4 198.51.100.1 127.0.0.1 %d %d\r\n" % (
                client_port,
                number,
            )
            client = await exchange(number, header)
            fields = one_line(b"".join(client.received))
            self.assertEqual(
                (fields["client_host"], fields["client_port"]),
                ("198.51.100.1", client_port),
            )
        await wait_until(lambda: not factory.open_protocols, TIMEOUT)
        self.assertEqual((limits.open_total, dict(limits.open_by_peer)), (0, {}))
        self.assertEqual(factory.counters.connections_open, 0)
        self.assertEqual(factory.counters.connections_total, 20)
        self.assertEqual(factory.budget.weight_total, 0)

    async def test_udp(self) -> None:
        await self.check_udp("127.0.0.1")

    async def test_udp_wildcard_names_the_address_reached(self) -> None:
        """
        On a listener bound to 0.0.0.0, C{local} is the address the
        datagram was sent to (127.0.0.1), not the wildcard.
        """
        await self.check_udp("0.0.0.0")

    async def check_udp(self, interface: str) -> None:
        """
        Listen on C{interface}, a free port; send one datagram from
        127.0.0.1 to 127.0.0.1 and check the answer's addresses.
        """
        protocol = WhoamiUDP(ServiceCounters(), loop_guard=LoopGuard(frozenset()))
        service = DatagramListenerService(
            f"udp:0:interface={interface}",
            UDPAddress(0, interface),
            protocol,
            reactor,  # type: ignore[arg-type]
            "whoami",
        )
        service.startService()
        self.addCleanup(service.stopService)
        port = service.port.getHost().port
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind((HOST, 0))
        sock.setblocking(False)
        sock.sendto(b"?", (HOST, port))
        replies: list[bytes] = []

        def received() -> bool:
            try:
                replies.append(sock.recv(65536))
            except BlockingIOError:
                pass
            return bool(replies)

        await wait_until(received, TIMEOUT)
        fields = one_line(replies[0])
        self.assertEqual(fields["client"], f"udp:127.0.0.1:{sock.getsockname()[1]}")
        self.assertEqual(fields["local"], f"udp:127.0.0.1:{port}")


def tls_whoami(port: int, cafile: str, servername: str | None) -> tuple[bytes, str]:
    """
    Connect over TLS 1.3 (blocking; run it in a thread), read until the
    server closes.

    @return: what came, and the cipher the client negotiated.
    """
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    if servername is None:
        context.check_hostname = False
    deadline = time.monotonic() + IO_TIMEOUT
    with socket.create_connection((HOST, port), timeout=IO_TIMEOUT) as raw:
        with context.wrap_socket(raw, server_hostname=servername) as sock:
            received = b""
            while time.monotonic() < deadline:
                try:
                    chunk = sock.recv(65536)
                except ssl.SSLEOFError:
                    break
                if not chunk:
                    break
                received += chunk
            cipher = sock.cipher()
            assert cipher is not None
            return received, cipher[0]


class TLSTests(TestCase):
    """
    Over TLS the answer names the protocol version, cipher and SNI name.
    """

    async def test_tls_fields(self) -> None:
        certificate = make_certificate(self)
        factory = WhoamiFactory(reactor)
        port = serve_tls(self, factory, certificate).getHost().port
        data, cipher = await deferToThread(
            tls_whoami, port, certificate.cert, "localhost"
        )
        fields = one_line(data)
        self.assertEqual(
            fields["tls"], {"version": "TLSv1.3", "cipher": cipher, "sni": "localhost"}
        )
        self.assertEqual(fields["local"], f"ssl:127.0.0.1:{port}")
        self.assertTrue(fields["client"].startswith("ssl:127.0.0.1:"))
        data, _ = await deferToThread(tls_whoami, port, certificate.cert, None)
        self.assertIsNone(one_line(data)["tls"]["sni"])


def whoami_ports(server: RunningServer) -> tuple[int, int]:
    """
    @return: the TCP and UDP ports whoami listens on, as logged.
    """
    ports = []
    for kind in ("tcp", "udp"):
        match = server.wait_for(
            rf"\] whoami listening on {kind}:127\.0\.0\.1:(\d+)$", IO_TIMEOUT
        )
        ports.append(int(match.group(1)))
    return ports[0], ports[1]


WHOAMI_ONLY = [
    "--no-echo",
    "--no-upper",
    "--no-welcome",
    "--no-udp",
    "--whoami",
    f"tcp:0:interface={HOST}",
    "--whoami",
    f"udp:0:interface={HOST}",
]


class TwistdTests(pyunit.TestCase):
    """
    C{twistd -n sockecho --whoami ...}, a real process.
    """

    def test_tcp_and_udp(self) -> None:
        server = RunningServer(self, WHOAMI_ONLY)
        tcp_port, udp_port = whoami_ports(server)
        fields = one_line(tcp_exchange(tcp_port, b""))
        self.assertEqual(fields["pid"], server.pid)
        self.assertIsNone(fields["worker"])
        self.assertEqual(fields["local"], f"tcp:127.0.0.1:{tcp_port}")
        sock = udp_socket(self)
        sock.sendto(b"", (HOST, udp_port))
        fields = one_line(sock.recv(65536))
        self.assertEqual(fields["local"], f"udp:127.0.0.1:{udp_port}")
        self.assertEqual(fields["client"], f"udp:127.0.0.1:{sock.getsockname()[1]}")
        self.assertIn(server.stop(), CLEAN_SIGTERM_EXIT, server.errors)
        summary = [line for line in server.output if "] whoami: " in line]
        self.assertEqual(len(summary), 1, server.output)
        self.assertIn("connections=1 ", summary[0])
        self.assertIn("datagrams_in=1 datagrams_out=1", summary[0])

    def test_workers(self) -> None:
        """
        With C{--workers 2}, each answer names the worker (1 or 2) and its
        process, not the supervisor's.
        """
        server = RunningServer(self, [*WHOAMI_ONLY, "--workers", "2"])
        tcp_port, udp_port = whoami_ports(server)
        for number in (1, 2):
            server.wait_for(
                rf"\[worker {number} twisted_echo\.listening\.listen#info\] "
                "whoami listening on udp"
            )
        workers = set()
        pids = set()
        for _ in range(40):
            fields = one_line(tcp_exchange(tcp_port, b""))
            workers.add(fields["worker"])
            pids.add(fields["pid"])
        self.assertLessEqual(workers, {1, 2})
        self.assertNotIn(server.pid, pids)
        sock = udp_socket(self)
        sock.sendto(b"", (HOST, udp_port))
        self.assertIn(one_line(sock.recv(65536))["worker"], (1, 2))
        self.assertIn(server.stop(), CLEAN_SIGTERM_EXIT, server.errors)
        summary = [
            line
            for line in server.output
            if re.search(r"\[twisted_echo\.app\.supervisor#info\] whoami: ", line)
        ]
        self.assertEqual(len(summary), 1, server.output[-20:])
        self.assertIn("connections=40 ", summary[0])
        self.assertIn("datagrams_out=1", summary[0])


class WhoamiRealPathsTests(TestCase):
    """
    Whoami's key protocol test over L{StringTransport} and over a real
    socketpair adopted by the reactor (L{tests.socketpair}).
    """

    async def test_one_json_line_then_close(self) -> None:
        """
        Without a word from the client: one JSON line naming the service,
        the server's pid and version, then the close, and nothing held.
        """
        for over in TRANSPORTS:
            factory = WhoamiFactory(clock_for(over))
            conversation = await converse(over, factory, [], half_close=False)
            fields = one_line(conversation.received)
            self.assertEqual(
                (fields["service"], fields["pid"], fields["version"]),
                ("whoami", os.getpid(), __version__),
                over,
            )
            self.assertTrue(conversation.closed, over)
            conversation.assert_released(self)
