"""
Tests for L{twisted_echo.app.signals}: no signal a user or a terminal sends
ends sockecho abruptly. SIGHUP drains a single process as SIGTERM does and
replaces the workers of C{--workers N} one by one; SIGUSR1 logs a status
summary. Real C{twistd -n sockecho} processes, and the handlers in memory.
"""

from __future__ import annotations

import os
import signal
import socket
import unittest as pyunit

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.process import (
    CLEAN_SIGTERM_EXIT,
    HOST,
    IO_TIMEOUT,
    RunningServer,
    any_port_args,
    start_server,
    tcp_exchange,
    temp_dir,
    wait_until,
)
from tests.test_supervisor import Prober, alive, start_workers
from twisted_echo.app.signals import SignalService, log_status
from twisted_echo.policies.counters import ServiceCounters


class SingleProcessTests(pyunit.TestCase):
    """
    C{twistd -n sockecho} without workers.
    """

    def test_sighup_drains_like_sigterm(self) -> None:
        """
        SIGHUP while a client is connected: sockecho stops accepting,
        serves the open connection to its end, logs the summary, removes
        its ports file and ends by SIGHUP after the drain.
        """
        path = os.path.join(temp_dir(self), "ports.json")
        server = start_server(self, ["--ports-file", path])
        wait_until(lambda: os.path.exists(path), IO_TIMEOUT)
        self.assertTrue(os.path.exists(path))
        sock = socket.create_connection((HOST, server.ports["echo"]), timeout=10)
        self.addCleanup(sock.close)
        sock.sendall(b"before ")
        self.assertEqual(sock.recv(100), b"before ")
        server.process.send_signal(signal.SIGHUP)
        server.wait_for(r"received SIGHUP, draining as for SIGTERM")
        server.wait_for(r"shutting down: no new connections; draining 1 open")
        self.assertFalse(os.path.exists(path))
        # The open connection is still served to its end.
        sock.sendall(b"after")
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(100):
            received += chunk
        self.assertEqual(received, b"after")
        self.assertEqual(server.process.wait(IO_TIMEOUT), -signal.SIGHUP)
        server.wait_for(r"\] echo: connections=1 bytes_in=12 bytes_out=12$")
        self.assertNotIn("Traceback", "\n".join(server.output + server.errors))

    def test_sigusr1_logs_a_status_and_serves_on(self) -> None:
        """
        SIGUSR1 logs each service's counters so far (bytes are counted as
        a connection closes); sockecho serves on.
        """
        server = start_server(self)
        held = socket.create_connection((HOST, server.ports["echo"]), timeout=10)
        self.addCleanup(held.close)
        held.sendall(b"abc")
        self.assertEqual(held.recv(10), b"abc")
        mark = len(server.output)
        server.process.send_signal(signal.SIGUSR1)
        server.wait_for(
            r"\] status: echo: connections=1 open=1$",
            start=mark,
        )
        server.wait_for(r"\] status: upper: idle$", start=mark)
        self.assertEqual(tcp_exchange(server.ports["upper"], b"ok"), b"OK")
        self.assertIsNone(server.process.poll())


class WorkersTests(pyunit.TestCase):
    """
    C{twistd -n sockecho --workers 2}.
    """

    def worker_pids(self, server: RunningServer) -> dict[int, int]:
        """
        @return: the pid of each worker serving now (its last ready line).
        """
        pids: dict[int, int] = {}
        for line in server.output:
            if "supervisor#info] worker " in line and " ready (pid " in line:
                words = line.split("] worker ", 1)[1].split()
                pids[int(words[0])] = int(words[-1].rstrip(")"))
        return pids

    def test_sighup_replaces_every_worker_without_a_failed_exchange(self) -> None:
        """
        SIGHUP with a client making short echo exchanges all along: both
        workers are replaced by new processes, each old one drains and
        exits once its replacement is ready, and every exchange before,
        during and after succeeds.
        """
        server = start_workers(self, 2)
        wait_until(lambda: len(self.worker_pids(server)) == 2, IO_TIMEOUT)
        old = self.worker_pids(server)
        self.assertEqual(len(old), 2, server.output[-20:])
        prober = Prober(server.ports["echo"])
        self.addCleanup(prober.stop)
        self.assertTrue(wait_until(lambda: prober.passed >= 20, IO_TIMEOUT))
        mark = len(server.output)
        server.process.send_signal(signal.SIGHUP)
        server.wait_for(r"received SIGHUP, replacing the workers", start=mark)
        server.wait_for(r"reload done: 2 worker\(s\) serve", start=mark, timeout=30)
        for number, pid in old.items():
            server.wait_for(
                rf"worker {number}: old pid {pid} exited after its drain", start=mark
            )
        passed = prober.passed
        self.assertTrue(wait_until(lambda: prober.passed >= passed + 20, IO_TIMEOUT))
        prober.stop()
        new = self.worker_pids(server)
        self.assertEqual(sorted(new), [1, 2])
        self.assertEqual(set(new.values()) & set(old.values()), set())
        self.assertEqual([pid for pid in old.values() if alive(pid)], [])
        self.assertEqual(prober.failed, [])
        self.assertGreater(prober.passed, 40)
        self.assertIsNone(server.process.poll())
        # Each old worker was told to drain only once its replacement was ready.
        lines = server.output[mark:]
        for number, pid in old.items():
            replaced = next(
                i for i, line in enumerate(lines) if f"pid {pid} replaced by" in line
            )
            new_ready = next(
                i for i, line in enumerate(lines) if f"worker {number} ready" in line
            )
            self.assertLess(new_ready, replaced)
        self.assertNotIn("Traceback", "\n".join(server.output + server.errors))
        print(f"\nexchanges through SIGHUP: {prober.passed} passed, 0 failed")

    def test_sighup_keeps_a_unix_socket_listener(self) -> None:
        """
        A UNIX socket listener (one socket all workers share) still accepts
        after the reload: the old workers' drain leaves the socket and its
        path in place; the supervisor removes the path when it stops.
        """
        path = os.path.join(temp_dir(self), "echo.sock")
        server = RunningServer(
            self, [*any_port_args(), "--echo", f"unix:{path}", "--workers", "2"]
        )
        wait_until(lambda: len(self.worker_pids(server)) == 2, IO_TIMEOUT)
        old = self.worker_pids(server)
        server.process.send_signal(signal.SIGHUP)
        for number, pid in old.items():
            server.wait_for(
                rf"worker {number}: old pid {pid} exited after its drain", timeout=30
            )
        for i in range(5):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(IO_TIMEOUT)
                sock.connect(path)
                sock.sendall(b"u%d" % i)
                sock.shutdown(socket.SHUT_WR)
                self.assertEqual(sock.recv(10), b"u%d" % i)
        # The supervisor removes the path once everything has drained.
        self.assertIn(server.stop(), CLEAN_SIGTERM_EXIT)
        self.assertFalse(os.path.exists(path))

    def test_sigusr1_logs_the_workers_and_the_summed_counters(self) -> None:
        server = start_workers(self, 2)
        wait_until(lambda: len(self.worker_pids(server)) == 2, IO_TIMEOUT)
        for _ in range(4):
            tcp_exchange(server.ports["echo"], b"x")
        # The workers report their counters every second.
        echo_status = [""]

        def summed() -> bool:
            mark = len(server.output)
            server.process.send_signal(signal.SIGUSR1)
            server.wait_for(
                r"\] status: 2 worker\(s\) serving: 1 \(pid \d+, up", start=mark
            )
            match = server.wait_for(r"\] status: echo: (.*)$", start=mark)
            echo_status[0] = match.group(1)
            return echo_status[0].startswith("connections=4 ")

        wait_until(summed, 10, interval=0.5)
        self.assertTrue(echo_status[0].startswith("connections=4 "), echo_status[0])
        # A worker ignores SIGHUP (a terminal's hang-up reaches the whole
        # process group) and logs its own status on SIGUSR1.
        pid = self.worker_pids(server)[1]
        mark = len(server.output)
        os.kill(pid, signal.SIGHUP)
        os.kill(pid, signal.SIGUSR1)
        server.wait_for(
            r"\[worker 1 twisted_echo\.app\.signals#info\] status: echo: ", start=mark
        )
        self.assertTrue(alive(pid))
        self.assertEqual(self.worker_pids(server)[1], pid)
        self.assertIsNone(server.process.poll())


class FakeServer:
    def __init__(self) -> None:
        self.counters = {"echo": ServiceCounters(connections_total=2, bytes_in=5)}
        self.drain_started: list[object] = []


class SignalServiceTests(TestCase):
    """
    The handlers in memory (the signal itself is not sent).
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        # MemoryReactor says it has stopped before it ever ran on older
        # Twisted (24.7); what the tests look at is whether stop() is called.
        self.reactor.hasStopped = False
        self.server = FakeServer()
        self.service = SignalService(self.server, self.reactor)

    def test_installs_and_restores(self) -> None:
        before = signal.getsignal(signal.SIGHUP), signal.getsignal(signal.SIGUSR1)
        self.service.privilegedStartService()
        self.addCleanup(self.service.stopService)
        self.assertNotEqual(signal.getsignal(signal.SIGHUP), before[0])
        self.service.startService()
        self.service.stopService()
        after = signal.getsignal(signal.SIGHUP), signal.getsignal(signal.SIGUSR1)
        self.assertEqual(after, before)

    def test_hang_up_without_workers_stops_like_sigterm(self) -> None:
        self.reactor.running = True
        self.service.hang_up()
        self.assertTrue(self.reactor.hasStopped)
        self.assertEqual(self.reactor._exitSignal, signal.SIGHUP)  # type: ignore[attr-defined]
        self.assertTrue(self.service.draining)

    def test_hang_up_while_draining_does_nothing(self) -> None:
        self.service.drain_started()
        self.service.hang_up()
        self.assertFalse(self.reactor.hasStopped)

    def test_hang_up_with_workers_reloads(self) -> None:
        reloads: list[None] = []
        self.server.reload = lambda: reloads.append(None)  # type: ignore[attr-defined]
        self.service.hang_up()
        self.assertEqual(reloads, [None])
        self.assertFalse(self.reactor.hasStopped)

    def test_status_lines(self) -> None:
        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        log_status(self.server)
        self.assertEqual(
            [formatEvent(e) for e in events],
            ["status: echo: connections=2 bytes_in=5"],
        )
