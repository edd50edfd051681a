"""
Tests for L{twisted_echo.operations.metrics}: the collector in process, the HTTP pages,
and the real server's C{--metrics} checked with Prometheus' own
C{promtool check metrics}, after known traffic and across a drain.
"""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
from collections import Counter
from collections.abc import Mapping
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred, succeed
from twisted.trial import unittest
from twisted.web.test.requesthelper import DummyRequest

from tests.process import (
    CLEAN_SIGTERM_EXIT,
    HOST,
    IO_TIMEOUT,
    STOP_TIMEOUT,
    require_tool,
    start_server,
    tcp_exchange,
    udp_socket,
    wait_until,
)
from twisted_echo.operations.metrics import (
    LocalCounters,
    MetricsService,
    Readiness,
    SockechoCollector,
    iter_samples,
    metrics_registry,
    metrics_site,
)
from twisted_echo.policies.counters import ServiceCounters


def http_get(port: int, path: str, accept: str | None = None) -> tuple[int, str, str]:
    """
    @return: the status, content type and body of C{GET path}.
    """
    connection = http.client.HTTPConnection(HOST, port, timeout=IO_TIMEOUT)
    try:
        connection.request("GET", path, headers={"Accept": accept} if accept else {})
        response = connection.getresponse()
        body = response.read().decode("utf-8")
        return response.status, response.getheader("content-type") or "", body
    finally:
        connection.close()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """
    @return: every sample of a Prometheus text exposition, by name and labels.
    """
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: Mapping[Any, float], name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


class Source:
    """
    A L{CounterSource} with fixed figures.
    """

    def __init__(
        self, figures: Mapping[str, ServiceCounters], labels: Mapping[str, str] = {}
    ) -> None:
        self.figures = figures
        self.labels = labels

    def snapshot(self) -> Mapping[str, ServiceCounters]:
        return self.figures


def collected(*sources: Source, max_buffer: int | None = None) -> dict[Any, float]:
    registry = metrics_registry(
        SockechoCollector(list(sources), max_buffer), process=False
    )
    return {
        (name, frozenset(labels.items())): v
        for name, labels, v in iter_samples(registry)
    }


class CollectorTests(unittest.TestCase):
    """
    L{SockechoCollector} turns counters into Prometheus metrics.
    """

    def test_names_and_labels(self) -> None:
        found = collected(
            Source(
                {
                    "echo": ServiceCounters(
                        connections_open=1,
                        connections_total=5,
                        bytes_in=10,
                        bytes_out=9,
                        refused=Counter(max_per_peer=2),
                        timeouts=Counter(idle=3),
                        pauses=4,
                        held_bytes=512,
                    ),
                    "udp": ServiceCounters(
                        datagrams_in=7,
                        datagrams_out=6,
                        bytes_in=70,
                        bytes_out=60,
                        dropped=Counter(rate_source=1),
                    ),
                }
            ),
            max_buffer=1 << 20,
        )
        expected = {
            ("sockecho_connections_total", "echo", None): 5,
            ("sockecho_connections_open", "echo", None): 1,
            ("sockecho_received_bytes_total", "echo", None): 10,
            ("sockecho_sent_bytes_total", "echo", None): 9,
            ("sockecho_received_bytes_total", "udp", None): 70,
            ("sockecho_sent_bytes_total", "udp", None): 60,
            ("sockecho_received_datagrams_total", "udp", None): 7,
            ("sockecho_sent_datagrams_total", "udp", None): 6,
            ("sockecho_refused_connections_total", "echo", "max_per_peer"): 2,
            ("sockecho_refused_connections_total", "echo", "max_connections"): 0,
            ("sockecho_connection_timeouts_total", "echo", "idle"): 3,
            ("sockecho_connection_timeouts_total", "echo", "drain"): 0,
            # Listed from the first scrape, before any such event.
            ("sockecho_connection_timeouts_total", "echo", "handshake"): 0,
            ("sockecho_refused_connections_total", "echo", "telnet_rate"): 0,
            ("sockecho_dropped_datagrams_total", "udp", "rate_source"): 1,
            ("sockecho_dropped_datagrams_total", "udp", "loop_port"): 0,
            ("sockecho_flow_control_pauses_total", "echo", None): 4,
            ("sockecho_held_bytes", "echo", None): 512,
        }
        for (name, service, reason), number in expected.items():
            labels = {"service": service}
            if reason:
                labels["reason"] = reason
            self.assertEqual(value(found, name, **labels), number, (name, labels))
        self.assertEqual(value(found, "sockecho_max_buffer_bytes"), 1 << 20)
        # Connection metrics are for TCP services, datagram ones for UDP.
        self.assertNotIn(
            ("sockecho_connections_total", frozenset({("service", "udp")})), found
        )
        self.assertNotIn(
            ("sockecho_received_datagrams_total", frozenset({("service", "echo")})),
            found,
        )

    def test_sources_summed(self) -> None:
        """
        Sources without labels of their own are summed.
        """
        found = collected(
            Source({"echo": ServiceCounters(connections_total=2)}),
            Source({"echo": ServiceCounters(connections_total=3)}),
        )
        self.assertEqual(value(found, "sockecho_connections_total", service="echo"), 5)

    def test_sources_labelled(self) -> None:
        """
        Sources with labels (a worker's) keep their series apart; every
        series has every label name.
        """
        found = collected(
            Source({"echo": ServiceCounters(connections_total=2)}, {"worker": "1"}),
            Source({"echo": ServiceCounters(connections_total=3)}, {"worker": "2"}),
        )
        self.assertEqual(
            value(found, "sockecho_connections_total", service="echo", worker="1"), 2
        )
        self.assertEqual(
            value(found, "sockecho_connections_total", service="echo", worker="2"), 3
        )

    def test_sources_read_when_collected(self) -> None:
        """
        The list of sources may grow after the collector is made.
        """
        sources: list[Any] = []
        registry = metrics_registry(SockechoCollector(sources), process=False)
        self.assertEqual(list(iter_samples(registry)), [])
        sources.append(Source({"echo": ServiceCounters(connections_total=1)}))
        self.assertIn(
            ("sockecho_connections_total", {"service": "echo"}, 1),
            list(iter_samples(registry)),
        )

    def test_process_metrics(self) -> None:
        names = {
            name for name, _, _ in iter_samples(metrics_registry(SockechoCollector([])))
        }
        self.assertIn("process_cpu_seconds_total", names)
        self.assertIn("process_resident_memory_bytes", names)
        self.assertIn("process_open_fds", names)


class FakeProtocol:
    def __init__(self, bytes_in: int, bytes_out: int) -> None:
        self.bytes_in = bytes_in
        self.bytes_out = bytes_out


class FakeFactory:
    service_name = "echo"

    def __init__(self, counters: ServiceCounters) -> None:
        self.counters = counters
        self.open_protocols = {FakeProtocol(100, 40), FakeProtocol(1, 1)}

    def held_bytes(self) -> int:
        return 59


class FakeServer:
    def __init__(self) -> None:
        self.counters = {
            "echo": ServiceCounters(connections_open=2, bytes_in=1000, bytes_out=1000),
            "udp": ServiceCounters(datagrams_in=1),
        }
        self.factories = [FakeFactory(self.counters["echo"])]


class LocalCountersTests(unittest.TestCase):
    """
    L{LocalCounters} adds what open connections carried and hold.
    """

    def test_open_connections_counted(self) -> None:
        server = FakeServer()
        snapshot = LocalCounters(server).snapshot()  # type: ignore[arg-type]
        self.assertEqual(snapshot["echo"].bytes_in, 1101)
        self.assertEqual(snapshot["echo"].bytes_out, 1041)
        self.assertEqual(snapshot["echo"].held_bytes, 59)
        self.assertEqual(snapshot["udp"].datagrams_in, 1)
        # The server's own counters are not changed.
        self.assertEqual(server.counters["echo"].bytes_in, 1000)
        self.assertEqual(server.counters["echo"].held_bytes, 0)


def render(
    site: Any, path: bytes, accept: bytes | None = None
) -> tuple[int, bytes, bytes]:
    request = DummyRequest([path])
    if accept:
        request.requestHeaders.setRawHeaders(b"accept", [accept])
    resource = site.getResourceFor(request)
    body = resource.render(request)
    content_type = request.responseHeaders.getRawHeaders(b"content-type", [b""])[0]
    return request.responseCode or 200, content_type, body


class PagesTests(unittest.TestCase):
    """
    C{/metrics}, C{/healthz}, C{/readyz}.
    """

    def setUp(self) -> None:
        self.readiness = Readiness()
        registry = metrics_registry(
            SockechoCollector([Source({"echo": ServiceCounters(connections_total=1)})]),
            process=False,
        )
        self.site = metrics_site(registry, self.readiness)

    def test_readyz(self) -> None:
        self.assertEqual(render(self.site, b"readyz")[::2], (503, b"starting\n"))
        self.readiness.ready()
        self.assertEqual(render(self.site, b"readyz")[::2], (200, b"ready\n"))
        self.readiness.draining()
        self.assertEqual(render(self.site, b"readyz")[::2], (503, b"draining\n"))
        self.readiness.ready()
        self.assertEqual(render(self.site, b"readyz")[::2], (503, b"draining\n"))

    def test_healthz(self) -> None:
        self.assertEqual(render(self.site, b"healthz")[::2], (200, b"ok\n"))

    def test_metrics(self) -> None:
        code, content_type, body = render(self.site, b"metrics")
        self.assertEqual(code, 200)
        self.assertTrue(content_type.startswith(b"text/plain; version="))
        self.assertIn(b'sockecho_connections_total{service="echo"} 1.0\n', body)

    def test_openmetrics(self) -> None:
        code, content_type, body = render(
            self.site, b"metrics", b"application/openmetrics-text; version=1.0.0"
        )
        self.assertTrue(content_type.startswith(b"application/openmetrics-text"))
        self.assertTrue(body.endswith(b"# EOF\n"))


class FakePort:
    def __init__(self) -> None:
        self.listening = True

    def stopListening(self) -> Deferred[None]:
        self.listening = False
        return succeed(None)

    def getHost(self) -> Any:
        from twisted.internet.address import IPv4Address

        return IPv4Address("TCP", "127.0.0.1", 9107)


class FakeEndpoint:
    def __init__(self) -> None:
        self.port = FakePort()

    def listen(self, factory: Any) -> Deferred[FakePort]:
        return succeed(self.port)


class MetricsServiceTests(unittest.TestCase):
    """
    The metrics listener is ready once started, turns 503 when the drain
    starts, and keeps listening until the drain ends.
    """

    def test_drain(self) -> None:
        endpoint = FakeEndpoint()
        service = MetricsService("tcp:9107", endpoint, [], process_metrics=False)  # type: ignore[arg-type]
        service.privilegedStartService()
        self.assertEqual(service.readiness.state, "starting")
        service.startService()
        self.assertEqual(service.readiness.state, "ready")
        service.drain_started()
        self.assertEqual(service.readiness.state, "draining")
        self.assertIsNone(service.stopService())
        self.assertTrue(endpoint.port.listening)
        service.drain_ended()
        self.assertFalse(endpoint.port.listening)

    def test_stop_without_drain(self) -> None:
        """
        Stopped without a drain (a failed start-up), it stops listening.
        """
        endpoint = FakeEndpoint()
        service = MetricsService("tcp:9107", endpoint, [], process_metrics=False)  # type: ignore[arg-type]
        service.privilegedStartService()
        service.stopService()
        self.assertFalse(endpoint.port.listening)


def promtool_check(case: unittest.TestCase, text: str) -> str:
    """
    Run C{promtool check metrics} on C{text}; fail on any problem.

    @return: what promtool printed (nothing when all is well).
    """
    promtool = require_tool(case, "promtool")
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    case.assertEqual(result.returncode, 0, f"promtool:\n{result.stdout}{result.stderr}")
    case.assertEqual(result.stdout + result.stderr, "")
    return result.stdout + result.stderr


class MetricsProcessTests(unittest.TestCase):
    """
    The real server with C{--metrics tcp:0:interface=127.0.0.1}.
    """

    def start(self, *args: str) -> tuple[Any, int]:
        server = start_server(self, ["--metrics", f"tcp:0:interface={HOST}", *args])
        match = server.wait_for(r"\] metrics listening on tcp:127\.0\.0\.1:(\d+)$")
        return server, int(match.group(1))

    def test_after_traffic(self) -> None:
        """
        After known traffic, C{/metrics} passes C{promtool check metrics}
        and says exactly what was done, open connections included; the
        probes answer 200; requests to the metrics listener are not logged.
        """
        server, port = self.start()
        self.assertEqual(tcp_exchange(server.ports["echo"], b"e" * 3000), b"e" * 3000)
        self.assertEqual(tcp_exchange(server.ports["upper"], b"hello"), b"HELLO")
        client = udp_socket(self)
        for _ in range(3):
            client.sendto(b"ping", (HOST, server.ports["udp"]))
            self.assertEqual(client.recv(100), b"ping")
        with socket.create_connection((HOST, server.ports["echo"]), IO_TIMEOUT) as c:
            c.sendall(b"o" * 100)
            received = b""
            while len(received) < 100:
                received += c.recv(100)
            status, content_type, text = http_get(port, "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(content_type.startswith("text/plain; version="))
        promtool_check(self, text)
        found = samples(text)
        for name, service, number in [
            ("sockecho_connections_total", "echo", 2),
            ("sockecho_connections_open", "echo", 1),
            ("sockecho_received_bytes_total", "echo", 3100),
            ("sockecho_sent_bytes_total", "echo", 3100),
            ("sockecho_connections_total", "upper", 1),
            ("sockecho_received_bytes_total", "upper", 5),
            ("sockecho_connections_total", "welcome", 0),
            ("sockecho_received_datagrams_total", "udp", 3),
            ("sockecho_sent_datagrams_total", "udp", 3),
            ("sockecho_received_bytes_total", "udp", 12),
            ("sockecho_held_bytes", "echo", 0),
        ]:
            self.assertEqual(
                value(found, name, service=service), number, (name, service)
            )
        self.assertEqual(
            value(
                found,
                "sockecho_refused_connections_total",
                service="echo",
                reason="max_per_peer",
            ),
            0,
        )
        self.assertEqual(value(found, "sockecho_max_buffer_bytes"), 64 << 20)
        self.assertGreater(value(found, "process_resident_memory_bytes"), 0)
        self.assertEqual(http_get(port, "/healthz")[::2], (200, "ok\n"))
        self.assertEqual(http_get(port, "/readyz")[::2], (200, "ready\n"))
        self.assertEqual(http_get(port, "/nothing")[0], 404)
        self.assertEqual(server.stop(), -signal.SIGTERM)
        log = "\n".join(server.output)
        self.assertNotIn("GET /", log)
        self.assertNotIn("metrics connection", log)

    def test_probes_across_drain(self) -> None:
        """
        From the moment SIGTERM starts the drain, C{/readyz} answers 503
        while C{/healthz} and C{/metrics} still answer 200 and a connection
        still open is served; the listener goes away with the process.
        """
        server, port = self.start("--drain-timeout", "10")
        echo = socket.create_connection((HOST, server.ports["echo"]), IO_TIMEOUT)
        self.addCleanup(echo.close)
        echo.sendall(b"a")
        self.assertEqual(echo.recv(1), b"a")
        server.process.send_signal(signal.SIGTERM)
        server.wait_for(r"shutting down: no new connections; draining 1 open")
        # The drain closes a connection quiet for 1 s: keep this one busy.
        ready: list[tuple[int, str]] = []

        def draining() -> bool:
            echo.sendall(b"b")
            self.assertEqual(echo.recv(1), b"b")
            status, _, body = http_get(port, "/readyz")
            ready[:] = [(status, body)]
            return status == 503

        wait_until(draining, IO_TIMEOUT, interval=0.05)
        self.assertEqual(ready[0], (503, "draining\n"))
        self.assertEqual(http_get(port, "/healthz")[::2], (200, "ok\n"))
        status, _, text = http_get(port, "/metrics")
        self.assertEqual(status, 200)
        promtool_check(self, text)
        self.assertEqual(
            value(samples(text), "sockecho_connections_open", service="echo"), 1
        )
        echo.close()
        self.assertIn(server.process.wait(STOP_TIMEOUT), CLEAN_SIGTERM_EXIT)
        with self.assertRaises(OSError):
            http_get(port, "/healthz")

    def test_busy_port(self) -> None:
        """
        A metrics address already in use ends start-up with one line.
        """
        from tests.process import any_port_args, run_twistd

        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind((HOST, 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        description = f"tcp:{taken}:interface={HOST}"
        result = run_twistd(self, *any_port_args(), "--metrics", description)
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertEqual(
            result.stderr.strip().splitlines()[-1],
            f"sockecho: cannot listen on {description}: address already in use",
        )
