"""
L{twisted_echo.faults.refuse}: a listening port paused for several
reasons at once; a C{refuse} fault set, replaced and cleared at run time
(L{twisted_echo.faults.runtime.StreamFaultSlot} with its listeners), on
a L{task.Clock} and stand-in ports, and through the admin API of a real
C{twistd}: the listener stops accepting from the change on, and accepts
again once the profile is cleared.
"""

from __future__ import annotations

import re
import socket
import unittest
from collections import Counter
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.process import wait_until
from tests.test_faults_listeners import faults_total
from twisted_echo.client.endpoints import parse_stream_target
from twisted_echo.client.faultreport import FaultRunConfig, observe
from twisted_echo.faults.engine import ListenerFaults
from twisted_echo.faults.profile import parse_profile
from twisted_echo.faults.refuse import (
    RefuseWindows,
    accepting,
    pause_accepting,
    resume_accepting,
)
from twisted_echo.faults.runtime import StreamFaultSlot, SwapRefusedError
from twisted_echo.testing.faults import AdminClient
from twisted_echo.testing.spawn import SockechoProcess, start_sockecho

HOST = "127.0.0.1"
#: A connection's own timeout: a listener that does not accept answers
#: nothing within it.
CONFIG = FaultRunConfig(size=100, timeout=1.0, half_close_wait=0.3)


class Port:
    """
    Stands in for a listening port: whether it is read.
    """

    connected = True

    def __init__(self) -> None:
        self.reading = True
        self.calls: list[str] = []

    def stopReading(self) -> None:  # noqa: N802
        self.reading = False
        self.calls.append("stop")

    def startReading(self) -> None:  # noqa: N802
        self.reading = True
        self.calls.append("start")


class Listener:
    """
    Stands in for a L{twisted_echo.listening.listen.StreamListenerService}.
    """

    description = "tcp:7"
    windows: Any = None

    def __init__(self) -> None:
        self.port: Any = Port()


class Factory:
    faults: Any = None


class PauseTests(SynchronousTestCase):
    def test_reasons(self) -> None:
        """
        The port accepts again once every reason is lifted; a reason
        given twice, or lifted when not in force, changes nothing.
        """
        port = Port()
        pause_accepting(port, "refuse")
        pause_accepting(port, "refuse")
        pause_accepting(port, "operator")
        resume_accepting(port, "refuse")
        self.assertEqual((port.reading, accepting(port)), (False, False))
        resume_accepting(port, "nobody")
        resume_accepting(port, "operator")
        self.assertEqual((port.reading, accepting(port)), (True, True))
        self.assertEqual(port.calls, ["stop", "start"])

    def test_window_does_not_undo_another_pause(self) -> None:
        clock = Clock()
        port = Port()
        (refuse,) = parse_profile("refuse=5s").faults
        windows = RefuseWindows(clock, port, refuse, Counter(), "echo")
        windows.start()
        pause_accepting(port, "operator")
        clock.advance(5)
        self.assertFalse(port.reading)
        resume_accepting(port, "operator")
        self.assertTrue(port.reading)

    def test_stop_ends_the_window(self) -> None:
        clock = Clock()
        port = Port()
        (refuse,) = parse_profile("refuse=5s,every=10s").faults
        windows = RefuseWindows(clock, port, refuse, Counter(), "echo")
        windows.start()
        windows.stop()
        self.assertTrue(port.reading)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_port_gone(self) -> None:
        """
        A port that stopped listening is not read again.
        """
        port = Port()
        pause_accepting(port, "refuse")
        port.connected = False
        resume_accepting(port, "refuse")
        self.assertEqual(port.calls, ["stop"])


class SlotTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.counts: Counter[str] = Counter()
        self.listeners = [Listener(), Listener()]
        self.factory = Factory()
        self.slot = StreamFaultSlot(
            self.factory, "echo", self.clock, self.counts, False, self.listeners
        )

    def reading(self) -> list[bool]:
        return [listener.port.reading for listener in self.listeners]

    def test_set_and_clear(self) -> None:
        """
        A C{refuse} set at run time stops every listener's accepting from
        now for its duration; clearing the profile ends the window at once.
        """
        self.slot.replace("refuse=10s")
        self.assertEqual(self.reading(), [False, False])
        self.assertEqual(self.counts, Counter({"refuse": 2}))
        self.clock.advance(10)
        self.assertEqual(self.reading(), [True, True])
        self.slot.replace("refuse=10s;delay=1s")
        self.clock.advance(1)
        self.slot.clear()
        self.assertEqual(self.reading(), [True, True])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIsNone(self.factory.faults)

    def test_replaced_without_refuse(self) -> None:
        self.slot.replace("refuse=10s,every=20s")
        self.slot.replace("delay=1s")
        self.assertEqual(self.reading(), [True, True])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual([lst.windows for lst in self.listeners], [None, None])

    def test_startup_windows_stopped(self) -> None:
        """
        Windows a listener started as it began listening (C{--faults}) end
        when the profile is cleared.
        """
        (refuse,) = parse_profile("refuse=60s").faults
        listener = self.listeners[0]
        listener.windows = RefuseWindows(
            self.clock, listener.port, refuse, self.counts, "echo"
        )
        listener.windows.start()
        self.factory.faults = ListenerFaults(
            parse_profile("refuse=60s"), "echo", self.clock, self.counts, False
        )
        self.slot.clear()
        self.assertEqual(self.reading(), [True, True])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_not_listening(self) -> None:
        self.listeners[1].port = None
        self.slot.replace("refuse=10s")
        self.assertEqual(self.listeners[0].port.reading, False)
        self.assertIsNone(self.listeners[1].windows)

    def test_without_listeners_refused(self) -> None:
        slot = StreamFaultSlot(Factory(), "echo", self.clock, self.counts, False)
        self.assertRaises(SwapRefusedError, slot.replace, "refuse=1s")


def admin(server: SockechoProcess) -> AdminClient:
    host, port = server.address("metrics")
    return AdminClient(f"http://{host}:{port}/faults")


class RunTimeTests(unittest.TestCase):
    """
    On a real C{twistd}, through its admin API.
    """

    def start(self, *options: str) -> SockechoProcess:
        server = start_sockecho("--no-upper", "--no-welcome", "--no-udp", *options)
        self.addCleanup(server.kill)
        return server

    def target(self, server: SockechoProcess) -> Any:
        host, port = server.address("echo")
        return parse_stream_target(f"tcp:{host}:{port}")

    def test_put_then_delete(self) -> None:
        """
        PUT C{refuse=60s}: the next connect is not accepted (the backlog
        holds it, nothing answers within the client's timeout), the window
        is logged and counted; DELETE: the connect held in the backlog is
        accepted and answered, and the next connection is clean.
        """
        server = self.start()
        client = admin(server)
        client.set("echo", "refuse=60s")
        seen = observe(self.target(server), CONFIG)
        self.assertEqual((seen.ending, seen.received), ("stall", 0))
        self.assertEqual(faults_total(server, "refuse"), 1)
        self.assertTrue(
            any(
                re.search(
                    r"echo listener tcp:\S+: fault refuse: not accepting for 60 s", line
                )
                for line in server.log_lines()
            ),
            server.log_lines()[-5:],
        )
        held = socket.create_connection(server.address("echo"), timeout=10)
        self.addCleanup(held.close)
        held.sendall(b"held")
        client.set("echo", None)
        self.assertEqual(held.recv(100), b"held")
        seen = observe(self.target(server), CONFIG)
        self.assertEqual((seen.ending, seen.received, seen.seen), ("clean", 100, []))

    def test_clear_a_startup_refuse(self) -> None:
        server = self.start("--faults", "echo=refuse=60s")
        self.assertEqual(observe(self.target(server), CONFIG).ending, "stall")
        admin(server).set("echo", "delay=1ms")
        seen = observe(self.target(server), CONFIG)
        self.assertEqual((seen.ending, seen.received), ("clean", 100))
        self.assertTrue(wait_until(lambda: faults_total(server, "delay") >= 1))

    def test_backlog_full_is_a_connect_timeout(self) -> None:
        """
        With C{--backlog 1}, once connects made during a window fill the
        backlog, the client's own connect timeout fires (named C{refuse});
        once the profile is cleared, it connects and is answered.
        """
        server = self.start("--backlog", "1", "--faults", "echo=refuse=60s")
        address = server.address("echo")
        for _ in range(4):
            sock = socket.socket()
            self.addCleanup(sock.close)
            sock.settimeout(0.3)
            try:
                sock.connect(address)
            except TimeoutError:
                break
        quick = FaultRunConfig(size=100, timeout=1.0, connect_timeout=0.3)
        seen = observe(self.target(server), quick)
        self.assertEqual(seen.ending, "connect-timeout")
        self.assertEqual(seen.seen, ["refuse (connect timed out: backlog full?)"])
        admin(server).set("echo", None)
        # The backlog is accepted as the reactor next turns; a SYN dropped
        # before that is sent again (after 1 s): the default connect
        # timeout covers it.
        seen = observe(self.target(server), CONFIG)
        self.assertEqual((seen.ending, seen.received), ("clean", 100))
