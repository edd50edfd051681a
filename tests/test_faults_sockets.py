"""
The faults over real sockets (issue 21's acceptance): reset, close and
half-close after N bytes, the slicer's segments, a blackhole, refuse for
T, probabilities 0 and 1 on every connection, a seeded replay, and a
malformed profile given to a real C{twistd}.
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.loopback import listen_tcp, record_protocols, wait_until
from twisted_echo.faults.engine import ListenerFaults
from twisted_echo.faults.profile import parse_profile
from twisted_echo.faults.refuse import RefuseWindows
from twisted_echo.services.echo import EchoFactory

HOST = "127.0.0.1"
#: Seconds a test client waits on its socket before it gives up.
CLIENT_TIMEOUT = 10.0


def serve(test: TestCase, profile: str, clock: Any = None) -> tuple[EchoFactory, int]:
    """
    Listen with an echo factory with C{profile} on 127.0.0.1.

    @return: the factory and its port.
    """
    clock = clock if clock is not None else reactor
    factory = EchoFactory(clock)
    factory.faults = ListenerFaults(
        parse_profile(profile), "echo", clock, factory.counters.faults
    )
    return factory, listen_tcp(test, factory)


def connect(port: int, timeout: float = CLIENT_TIMEOUT) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_to_end(sock: socket.socket) -> tuple[int, str]:
    """
    Read until EOF or an error.

    @return: the bytes read, and C{"eof"} or the error's name.
    """
    count = 0
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return count, "eof"
            count += len(data)
    except OSError as e:
        return count, type(e).__name__


def in_thread(function: Callable[[], Any]) -> Any:
    return deferToThread(function)


class EndingTests(TestCase):
    async def test_reset_after_1000_bytes(self) -> None:
        """
        The client reads exactly 1,000 bytes, then gets ECONNRESET.
        """
        factory, port = serve(self, "reset-after=1000")

        def client() -> tuple[int, str]:
            with connect(port) as sock:
                sock.sendall(b"x" * 3000)
                return read_to_end(sock)

        self.assertEqual(await in_thread(client), (1000, "ConnectionResetError"))
        self.assertEqual(factory.counters.faults, Counter({"reset-after": 1}))

    async def test_close_after_n_bytes(self) -> None:
        """
        Exactly N bytes, then EOF.
        """
        factory, port = serve(self, "close-after=777")

        def client() -> tuple[int, str]:
            with connect(port) as sock:
                sock.sendall(b"x" * 3000)
                return read_to_end(sock)

        self.assertEqual(await in_thread(client), (777, "eof"))

    async def test_half_close_after_n_bytes(self) -> None:
        """
        N bytes then EOF, while the server goes on reading: what the client
        sends after the EOF is read, and the connection stays open until
        the client closes.
        """
        factory, port = serve(self, "half-close-after=100")
        protocols = record_protocols(factory)
        sock = connect(port)
        self.addCleanup(sock.close)
        await in_thread(lambda: sock.sendall(b"x" * 300))
        self.assertEqual(await in_thread(lambda: read_to_end(sock)), (100, "eof"))
        await in_thread(lambda: sock.sendall(b"y" * 5000))
        (server,) = protocols
        await wait_until(lambda: server.bytes_in == 5300)
        self.assertEqual(len(factory.open_protocols), 1)
        sock.shutdown(socket.SHUT_WR)
        await wait_until(lambda: not factory.open_protocols)


class SlicerTests(TestCase):
    async def test_exact_segment_sizes(self) -> None:
        """
        With C{slice=100,gap=1s} and a reader that records its C{recv}
        sizes, a 1,000-byte reply arrives as ten 100-byte segments: each
        gap is the factory's L{Clock}, advanced once the reader has the
        segment before.
        """
        clock = Clock()
        factory, port = serve(self, "slice=100,gap=1s", clock)
        sock = connect(port)
        self.addCleanup(sock.close)
        sizes: list[int] = []

        def read_one() -> None:
            sizes.append(len(sock.recv(65536)))

        await in_thread(lambda: sock.sendall(b"z" * 1000))
        for index in range(10):
            await in_thread(read_one)
            self.assertEqual(len(sizes), index + 1)
            clock.advance(1)
        self.assertEqual(sizes, [100] * 10)


class BlackholeTests(TestCase):
    async def test_client_timeout_fires(self) -> None:
        """
        The client's own timeout fires; the server holds nothing.
        """
        factory, port = serve(self, "blackhole")

        def client() -> str:
            with connect(port, timeout=0.5) as sock:
                sock.sendall(b"hello?" * 1000)
                try:
                    sock.recv(100)
                except TimeoutError:
                    return "timeout"
                return "answered"

        self.assertEqual(await in_thread(client), "timeout")
        self.assertEqual(factory.held_bytes(), 0)


class RefuseTests(TestCase):
    async def test_not_accepting_during_the_window(self) -> None:
        """
        During C{refuse=5s} the listening port is not read (its backlog
        holds the connect, nothing answers); after it, the connection is
        accepted and answered.
        """
        clock = Clock()
        factory = EchoFactory(reactor)
        port = reactor.listenTCP(0, factory, interface=HOST)  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        counts: Counter[str] = Counter()
        (refuse,) = parse_profile("refuse=5s").faults
        windows = RefuseWindows(clock, port, refuse, counts, "echo")
        windows.start()
        self.assertNotIn(port, reactor.getReaders())  # type: ignore[attr-defined]
        sock = connect(port.getHost().port)
        self.addCleanup(sock.close)
        sock.sendall(b"anyone?")
        for _ in range(5):
            await deferLater(reactor, 0)
        self.assertEqual(factory.counters.connections_total, 0)
        clock.advance(5)
        self.assertIn(port, reactor.getReaders())  # type: ignore[attr-defined]
        self.assertEqual(await in_thread(lambda: sock.recv(100)), b"anyone?")
        self.assertEqual(counts, Counter({"refuse": 1}))

    async def test_connects_time_out_once_the_backlog_is_full(self) -> None:
        """
        With a backlog of 1, connects made during the window fill it, then
        a client's own connect timeout fires; after the window, the queued
        connections are accepted and a new connect succeeds at once.
        """
        clock = Clock()
        factory = EchoFactory(reactor)
        port = reactor.listenTCP(0, factory, backlog=1, interface=HOST)  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        (refuse,) = parse_profile("refuse=5s").faults
        RefuseWindows(clock, port, refuse, Counter(), "echo").start()
        number = port.getHost().port

        def fill_then_try() -> list[str]:
            outcomes = []
            for _ in range(4):
                sock = socket.socket()
                self.addCleanup(sock.close)
                sock.settimeout(0.3)
                try:
                    sock.connect((HOST, number))
                    outcomes.append("connected")
                except TimeoutError:
                    outcomes.append("timeout")
            return outcomes

        outcomes = await in_thread(fill_then_try)
        self.assertIn("timeout", outcomes)
        self.assertEqual(factory.counters.connections_total, 0)
        clock.advance(5)
        await wait_until(lambda: factory.counters.connections_total >= 1)

        def exchange() -> bytes:
            with connect(number) as sock:
                sock.sendall(b"after")
                return sock.recv(100)

        self.assertEqual(await in_thread(exchange), b"after")

    def test_every(self) -> None:
        """
        With C{every=}, a window of T starts every S seconds.
        """

        class Port:
            reading = True

            def stopReading(self) -> None:
                self.reading = False

            def startReading(self) -> None:
                self.reading = True

        clock, port = Clock(), Port()
        (refuse,) = parse_profile("refuse=2s,every=10s").faults
        windows = RefuseWindows(clock, port, refuse, Counter(), "echo")
        windows.start()
        seen = []
        for _ in range(24):
            seen.append(port.reading)
            clock.advance(1)
        self.assertEqual(
            seen, ([False] * 2 + [True] * 8) * 2 + [False] * 2 + [True] * 2
        )
        windows.stop()
        self.assertEqual(clock.getDelayedCalls(), [])


def client_sees(
    port: int, connections: int, payload: bytes, half_close: bool = True
) -> list[tuple[int, str]]:
    """
    C{connections} clients, one after the other: each sends C{payload},
    half-closes (if C{half_close}) and reads to the end.
    """
    seen = []
    for _ in range(connections):
        with connect(port) as sock:
            sock.sendall(payload)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            seen.append(read_to_end(sock))
    return seen


class ProbabilityTests(TestCase):
    """
    toxiproxy #603 (a toxicity of 0 still fired) and #148 (faults missing
    some connections), as regression tests over 200 connections.
    """

    async def test_zero_never_fires(self) -> None:
        factory, port = serve(self, "reset-after=10,p=0")
        seen = await in_thread(lambda: client_sees(port, 200, b"x" * 20))
        self.assertEqual(seen, [(20, "eof")] * 200)
        self.assertEqual(factory.counters.faults, Counter())

    async def test_one_fires_on_every_connection(self) -> None:
        factory, port = serve(self, "reset-after=10,p=1")
        # No half-close: the reset may come first.
        seen = await in_thread(lambda: client_sees(port, 200, b"x" * 20, False))
        self.assertEqual(seen, [(10, "ConnectionResetError")] * 200)
        self.assertEqual(factory.counters.faults, Counter({"reset-after": 200}))


class ReplayTests(TestCase):
    async def run_once(self) -> tuple[list[str], list[tuple[int, str]]]:
        """
        50 connections to a fresh listener with a seeded profile.

        @return: its fault log lines without the clients' ports, and what
            the clients saw.
        """
        lines: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_namespace") == "twisted_echo.faults":
                lines.append(formatEvent(event).split(": ", 1)[1])

        globalLogPublisher.addObserver(observe)
        try:
            _, port = serve(self, "close-after=5,p=0.5;corrupt=3,p=0.3;seed=42")
            seen = await in_thread(lambda: client_sees(port, 50, bytes(10)))
        finally:
            globalLogPublisher.removeObserver(observe)
        return lines, seen

    async def test_same_seed_same_faults(self) -> None:
        """
        Two runs with seed=42: identical per-connection fault log lines,
        and the clients see the same thing.
        """
        first = await self.run_once()
        second = await self.run_once()
        self.assertEqual(len(first[0]), 50)
        self.assertEqual(first, second)
        self.assertIn((5, "eof"), first[1])
        self.assertIn((10, "eof"), first[1])
