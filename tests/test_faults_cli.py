"""
C{--faults SERVICE=PROFILE}: the option (L{twisted_echo.app.options}), the
service tree it builds, and a real C{twistd} with faults, its log line and
C{sockecho_faults_total}.
"""

from __future__ import annotations

import urllib.request
from typing import Any

from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import TestCase

from tests.process import (
    any_port_args,
    run_twistd,
    start_server,
    tcp_exchange,
    udp_socket,
)
from twisted_echo.app.options import Options, makeService
from twisted_echo.app.refusing import RefusingListenerService
from twisted_echo.listening.listen import StreamListenerService

HOST = "127.0.0.1"


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


class OptionTests(TestCase):
    def test_default_none(self) -> None:
        self.assertEqual(parse()["faults"], {})

    def test_udp_profiles(self) -> None:
        """
        UDP listeners take their own faults, by listener key.
        """
        config = parse(
            "--whoami",
            "udp:0",
            "--faults",
            "udp=loss,p=10%",
            "--faults",
            "whoami-udp=duplicate=2",
        )
        self.assertTrue(config["faults"]["udp"].datagram)
        self.assertEqual(config["faults"]["udp"].faults[0].p, 0.1)
        self.assertEqual(config["faults"]["whoami-udp"].faults[0].value, 2)

    def test_profiles_by_service(self) -> None:
        config = parse(
            "--faults", "echo=delay=1s", "--faults", "upper=corrupt=10;seed=3"
        )
        self.assertEqual(sorted(config["faults"]), ["echo", "upper"])
        self.assertEqual(config["faults"]["upper"].seed, 3)

    def test_errors_are_one_line_naming_the_option(self) -> None:
        for args, expected in [
            (
                ["--faults", "echo=latency=200"],
                "bad --faults 'echo=latency=200': 'latency=200': latency takes a "
                "duration",
            ),
            (
                ["--faults", "latency=2s"],
                "bad --faults 'latency=2s': give LISTENERS=PROFILE",
            ),
            (
                ["--faults", "udp=delay=1s"],
                "'delay=1s': unknown fault 'delay' for a UDP listener (one of loss",
            ),
            (["--faults", "whoami=delay=1s"], "whoami has no TCP listener running"),
            (
                ["--faults", "echo=delay=1s", "--faults", "echo=delay=2s"],
                "echo given twice",
            ),
        ]:
            with self.subTest(args=args):
                error = self.assertRaises(usage.UsageError, parse, *args)
                self.assertIn(expected, str(error))
                self.assertNotIn("\n", str(error))

    def test_factory_and_refusing_listener(self) -> None:
        """
        The service's factory gets the profile; a refuse fault makes its
        listeners L{RefusingListenerService}s; other services are untouched.
        """
        config = parse(
            "--echo",
            "tcp:0",
            "--upper",
            "tcp:0",
            "--no-welcome",
            "--no-udp",
            "--faults",
            "echo=refuse=1s;delay=1s",
        )
        top = makeService(config, Clock())
        listeners: dict[str, Any] = {
            s.service_name: s for s in top if isinstance(s, StreamListenerService)
        }
        self.assertIsInstance(listeners["echo"], RefusingListenerService)
        self.assertNotIsInstance(listeners["upper"], RefusingListenerService)
        self.assertIsNotNone(listeners["echo"].factory.faults)
        self.assertIsNone(listeners["upper"].factory.faults)


class TwistdTests(TestCase):
    def test_malformed_profile_exits_1(self) -> None:
        """
        A real twistd: one clear line naming --faults and the bad part, exit
        1, no traceback.
        """
        result = run_twistd(
            self, *any_port_args(), "--faults", "echo=reset-after=10,p=2"
        )
        self.assertEqual(result.returncode, 1)
        self.assertNotIn("Traceback", result.stdout + result.stderr)
        self.assertTrue(
            result.stdout.strip()
            .splitlines()[-1]
            .endswith(
                "twistd -n: bad --faults 'echo=reset-after=10,p=2': "
                "'reset-after=10,p=2': p takes a probability (0.5, 50%), not '2'"
            ),
            result.stdout,
        )

    def test_faults_logged_and_counted(self) -> None:
        """
        A real twistd with C{--faults echo=close-after=5}: the client gets
        5 bytes, the log says which faults the connection got, and
        C{/metrics} counts them.
        """
        server = start_server(
            self,
            [
                "--metrics",
                f"tcp:0:interface={HOST}",
                "--faults",
                "echo=close-after=5;seed=7",
            ],
        )
        match = server.wait_for(r"\] metrics listening on tcp:127\.0\.0\.1:(\d+)$")
        self.assertEqual(tcp_exchange(server.ports["echo"], b"hello world"), b"hello")
        self.assertEqual(tcp_exchange(server.ports["upper"], b"hello"), b"HELLO")
        server.wait_for(
            r"\[twisted_echo\.faults#info\] echo connection from tcp:127\.0\.0\.1:\d+: "
            r"faults close-after=5 \(connection 1, seed 7\)$"
        )
        with urllib.request.urlopen(
            f"http://{HOST}:{match.group(1)}/metrics", timeout=10
        ) as page:
            text = page.read().decode()
        self.assertIn(
            'sockecho_faults_total{fault="close-after",service="echo"} 1.0', text
        )


class TwistdReplayTests(TestCase):
    def run_once(self) -> list[str]:
        """
        A twistd with a seeded profile, 20 connections to echo.

        @return: its per-connection fault lines, without the clients' ports.
        """
        server = start_server(
            self, ["--faults", "echo=close-after=5,p=0.5;corrupt=2,p=0.3;seed=42"]
        )
        for _ in range(20):
            tcp_exchange(server.ports["echo"], b"0123456789")
        server.wait_for(r"\(connection 20, seed 42\)$")
        server.stop()
        return [
            line.split(": ", 1)[1]
            for line in server.output
            if "[twisted_echo.faults#info]" in line
        ]

    def test_two_runs_same_fault_log(self) -> None:
        """
        Two server runs with seed=42: the same per-connection fault log.
        """
        first = self.run_once()
        self.assertEqual(len(first), 20)
        self.assertEqual(first, self.run_once())
        self.assertTrue(any("faults none" in line for line in first))
        self.assertTrue(any("close-after" in line for line in first))


class TwistdUDPTests(TestCase):
    def test_duplicate(self) -> None:
        """
        A real twistd with C{--faults udp=duplicate}: each datagram comes
        back twice; the listener logs its profile and seed.
        """
        server = start_server(self, ["--faults", "udp=duplicate;seed=5"])
        server.wait_for(r"\] udp listener: faults duplicate;seed=5 \(seed 5\)$")
        client = udp_socket(self)
        client.sendto(b"twice", (HOST, server.ports["udp"]))
        self.assertEqual([client.recv(100), client.recv(100)], [b"twice"] * 2)


class WorkerCountersTests(TestCase):
    def test_faults_in_the_shared_table(self) -> None:
        """
        A worker's fault counts reach its supervisor's table (what /metrics
        reads under --workers).
        """
        import os

        from twisted_echo.operations.sharedcounters import (
            CounterTable,
            SharedServiceCounters,
        )

        table, fd = CounterTable.create()
        self.addCleanup(os.close, fd)
        self.addCleanup(table.close)
        counters = SharedServiceCounters(table, "echo")
        counters.faults["reset-after"] += 1
        counters.faults["reset-after"] += 1
        self.assertEqual(table.snapshot()["echo"].faults["reset-after"], 2)


class MetricsTests(TestCase):
    def test_faults_total_tcp_and_udp(self) -> None:
        """
        C{sockecho_faults_total{service,fault}}, UDP echo's included.
        """
        from tests.test_metrics import Source, collected
        from twisted_echo.policies.counters import ServiceCounters

        echo, udp = ServiceCounters(), ServiceCounters()
        echo.faults["reset-after"] = 2
        udp.faults["loss"] = 3
        found = collected(Source({"echo": echo, "udp": udp}))
        for service, fault, count in (("echo", "reset-after", 2), ("udp", "loss", 3)):
            key = frozenset({"service": service, "fault": fault}.items())
            self.assertEqual(found[("sockecho_faults_total", key)], count)
