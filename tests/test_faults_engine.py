"""
Tests for L{twisted_echo.faults.engine}, L{twisted_echo.faults.shaping} and
L{twisted_echo.faults.content}: the faults on a L{Clock} and a
L{StringTransport}, through the echo service's real stream base.
"""

from __future__ import annotations

import random
from collections import Counter

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.memory import connect
from twisted_echo.faults.content import Corrupter
from twisted_echo.faults.engine import ListenerFaults
from twisted_echo.faults.profile import parse_profile
from twisted_echo.faults.shaping import OutputShaper
from twisted_echo.services.echo import Echo, EchoFactory
from twisted_echo.services.welcome import Welcome, WelcomeFactory


def faulty_echo(profile: str, clock: Clock | None = None) -> EchoFactory:
    """
    @return: an echo factory on C{clock} with C{profile}.
    """
    clock = clock or Clock()
    factory = EchoFactory(clock)
    factory.faults = ListenerFaults(
        parse_profile(profile), "echo", clock, factory.counters.faults
    )
    return factory


class Recorder:
    """
    Records what an L{OutputShaper} writes, with the clock's time.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.writes: list[tuple[float, bytes]] = []

    def __call__(self, data: bytes) -> None:
        self.writes.append((self.clock.seconds(), data))


class ShaperTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.written = Recorder(self.clock)

    def shaper(self, **kwargs: float) -> OutputShaper:
        return OutputShaper(self.clock, random.Random(1), self.written, **kwargs)  # type: ignore[arg-type]

    def test_latency(self) -> None:
        """
        Each chunk is written C{latency} seconds after it is sent.
        """
        shaper = self.shaper(latency=0.2)
        shaper.push(b"one")
        self.clock.advance(0.1)
        shaper.push(b"two")
        self.assertEqual(shaper.held, 6)
        self.clock.advance(0.1)
        self.assertEqual(self.written.writes, [(0.2, b"one")])
        self.clock.advance(0.1)
        self.assertEqual(self.written.writes[1], (0.30000000000000004, b"two"))
        self.assertEqual(shaper.held, 0)

    def test_jitter_within_bounds(self) -> None:
        """
        With jitter J, each chunk waits between L-J and L+J.
        """
        shaper = self.shaper(latency=0.2, jitter=0.02)
        waits = []
        for _ in range(200):
            sent = self.clock.seconds()
            shaper.push(b"x")
            while not self.written.writes:
                self.clock.advance(0.001)
            waits.append(self.written.writes.pop()[0] - sent)
        self.assertTrue(all(0.18 - 0.0011 <= w <= 0.22 + 0.0011 for w in waits), waits)
        self.assertGreater(max(waits) - min(waits), 0.02)  # it does vary

    def test_delay_first_byte_only(self) -> None:
        shaper = self.shaper(delay=1.0)
        shaper.push(b"first")
        self.clock.advance(0.999)
        self.assertEqual(self.written.writes, [])
        self.clock.advance(0.001)
        shaper.push(b"second")
        self.assertEqual([d for _, d in self.written.writes], [b"first", b"second"])

    def test_slicer_segments_and_gaps(self) -> None:
        """
        A reply is cut into N-byte segments, C{gap} seconds apart.
        """
        shaper = self.shaper(segment=4, gap=0.5)
        shaper.push(b"0123456789")
        self.clock.pump([0.5, 0.5, 0.5])
        self.assertEqual(
            self.written.writes, [(0.0, b"0123"), (0.5, b"4567"), (1.0, b"89")]
        )

    def test_bandwidth(self) -> None:
        """
        1,000 bytes at 1,000 bytes/s take a second (in 50 ms pieces).
        """
        shaper = self.shaper(rate=1000)
        shaper.push(b"x" * 1000)
        while shaper.held:
            self.clock.advance(0.01)
        sizes = {len(d) for _, d in self.written.writes}
        self.assertEqual(sizes, {50})
        last = self.written.writes[-1][0]
        self.assertTrue(0.95 <= last < 0.96, last)


class CorruptTests(TestCase):
    def test_one_bit_every_n_bytes(self) -> None:
        """
        One bit flipped in every 10th byte, across sends; never longer.
        """
        corrupter = Corrupter(10, random.Random(3))
        data = bytes(25)
        out = corrupter.apply(data[:7]) + corrupter.apply(data[7:])
        self.assertEqual(len(out), 25)
        flipped = [(i, b) for i, b in enumerate(out) if b]
        self.assertEqual([i for i, _ in flipped], [9, 19])
        self.assertTrue(all(bin(b).count("1") == 1 for _, b in flipped))


class PlanTests(TestCase):
    """
    Faults applied by the stream base's hook to an echo connection.
    """

    def test_close_after_bytes(self) -> None:
        factory = faulty_echo("close-after=5")
        protocol, transport = connect(factory, Echo)
        protocol.dataReceived(b"hello world")
        self.assertEqual(transport.value(), b"hello")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(factory.counters.faults, Counter({"close-after": 1}))

    def test_truncate(self) -> None:
        """
        The first reply loses its last N bytes, then the connection closes.
        """
        protocol, transport = connect(faulty_echo("truncate=3"), Echo)
        protocol.dataReceived(b"hello world")
        self.assertEqual(transport.value(), b"hello wo")
        self.assertTrue(transport.disconnecting)

    def test_truncate_never_larger(self) -> None:
        protocol, transport = connect(faulty_echo("truncate=30"), Echo)
        protocol.dataReceived(b"short")
        self.assertEqual(transport.value(), b"")

    def test_welcome_banner_delayed(self) -> None:
        clock = Clock()
        factory = WelcomeFactory(clock)
        factory.faults = ListenerFaults(
            parse_profile("delay=2s"), "welcome", clock, factory.counters.faults
        )
        protocol, transport = connect(factory, Welcome)
        self.assertEqual(transport.value(), b"")
        clock.advance(2)
        self.assertTrue(transport.value().startswith(b"Welcome"))

    def test_close_waits_for_held_bytes(self) -> None:
        """
        The peer half-closes while replies are held: they are all sent
        before the connection closes; bytes_out counts what was sent.
        """
        clock = Clock()
        protocol, transport = connect(faulty_echo("latency=1s", clock), Echo)
        protocol.dataReceived(b"late")
        protocol.readConnectionLost()
        self.assertFalse(transport.disconnecting)
        self.assertEqual(protocol.bytes_out, 0)
        clock.advance(1)
        self.assertEqual(transport.value(), b"late")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(protocol.bytes_out, 4)

    def test_held_bytes_counted_and_reading_stops(self) -> None:
        """
        Bytes held back count in held_bytes; above the connection's
        allowance reading stops, and resumes once they are sent.
        """
        clock = Clock()
        protocol, transport = connect(faulty_echo("latency=1s", clock), Echo)
        protocol.allowance = 1000
        protocol.dataReceived(b"x" * 600)
        self.assertEqual(protocol.held_bytes(), 600)
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(b"x" * 600)
        self.assertEqual(protocol.held_bytes(), 1200)
        self.assertEqual(transport.producerState, "paused")
        clock.advance(1)
        self.assertEqual(protocol.held_bytes(), 0)
        self.assertEqual(transport.producerState, "producing")

    def test_blackhole(self) -> None:
        """
        Nothing read reaches the service, nothing is sent; the blackhole's
        time closes it.
        """
        clock = Clock()
        protocol, transport = connect(faulty_echo("blackhole=2s", clock), Echo)
        protocol.dataReceived(b"anyone there?")
        self.assertEqual(transport.value(), b"")
        self.assertEqual(protocol.bytes_in, 13)
        clock.advance(2)
        self.assertTrue(transport.disconnecting)

    def test_reset_after_time(self) -> None:
        clock = Clock()
        protocol, transport = connect(faulty_echo("reset-after=1s", clock), Echo)
        clock.advance(1)
        self.assertTrue(transport.disconnecting)  # StringTransport's abort


class UpwardBandwidthTests(TestCase):
    def test_reading_paused_to_the_rate(self) -> None:
        """
        C{bandwidth=1000,direction=up}: after a 500-byte read, reading
        pauses for half a second; the reply is not slowed.
        """
        clock = Clock()
        protocol, transport = connect(
            faulty_echo("bandwidth=1000,direction=up", clock), Echo
        )
        protocol.dataReceived(b"u" * 500)
        self.assertEqual(transport.value(), b"u" * 500)
        self.assertEqual(transport.producerState, "paused")
        clock.advance(0.49)
        self.assertEqual(transport.producerState, "paused")
        clock.advance(0.01)
        self.assertEqual(transport.producerState, "producing")

    def test_corrupt_through_the_plan(self) -> None:
        protocol, transport = connect(faulty_echo("corrupt=4;seed=1"), Echo)
        protocol.dataReceived(bytes(8))
        self.assertEqual([i for i, b in enumerate(transport.value()) if b], [3, 7])


class DrawTests(TestCase):
    """
    Seeded decisions, and probabilities 0 and 1 (toxiproxy #603, #148).
    """

    def draws(self, profile: str, connections: int = 200) -> list[list[str]]:
        faults = ListenerFaults(parse_profile(profile), "echo", Clock(), Counter())
        return [
            [f.name for f in faults.draw(faults.rng(n))]
            for n in range(1, connections + 1)
        ]

    def test_probability_zero_never(self) -> None:
        self.assertEqual(self.draws("reset-after=10,p=0;seed=1"), [[]] * 200)

    def test_probability_one_always(self) -> None:
        self.assertEqual(self.draws("reset-after=10,p=1"), [["reset-after"]] * 200)

    def test_same_seed_same_faults(self) -> None:
        profile = "delay=1s,p=0.5;corrupt=10,p=0.3;seed=42"
        first = self.draws(profile)
        self.assertEqual(first, self.draws(profile))
        self.assertNotEqual(first, self.draws(profile.replace("42", "43")))
        fired = sum("delay" in d for d in first)
        self.assertTrue(60 < fired < 140, fired)

    def test_no_global_random(self) -> None:
        """
        Drawing reads and changes no global random state.
        """
        random.seed(5)
        expected = random.random()
        random.seed(5)
        self.draws("delay=1s,p=0.5;seed=1", 10)
        self.assertEqual(random.random(), expected)

    def test_each_connection_logged(self) -> None:
        """
        One log line per connection names its faults, its ordinal, the seed.
        """
        from twisted.logger import globalLogPublisher

        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        factory = faulty_echo("close-after=10,p=0.5;seed=42")
        for _ in range(4):
            connect(factory, Echo)
        from twisted.logger import formatEvent

        lines = [
            formatEvent(e)
            for e in events
            if e.get("log_namespace") == "twisted_echo.faults"
        ]
        self.assertEqual(len(lines), 4)
        self.assertIn("(connection 4, seed 42)", lines[3])
        self.assertEqual(
            factory.counters.faults["close-after"],
            sum("close-after=10,p=0.5" in line for line in lines),
        )


class DeliveryWaitTests(TestCase):
    def test_waits_for_delivery_then_gives_up(self) -> None:
        """
        The reset waits while bytes are unacknowledged, checking every
        DELIVERY_POLL s, and is sent anyway after DELIVERY_WAIT_MAX s.
        """
        from twisted_echo.faults import endings

        owed = [100]
        self.patch(endings, "undelivered", lambda transport: owed[0])
        clock = Clock()
        fired: list[float] = []
        endings.DeliveryWait(clock, object(), lambda: fired.append(clock.seconds()))
        clock.advance(endings.DELIVERY_POLL)
        self.assertEqual(fired, [])
        owed[0] = 0
        clock.advance(endings.DELIVERY_POLL)
        self.assertEqual(len(fired), 1)
        owed[0] = 100
        endings.DeliveryWait(clock, object(), lambda: fired.append(clock.seconds()))
        while len(fired) < 2:
            clock.advance(1)
        waited = fired[1] - fired[0]
        self.assertTrue(30 <= waited <= 31.01, waited)
