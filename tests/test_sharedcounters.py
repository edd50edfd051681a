"""
Tests for L{twisted_echo.operations.sharedcounters}: workers' counters in shared
memory, so that C{--metrics} with C{--workers} stays true when workers die:
the table in process, and real C{twistd --workers 2} processes killed with
SIGKILL.
"""

from __future__ import annotations

import os
import signal
import socket
import unittest as pyunit
from collections import Counter
from typing import Any

from twisted.internet.error import ProcessTerminated
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.process import HOST, IO_TIMEOUT, tcp_exchange, wait_until
from tests.test_metrics import http_get, samples
from tests.test_supervisor import ProcessReactor, start_workers
from twisted_echo.app.supervisor import Supervisor
from twisted_echo.operations.sharedcounters import (
    MAX_SLOTS,
    CounterTable,
    SharedServiceCounters,
    combine,
    shared_counters_factory,
)
from twisted_echo.policies.counters import ServiceCounters


def metric(found: Any, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def scrape(port: int) -> Any:
    return samples(http_get(port, "/metrics")[2])


def wait_metrics(port: int, check: Any, timeout: float = IO_TIMEOUT) -> Any:
    """
    Scrape C{/metrics} until C{check(samples)} holds, or C{timeout} seconds.

    @return: the last samples.
    """
    last: list[Any] = []

    def checked() -> bool:
        last[:] = [scrape(port)]
        return bool(check(last[0]))

    wait_until(checked, timeout, interval=0.05)
    return last[0]


def metrics_port() -> int:
    probe = socket.socket()
    probe.bind((HOST, 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port


def worker_pids(server: Any) -> dict[int, int]:
    import re

    pids = {}
    for line in server.output:
        match = re.search(r"worker (\d+) started \(pid (\d+)\)", line)
        if match:
            pids[int(match.group(1))] = int(match.group(2))
    return pids


def figures(counters: ServiceCounters, *names: str) -> tuple[int, ...]:
    return tuple(getattr(counters, name) for name in names)


class TableTests(TestCase):
    """
    A worker's counters as its supervisor sees them, through a second
    mapping of the same memory.
    """

    def setUp(self) -> None:
        self.reader, fd = CounterTable.create()
        self.writer = CounterTable.open(os.dup(fd))
        os.close(fd)
        self.addCleanup(self.reader.close)
        self.addCleanup(self.writer.close)

    def test_every_change_seen_at_once(self) -> None:
        """
        Each change a worker makes to its counters, reasons included, is in
        the supervisor's view at once; C{held_bytes} is not shared.
        """
        counters = SharedServiceCounters(self.writer, "echo")
        counters.connections_open += 2
        counters.connections_total += 2
        counters.connections_open -= 1
        counters.bytes_in += 300
        counters.refused["max_per_peer"] += 1
        counters.timeouts["idle"] += 3
        counters.held_bytes = 99
        seen = self.reader.snapshot()["echo"]
        self.assertEqual(
            (seen.connections_open, seen.connections_total, seen.bytes_in),
            (1, 2, 300),
        )
        self.assertEqual(seen.refused, Counter({"max_per_peer": 1}))
        self.assertEqual(seen.timeouts, Counter({"idle": 3}))
        self.assertEqual(seen.held_bytes, 0)
        self.assertEqual(
            counters.summary(),
            "connections=2 open=1 bytes_in=300 "
            "held_bytes=99 refused[max_per_peer]=1 timeouts[idle]=3",
        )

    def test_worker_report(self) -> None:
        """
        A worker's report (L{LocalCounters}) of shared counters is plain
        counters, with the open connections' bytes and held bytes, and
        leaves the table as it was.
        """
        from tests.test_metrics import FakeServer
        from twisted_echo.operations.metrics import LocalCounters

        server = FakeServer()
        shared = SharedServiceCounters(self.writer, "echo")
        shared.bytes_in = 1000
        shared.refused["max_per_peer"] += 1
        server.counters["echo"] = server.factories[0].counters = shared
        echo = LocalCounters(server).snapshot()["echo"]  # type: ignore[arg-type]
        self.assertIs(type(echo), ServiceCounters)
        self.assertEqual((echo.bytes_in, echo.held_bytes), (1101, 59))
        self.assertEqual(echo.refused, Counter({"max_per_peer": 1}))
        self.assertEqual(self.reader.snapshot()["echo"].bytes_in, 1000)

    def test_udp_not_shared(self) -> None:
        """
        UDP echo's counters stay plain (reported every second).
        """
        make = shared_counters_factory(self.writer)
        self.assertIs(type(make("udp")), ServiceCounters)
        self.assertIsInstance(make("echo"), SharedServiceCounters)

    def test_full_table(self) -> None:
        """
        Past L{MAX_SLOTS} counters, new reasons are counted in process only.
        """
        counters = SharedServiceCounters(self.writer, "echo")
        for i in range(MAX_SLOTS):
            counters.refused[f"r{i}"] += 1
        self.assertEqual(counters.refused["r2000"], 1)
        self.assertEqual(len(self.reader.read()), MAX_SLOTS)


class CombineTests(TestCase):
    """
    A worker's table and its last report together.
    """

    def test_larger_of_each(self) -> None:
        """
        Counters take the larger of the table and the report (a report
        counts the bytes of open connections); gauges: the table's open
        connections, the report's held bytes.
        """
        table = {
            "echo": ServiceCounters(
                connections_open=1, connections_total=7, bytes_in=40
            )
        }
        report = {
            "echo": ServiceCounters(
                connections_open=3, connections_total=5, bytes_in=100, held_bytes=8
            )
        }
        echo = combine(table, report)["echo"]
        self.assertEqual(
            (
                echo.connections_open,
                echo.connections_total,
                echo.bytes_in,
                echo.held_bytes,
            ),
            (1, 7, 100, 8),
        )


class SupervisorTableTests(TestCase):
    """
    The supervisor's totals from its workers' tables, without processes.
    """

    def test_never_backwards_across_a_death(self) -> None:
        """
        A worker dies with 2 connections open: its gauges leave the totals
        at once, its counters stay, and nothing goes back.
        """
        reactor = ProcessReactor()
        supervisor = Supervisor([], [], lambda d, r: None, 2, reactor, 10)
        supervisor.startService()
        worker = supervisor.workers[1]
        assert worker.table is not None
        # What the worker process would do, through its own mapping.
        writer = CounterTable(worker.table.memory)
        echo = SharedServiceCounters(writer, "echo")
        echo.connections_open += 2
        echo.connections_total += 5
        echo.bytes_in += 40
        worker.counters = {"echo": ServiceCounters(bytes_in=100, held_bytes=64)}
        before = supervisor.totals()["echo"]
        self.assertEqual(
            (before.connections_open, before.connections_total, before.bytes_in),
            (2, 5, 100),
        )
        for view in (writer.header, writer.values, writer._words):
            view.release()
        reactor.advance(60)
        supervisor.worker_ended(worker, Failure(ProcessTerminated(signal=9)))
        after = supervisor.totals()["echo"]
        self.assertEqual(
            (
                after.connections_open,
                after.held_bytes,
                after.connections_total,
                after.bytes_in,
            ),
            (0, 0, 5, 100),
        )


class KilledWorkersTests(pyunit.TestCase):
    """
    C{twistd -n sockecho --workers 2 --metrics ...}, both workers killed
    with SIGKILL.
    """

    def start(self) -> tuple[Any, int]:
        port = metrics_port()
        server = start_workers(
            self, 2, "--metrics", f"tcp:{port}:interface={HOST}", "--max-per-peer", "0"
        )
        return server, port

    def kill_workers(self, server: Any) -> None:
        mark = len(server.output)
        for pid in worker_pids(server).values():
            os.kill(pid, signal.SIGKILL)
        for number in (1, 2):
            server.wait_for(rf"worker {number} was killed by signal 9", start=mark)

    def test_gauges_of_dead_workers_drop(self) -> None:
        """
        With 8 echo and 4 welcome connections open, both workers are
        killed and the clients close: C{sockecho_connections_open} and
        C{sockecho_held_bytes} drop to 0, and C{connections_total} keeps
        every connection (it never goes back).
        """
        server, port = self.start()
        held = []
        for service, count in (("echo", 8), ("welcome", 4)):
            for _ in range(count):
                sock = socket.create_connection((HOST, server.ports[service]), 5)
                self.addCleanup(sock.close)
                held.append(sock)
        found = wait_metrics(
            port,
            lambda f: (
                metric(f, "sockecho_connections_open", service="echo") == 8
                and metric(f, "sockecho_connections_open", service="welcome") == 4
            ),
        )
        self.assertEqual(metric(found, "sockecho_connections_open", service="echo"), 8)
        self.kill_workers(server)
        for sock in held:
            sock.close()

        def dropped(f: Any) -> bool:
            return all(
                metric(f, name, service=service) == 0
                for name in ("sockecho_connections_open", "sockecho_held_bytes")
                for service in ("echo", "welcome")
            )

        found = wait_metrics(port, dropped)
        self.assertTrue(dropped(found), found)
        self.assertEqual(metric(found, "sockecho_connections_total", service="echo"), 8)
        self.assertEqual(
            metric(found, "sockecho_connections_total", service="welcome"), 4
        )

    def test_no_count_lost(self) -> None:
        """
        112 echo connections finished, then both workers are killed at
        once (within their report interval): C{connections_total} counts
        all 112 (and the bytes all but, at worst, the last connection's),
        and keeps them after the replacements start.
        """
        server, port = self.start()
        for i in range(112):
            self.assertEqual(
                tcp_exchange(server.ports["echo"], b"%03d" % i), b"%03d" % i
            )
        self.kill_workers(server)
        for number in (1, 2):
            server.wait_for(
                rf"\[worker {number} twisted_echo\.listening\.listen#info\] udp "
                    rf"listening"
            )
        found = scrape(port)
        self.assertEqual(
            metric(found, "sockecho_connections_total", service="echo"), 112
        )
        # A connection's bytes join the service's counters when the server
        # has closed its socket; a kill in between (microseconds, but a
        # loaded machine may deschedule the worker there) loses the bytes of
        # that one connection, the last: never its count.
        for name in ("sockecho_received_bytes_total", "sockecho_sent_bytes_total"):
            self.assertIn(metric(found, name, service="echo"), (333, 336), name)
        self.assertEqual(tcp_exchange(server.ports["echo"], b"new"), b"new")
        found = wait_metrics(
            port,
            lambda f: metric(f, "sockecho_connections_total", service="echo") == 113,
        )
        self.assertEqual(
            metric(found, "sockecho_connections_total", service="echo"), 113
        )
        log = "\n".join(server.output + server.errors)
        self.assertNotIn("Traceback", log)
        self.assertNotIn("Unhandled", log)
