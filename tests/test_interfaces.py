"""
Tests for L{twisted_echo.app.interfaces}: the single-process server and the
supervisor both provide L{IServer}, and what the runner builds around the
server works with either without asking which it is.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile

from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from twisted_echo.app.interfaces import IServer
from twisted_echo.app.options import Options, makeService
from twisted_echo.app.server import SockechoService
from twisted_echo.app.signals import status_counters
from twisted_echo.app.supervisor import Supervisor
from twisted_echo.operations.announce import PortsFileService
from twisted_echo.operations.systemd import Notifier, NotifyingService
from twisted_echo.policies.counters import ServiceCounters


def single_server(*args: str) -> SockechoService:
    options = Options()
    options.parseOptions(list(args))
    return makeService(options)


class ProvidedByTests(TestCase):
    """
    Both servers provide the interface in full.
    """

    def test_single_process(self) -> None:
        self.assertTrue(verifyObject(IServer, single_server("--echo", "tcp:0")))

    def test_supervisor(self) -> None:
        supervisor = Supervisor(
            [], [("udp", 0, "udp:0")], lambda d, r: None, 2, Clock(), 10
        )
        self.assertTrue(verifyObject(IServer, supervisor))
        self.assertEqual(dict(supervisor.status_counters()), {"udp": ServiceCounters()})


class Recorder(Notifier):
    def __init__(self) -> None:
        Notifier.__init__(self, "/unused")
        self.sent: list[dict[str, object]] = []

    def notify(self, **assignments: str | int) -> bool:
        self.sent.append(dict(assignments))
        return True


class SingleProcessTests(TestCase):
    """
    The single-process server through the interface, over real sockets.
    """

    def setUp(self) -> None:
        self.server = single_server(
            "--echo", "tcp:0:interface=127.0.0.1",
            "--no-upper", "--no-welcome",
            "--udp", "udp:0:interface=127.0.0.1",
        )  # fmt: skip
        self.server.privilegedStartService()
        self.server.startService()
        self.addCleanup(self.server.stopService)

    def test_snapshot_counts_open_connections_bytes(self) -> Deferred[None]:
        """
        C{snapshot} (what C{--metrics} and systemd read) adds what an open
        connection carried; C{status_counters} (SIGUSR1) counts it when it
        closes, as before.
        """
        [(_, address, _)] = [a for a in self.server.bound_addresses() if a[0] == "echo"]
        client = socket.create_connection(("127.0.0.1", address.port), timeout=5)
        self.addCleanup(client.close)
        client.sendall(b"abc")

        async def check() -> None:
            for _ in range(500):
                if self.server.snapshot()["echo"].bytes_in == 3:
                    break
                await deferLater(reactor, 0.01, lambda: None)
            self.assertEqual(self.server.snapshot()["echo"].bytes_in, 3)
            self.assertEqual(status_counters(self.server)["echo"].bytes_in, 0)
            self.assertEqual(sorted(status_counters(self.server)), ["echo", "udp"])

        return Deferred.fromCoroutine(check())

    def test_ports_file_from_bound_addresses(self) -> None:
        """
        The ports file lists what the server says it listens on.
        """
        directory = tempfile.mkdtemp()
        path = os.path.join(directory, "ports.json")
        self.addCleanup(os.rmdir, directory)
        top = MultiService()
        self.server.setServiceParent(top)
        writer = PortsFileService(path, top, self.server)
        writer.privilegedStartService()
        self.addCleanup(writer.stopService)
        with open(path) as f:
            listeners = json.load(f)["listeners"]
        ports = {name: entries[0]["port"] for name, entries in listeners.items()}
        self.assertEqual(
            ports,
            {name: address.port for name, address, _ in self.server.bound_addresses()},
        )
        self.assertEqual(sorted(ports), ["echo", "udp"])

    def test_systemd_status_from_snapshot(self) -> None:
        notifier = Recorder()
        clock = Clock()
        notifying = NotifyingService(notifier, self.server.snapshot, clock, 10.0)
        notifying.startService()
        self.addCleanup(notifying.stopService)
        clock.advance(0)
        self.assertEqual(
            notifier.sent[0]["STATUS"],
            "serving: 0 connection(s) open (echo 0), 0 accepted; "
            "0 datagram(s) answered",
        )
