"""
C{--drain-delay} (L{twisted_echo.app.draindelay}): the wait between the
signal to stop and the drain, in memory (L{task.Clock}) for the single
process, the supervisor and the second signal; then over real C{twistd}
processes: during the wait a new connection is served and C{/readyz}
answers 503, after it the process ends; a second SIGTERM ends the wait.
The HAProxy acceptance (no failed request behind a real load balancer)
is in L{tests.test_haproxy}.
"""

from __future__ import annotations

import http.client
import os
import signal
import unittest as pyunit

from twisted.application.service import Service
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.memory import connect, run_clock
from tests.process import (
    CLEAN_SIGTERM_EXIT,
    HOST,
    STOP_TIMEOUT,
    RunningServer,
    any_port_args,
    start_server,
    tcp_exchange,
)
from tests.test_signals import FakeServer
from tests.test_supervisor import ProcessReactor
from twisted_echo.app.draindelay import DrainDelay
from twisted_echo.app.options import Options
from twisted_echo.app.server import SockechoService
from twisted_echo.app.signals import SignalService
from twisted_echo.app.supervisor import KILL_GRACE, Supervisor
from twisted_echo.policies.counters import ServiceCounters
from twisted_echo.policies.limits import DRAIN_QUIET
from twisted_echo.services.echo import Echo, EchoFactory


class DrainDelayTests(TestCase):
    """
    L{DrainDelay} on a L{Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.drains: list[float] = []

    def drain(self) -> None:
        self.drains.append(self.clock.seconds())

    def test_no_delay_drains_at_once_without_a_line(self) -> None:
        with capturedLogs() as events:
            DrainDelay(0, self.clock).start(self.drain)
        self.assertEqual(self.drains, [0])
        self.assertEqual(events, [])

    def test_drains_after_the_delay_with_one_line(self) -> None:
        delay = DrainDelay(5, self.clock)
        with capturedLogs() as events:
            delay.start(self.drain)
        [line] = [formatEvent(e) for e in events]
        self.assertIn("shutting down in 5 s (--drain-delay)", line)
        self.assertIn("/readyz answers 503", line)
        self.assertTrue(delay.waiting)
        self.clock.advance(4.999)
        self.assertEqual(self.drains, [])
        self.clock.advance(0.001)
        self.assertEqual(self.drains, [5])
        self.assertFalse(delay.waiting)
        self.assertFalse(delay.cut_short("received SIGTERM"))
        self.assertEqual(self.drains, [5])

    def test_cut_short_drains_now_once(self) -> None:
        delay = DrainDelay(30, self.clock)
        delay.start(self.drain)
        self.clock.advance(2)
        with capturedLogs() as events:
            self.assertTrue(delay.cut_short("received SIGTERM"))
        self.assertEqual(self.drains, [2])
        self.assertEqual(
            [formatEvent(e) for e in events],
            ["received SIGTERM during the drain delay; draining now"],
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(delay.cut_short("received SIGINT"))
        self.clock.advance(60)
        self.assertEqual(self.drains, [2])

    def test_cancel_forgets_the_drain(self) -> None:
        delay = DrainDelay(3, self.clock)
        delay.start(self.drain)
        delay.cancel()
        self.clock.advance(10)
        self.assertEqual(self.drains, [])
        self.assertFalse(delay.cut_short("received SIGTERM"))

    def test_negative_is_refused(self) -> None:
        self.assertRaises(ValueError, DrainDelay, -1, self.clock)


class FakeListener(Service):
    """
    Stands in for a listener: records when it is stopped.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.stopped_at: float | None = None

    def stopService(self) -> None:
        Service.stopService(self)
        self.stopped_at = self.clock.seconds()


class SockechoServiceDelayTests(TestCase):
    """
    One process: readiness goes at once, listening and serving go on
    through the delay, the drain timeout counts from its end.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        counters = ServiceCounters()
        self.factory = EchoFactory(self.clock, counters)
        self.service = SockechoService(
            {"echo": counters},
            factories=[self.factory],
            drain_timeout=10,
            drain_delay=5,
            clock=self.clock,
        )
        self.listener = FakeListener(self.clock)
        self.service.addService(self.listener)
        self.started: list[float] = []
        self.service.drain_started.append(
            lambda: self.started.append(self.clock.seconds())
        )
        self.service.startService()

    def test_serves_through_the_delay_then_drains(self) -> None:
        held, held_transport = connect(self.factory, Echo)
        d = self.service.stopService()
        self.assertEqual(self.started, [0])
        run_clock(self.clock, 4.75)
        # Still listening, still serving, old and new connections alike.
        self.assertIsNone(self.listener.stopped_at)
        protocol, transport = connect(self.factory, Echo)
        protocol.dataReceived(b"during the delay")
        self.assertEqual(transport.value(), b"during the delay")
        self.assertFalse(held_transport.disconnecting)
        self.assertNoResult(d)
        run_clock(self.clock, 0.25)
        self.assertEqual(self.listener.stopped_at, 5)
        run_clock(self.clock, DRAIN_QUIET * 1.5)
        self.assertTrue(held_transport.disconnecting)
        self.assertTrue(transport.disconnecting)
        for p in (held, protocol):
            p.connectionLost(None)  # type: ignore[arg-type]
        self.successResultOf(d)

    def test_drain_timeout_counts_from_the_end_of_the_delay(self) -> None:
        """
        A connection kept busy (never quiet) is aborted C{--drain-timeout}
        seconds after the delay ends, not after the signal.
        """
        protocol, _ = connect(self.factory, Echo)
        d = self.service.stopService()
        aborted = self.factory.counters.timeouts

        def busy_for(seconds: float) -> None:
            for _ in range(round(seconds / 0.25)):
                protocol.dataReceived(b"x")
                self.clock.advance(0.25)

        busy_for(5 + 9.75)
        self.assertEqual(aborted["drain"], 0)
        busy_for(0.5)
        self.assertEqual(aborted["drain"], 1)
        protocol.connectionLost(None)  # type: ignore[arg-type]
        self.successResultOf(d)

    def test_second_signal_drains_at_once(self) -> None:
        d = self.service.stopService()
        self.clock.advance(1)
        self.assertTrue(self.service.end_drain_delay("received SIGTERM"))
        self.assertEqual(self.listener.stopped_at, 1)
        self.successResultOf(d)
        self.assertFalse(self.service.end_drain_delay("received SIGTERM"))

    def test_no_delay_is_todays_drain(self) -> None:
        self.service.delay.delay = 0
        d = self.service.stopService()
        self.assertEqual(self.listener.stopped_at, 0)
        self.successResultOf(d)


class SupervisorDelayTests(TestCase):
    """
    With workers: the supervisor's hooks (C{/readyz}) at once, the
    workers' SIGTERM after the delay.
    """

    def setUp(self) -> None:
        self.reactor = ProcessReactor()
        self.supervisor = Supervisor(
            [], [], lambda d, r: None, 2, self.reactor, 10, drain_delay=5
        )
        self.supervisor.startService()
        self.started: list[float] = []
        self.supervisor.drain_started.append(
            lambda: self.started.append(self.reactor.seconds())
        )

    def signals(self) -> list[list[int]]:
        return [
            p.transport.signals  # type: ignore[union-attr]
            for p in self.reactor.spawnedProcesses
        ]

    def end_all(self) -> None:
        from twisted.internet.error import ProcessTerminated

        for protocol in list(self.supervisor.workers.values()):
            self.supervisor.worker_ended(protocol, Failure(ProcessTerminated(0)))

    def test_workers_serve_through_the_delay(self) -> None:
        """
        With workers, the supervisor's C{/readyz} is 503 during the delay
        while the workers serve (a SIGINT sent to them changes nothing);
        a second SIGTERM makes the supervisor tell them to drain.
        """
        d = self.supervisor.stopService()
        self.assertEqual(self.started, [0])
        self.reactor.advance(4.9)
        self.assertEqual(self.signals(), [[], []])
        self.reactor.advance(0.1)
        self.assertEqual(self.signals(), [[signal.SIGTERM], [signal.SIGTERM]])
        # The kill deadline counts from the end of the delay.
        self.reactor.advance(10 + KILL_GRACE - 0.1)
        self.assertEqual(self.signals(), [[signal.SIGTERM], [signal.SIGTERM]])
        self.reactor.advance(0.1)
        self.assertEqual(
            self.signals(),
            [[signal.SIGTERM, signal.SIGKILL], [signal.SIGTERM, signal.SIGKILL]],
        )
        self.end_all()
        self.successResultOf(d)

    def test_second_signal_drains_the_workers_at_once(self) -> None:
        d = self.supervisor.stopService()
        self.reactor.advance(1)
        self.assertTrue(self.supervisor.end_drain_delay("received SIGINT"))
        self.assertEqual(self.signals(), [[signal.SIGTERM], [signal.SIGTERM]])
        self.end_all()
        self.successResultOf(d)

    def test_workers_ending_during_the_delay_end_it(self) -> None:
        d = self.supervisor.stopService()
        self.end_all()
        self.successResultOf(d)
        self.reactor.advance(5)
        self.assertEqual(self.signals(), [[], []])
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class DelayServer(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.causes: list[str] = []
        self.waiting = True

    def end_drain_delay(self, cause: str) -> bool:
        self.causes.append(cause)
        waiting, self.waiting = self.waiting, False
        return waiting


class SecondSignalTests(TestCase):
    """
    L{SignalService} takes SIGTERM and SIGINT over once the drain starts
    (the signal itself is not sent).
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        # Twisted before 25 starts a MemoryReactor as stopped.
        self.reactor.hasStopped = False
        self.server = DelayServer()
        self.service = SignalService(self.server, self.reactor)

    def test_handlers_taken_over_at_the_drain_and_restored(self) -> None:
        before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
        self.service.privilegedStartService()
        self.addCleanup(self.service.stopService)
        self.assertEqual(
            (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)),
            before,
        )
        self.service.drain_started()
        now = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
        self.assertEqual(now, (self.service._on_stop_again,) * 2)
        self.service.stopService()
        self.assertEqual(
            (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)),
            before,
        )

    def test_second_signal_ends_the_delay_then_is_ignored(self) -> None:
        with capturedLogs() as events:
            self.service.stop_again(signal.SIGTERM)
            self.service.stop_again(signal.SIGINT)
        self.assertEqual(self.server.causes, ["received SIGTERM", "received SIGINT"])
        self.assertEqual(
            [formatEvent(e) for e in events],
            ["received SIGINT while draining; ignored"],
        )
        self.assertFalse(self.reactor.hasStopped)


class OptionTests(TestCase):
    def test_default_is_no_delay(self) -> None:
        config = Options()
        config.parseOptions([])  # type: ignore[no-untyped-call]
        self.assertEqual(config["drain-delay"], 0)

    def test_seconds(self) -> None:
        config = Options()
        config.parseOptions(["--drain-delay", "2.5"])  # type: ignore[no-untyped-call]
        self.assertEqual(config["drain-delay"], 2.5)

    def test_bad_value_is_one_clear_error(self) -> None:
        from twisted.python.usage import UsageError

        for bad in ("-1", "soon"):
            config = Options()
            error = self.assertRaises(
                UsageError,
                config.parseOptions,  # type: ignore[no-untyped-call]
                ["--drain-delay", bad],
            )
            self.assertIn("--drain-delay", str(error))


def readyz(port: int) -> int:
    """
    @return: the status of C{GET /readyz} on 127.0.0.1:C{port}.
    """
    connection = http.client.HTTPConnection(HOST, port, timeout=STOP_TIMEOUT)
    try:
        connection.request("GET", "/readyz")
        return connection.getresponse().status
    finally:
        connection.close()


def metrics_port(server: RunningServer) -> int:
    match = server.wait_for(r"\] metrics listening on tcp:127\.0\.0\.1:(\d+)$")
    return int(match.group(1))


class TwistdTests(pyunit.TestCase):
    """
    Real C{twistd -n sockecho} processes.
    """

    def delay_then_drain(self, server: RunningServer) -> None:
        metrics = metrics_port(server)
        self.assertEqual(readyz(metrics), 200)
        server.process.send_signal(signal.SIGTERM)
        server.wait_for(r"shutting down in \S+ s \(--drain-delay\)")
        # During the delay: not ready, yet a new connection is served.
        self.assertEqual(readyz(metrics), 503)
        echo = tcp_exchange(server.ports["echo"], b"still here")
        self.assertEqual(echo, b"still here")
        self.assertEqual(tcp_exchange(server.ports["upper"], b"up"), b"UP")

    def test_single_process_serves_through_the_delay_then_exits(self) -> None:
        server = start_server(
            self,
            ["--metrics", f"tcp:0:interface={HOST}", "--drain-delay", "2"],
        )
        self.delay_then_drain(server)
        status = server.process.wait(STOP_TIMEOUT)
        self.assertIn(status, CLEAN_SIGTERM_EXIT)
        text = "\n".join(server.output)
        delay_at = text.index("(--drain-delay)")
        served_at = text.index("echo connection from", delay_at)
        drain_at = text.index("shutting down: no new connections", delay_at)
        self.assertLess(served_at, drain_at)
        self.assertNotIn("Traceback", text)

    def test_second_sigterm_drains_at_once(self) -> None:
        """
        With a delay far longer than the stop timeout, the process ends
        within it only because the second SIGTERM cut the delay short.
        """
        server = start_server(
            self,
            ["--metrics", f"tcp:0:interface={HOST}", "--drain-delay", "600"],
        )
        self.delay_then_drain(server)
        status = server.stop(signal.SIGTERM)
        self.assertIn(status, CLEAN_SIGTERM_EXIT)
        text = "\n".join(server.output)
        self.assertIn("received SIGTERM during the drain delay; draining now", text)
        self.assertNotIn("Traceback", text)

    def test_workers_serve_through_the_delay(self) -> None:
        """
        With workers, the supervisor's C{/readyz} is 503 during the delay
        while the workers serve (a SIGINT sent to them changes nothing);
        a second SIGTERM makes the supervisor tell them to drain.
        """
        server = RunningServer(
            self,
            [
                *any_port_args(),
                "--workers",
                "2",
                "--metrics",
                f"tcp:0:interface={HOST}",
                "--drain-delay",
                "600",
            ],
        )
        server.wait_listening()
        pids = []
        for number in (1, 2):
            server.wait_for(rf"\[worker {number} .*\] udp listening")
            started = server.wait_for(rf"worker {number} started \(pid (\d+)\)")
            pids.append(int(started.group(1)))
        # A terminal's Ctrl-C reaches the workers too: they leave it to the
        # supervisor, which waits out the delay.
        for pid in pids:
            os.kill(pid, signal.SIGINT)
        self.delay_then_drain(server)
        self.assertFalse(
            [line for line in server.output if "draining" in line and "worker" in line]
        )
        status = server.stop(signal.SIGTERM)
        self.assertIn(status, CLEAN_SIGTERM_EXIT)
        text = "\n".join(server.output)
        self.assertIn("received SIGTERM during the drain delay; draining now", text)
        self.assertRegex(text, r"\[worker 1 .*\] received SIGTERM, draining")
        self.assertNotRegex(text, r"\[worker \d .*\] received SIGINT")
        self.assertNotIn("Traceback", text)
