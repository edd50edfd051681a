"""
Tests for L{twisted_echo.app.supervisor}, L{twisted_echo.app.worker} and
L{twisted_echo.app.inherit}: C{--workers N} as a real twistd process (start-up,
serving every service, spreading connections, replacing a dead worker,
draining, giving up on workers that keep dying), and the supervisor's
bookkeeping in memory.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import threading
import time
import unittest as pyunit
from collections import Counter

from twisted.internet.error import ProcessTerminated
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, eventAsJSON, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.process import (
    BANNER,
    CLEAN_SIGTERM_EXIT,
    HOST,
    IO_TIMEOUT,
    MB,
    EchoReader,
    RunningServer,
    any_port_args,
    run_twistd,
    tcp_exchange,
    temp_dir,
    udp_socket,
    wait_until,
)
from twisted_echo.app.supervisor import (
    MAX_BACKOFF,
    MAX_QUICK_DEATHS,
    READY_FIELD,
    STABLE_UPTIME,
    Supervisor,
    WorkerProtocol,
    add_counters,
)
from twisted_echo.policies.counters import ServiceCounters


def start_workers(case: pyunit.TestCase, count: int, *args: str) -> RunningServer:
    server = RunningServer(case, [*any_port_args(), "--workers", str(count), *args])
    server.wait_listening()
    for number in range(1, count + 1):
        server.wait_for(rf"\[worker {number} twisted_echo\.listening\.listen#info\] "
            rf"udp listening")
    return server


def worker_summaries(server: RunningServer, service: str) -> dict[int, str]:
    """
    @return: each worker's own shutdown line for C{service}, by worker.
    """
    found = {}
    for line in server.output:
        match = re.search(
            rf"\[worker (\d+) twisted_echo\.app\.server#info\] {service}: (.*)$", line
        )
        if match:
            found[int(match.group(1))] = match.group(2)
    return found


def supervisor_summary(server: RunningServer, service: str) -> str:
    for line in reversed(server.output):
        match = re.search(rf"\[twisted_echo\.app\.supervisor#info\] {service}: (."
            rf"*)$", line)
        if match:
            return match.group(1)
    raise AssertionError(f"no supervisor summary for {service}")


def alive(pid: int) -> bool:
    """
    @return: whether process C{pid} exists and is not a zombie.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except OSError:
        return False


class WorkersProcessTests(pyunit.TestCase):
    """
    C{twistd -n sockecho --workers 2}.
    """

    def test_every_service_served_and_summed(self) -> None:
        """
        Two workers serve echo, upper, welcome and UDP echo on the ports the
        supervisor logged; at SIGTERM the supervisor's summary adds up both
        workers' counters.
        """
        server = start_workers(self, 2)
        for i in range(20):
            self.assertEqual(
                tcp_exchange(server.ports["echo"], b"e%02d" % i), b"e%02d" % i
            )
        self.assertEqual(
            tcp_exchange(server.ports["upper"], b"stra\xc3\x9fe"), b"STRASSE"
        )
        self.assertEqual(
            tcp_exchange(server.ports["welcome"], b"hi\n"), BANNER + b"\r\nOK...hi\r\n"
        )
        sock = udp_socket(self)
        sock.sendto(b"ping", (HOST, server.ports["udp"]))
        self.assertEqual(sock.recv(100), b"ping")
        self.assertIn(server.stop(), CLEAN_SIGTERM_EXIT, server.errors)
        self.assertTrue(
            supervisor_summary(server, "echo").startswith(
                "connections=20 bytes_in=60 bytes_out=60"
            )
        )
        self.assertTrue(
            supervisor_summary(server, "upper").startswith("connections=1 ")
        )
        self.assertIn(
            "datagrams_in=1 datagrams_out=1", supervisor_summary(server, "udp")
        )
        self.assertEqual(len(worker_summaries(server, "echo")), 2)

    def test_connections_spread_evenly(self) -> None:
        """
        1,000 short connections: each of two workers takes its share, within
        25 % of 500 (each worker logs the connections it served).
        """
        server = start_workers(self, 2, "--max-per-peer", "0")
        mark = len(server.output)
        for _ in range(1000):
            with socket.create_connection(
                (HOST, server.ports["echo"]), timeout=IO_TIMEOUT
            ):
                pass
        closed = re.compile(r"\[worker (\d) [^\]]*\] echo connection .* closed")

        def shares() -> Counter[str]:
            return Counter(
                m.group(1)
                for line in server.output[mark:]
                if (m := closed.search(line))
            )

        wait_until(lambda: sum(shares().values()) >= 1000, 20)
        served = shares()
        self.assertEqual(sum(served.values()), 1000, served)
        for share in served.values():
            self.assertLess(abs(share - 500), 125, served)

    def test_a_killed_worker_is_replaced_and_no_connection_refused(self) -> None:
        """
        SIGKILL to a worker: the supervisor logs it and starts a new one
        within a second (1.5 s deadline); clients connecting all the while,
        and 20 exchanges more once both workers serve again, are all served,
        but for the one connection the killed worker held, if any.
        """
        server = start_workers(self, 2)
        pid = int(server.wait_for(r"worker 1 started \(pid (\d+)\)").group(1))
        failures: list[BaseException] = []
        served = Counter[str]()
        stop = threading.Event()

        def clients() -> None:
            while not stop.is_set():
                try:
                    reply = tcp_exchange(server.ports["echo"], b"x", timeout=5)
                    served[reply.decode()] += 1
                except OSError as e:
                    failures.append(e)

        thread = threading.Thread(target=clients, daemon=True)
        thread.start()
        mark = len(server.output)
        # Polling with a deadline (no elapsed-time assert): the kill is seen
        # and the new worker started within 1.5 s of the kill.
        deadline = time.monotonic() + 1.5
        os.kill(pid, signal.SIGKILL)
        server.wait_for(
            r"worker 1 was killed by signal 9 \(SIGKILL\)", start=mark, timeout=1.5
        )
        server.wait_for(
            r"worker 1 started \(pid \d+\)",
            start=mark,
            timeout=max(0.0, deadline - time.monotonic()),
        )
        server.wait_for(
            r"\[worker 1 twisted_echo\.listening\.listen#info\] udp "
                r"listening", start=mark
        )
        # Clients keep connecting with both workers up again: 20 more.
        again = served["x"] + 20
        self.assertTrue(wait_until(lambda: served["x"] >= again), served)
        stop.set()
        thread.join(10)
        # The one connection the killed worker may have been serving dies
        # with it (a reset); no new connection is refused or times out.
        self.assertEqual(
            [e for e in failures if not isinstance(e, ConnectionResetError)], []
        )
        self.assertLessEqual(len(failures), 1, failures)
        self.assertGreater(served["x"], 0)

    def test_workers_end_with_a_killed_supervisor(self) -> None:
        """
        SIGKILL to the supervisor (nothing can catch it): its workers get
        SIGTERM from the kernel and end instead of serving on as orphans.
        """
        server = start_workers(self, 2)
        pids = [
            int(server.wait_for(rf"worker {n} started \(pid (\d+)\)").group(1))
            for n in (1, 2)
        ]
        server.process.kill()
        wait_until(lambda: not any(alive(pid) for pid in pids), 15)
        self.assertEqual([pid for pid in pids if alive(pid)], [])

    def test_sigterm_drains_a_50_mb_half_close_echo(self) -> None:
        """
        SIGTERM while a 50 MB echo is in flight through a worker: every byte
        comes back, then the supervisor exits cleanly.
        """
        server = start_workers(self, 2)
        payload = os.urandom(50 * MB)
        sock = socket.create_connection((HOST, server.ports["echo"]), timeout=30)
        self.addCleanup(sock.close)
        reader = EchoReader(sock)
        sock.sendall(payload[: 10 * MB])
        server.process.send_signal(signal.SIGTERM)
        server.wait_for(r"shutting down: draining 2 worker")
        sock.sendall(payload[10 * MB :])
        sock.shutdown(socket.SHUT_WR)
        self.assertEqual(reader.finish(), hashlib.sha256(payload).digest())
        self.assertEqual(reader.count, len(payload))
        self.assertIn(server.process.wait(30), CLEAN_SIGTERM_EXIT)

    def test_busy_port_is_one_line_and_exit_1(self) -> None:
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind((HOST, 0))
        busy.listen()
        description = f"tcp:{busy.getsockname()[1]}:interface={HOST}"
        result = run_twistd(self, *any_port_args(echo=description), "--workers", "2")
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertEqual(
            result.stderr,
            f"sockecho: cannot listen on {description}: address already in use\n",
        )

    def test_workers_that_keep_dying_make_it_give_up(self) -> None:
        """
        Workers that die as they start: the supervisor backs off, then exits
        with status 1 and the reason, instead of spinning.
        """
        site = temp_dir(self)
        with open(os.path.join(site, "sitecustomize.py"), "w") as f:
            f.write("import os\nif 'SOCKECHO_WORKER' in os.environ:\n    os._exit(3)\n")
        before = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [site, before]))
        try:
            server = RunningServer(self, [*any_port_args(), "--workers", "2"])
        finally:
            if before is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = before
        server.wait_listening()
        self.assertEqual(server.process.wait(20), 1)
        for reader in server._readers:
            reader.join(IO_TIMEOUT)
        log = "\n".join(server.output)
        self.assertIn("workers keep dying at start-up", log)
        self.assertIn("exited with status 3", log)


def children(pid: int) -> dict[int, str]:
    """
    @return: the state letter (C{S}, C{R}, C{Z}...) of each child process of
        C{pid}, by pid, from C{/proc}.
    """
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(") ", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found[int(name)] = fields[0]
    return found


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Prober:
    """
    Short echo exchanges, one after another in a thread, until stopped.

    @ivar passed: exchanges that got their bytes back.
    @ivar failed: the errors or wrong replies of the others.
    """

    def __init__(self, port: int, limit: int = 20_000) -> None:
        self.port = port
        self.limit = limit
        self.passed = 0
        self.failed: list[object] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for i in range(self.limit):
            if self._stop.is_set():
                return
            data = b"probe %d" % i
            try:
                reply = tcp_exchange(self.port, data, timeout=5)
            except OSError as e:
                self.failed.append(e)
                continue
            if reply == data:
                self.passed += 1
            else:
                self.failed.append(reply)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


class WorkerCrashTests(pyunit.TestCase):
    """
    Workers that die after they started serving are crashes: replaced,
    never a reason to take the healthy workers down.
    """

    def newest_worker(self, server: RunningServer) -> tuple[int, int, int]:
        """
        @return: C{(number, pid, index of its start line)} of the worker
            started last.
        """
        pattern = re.compile(r"worker (\d+) started \(pid (\d+)\)")
        for index in range(len(server.output) - 1, -1, -1):
            match = pattern.search(server.output[index])
            if match:
                return int(match.group(1)), int(match.group(2)), index
        raise AssertionError("no worker started")

    def test_ten_kills_of_the_newest_worker(self) -> None:
        """
        C{kill -9} of the newest worker ten times in a row, each as soon as
        it serves (the slot's back-off paces them): the supervisor replaces
        every one and stays up, echo probes running all the while pass
        (>= 95 %), no child is left a zombie and the supervisor holds as
        many descriptors as before.
        """
        server = start_workers(self, 2)
        supervisor = server.pid
        fds_before = open_fds(supervisor)
        prober = Prober(server.ports["echo"])
        self.addCleanup(prober.stop)
        started = time.monotonic()
        kills = 0
        while kills < 10 and time.monotonic() - started < 40:
            number, pid, index = self.newest_worker(server)
            # Once it serves (its last listener is up).
            server.wait_for(
                rf"\[worker {number} twisted_echo\.listening\.listen#info\] udp "
                    rf"listening",
                start=index,
            )
            os.kill(pid, signal.SIGKILL)
            kills += 1
            server.wait_for(
                rf"worker {number} started \(pid (?!{pid}\))\d+\)", start=index + 1
            )
        elapsed = time.monotonic() - started
        number, pid, index = self.newest_worker(server)
        server.wait_for(
            rf"\[worker {number} twisted_echo\.listening\.listen#info\] udp listening",
            start=index,
        )
        prober.stop()
        self.assertEqual(kills, 10)
        self.assertIsNone(server.process.poll(), "\n".join(server.output[-20:]))
        log = "\n".join(server.output)
        self.assertNotIn("giving up", log)
        total = prober.passed + len(prober.failed)
        self.assertGreater(total, 20)
        self.assertGreaterEqual(prober.passed / total, 0.95, prober.failed[:5])
        self.assertTrue(
            wait_until(lambda: "Z" not in children(supervisor).values(), 5),
            children(supervisor),
        )
        self.assertEqual(len(children(supervisor)), 2, children(supervisor))
        self.assertTrue(
            wait_until(lambda: open_fds(supervisor) == fds_before, 5),
            (open_fds(supervisor), fds_before),
        )
        self.kill_log = server.output
        print(f"\n10 kills in {elapsed:.1f} s; probes {prober.passed}/{total}")


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[int] = []

    def closeStdin(self) -> None:
        pass

    def signalProcess(self, signum: int) -> None:
        self.signals.append(signum)


class ProcessReactor(MemoryReactorClock):
    """
    A clock that records the processes it is asked to start.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawnedProcesses: list[WorkerProtocol] = []

    def spawnProcess(
        self, protocol: WorkerProtocol, *args: object, **kw: object
    ) -> FakeProcess:
        process = FakeProcess(1000 + len(self.spawnedProcesses))
        protocol.makeConnection(process)  # type: ignore[arg-type]
        self.spawnedProcesses.append(protocol)
        return process


class SupervisorTests(TestCase):
    """
    The supervisor's bookkeeping, without processes.
    """

    def setUp(self) -> None:
        self.reactor = ProcessReactor()
        self.supervisor = Supervisor([], [], lambda d, r: None, 2, self.reactor, 10)
        self.given_up: list[str] = []
        self.supervisor.on_give_up = self.given_up.append
        self.supervisor.startService()

    def end(self, number: int, status: int = 3) -> None:
        protocol = self.supervisor.workers[number]
        self.supervisor.worker_ended(
            protocol, Failure(ProcessTerminated(exitCode=status))
        )

    def end_process(self, protocol: WorkerProtocol, status: int = 0) -> None:
        self.supervisor.worker_ended(
            protocol, Failure(ProcessTerminated(exitCode=status))
        )

    def ready(self, protocol: WorkerProtocol) -> None:
        """
        The worker says it is ready, as a real one does: a JSON log event on
        its standard output.
        """
        event = {"log_level": LogLevel.debug, "log_namespace": "w", READY_FIELD: True}
        protocol.childDataReceived(1, eventAsJSON(event).encode() + b"\n")

    def next_delay(self) -> float:
        [call] = self.reactor.getDelayedCalls()
        return round(call.getTime() - self.reactor.seconds(), 3)

    def respawn(self) -> None:
        [call] = self.reactor.getDelayedCalls()
        self.reactor.advance(call.getTime() - self.reactor.seconds())

    def test_quick_deaths_back_off_then_give_up(self) -> None:
        delays = []
        for _ in range(MAX_QUICK_DEATHS - 1):
            spawned = len(self.reactor.spawnedProcesses)
            self.end(1)
            [call] = self.reactor.getDelayedCalls()
            delays.append(round(call.getTime() - self.reactor.seconds(), 3))
            self.reactor.advance(call.getTime() - self.reactor.seconds())
            self.assertEqual(len(self.reactor.spawnedProcesses), spawned + 1)
        self.assertEqual(delays, [0.1, 0.2, 0.4, 0.8])
        self.assertEqual(self.given_up, [])
        self.end(1)
        self.assertEqual(len(self.given_up), 1)
        self.assertIn("exited with status 3", self.given_up[0])

    def test_a_worker_that_lived_is_replaced_at_once(self) -> None:
        self.ready(self.supervisor.workers[2])
        self.reactor.advance(60)
        self.end(2)
        self.assertEqual(self.next_delay(), 0)

    def test_ready_event_is_logged_and_not_relayed(self) -> None:
        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        worker = self.supervisor.workers[1]
        self.ready(worker)
        self.assertEqual(worker.ready_at, self.reactor.seconds())
        texts = [formatEvent(e) for e in events]
        self.assertEqual(texts, [f"worker 1 ready (pid {worker.pid})"])

    def test_crashes_back_off_and_never_give_up(self) -> None:
        """
        Workers that die at once after they were ready, twelve times in a
        row: replaced every time, the back-off doubling from 0.1 s up to
        1 s; the other worker is never touched and nothing gives up.
        """
        other = self.supervisor.workers[1]
        self.ready(other)
        delays = []
        for _ in range(12):
            self.ready(self.supervisor.workers[2])
            self.end(2, status=-9)
            delays.append(self.next_delay())
            self.respawn()
        self.assertEqual(delays, [0.1, 0.2, 0.4, 0.8] + [1.0] * 8)
        self.assertEqual(self.given_up, [])
        self.assertIs(self.supervisor.workers[1], other)
        self.assertEqual(other.transport.signals, [])  # type: ignore[attr-defined]

    def test_backoff_counts_from_the_start_and_resets_after_a_while(self) -> None:
        """
        The back-off is counted from the crashed worker's start (one that
        served longer than it is replaced at once), and a worker that has
        served L{STABLE_UPTIME} seconds starts the count again.
        """
        for _ in range(6):
            self.ready(self.supervisor.workers[2])
            self.end(2)
            self.respawn()
        self.ready(self.supervisor.workers[2])
        self.reactor.advance(0.25)
        self.end(2)
        self.assertEqual(self.next_delay(), 0.75)
        self.respawn()
        self.ready(self.supervisor.workers[2])
        self.reactor.advance(STABLE_UPTIME)
        self.end(2)
        self.assertEqual(self.next_delay(), 0)
        self.respawn()
        self.ready(self.supervisor.workers[2])
        self.end(2)
        self.assertEqual(self.next_delay(), 0.2)

    def test_start_up_failures_never_give_up_while_a_worker_serves(self) -> None:
        """
        Start-up failures in a row beyond L{MAX_QUICK_DEATHS} while the
        other worker serves: an error line, a retry every L{MAX_BACKOFF}
        seconds, no give-up.
        """
        self.ready(self.supervisor.workers[1])
        for _ in range(MAX_QUICK_DEATHS + 3):
            self.end(2)
            self.respawn()
        self.assertEqual(self.given_up, [])
        self.end(2)
        self.assertEqual(self.next_delay(), MAX_BACKOFF)
        self.assertIsNone(self.supervisor.failed)

    def test_dead_workers_counters_stay_in_the_totals(self) -> None:
        worker = self.supervisor.workers[1]
        assert isinstance(worker, WorkerProtocol)
        worker.counters = {"echo": ServiceCounters(connections_total=3, bytes_in=9)}
        self.reactor.advance(60)
        self.end(1)
        self.supervisor.workers[2].counters = {
            "echo": ServiceCounters(connections_total=1, bytes_in=1)
        }
        totals = self.supervisor.totals()
        self.assertEqual(
            (totals["echo"].connections_total, totals["echo"].bytes_in), (4, 10)
        )

    def test_reload_replaces_one_slot_at_a_time(self) -> None:
        """
        L{Supervisor.reload}: slot 1 gets a new worker; the old one is told
        to drain (SIGTERM) only once the new one is ready; then slot 2.
        """
        old = dict(self.supervisor.workers)
        for worker in old.values():
            self.ready(worker)
        self.supervisor.reload()
        new1 = self.supervisor.incoming[1]
        self.assertEqual(sorted(self.supervisor.incoming), [1])
        self.assertEqual(old[1].transport.signals, [])  # type: ignore[attr-defined]
        self.ready(new1)
        self.assertEqual(old[1].transport.signals, [signal.SIGTERM])  # type: ignore[attr-defined]
        self.assertIs(self.supervisor.workers[1], new1)
        self.assertEqual(sorted(self.supervisor.incoming), [2])
        self.assertEqual(old[2].transport.signals, [])  # type: ignore[attr-defined]
        self.ready(self.supervisor.incoming[2])
        self.assertEqual(old[2].transport.signals, [signal.SIGTERM])  # type: ignore[attr-defined]
        self.assertEqual(self.supervisor.incoming, {})
        for worker in old.values():
            self.end_process(worker)
        self.assertEqual(self.supervisor.draining, [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(len(self.reactor.spawnedProcesses), 4)

    def test_a_replacement_that_fails_leaves_the_old_worker_serving(self) -> None:
        old = dict(self.supervisor.workers)
        for worker in old.values():
            self.ready(worker)
        self.supervisor.reload()
        self.end_process(self.supervisor.incoming[1], status=3)
        self.assertEqual(self.supervisor.workers, old)
        self.assertEqual(self.supervisor.incoming, {})
        self.assertEqual(old[1].transport.signals, [])  # type: ignore[attr-defined]
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        # Another reload may be asked for later.
        self.supervisor.reload()
        self.assertEqual(sorted(self.supervisor.incoming), [1])

    def test_a_crash_during_a_reload_leaves_one_worker_per_slot(self) -> None:
        """
        The slot's worker crashes while its replacement starts: the
        replacement takes the slot when ready, and the crash's pending
        respawn is cancelled.
        """
        for worker in list(self.supervisor.workers.values()):
            self.ready(worker)
        self.reactor.advance(0.01)
        self.supervisor.reload()
        incoming = self.supervisor.incoming[1]
        self.end(1, status=-9)
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)
        self.ready(incoming)
        self.assertIs(self.supervisor.workers[1], incoming)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stop_during_a_reload_drains_everyone(self) -> None:
        old = dict(self.supervisor.workers)
        for worker in old.values():
            self.ready(worker)
        self.supervisor.reload()
        self.ready(self.supervisor.incoming[1])
        incoming = self.supervisor.incoming[2]
        done = self.supervisor.stopService()
        alive = [*self.supervisor.workers.values(), incoming, old[1]]
        for worker in alive:
            self.assertIn(signal.SIGTERM, worker.transport.signals)  # type: ignore[attr-defined]
        for worker in alive:
            self.assertNoResult(done)
            self.end_process(worker)
        self.successResultOf(done)

    def test_add_counters(self) -> None:
        total = ServiceCounters(bytes_in=1, dropped=Counter({"loop_port": 1}))
        add_counters(
            total, ServiceCounters(bytes_in=2, dropped=Counter({"loop_port": 2}))
        )
        self.assertEqual((total.bytes_in, total.dropped["loop_port"]), (3, 3))


class WorkersWithOperationsTests(pyunit.TestCase):
    """
    C{--workers 2} with systemd's sockets, C{--metrics} and sd_notify.
    """

    def test_socket_activation_tcp_and_udp(self) -> None:
        """
        Under the real C{systemd-socket-activate}, without names, two
        workers share the inherited TCP and UDP sockets.
        """
        from tests.test_systemd import (
            ActivatedServer,
            bound_udp,
            exchange_udp,
            listening_tcp,
            port_of,
        )

        listener, udp = listening_tcp(self), bound_udp(self)
        tcp_port, udp_port = port_of(listener), port_of(udp)
        server = ActivatedServer(
            self,
            [listener, udp],
            ["--echo", "systemd:index=0", "--udp", "systemd:index=1",
             "--no-upper", "--no-welcome", "--workers", "2"],
        )  # fmt: skip
        listener.close()
        udp.close()
        # The tool starts sockecho on the first connection.
        self.assertEqual(tcp_exchange(tcp_port, b"first"), b"first")
        for number in (1, 2):
            server.wait_for(rf"\[worker {number} [^\]]*\] udp listening on")
        for i in range(10):
            self.assertEqual(tcp_exchange(tcp_port, b"a%d" % i), b"a%d" % i)
        self.assertEqual(exchange_udp(self, udp_port, b"u"), b"u")

    def test_metrics_sum_the_workers_and_readyz_turns_503(self) -> None:
        """
        The supervisor serves C{/metrics} with every worker's figures
        summed (workers report every second), and C{/readyz} answers 503
        once the drain starts.
        """
        from tests.test_metrics import http_get

        metrics_port = socket.socket()
        metrics_port.bind((HOST, 0))
        port = metrics_port.getsockname()[1]
        metrics_port.close()
        server = start_workers(
            self, 2, "--metrics", f"tcp:{port}:interface={HOST}", "--drain-timeout", "3"
        )
        for i in range(20):
            tcp_exchange(server.ports["echo"], b"m%02d" % i)
        wanted = 'sockecho_connections_total{service="echo"} 20.0'
        received = 'sockecho_received_bytes_total{service="echo"} 60.0'
        scraped = [""]

        def summed() -> bool:
            # Both: a worker's report made while its last connection was
            # still open counts that connection but not yet its bytes.
            scraped[0] = http_get(port, "/metrics")[2]
            return wanted in scraped[0] and received in scraped[0]

        wait_until(summed, 10, interval=0.1)
        text = scraped[0]
        self.assertIn(wanted, text)
        self.assertIn(received, text)
        self.assertEqual(http_get(port, "/readyz")[::2], (200, "ready\n"))
        held = socket.create_connection(
            (HOST, server.ports["echo"]), timeout=IO_TIMEOUT
        )
        self.addCleanup(held.close)
        held.sendall(b"x")
        self.assertEqual(held.recv(1), b"x")
        server.process.send_signal(signal.SIGTERM)
        server.wait_for(r"shutting down: draining 2 worker")
        status, _, body = http_get(port, "/readyz")
        self.assertEqual(status, 503, body)
        held.close()
        self.assertIn(server.process.wait(20), CLEAN_SIGTERM_EXIT)

    def test_ready_once_listening_stopping_at_the_drain(self) -> None:
        from tests.test_systemd import NotifiedServer, NotifySocket

        notify = NotifySocket(self)
        server = NotifiedServer(
            self,
            [*any_port_args(), "--workers", "2"],
            {"NOTIFY_SOCKET": notify.variable},
        )
        fields, pid = notify.receive_until("READY")
        self.assertEqual(pid, server.process.pid)
        server.process.send_signal(signal.SIGTERM)
        fields, _ = notify.receive_until("STOPPING")
        self.assertEqual(fields["STOPPING"], "1")
        self.assertIn(server.wait_exit(), CLEAN_SIGTERM_EXIT)
