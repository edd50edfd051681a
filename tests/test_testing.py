"""
Tests for L{twisted_echo.testing}: sockecho's services started in the
test's own reactor on free ports, used by Twisted clients, stopped with the
drain. They run under trial (C{python -m twisted.trial tests.test_testing})
and pytest; a pytest-twisted test of the helper runs in a child pytest.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
from typing import Any
from unittest import SkipTest

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.python import usage
from twisted.trial.unittest import TestCase

from twisted_echo.listening.listen import ListenError
from twisted_echo.testing import RunningServices, start_services

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Collect(Protocol):
    """
    Sends C{to_send}, half-closes, and collects everything until the
    server closes (C{done} fires with the bytes).
    """

    to_send = b""

    def connectionMade(self) -> None:
        self.received = b""
        self.done: Deferred[bytes] = Deferred()
        self.transport.write(self.to_send)  # type: ignore[union-attr]
        self.transport.loseWriteConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(self.received)


class Idle(Collect):
    """
    Connects and sends nothing, keeping its side open.
    """

    def connectionMade(self) -> None:
        self.received = b""
        self.done = Deferred()


async def exchange(endpoint: str, data: bytes) -> bytes:
    """
    Send C{data} to C{endpoint} (a client endpoint string), half-close, and
    return every byte the server sends until it closes.
    """
    factory = Factory.forProtocol(type("Send", (Collect,), {"to_send": data}))
    protocol = await clientFromString(reactor, endpoint).connect(factory)
    result: bytes = await protocol.done  # type: ignore[attr-defined]
    return result


class Pong(DatagramProtocol):
    def __init__(self) -> None:
        self.got: Deferred[tuple[bytes, Any]] = Deferred()

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if not self.got.called:
            self.got.callback((data, addr))


class StartServicesTests(TestCase):
    async def started(self, *options: str, **keywords: object) -> RunningServices:
        running = await start_services(*options, reactor=reactor, **keywords)
        self.addCleanup(running.stop)
        return running

    async def test_every_service(self) -> None:
        """
        Every service on a free port of 127.0.0.1, as C{(host, port)} and
        endpoint strings a Twisted client connects to.
        """
        running = await self.started()
        self.assertEqual(running.echo[0], "127.0.0.1")
        self.assertNotEqual(running.echo[1], 0)
        self.assertEqual(running.echo_endpoint, f"tcp:127.0.0.1:{running.echo[1]}")
        self.assertEqual(await exchange(running.echo_endpoint, b"hi"), b"hi")
        self.assertEqual(
            await exchange(running.upper_endpoint, "straße".encode()), b"STRASSE"
        )
        welcome = await exchange(running.welcome_endpoint, b"x\n")
        self.assertTrue(welcome.endswith(b"\r\nOK...x\r\n"), welcome)
        self.assertEqual(running.udp_endpoint, f"udp:127.0.0.1:{running.udp[1]}")
        pong = Pong()
        port = reactor.listenUDP(0, pong, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        port.write(b"ping", running.udp)
        data, addr = await pong.got
        self.assertEqual((data, addr), (b"ping", running.udp))
        self.assertEqual(running.service.counters["echo"].connections_total, 1)

    async def test_options(self) -> None:
        """
        Options and keywords: a banner, whoami, a service switched off.
        """
        running = await self.started("--no-udp", banner="Hey", whoami=True)
        self.assertNotIn("udp", running.listeners)
        self.assertEqual(await exchange(running.welcome_endpoint, b""), b"Hey\r\n")
        line = await exchange(running.whoami_endpoint, b"")
        self.assertEqual(json.loads(line)["service"], "whoami")

    async def test_tls(self) -> None:
        """
        C{tls=True}: TLS listeners, with a certificate to trust.
        """
        running = await self.started(tls=True)
        self.assertTrue(running.echo_endpoint.startswith("ssl:127.0.0.1:"))
        assert running.ca_file is not None
        context = ssl.create_default_context(cafile=running.ca_file)
        from twisted.internet.threads import deferToThread

        def talk() -> bytes:
            import socket

            with socket.create_connection(running.echo, timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    tls.sendall(b"tls")
                    return tls.recv(10)

        self.assertEqual(await deferToThread(talk), b"tls")

    async def test_stop_drains(self) -> None:
        """
        L{RunningServices.stop} stops accepting and waits for open
        connections: an idle one is closed by the server, then the
        L{Deferred} fires.
        """
        running = await start_services(reactor=reactor)
        protocol = await clientFromString(reactor, running.echo_endpoint).connect(
            Factory.forProtocol(Idle)
        )
        stopped = running.stop()
        self.assertFalse(stopped.called)
        self.assertEqual(await protocol.done, b"")  # type: ignore[attr-defined]
        await stopped
        self.assertEqual(running.service.counters["echo"].connections_total, 1)

    async def test_bad_option(self) -> None:
        """
        A bad option fails the L{Deferred} with a L{usage.UsageError}.
        """
        with self.assertRaisesRegex(usage.UsageError, "--max-line takes"):
            await start_services("--max-line", "x", reactor=reactor)

    async def test_busy_port(self) -> None:
        """
        A listener that cannot listen fails the L{Deferred} with a
        L{ListenError} naming it; the others are closed again.
        """
        running = await self.started()
        busy = f"tcp:{running.echo[1]}:interface=127.0.0.1"
        with self.assertRaisesRegex(ListenError, "address already in use"):
            await start_services("--echo", busy, reactor=reactor)

    def test_default_reactor(self) -> Deferred[None]:
        """
        Without C{reactor}, the global reactor is used.
        """
        d = start_services()
        return d.addCallback(lambda running: running.stop())


PYTEST_TWISTED_TEST = """
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import clientFromString
from twisted.internet.protocol import Factory

from tests.test_testing import Collect
from twisted_echo.testing import start_services


@pytest_twisted.ensureDeferred
async def test_round_trip():
    server = await start_services(reactor=reactor)
    try:
        factory = Factory.forProtocol(type("Send", (Collect,), {"to_send": b"pt"}))
        protocol = await clientFromString(reactor, server.echo_endpoint).connect(
            factory
        )
        assert await protocol.done == b"pt"
    finally:
        await server.stop()
"""


class PytestTwistedTests(TestCase):
    def test_pytest_twisted(self) -> None:
        """
        A pytest-twisted test (run by pytest in a child process: a
        pytest-twisted test would keep the reactor running for the trial
        test cases after it) starts the services, talks, and stops them.
        """
        try:
            import pytest_twisted  # noqa: F401
        except ImportError:
            raise SkipTest("pytest-twisted is not installed") from None
        directory = tempfile.mkdtemp(prefix="sockecho-test-")
        self.addCleanup(shutil.rmtree, directory, True)
        with open(os.path.join(directory, "test_pt.py"), "w") as f:
            f.write(PYTEST_TWISTED_TEST)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [ROOT, *filter(None, [env.get("PYTHONPATH")])]
        )
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "test_pt.py"],
            cwd=directory,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("1 passed", result.stdout)
