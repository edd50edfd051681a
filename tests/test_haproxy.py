"""
sockecho behind a real HAProxy (Debian's haproxy): TCP mode, the PROXY
protocol v2 (C{send-proxy-v2}) and v1 (C{send-proxy}), health checks on.

Each test starts a real C{twistd -n sockecho} whose listeners take the
C{haproxy:} prefix, writes a HAProxy configuration in front of it from
C{contrib/haproxy/sockecho.cfg} (the documented one, its addresses and ports
replaced by free loopback ones), and drives clients through HAProxy.
Outside CI a missing haproxy skips them; with C{CI} set it fails them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import unittest as pyunit
from pathlib import Path

from tests.process import (
    BANNER,
    CLEAN_SIGTERM_EXIT,
    HOST,
    IO_TIMEOUT,
    MB,
    EchoReader,
    RunningServer,
    child_env,
    missing,
    tcp_exchange,
    temp_dir,
    wait_until,
)

CONFIG = Path(__file__).resolve().parent.parent / "contrib" / "haproxy" / "sockecho.cfg"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def haproxy_config(
    frontends: dict[str, int], backends: dict[str, int], send_proxy: str
) -> str:
    """
    C{contrib/haproxy/sockecho.cfg} for this test: each service's frontend
    on a free port of 127.0.0.1, its backend the test's sockecho.

    @param send_proxy: C{send-proxy-v2} or C{send-proxy}.
    """
    text = CONFIG.read_text()
    for service, port in frontends.items():
        text = text.replace(
            f"bind 127.0.0.1:{_DEFAULT_FRONT[service]}", f"bind 127.0.0.1:{port}"
        )
    for service, port in backends.items():
        text = text.replace(
            f"server sockecho1 127.0.0.1:{_DEFAULT_BACK[service]}",
            f"server sockecho1 127.0.0.1:{port}",
        )
    return text.replace("send-proxy-v2", send_proxy).replace(
        "check-send-proxy inter 2s", "check-send-proxy inter 200ms"
    )


_DEFAULT_FRONT = {"echo": 17007, "upper": 17008, "welcome": 17009, "whoami": 17010}
_DEFAULT_BACK = {"echo": 7007, "upper": 7008, "welcome": 7009, "whoami": 7010}
SERVICES = ("echo", "upper", "welcome", "whoami")


class Behind:
    """
    A sockecho with C{haproxy:} listeners and a HAProxy in front of it.

    @ivar front: the port clients use for each service (HAProxy's).
    @ivar back: sockecho's own port for each service.
    """

    def __init__(self, case: pyunit.TestCase, send_proxy: str, *args: str) -> None:
        haproxy = _require_haproxy(case)
        options: list[str] = []
        for service in SERVICES:
            options += [f"--{service}", f"haproxy:tcp:0:interface={HOST}"]
        self.server = RunningServer(case, [*options, "--no-udp", *args])
        self.back = self.server.wait_listening(SERVICES)
        self.front = {service: free_port() for service in SERVICES}
        directory = temp_dir(case)
        config = os.path.join(directory, "haproxy.cfg")
        with open(config, "w") as f:
            f.write(haproxy_config(self.front, self.back, send_proxy))
        self.haproxy = subprocess.Popen(
            [haproxy, "-f", config, "-db"],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        case.addCleanup(self._stop_haproxy)
        def accepting() -> bool:
            if self.haproxy.poll() is not None:
                raise AssertionError("haproxy did not start")
            try:
                socket.create_connection((HOST, self.front["echo"]), timeout=1).close()
            except OSError:
                return False
            return True

        if not wait_until(accepting, IO_TIMEOUT, interval=0.05):
            raise AssertionError("haproxy did not start")

    def _stop_haproxy(self) -> None:
        self.haproxy.kill()
        self.haproxy.wait(IO_TIMEOUT)
        if self.haproxy.stdout is not None:
            self.haproxy.stdout.close()


def _require_haproxy(case: pyunit.TestCase) -> str:
    from shutil import which

    path = which("haproxy") or "/usr/sbin/haproxy"
    if not os.path.exists(path):
        missing(case, "'haproxy' is not installed", "apt-get install -y haproxy")
    return path


def exchange_from(
    source: str, port: int, data: bytes, half_close: bool = True
) -> bytes:
    """
    Like L{tcp_exchange}, from the local address C{source}.

    @param half_close: whether to shut down the sending side after C{data}
        (else the server is expected to close first). HAProxy may give up a
        connection whose client shut down before HAProxy reached the server
        with nothing to send, so a test of what the server says unasked
        keeps it open.
    """
    with socket.create_connection(
        (HOST, port), timeout=IO_TIMEOUT, source_address=(source, 0)
    ) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
        return bytes(received)


class HAProxyTests(pyunit.TestCase):
    def test_20_mb_half_close_upper_and_welcome_through_v2(self) -> None:
        behind = Behind(self, "send-proxy-v2")
        payload = os.urandom(20 * MB)
        sock = socket.create_connection((HOST, behind.front["echo"]), timeout=30)
        self.addCleanup(sock.close)
        reader = EchoReader(sock)
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        self.assertEqual(reader.finish(), hashlib.sha256(payload).digest())
        self.assertEqual(reader.count, len(payload))
        self.assertEqual(
            tcp_exchange(behind.front["upper"], b"stra\xc3\x9fe"), b"STRASSE"
        )
        self.assertEqual(
            tcp_exchange(behind.front["welcome"], b"hi\n"), BANNER + b"\r\nOK...hi\r\n"
        )

    def test_v1_echo(self) -> None:
        behind = Behind(self, "send-proxy")
        self.assertEqual(tcp_exchange(behind.front["echo"], b"over v1"), b"over v1")

    def test_whoami_reports_the_real_client(self) -> None:
        behind = Behind(self, "send-proxy-v2")
        reply = exchange_from("127.0.0.5", behind.front["whoami"], b"")
        fields = json.loads(reply)
        self.assertIn("127.0.0.5", json.dumps(fields["client"]))
        self.assertIsNotNone(fields["proxy"])

    def test_per_peer_limit_counts_the_clients_behind_haproxy(self) -> None:
        """
        With C{--max-per-peer 2}, a third welcome connection from 127.0.0.5
        is refused with the reason, while 127.0.0.6 is still served: the
        limit counts HAProxy's clients, not HAProxy.
        """
        behind = Behind(self, "send-proxy-v2", "--max-per-peer", "2")
        held = []
        for _ in range(2):
            sock = socket.create_connection(
                (HOST, behind.front["welcome"]),
                timeout=IO_TIMEOUT,
                source_address=("127.0.0.5", 0),
            )
            self.addCleanup(sock.close)
            self.assertEqual(sock.recv(100), BANNER + b"\r\n")
            held.append(sock)
        self.assertEqual(
            exchange_from("127.0.0.5", behind.front["welcome"], b"", half_close=False),
            b"ERROR: too many connections (max_per_peer); try again later\r\n",
        )
        reply = exchange_from("127.0.0.6", behind.front["welcome"], b"hi\n")
        self.assertTrue(reply.endswith(b"OK...hi\r\n"), reply)

    def test_direct_connection_without_header_is_closed_and_counted(self) -> None:
        """
        A client that reaches sockecho's C{haproxy:} listener directly,
        without a header, gets nothing back and is counted by reason.
        """
        behind = Behind(self, "send-proxy-v2")
        self.assertEqual(tcp_exchange(behind.back["echo"], b"no header here\r\n"), b"")
        behind.server.stop()
        self.assertRegex(
            "\n".join(behind.server.output), r"\] echo: .*refused\[proxy_missing\]=1"
        )

    def test_health_checks_are_not_errors(self) -> None:
        """
        HAProxy's health checks (C{check}, C{check-send-proxy}: a version 2
        LOCAL header every 200 ms here) are served like any connection:
        no refusal, no warning or error in the log.
        """
        behind = Behind(self, "send-proxy-v2")
        checks = re.compile(r"\] echo connection from tcp:127\.0\.0\.1:\d+ closed")
        self.assertTrue(
            wait_until(
                lambda: sum(bool(checks.search(line)) for line in behind.server.output)
                >= 3
            ),
            "no health checks seen",
        )
        self.assertEqual(tcp_exchange(behind.front["echo"], b"x"), b"x")
        behind.server.stop()
        # The start-up line naming Twisted fast paths that fell back is a
        # warning on older Twisted (24.7: conch has no telnet bound); it is
        # not about the health checks.
        text = "\n".join(
            line
            for line in behind.server.output
            if "[twisted_echo._twisted.fastpaths#" not in line
        )
        self.assertNotRegex(text, r"#(error|warn|critical)\]")
        self.assertNotIn("Traceback", text)
        self.assertNotIn("refused[proxy_", text)


READYZ_CONFIG = CONFIG.with_name("sockecho-readyz.cfg")
#: HAProxy's check interval and fall count in the test (the documented file
#: says 2 s and 3): a server is marked down after 2 failed checks 200 ms
#: apart.
CHECK_INTER, CHECK_FALL = "200ms", 2
#: sockecho's --drain-delay in the test, seconds: far longer than
#: CHECK_INTER x CHECK_FALL (0.4 s), so HAProxy has taken the server out of
#: rotation well before it stops accepting.
TEST_DRAIN_DELAY = 5


def readyz_config(front: int, backs: list[tuple[int, int]]) -> str:
    """
    C{contrib/haproxy/sockecho-readyz.cfg} for this test: the echo frontend
    on C{front}, its two servers at C{backs} (echo port, metrics port), a
    200 ms check interval.
    """
    text = READYZ_CONFIG.read_text()
    text = text.replace("bind 127.0.0.1:17007", f"bind 127.0.0.1:{front}")
    for (echo, metrics), (old_echo, old_metrics) in zip(
        backs, [(7007, 9107), (7107, 9207)], strict=True
    ):
        text = text.replace(
            f"127.0.0.1:{old_echo} send-proxy-v2 check port {old_metrics}",
            f"127.0.0.1:{echo} send-proxy-v2 check port {metrics}",
        )
    return text.replace(
        "inter 2s fall 3 rise 2", f"inter {CHECK_INTER} fall {CHECK_FALL} rise 1"
    )



#: A sockecho close line of an echo connection (in its text log).
SERVED = re.compile(r"\] echo connection from .* closed: \d+ bytes in")


def served_by(server: RunningServer) -> int:
    """
    @return: how many echo connections C{server} has logged as closed.
    """
    return sum(bool(SERVED.search(line)) for line in server.output)


def wait_for_balancer(balancer: RunningServer, front: int) -> None:
    """
    Wait (at most C{IO_TIMEOUT}) until HAProxy, started as C{balancer},
    accepts on C{front}.

    @raise AssertionError: it exited (with its output) or never accepted.
    """

    def accepting() -> bool:
        if balancer.process.poll() is not None:
            output = "\n".join(balancer.output)
            raise AssertionError(f"haproxy did not start: {output}")
        try:
            socket.create_connection((HOST, front), timeout=1).close()
        except OSError:
            return False
        return True

    if not wait_until(accepting, IO_TIMEOUT, interval=0.05):
        raise AssertionError(f"haproxy did not accept on {front}")

class DrainDelayBehindHAProxyTests(pyunit.TestCase):
    """
    Issue 21's acceptance for C{--drain-delay}: two sockecho behind a real
    HAProxy checking C{/readyz} on their metrics ports
    (C{contrib/haproxy/sockecho-readyz.cfg}); one gets SIGTERM while
    clients loop echo exchanges through HAProxy.
    """

    def start_backend(self) -> tuple[RunningServer, int, int]:
        server = RunningServer(
            self,
            [
                "--echo",
                f"haproxy:tcp:0:interface={HOST}",
                "--no-upper",
                "--no-welcome",
                "--no-udp",
                "--metrics",
                f"tcp:0:interface={HOST}",
                "--drain-delay",
                str(TEST_DRAIN_DELAY),
            ],
        )
        echo = server.wait_listening(["echo"])["echo"]
        metrics = int(
            server.wait_for(r"\] metrics listening on tcp:127\.0\.0\.1:(\d+)$").group(1)
        )
        return server, echo, metrics

    def test_no_failed_request_during_a_drain_with_delay(self) -> None:
        from tests.test_supervisor import Prober

        haproxy = _require_haproxy(self)
        leaving, leaving_echo, leaving_metrics = self.start_backend()
        staying, staying_echo, staying_metrics = self.start_backend()
        front = free_port()
        directory = temp_dir(self)
        config = os.path.join(directory, "haproxy.cfg")
        with open(config, "w") as f:
            f.write(
                readyz_config(
                    front,
                    [(leaving_echo, leaving_metrics), (staying_echo, staying_metrics)],
                )
            )
        balancer = RunningServer.__new__(RunningServer)
        # HAProxy writes its server state changes on standard error.
        balancer._spawn(
            self, ["sh", "-c", f'exec "{haproxy}" -f "{config}" -db 2>&1'], child_env()
        )

        wait_for_balancer(balancer, front)

        # Both servers up in HAProxy: requests reach both.
        probers = [Prober(front, limit=100_000) for _ in range(2)]
        self.addCleanup(lambda: [p.stop() for p in probers])
        self.assertTrue(
            wait_until(lambda: served_by(leaving) >= 5 and served_by(staying) >= 5),
            (served_by(leaving), served_by(staying), [p.failed[:5] for p in probers]),
        )
        leaving.process.send_signal(signal.SIGTERM)
        leaving.wait_for(r"shutting down in \S+ s \(--drain-delay\)")
        down = balancer.wait_for(
            r"Server echo/sockecho1 is DOWN, reason: Layer7 wrong status, code: 503"
        )
        # HAProxy took it out of rotation while it still accepted: its drain
        # had not begun.
        self.assertFalse(
            [line for line in leaving.output if "no new connections" in line],
            down.string,
        )
        status = leaving.process.wait(TEST_DRAIN_DELAY + IO_TIMEOUT)
        self.assertIn(status, CLEAN_SIGTERM_EXIT)
        after = sum(p.passed for p in probers)
        self.assertTrue(
            wait_until(lambda: sum(p.passed for p in probers) >= after + 20),
            [p.failed[:5] for p in probers],
        )
        for prober in probers:
            prober.stop()
        failed = [f for p in probers for f in p.failed]
        passed = sum(p.passed for p in probers)
        self.assertEqual(failed[:5], [], f"{len(failed)} failed, {passed} passed")
        self.assertGreater(passed, 40)
        self.assertNotIn("Traceback", "\n".join(leaving.output))
        print(f"\n{passed} exchanges through HAProxy, none failed")


class AdminSwitchBehindHAProxyTests(pyunit.TestCase):
    """
    Issue 21's acceptance for readiness switched at run time: two sockecho
    with C{--admin} behind a real HAProxy checking C{/readyz}
    (C{contrib/haproxy/sockecho-readyz.cfg}, inter 200 ms, fall 2, rise 1);
    C{PUT /health {"readyz": "fail"}} on one takes it out of rotation, and
    C{"pass"} puts it back, while clients loop echo exchanges through
    HAProxy and none fails.
    """

    def start_backend(self) -> tuple[RunningServer, int, int]:
        server = RunningServer(
            self,
            [
                "--echo",
                f"haproxy:tcp:0:interface={HOST}",
                "--no-upper",
                "--no-welcome",
                "--no-udp",
                "--metrics",
                f"tcp:0:interface={HOST}",
                "--admin",
            ],
        )
        echo = server.wait_listening(["echo"])["echo"]
        metrics = int(
            server.wait_for(r"\] metrics listening on tcp:127\.0\.0\.1:(\d+)$").group(1)
        )
        return server, echo, metrics

    def start_haproxy(self, config_text: str) -> RunningServer:
        haproxy = _require_haproxy(self)
        directory = temp_dir(self)
        config = os.path.join(directory, "haproxy.cfg")
        with open(config, "w") as f:
            f.write(config_text)
        balancer = RunningServer.__new__(RunningServer)
        # HAProxy writes its server state changes on standard error.
        balancer._spawn(
            self, ["sh", "-c", f'exec "{haproxy}" -f "{config}" -db 2>&1'], child_env()
        )
        return balancer

    def test_readyz_fail_takes_the_backend_out_and_pass_puts_it_back(self) -> None:
        import urllib.request

        switched, switched_echo, switched_metrics = self.start_backend()
        other, other_echo, other_metrics = self.start_backend()
        front = free_port()
        balancer = self.start_haproxy(
            readyz_config(
                front, [(switched_echo, switched_metrics), (other_echo, other_metrics)]
            )
        )

        wait_for_balancer(balancer, front)

        def accepted(metrics: int) -> float:
            url = f"http://{HOST}:{metrics}/metrics"
            with urllib.request.urlopen(url, timeout=IO_TIMEOUT) as response:
                text = response.read().decode()
            found = re.search(
                r'^sockecho_connections_total\{service="echo"\} (\S+)$', text, re.M
            )
            assert found is not None, text
            return float(found.group(1))

        def put(readyz: str) -> None:
            request = urllib.request.Request(
                f"http://{HOST}:{switched_metrics}/health",
                data=json.dumps({"readyz": readyz}).encode(),
                method="PUT",
            )
            with urllib.request.urlopen(request, timeout=IO_TIMEOUT) as response:
                self.assertEqual(json.load(response)["readyz"], readyz)

        from tests.test_supervisor import Prober

        probers = [Prober(front, limit=100_000) for _ in range(2)]
        self.addCleanup(lambda: [p.stop() for p in probers])
        self.assertTrue(
            wait_until(lambda: served_by(switched) >= 5 and served_by(other) >= 5),
            (served_by(switched), served_by(other), [p.failed[:5] for p in probers]),
        )

        put("fail")
        balancer.wait_for(
            r"Server echo/sockecho1 is DOWN, reason: Layer7 wrong status, code: 503"
        )
        # Out of rotation: besides the exchanges HAProxy had already sent
        # there (one per client at most), it gets no more connection while
        # the other serves on (counted by its /metrics, read live).
        out = accepted(switched_metrics)
        at_other = accepted(other_metrics)
        self.assertTrue(wait_until(lambda: accepted(other_metrics) >= at_other + 20))
        self.assertLessEqual(accepted(switched_metrics), out + len(probers))

        put("pass")
        balancer.wait_for(r"Server echo/sockecho1 is UP")
        back = accepted(switched_metrics)
        self.assertTrue(
            wait_until(lambda: accepted(switched_metrics) >= back + 5),
            "no traffic reached the switched backend again",
        )
        for prober in probers:
            prober.stop()
        failed = [f for p in probers for f in p.failed]
        passed = sum(p.passed for p in probers)
        self.assertEqual(failed[:5], [], f"{len(failed)} failed, {passed} passed")
        self.assertNotIn("Traceback", "\n".join(switched.output))
        switched.wait_for(r"health switched at run time: readyz fail -> pass$")
