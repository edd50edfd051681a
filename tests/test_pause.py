"""
L{twisted_echo.listening.pause}: a server's stream and datagram listeners
stop reading their listening ports and start again; the metrics listener
and listeners not listening are left alone; a C{refuse} fault's windows and
a pause do not undo each other. (Over real sockets: tests/test_health.py's
C{TwistdTests}.)
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_echo.app.refusing import RefusingListenerService
from twisted_echo.faults.profile import parse_profile
from twisted_echo.listening.listen import (
    DatagramListenerService,
    ListenerService,
    StreamListenerService,
)
from twisted_echo.listening.pause import pause_listeners, service_listeners


class FakePort:
    def __init__(self) -> None:
        self.reading = True

    def stopReading(self) -> None:
        self.reading = False

    def startReading(self) -> None:
        self.reading = True

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 7007)


class FakeEndpoint:
    def __init__(self, port: FakePort) -> None:
        self.port = port

    def listen(self, factory: object) -> Deferred[FakePort]:
        return succeed(self.port)


def stream(port: FakePort | None) -> StreamListenerService:
    listener = StreamListenerService("tcp:0", None, None, "echo")  # type: ignore[arg-type]
    listener.port = port
    return listener


def datagram(port: FakePort) -> DatagramListenerService:
    listener = DatagramListenerService("udp:0", None, None, None, "udp")  # type: ignore[arg-type]
    listener.port = port
    return listener


class PauseTests(SynchronousTestCase):
    def test_pause_and_resume(self) -> None:
        tcp, udp, metrics = FakePort(), FakePort(), FakePort()
        other = ListenerService("tcp:0", "metrics")
        other.port = metrics
        server: list[Any] = [stream(tcp), datagram(udp), other, stream(None)]
        self.assertEqual(len(service_listeners(server)), 3)
        self.assertEqual(pause_listeners(server, True), 2)
        self.assertEqual(
            (tcp.reading, udp.reading, metrics.reading), (False, False, True)
        )
        self.assertTrue(all(listener.paused for listener in server[:2]))
        self.assertEqual(pause_listeners(server, False), 2)
        self.assertEqual((tcp.reading, udp.reading), (True, True))
        self.assertFalse(server[0].paused)


class RefuseTests(SynchronousTestCase):
    """
    A listener with a C{refuse} fault: a window's end does not resume a
    paused listener, and resuming does not end a window early.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.port = FakePort()
        fault = parse_profile("refuse=2s").listener_fault("refuse")
        assert fault is not None
        self.listener = RefusingListenerService(
            "tcp:0",
            FakeEndpoint(self.port),
            None,
            "echo",
            fault=fault,
            clock=self.clock,
            counts=Counter(),
        )
        self.listener.startService()  # its refuse window starts
        self.assertFalse(self.port.reading)

    def test_window_ends_while_paused(self) -> None:
        pause_listeners([self.listener], True)
        self.clock.advance(3)
        self.assertFalse(self.port.reading)
        pause_listeners([self.listener], False)
        self.assertTrue(self.port.reading)

    def test_resumed_during_window(self) -> None:
        pause_listeners([self.listener], True)
        pause_listeners([self.listener], False)
        self.assertFalse(self.port.reading)
        self.clock.advance(2)
        self.assertTrue(self.port.reading)
