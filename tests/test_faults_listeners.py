"""
Faults on C{ssl:} and C{haproxy:} listeners (issue 21): reset-after,
close-after, slice and delay behave as on plain TCP, over a real TLS
client (Python's L{ssl}: the byte counts are of plaintext, and the TCP
RST reaches it) and behind a PROXY header sent by hand (v1 and v2); the
per-connection fault log line and C{sockecho_faults_total} count them.
Each against a real C{twistd} (C{--faults} from its start, the other
profiles through its admin API).
"""

from __future__ import annotations

import re
import socket
import struct
import unittest
import urllib.request

from tests.process import wait_until
from tests.test_client_faultreport import CONFIG, shared
from twisted_echo.client.endpoints import StreamTarget, parse_stream_target
from twisted_echo.client.faultreport import FaultRunConfig, observe
from twisted_echo.client.faultseen import Observation
from twisted_echo.client.tls import TLSSettings
from twisted_echo.testing.spawn import SockechoProcess

HOST = "127.0.0.1"
#: The client address the PROXY headers claim (TEST-NET-3, RFC 5737).
CLAIMED = ("203.0.113.7", 40000)
HTTP_TIMEOUT = 10.0
#: 2,100 bytes: five segments of C{slice=500}, 100 ms apart (time for a
#: loaded machine's client to read each before the next).
SLICED = FaultRunConfig(size=2100, timeout=2.0, half_close_wait=0.3, slow=0.2)


def proxy_v1() -> bytes:
    return f"PROXY TCP4 {CLAIMED[0]} {HOST} {CLAIMED[1]} 7\r\n".encode()


def proxy_v2() -> bytes:
    """
    A PROXY protocol v2 header (haproxy's proxy-protocol.txt, section
    2.2): PROXY command, TCP over IPv4, the claimed client.
    """
    addresses = socket.inet_aton(CLAIMED[0]) + socket.inet_aton(HOST)
    body = addresses + struct.pack("!HH", CLAIMED[1], 7)
    return (
        b"\r\n\r\n\x00\r\nQUIT\n"
        + bytes([0x21, 0x11])
        + struct.pack("!H", len(body))
        + body
    )


def faults_total(server: SockechoProcess, fault: str) -> float:
    host, port = server.address("metrics")
    with urllib.request.urlopen(
        f"http://{host}:{port}/metrics", timeout=HTTP_TIMEOUT
    ) as answer:
        text = answer.read().decode()
    match = re.search(
        rf'^sockecho_faults_total\{{fault="{fault}",service="echo"\}} (\S+)$',
        text,
        re.M,
    )
    return float(match.group(1)) if match else 0.0


class _Listener:
    """
    The checks, for a listener kind: L{target}, L{tls} and L{preamble}.
    """

    server: SockechoProcess
    target: StreamTarget
    tls: TLSSettings | None = None
    preamble: bytes = b""
    #: The peer the server's log names.
    peer = rf"{HOST}:\d+"

    def observe(
        self, profile: str | None = None, config: FaultRunConfig = CONFIG
    ) -> Observation:
        if profile is None:
            return observe(self.target, config, 1, self.tls, self.preamble)
        with self.server.faults("echo", profile):
            return observe(self.target, config, 1, self.tls, self.preamble)

    def counted(self, fault: str, before: float) -> None:
        """
        C{sockecho_faults_total} counted one more C{fault}, and the log
        has its per-connection line.
        """
        case: unittest.TestCase = self  # type: ignore[assignment]
        pattern = re.compile(
            rf"echo connection from \w+:{self.peer}: faults {re.escape(fault)}"
        )
        case.assertTrue(
            wait_until(
                lambda: any(pattern.search(line) for line in self.server.log_lines())
            ),
            self.server.log_lines()[-10:],
        )
        case.assertEqual(faults_total(self.server, fault), before + 1)

    def test_reset_after(self) -> None:
        """
        Exactly 1,000 bytes (of plaintext), then the TCP RST: ECONNRESET.
        """
        case: unittest.TestCase = self  # type: ignore[assignment]
        before = faults_total(self.server, "reset-after")
        seen = self.observe()
        case.assertEqual(
            (seen.ending, seen.received, seen.error), ("reset", 1000, "ECONNRESET")
        )
        case.assertEqual(seen.seen, ["reset-after=1000"])
        self.counted("reset-after", before)

    def test_close_after(self) -> None:
        case: unittest.TestCase = self  # type: ignore[assignment]
        before = faults_total(self.server, "close-after")
        seen = self.observe("close-after=777")
        case.assertEqual((seen.ending, seen.received), ("eof", 777))
        if self.tls is not None:
            case.assertTrue(seen.close_notify)
        self.counted("close-after", before)

    def test_slice(self) -> None:
        """
        The exact segment sizes (each a TLS record over TLS).
        """
        case: unittest.TestCase = self  # type: ignore[assignment]
        before = faults_total(self.server, "slice")
        seen = self.observe("slice=500,gap=100ms", SLICED)
        case.assertEqual(seen.segments, [500, 500, 500, 500, 100])
        case.assertEqual((seen.ending, seen.corrupted_count), ("clean", 0))
        self.counted("slice", before)

    def test_delay(self) -> None:
        case: unittest.TestCase = self  # type: ignore[assignment]
        before = faults_total(self.server, "delay")
        seen = self.observe("delay=300ms")
        case.assertEqual((seen.ending, seen.received), ("clean", 4096))
        assert seen.first_byte is not None
        case.assertGreater(seen.first_byte, CONFIG.slow)
        self.counted("delay", before)


class TLSListenerTests(_Listener, unittest.TestCase):
    def setUp(self) -> None:
        self.server = shared("--faults", "echo=reset-after=1000", tls=True)
        host, port = self.server.address("echo")
        self.target = parse_stream_target(f"ssl:{host}:{port}")
        self.tls = TLSSettings(ca_file=self.server.ca_file)


class ProxyV1ListenerTests(_Listener, unittest.TestCase):
    peer = rf"{re.escape(CLAIMED[0])}:{CLAIMED[1]}"

    def setUp(self) -> None:
        self.server = shared(
            "--echo",
            f"haproxy:tcp:0:interface={HOST}",
            "--faults",
            "echo=reset-after=1000",
        )
        host, port = self.server.address("echo")
        self.target = parse_stream_target(f"tcp:{host}:{port}")
        self.preamble = proxy_v1()


class ProxyV2ListenerTests(ProxyV1ListenerTests):
    def setUp(self) -> None:
        super().setUp()
        self.preamble = proxy_v2()
