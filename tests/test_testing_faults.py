"""
The test servers' C{faults} context manager (L{twisted_echo.testing.faults}):
over a real spawned C{twistd} (the pytest fixtures' server object,
L{twisted_echo.testing.spawn.SockechoProcess}, through its admin API) and
in the test's reactor (L{twisted_echo.testing.trial.RunningServices}).
Runs under pytest and trial.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.process import tcp_exchange
from tests.test_testing import exchange
from twisted_echo.faults.profile import ProfileError
from twisted_echo.testing import RunningServices, start_services
from twisted_echo.testing.faults import pinned
from twisted_echo.testing.spawn import SockechoProcess, start_sockecho


class BoomError(Exception):
    pass


class PinnedTests(SynchronousTestCase):
    def test_pinned(self) -> None:
        self.assertEqual(pinned("delay=1s", 7), "delay=1s;seed=7")
        self.assertEqual(pinned("delay=1s;seed=3", 3), "delay=1s;seed=3")
        self.assertIsNone(pinned(None, None))


class SpawnedTests(SynchronousTestCase):
    def server(self, *options: str) -> SockechoProcess:
        server = start_sockecho(*options)
        self.addCleanup(server.stop)
        return server

    def test_block_then_clean(self) -> None:
        """
        Inside the block a client meets the fault; after it, clean echo.
        """
        server = self.server()
        port = server.echo[1]
        with server.faults("echo", "close-after=5"):
            self.assertEqual(tcp_exchange(port, b"hello world"), b"hello")
        self.assertEqual(tcp_exchange(port, b"hello world"), b"hello world")

    def test_restores_previous_on_error(self) -> None:
        """
        The block raises: the profile before it (from C{--faults}, with its
        seed) is in force again, and the error goes on.
        """
        server = self.server("--faults", "echo=close-after=3")
        port = server.echo[1]
        with self.assertRaises(BoomError):
            with server.faults("echo", "close-after=5"):
                self.assertEqual(tcp_exchange(port, b"hello world"), b"hello")
                raise BoomError()
        self.assertEqual(tcp_exchange(port, b"hello world"), b"hel")

    def test_bad_profile(self) -> None:
        """
        A bad profile raises L{ValueError} with the server's reason, before
        the block; the profile in force is unchanged.
        """
        server = self.server()
        with self.assertRaises(ValueError) as caught:
            with server.faults("echo", "close-after=x"):
                self.fail("the block ran")
        self.assertIn("close-after", str(caught.exception))
        with self.assertRaises(LookupError):
            with server.faults("nope", "delay=1s"):
                self.fail("the block ran")
        self.assertEqual(tcp_exchange(server.echo[1], b"hi"), b"hi")


class InProcessTests(TestCase):
    async def started(self) -> RunningServices:
        running = await start_services(reactor=reactor)
        self.addCleanup(running.stop)
        return running

    async def test_block_then_clean(self) -> None:
        """
        In the test's reactor: the fault inside the block, clean echo
        after, and the previous profile back after an error.
        """
        running = await self.started()
        with running.faults("echo", "close-after=5"):
            self.assertEqual(
                await exchange(running.echo_endpoint, b"hello world"), b"hello"
            )
        self.assertEqual(
            await exchange(running.echo_endpoint, b"hello world"), b"hello world"
        )
        with running.faults("echo", "close-after=3"):
            try:
                with running.faults("echo", "close-after=5"):
                    raise BoomError()
            except BoomError:
                pass
            self.assertEqual(await exchange(running.echo_endpoint, b"hello"), b"hel")
        self.assertEqual(await exchange(running.echo_endpoint, b"hello"), b"hello")

    async def test_errors(self) -> None:
        running = await self.started()
        with self.assertRaises(ProfileError):
            with running.faults("echo", "close-after=x"):
                self.fail("the block ran")
        with self.assertRaises(LookupError):
            with running.faults("nope", "delay=1s"):
                self.fail("the block ran")
        self.assertIsNone(running.service.fault_slots["echo"].current()[0])
