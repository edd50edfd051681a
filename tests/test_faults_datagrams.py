"""
Tests for L{twisted_echo.faults.datagrams}: UDP faults per datagram, on a
L{Clock} and over real UDP sockets.
"""

from __future__ import annotations

import math
import socket
from collections import Counter
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.loopback import wait_until
from twisted_echo.faults.datagrams import REORDER_MAX_HOLD, DatagramFaults
from twisted_echo.faults.profile import parse_profile
from twisted_echo.policies.counters import ServiceCounters
from twisted_echo.policies.ratelimit import TokenBucket
from twisted_echo.services.udp import UDPEcho

ADDR = ("192.0.2.7", 40000)


class Listener:
    """
    What a UDP listener does around its faults: counts a reply as sent
    once C{send} returns (as L{UDPEcho.datagramReceived} does).
    """

    def __init__(self, profile: str, clock: Clock | None = None, **limits: Any) -> None:
        self.clock = clock or Clock()
        self.counters = ServiceCounters()
        self.sent: list[bytes] = []
        self.source_limit = limits.get("source_limit")
        self.global_limit = limits.get("global_limit")
        self.faults = DatagramFaults(
            parse_profile(profile, datagram=True),
            "udp",
            self.clock,
            self.counters,
            log=False,
        )
        self.send = self.faults.wrap(self.record, self)

    def record(self, data: bytes, addr: Any) -> None:
        self.sent.append(data)

    def reply(self, data: bytes) -> None:
        self.send(data, ADDR)
        self.counters.datagrams_out += 1
        self.counters.bytes_out += len(data)


def numbered(count: int) -> list[bytes]:
    return [b"%05d" % n for n in range(count)]


class DatagramFaultTests(TestCase):
    def test_loss_within_the_binomial_interval(self) -> None:
        """
        loss with p=0.1 over 10,000 datagrams: the number lost lies within
        the 99.9 % interval of Binomial(10000, 0.1) (mean 1,000, sd 30,
        z = 3.29), and the counters count what was really sent.
        """
        listener = Listener("loss,p=0.1;seed=42")
        for data in numbered(10_000):
            listener.reply(data)
        lost = 10_000 - len(listener.sent)
        half = 3.29 * math.sqrt(10_000 * 0.1 * 0.9)
        self.assertTrue(1000 - half <= lost <= 1000 + half, lost)
        self.assertEqual(listener.counters.faults, Counter({"loss": lost}))
        self.assertEqual(listener.counters.datagrams_out, len(listener.sent))
        self.assertEqual(listener.counters.bytes_out, 5 * len(listener.sent))

    def test_probability_zero_and_one(self) -> None:
        never = Listener("loss,p=0")
        always = Listener("loss,p=1")
        for data in numbered(1000):
            never.reply(data)
            always.reply(data)
        self.assertEqual(len(never.sent), 1000)
        self.assertEqual(always.sent, [])

    def test_duplicates_and_reorders_replay_exactly(self) -> None:
        """
        Two runs with the same seed send the same datagrams in the same
        order, duplicates and reorderings included; another seed differs.
        """

        def run(seed: int) -> tuple[list[bytes], Counter[str]]:
            listener = Listener(f"duplicate,p=0.1;reorder=3,p=0.05;seed={seed}")
            for data in numbered(2000):
                listener.reply(data)
            listener.clock.advance(REORDER_MAX_HOLD)
            return listener.sent, listener.counters.faults

        first = run(42)
        self.assertEqual(first, run(42))
        self.assertNotEqual(first, run(43))
        sent, counts = first
        self.assertEqual(len(sent), 2000 + counts["duplicate"])
        self.assertEqual(sorted(set(sent)), numbered(2000))
        self.assertNotEqual(sent, sorted(sent))

    def test_reorder_after_the_next_k(self) -> None:
        """
        A reordered datagram goes out after the next K.
        """
        faulty = Listener("reorder=2")
        faulty.reply(b"a")
        faulty.faults.faults = ()
        for data in (b"b", b"c", b"d"):
            faulty.reply(data)
        self.assertEqual(faulty.sent, [b"b", b"c", b"a", b"d"])

    def test_reorder_released_after_max_hold(self) -> None:
        listener = Listener("reorder=5")
        listener.reply(b"a")
        self.assertEqual(listener.sent, [])
        listener.clock.advance(REORDER_MAX_HOLD)
        self.assertEqual(listener.sent, [b"a"])

    def test_latency_with_jitter(self) -> None:
        clock = Clock()
        listener = Listener("latency=100ms,jitter=10ms", clock)
        listener.reply(b"x")
        clock.advance(0.089)
        self.assertEqual(listener.sent, [])
        clock.advance(0.022)
        self.assertEqual(listener.sent, [b"x"])

    def test_truncate_and_corrupt_never_larger(self) -> None:
        listener = Listener("truncate=2;corrupt")
        listener.reply(bytes(10))
        (sent,) = listener.sent
        self.assertEqual(len(sent), 8)
        self.assertEqual(sum(bin(b).count("1") for b in sent), 1)

    def test_duplicates_pass_the_rate_limits(self) -> None:
        """
        A duplicate takes a token from the global limit; none left: not
        sent, counted as a rate drop.
        """
        clock = Clock()
        bucket = TokenBucket(1.0, 3, clock)
        listener = Listener("duplicate=5", clock, global_limit=bucket)
        listener.reply(b"x")
        self.assertEqual(listener.sent, [b"x"] * 4)
        self.assertEqual(listener.counters.dropped["rate_global"], 1)
        self.assertEqual(listener.counters.datagrams_out, 4)


class RealSocketTests(TestCase):
    async def test_loss_over_udp(self) -> None:
        """
        A real UDP echo listener with C{loss,p=0.1;seed=7}: of 1,000
        datagrams the client gets back exactly those the seed's replay
        keeps.
        """
        counters = ServiceCounters()
        protocol = UDPEcho(counters)
        profile = parse_profile("loss,p=0.1;seed=7", datagram=True)
        protocol.faults = DatagramFaults(profile, "udp", reactor, counters, log=False)
        port = reactor.listenUDP(0, protocol, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        replay = DatagramFaults(profile, "udp", Clock(), ServiceCounters(), log=False)
        kept = [n for n in range(1000) if "loss" not in replay.draw()]
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(client.close)
        client.settimeout(10)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        target = ("127.0.0.1", port.getHost().port)

        def exchange() -> list[int]:
            got = []
            for n in range(1000):
                client.sendto(b"%05d" % n, target)
                if n % 50 == 49:
                    while len(got) < sum(1 for k in kept if k <= n):
                        got.append(int(client.recv(100)))
            return got

        self.assertEqual(await deferToThread(exchange), kept)
        await wait_until(lambda: counters.datagrams_in == 1000)
        self.assertEqual(counters.faults["loss"], 1000 - len(kept))
        self.assertEqual(counters.datagrams_out, len(kept))
