"""
The test servers' C{unready} and C{health} context managers
(L{twisted_echo.testing.health}): over a real spawned C{twistd} (the pytest
fixtures' server object, L{twisted_echo.testing.spawn.SockechoProcess},
through its admin API) and in the test's reactor
(L{twisted_echo.testing.trial.RunningServices}). Runs under pytest and
trial.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.process import IO_TIMEOUT, tcp_exchange
from tests.test_testing import exchange
from twisted_echo.testing import RunningServices, start_services
from twisted_echo.testing.health import requested
from twisted_echo.testing.spawn import SockechoProcess, start_sockecho

HOST = "127.0.0.1"
#: Seconds a test waits to see that nothing comes (a paused listener).
QUIET = 0.5


class BoomError(Exception):
    pass


def probe(server: SockechoProcess, path: str) -> tuple[int, str]:
    host, port = server.address("metrics")
    url = f"http://{host}:{port}/{path}"
    try:
        with urllib.request.urlopen(url, timeout=IO_TIMEOUT) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class RequestedTests(SynchronousTestCase):
    def test_requested(self) -> None:
        self.assertEqual(requested(readyz="fail"), {"readyz": "fail"})
        self.assertEqual(
            requested(healthz="fail", listeners="pause"),
            {"healthz": "fail", "listeners": "pause"},
        )
        self.assertRaises(ValueError, requested)


class SpawnedTests(SynchronousTestCase):
    def server(self, *options: str) -> SockechoProcess:
        server = start_sockecho(*options)
        self.addCleanup(server.stop)
        return server

    def test_unready_then_ready(self) -> None:
        """
        Inside the block C{/readyz} answers 503 while echo serves; after
        it, 200 again; after a block that raises too.
        """
        server = self.server()
        with server.unready():
            self.assertEqual(
                probe(server, "readyz"), (503, "failed by the admin API\n")
            )
            self.assertEqual(tcp_exchange(server.echo[1], b"hi"), b"hi")
        self.assertEqual(probe(server, "readyz"), (200, "ready\n"))
        with self.assertRaises(BoomError):
            with server.health(healthz="fail"):
                self.assertEqual(probe(server, "healthz")[0], 503)
                raise BoomError()
        self.assertEqual(probe(server, "healthz"), (200, "ok\n"))

    def test_nested_restores_the_state_before(self) -> None:
        server = self.server()
        with server.health(healthz="fail"):
            with server.unready():
                self.assertEqual(probe(server, "readyz")[0], 503)
            self.assertEqual(probe(server, "readyz")[0], 200)
            self.assertEqual(probe(server, "healthz")[0], 503)
        self.assertEqual(probe(server, "healthz")[0], 200)

    def test_paused_listeners(self) -> None:
        """
        A connect made in the block waits in the backlog; it is served
        once the block ends.
        """
        server = self.server()
        with server.health(listeners="pause"):
            sock = socket.create_connection(server.echo, timeout=QUIET)
            self.addCleanup(sock.close)
            sock.sendall(b"waiting")
            self.assertRaises(TimeoutError, sock.recv, 100)
        sock.settimeout(IO_TIMEOUT)
        self.assertEqual(sock.recv(100), b"waiting")

    def test_bad_value(self) -> None:
        server = self.server()
        with self.assertRaises(ValueError) as caught:
            with server.health(readyz="down"):
                self.fail("the block ran")
        self.assertIn("readyz is 'pass' or 'fail', not 'down'", str(caught.exception))
        self.assertEqual(probe(server, "readyz")[0], 200)

    def test_no_admin(self) -> None:
        """
        With its own C{--metrics} and no C{--admin}: L{LookupError}.
        """
        server = self.server("--metrics", f"tcp:0:interface={HOST}")
        with self.assertRaises(LookupError):
            with server.unready():
                self.fail("the block ran")

    def test_workers_pause(self) -> None:
        """
        With C{--workers}, the block pauses every worker's listeners.
        """
        server = self.server("--workers", "2")
        with server.health(listeners="pause"):
            held = []
            for _ in range(6):
                sock = socket.create_connection(server.echo, timeout=QUIET)
                self.addCleanup(sock.close)
                sock.sendall(b"waiting")
                held.append(sock)
            for sock in held:
                self.assertRaises(TimeoutError, sock.recv, 100)
        for sock in held:
            sock.settimeout(IO_TIMEOUT)
            self.assertEqual(sock.recv(100), b"waiting")
        with server.unready():
            self.assertEqual(probe(server, "readyz")[0], 503)


def later(seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


class InProcessTests(TestCase):
    async def started(self, *options: str) -> RunningServices:
        running = await start_services(*options, reactor=reactor)
        self.addCleanup(running.stop)
        return running

    async def test_paused_then_served(self) -> None:
        """
        In the test's reactor: a connection made while paused is served
        once the block ends.
        """
        running = await self.started()
        with running.health(listeners="pause"):
            self.assertEqual(running.service.health.state["listeners"], "pause")
            waiting = Deferred.fromCoroutine(
                exchange(running.echo_endpoint, b"waiting")
            )
            await later(QUIET)
            self.assertFalse(waiting.called)
        self.assertEqual(await waiting, b"waiting")

    async def test_unready_restored_on_error(self) -> None:
        running = await self.started("--metrics", f"tcp:0:interface={HOST}")
        switch = running.service.health
        try:
            with running.unready():
                self.assertTrue(switch.failing("readyz"))
                raise BoomError()
        except BoomError:
            pass
        self.assertEqual(
            switch.describe(),
            {"readyz": "pass", "healthz": "pass", "listeners": "serve"},
        )
        with self.assertRaises(ValueError):
            with running.health(listeners="stop"):
                self.fail("the block ran")
