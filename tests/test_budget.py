"""
Tests for L{twisted_echo.policies.budget}: allowances that keep all connections
together within C{--max-buffer}.
"""

from __future__ import annotations

import os

from hypothesis import example, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.loopback import (
    connect_stalled_reader,
    exchange,
    listen_tcp,
    record_protocols,
    wait_until,
)
from tests.memory import connect
from twisted_echo.policies.budget import (
    MAX_ALLOWANCE,
    MIN_ALLOWANCE,
    MemoryBudget,
    power_of_two_at_most,
)
from twisted_echo.policies.limits import ConnectionLimits
from twisted_echo.services.echo import EchoFactory
from twisted_echo.services.welcome import Welcome, WelcomeFactory


class FakeConnection:
    def __init__(self, weight: int = 2) -> None:
        self._weight = weight
        self.allowance = MAX_ALLOWANCE

    @property
    def weight(self) -> int:
        return self._weight

    def set_allowance(self, allowance: int) -> None:
        self.allowance = allowance


class Pool:
    """
    Open connections under one budget, as factories hold them.
    """

    def __init__(self, total: int) -> None:
        self.open: set[FakeConnection] = set()
        self.budget = MemoryBudget(total, [self.open])

    def connect(self, weight: int = 2) -> FakeConnection:
        connection = FakeConnection(weight)
        self.budget.attach(connection)
        self.open.add(connection)
        return connection

    def close(self, connection: FakeConnection) -> None:
        self.open.discard(connection)
        self.budget.detach(connection)

    def held_at_most(self) -> int:
        return sum(c.weight * c.allowance for c in self.open)


MIB = 1 << 20


class MemoryBudgetTests(TestCase):
    def test_few_connections_read_256_kib(self) -> None:
        pool = Pool(64 * MIB)
        connections = [pool.connect() for _ in range(50)]
        self.assertEqual({c.allowance for c in connections}, {MAX_ALLOWANCE})

    def test_a_horde_shares_three_quarters(self) -> None:
        """
        4,000 echo connections in 64 MiB: 4 KiB each (the largest power of
        two within three quarters of the budget), 31 MiB in all.
        """
        pool = Pool(64 * MIB)
        connections = [pool.connect() for _ in range(4000)]
        self.assertEqual({c.allowance for c in connections}, {4096})
        self.assertLessEqual(pool.held_at_most(), 0.75 * 64 * MIB)

    def test_a_reader_doubles_up_to_256_kib_from_the_reserve(self) -> None:
        pool = Pool(64 * MIB)
        horde = [pool.connect() for _ in range(4000)]
        reader = pool.connect()
        for _ in range(20):
            pool.budget.drained(reader)
        self.assertEqual(reader.allowance, MAX_ALLOWANCE)
        self.assertEqual({c.allowance for c in horde}, {4096})
        self.assertLessEqual(pool.held_at_most(), 64 * MIB)

    def test_boosts_stop_at_the_budget(self) -> None:
        pool = Pool(4 * MIB)
        readers = [pool.connect() for _ in range(100)]
        for _ in range(10):
            for reader in readers:
                pool.budget.drained(reader)
        self.assertLessEqual(pool.held_at_most(), 4 * MIB)
        self.assertGreater(max(r.allowance for r in readers), pool.budget.base)

    def test_closing_gives_back(self) -> None:
        pool = Pool(64 * MIB)
        connections = [pool.connect() for _ in range(4000)]
        for connection in connections[10:]:
            pool.close(connection)
        self.assertEqual({c.allowance for c in pool.open}, {MAX_ALLOWANCE})
        self.assertEqual(pool.budget.weight_total, 20)

    def test_handshakes_shrink_the_base_and_give_it_back(self) -> None:
        """
        TLS handshakes under way (L{MemoryBudget.hold_handshake}) are
        promised like allowances: 500 of 48 KiB beside 100 echo connections
        in 64 MiB halve the base (128 KiB to 64 KiB) so that all fits; once
        they finish, the base is back.
        """
        pool = Pool(64 * MIB)
        connections = [pool.connect() for _ in range(100)]
        self.assertEqual(pool.budget.base, 128 * 1024)
        for _ in range(500):
            pool.budget.hold_handshake(48 * 1024)
        self.assertEqual({c.allowance for c in connections}, {64 * 1024})
        self.assertEqual(pool.budget.promised(), pool.held_at_most() + 500 * 48 * 1024)
        self.assertLessEqual(pool.budget.promised(), 64 * MIB)
        for _ in range(500):
            pool.budget.hold_handshake(-48 * 1024)
        self.assertEqual({c.allowance for c in connections}, {128 * 1024})
        self.assertEqual(pool.budget.handshake_bytes, 0)

    def test_handshakes_count_against_unfinished_lines(self) -> None:
        """
        When handshakes hold the budget, a growing welcome line stops its
        connection reading until they are given back.
        """
        pool = Pool(1 * MIB)
        stopped: list[str] = []

        class Holder(FakeConnection):
            def stop_reading(self) -> None:
                stopped.append("stop")

            def resume_reading(self) -> None:
                stopped.append("resume")

        line = Holder()
        pool.budget.attach(line)
        pool.open.add(line)
        pool.budget.hold_handshake(MIB)
        pool.budget.hold_line(line, 100)
        self.assertEqual(stopped, ["stop"])
        pool.budget.hold_handshake(-MIB)
        self.assertEqual(stopped, ["stop", "resume"])

    def test_no_budget_means_256_kib_always(self) -> None:
        pool = Pool(0)
        connections = [pool.connect() for _ in range(5000)]
        for c in connections[:10]:
            pool.budget.drained(c)
        self.assertEqual({c.allowance for c in connections}, {MAX_ALLOWANCE})

    @settings(max_examples=200, deadline=None)
    @example(
        # A boost taken, then a handshake: the boost must be taken back
        # (the reserve once left handshakes out and went 48 KiB over).
        steps=[("open", 6)] + [("open", 0)] * 10 + [("drain", 0), ("shake", 0)],
        mib=3,
    )
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["open", "close", "drain", "shake", "shaken"]),
                st.integers(0, 999),
            ),
            max_size=300,
        ),
        st.integers(1, 64),
    )
    def test_promises_stay_within_the_budget(
        self, steps: list[tuple[str, int]], mib: int
    ) -> None:
        """
        Whatever connections open, close and drain, and TLS handshakes
        start and finish, what they may hold together stays within the
        budget (while the base is above its floor), and the budget's own
        sum agrees with theirs.
        """
        pool = Pool(mib * MIB)
        live: list[FakeConnection] = []
        handshakes = 0
        for action, pick in steps:
            if action == "shake":
                handshakes += 1
                pool.budget.hold_handshake(48 * 1024)
            elif action == "shaken" and handshakes:
                handshakes -= 1
                pool.budget.hold_handshake(-48 * 1024)
            elif action in ("open", "shaken") or not live:
                live.append(pool.connect(weight=1 + pick % 8))
            elif action == "close":
                pool.close(live.pop(pick % len(live)))
            else:
                pool.budget.drained(live[pick % len(live)])
            held = pool.held_at_most() + handshakes * 48 * 1024
            self.assertEqual(held, pool.budget.promised())
            if pool.budget.base > MIN_ALLOWANCE:
                self.assertLessEqual(held, mib * MIB)

    @given(
        total=st.one_of(st.just(0), st.integers(1, 1 << 40)),
        weights=st.integers(0, 1 << 20),
        base_exponent=st.integers(10, 18),
        handshakes=st.integers(0, 1 << 36),
    )
    def test_base_fits_agrees_with_fitting_base(
        self, total: int, weights: int, base_exponent: int, handshakes: int
    ) -> None:
        """
        The shortcut that skips recomputing the base says "fits" exactly
        when the computation would give the current base.
        """
        budget = MemoryBudget(total)
        budget.weight_total = weights
        budget.handshake_bytes = handshakes
        budget.base = 1 << base_exponent
        self.assertEqual(
            budget._base_fits(), budget._fitting_base() == budget.base, budget.base
        )

    @given(st.floats(min_value=0, max_value=2**62, allow_nan=False))
    def test_power_of_two_at_most_any_value(self, value: float) -> None:
        power = power_of_two_at_most(value)
        self.assertEqual(power & (power - 1), 0)
        self.assertTrue(power <= max(value, 1) < 2 * power, (value, power))

    def test_power_of_two_at_most(self) -> None:
        self.assertEqual(
            [power_of_two_at_most(x) for x in (0.5, 1, 3, 4096, 6000.5)],
            [1, 1, 2, 4096, 4096],
        )


class BudgetLoopbackTests(TestCase):
    """
    Real connections to echo under a small budget.
    """

    async def test_non_readers_held_within_the_budget_readers_served(self) -> None:
        """
        With a 2 MiB budget, 40 clients that write and never read are
        paused with at most 2 MiB queued for them all, and a client that
        reads still gets a 1 MiB echo back whole.
        """
        budget = MemoryBudget(2 * MIB)
        factory = EchoFactory(reactor, limits=ConnectionLimits(0, 0), budget=budget)
        servers = record_protocols(factory)
        port = listen_tcp(self, factory)
        clients = [await connect_stalled_reader(port) for _ in range(40)]
        for client in clients:
            self.addCleanup(client.transport.abortConnection)  # type: ignore[union-attr]
            client.limit = 64 * MIB
            client._pump()

        def all_paused() -> bool:
            return len(servers) == 40 and all(
                s.transport.producerPaused
                for s in servers  # type: ignore[union-attr]
            )

        await wait_until(all_paused, timeout=30)
        self.assertLessEqual(factory.held_bytes(), 2 * MIB)
        self.assertEqual({s.allowance for s in servers}, {16384})
        payload = os.urandom(MIB)
        client = await exchange(port, payload)
        self.assertEqual(client.received and b"".join(client.received), payload)
        self.assertGreater(factory.counters.pauses, 0)


class WelcomeLineBudgetTests(TestCase):
    """
    Unfinished welcome lines count in the budget.
    """

    def test_growing_line_over_the_budget_stops_reading_until_it_ends(self) -> None:
        """
        30 KiB budget, one welcome connection (promised 8 x 2 KiB): a 15 KiB
        unfinished line puts the total over, so the connection stops being
        read from; when the line ends it is read from again.
        """
        budget = MemoryBudget(30 * 1024)
        factory = WelcomeFactory(Clock(), budget=budget)
        protocol, transport = connect(factory, Welcome)
        self.assertEqual(protocol.allowance, 2048)
        protocol.dataReceived(b"x" * 10_000)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(factory.held_bytes(), 10_000)
        protocol.dataReceived(b"y" * 5_000)
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(factory.counters.pauses, 1)
        protocol.dataReceived(b"\n")
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(budget.line_bytes, 0)

    def test_closing_gives_the_line_back(self) -> None:
        budget = MemoryBudget(30 * 1024)
        factory = WelcomeFactory(Clock(), budget=budget)
        protocol, _ = connect(factory, Welcome)
        protocol.dataReceived(b"z" * 12_000)
        self.assertEqual(budget.line_bytes, 12_000)
        protocol.connectionLost(None)
        self.assertEqual(budget.line_bytes, 0)
        self.assertEqual(budget.weight_total, 0)
