"""
Tests for L{twisted_echo.client.probe} and
L{twisted_echo.client.probe_accounting}: C{sockecho-client probe}'s
accounting on synthetic arrivals, its pacing on a L{Clock}, and real runs
against a C{twistd} UDP echo, clean and with seeded UDP faults (checked
against the faults engine's replay of the same seed).
"""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.process import HOST, start_server
from twisted_echo.client.__main__ import build_parser
from twisted_echo.client.errors import ClientUsageError
from twisted_echo.client.probe import (
    ProbeConfig,
    ProbeProtocol,
    format_probe_report,
    parse_rate,
    run_probe,
)
from twisted_echo.client.probe_accounting import (
    HEADER_SIZE,
    ProbeAccount,
    probe_datagram,
)
from twisted_echo.faults.datagrams import REORDER_MAX_HOLD, DatagramFaults
from twisted_echo.faults.profile import parse_profile
from twisted_echo.policies.counters import ServiceCounters

SIZE = 64


def counts(report: dict[str, Any]) -> dict[str, Any]:
    """
    @return: C{report}'s counts, without the round-trip times.
    """
    keys = (
        "sent received lost lost_pct duplicated reordered corrupted "
        "truncated unidentified"
    ).split()
    return {k: report[k] for k in keys}


def sent_account(count: int, size: int = SIZE) -> tuple[ProbeAccount, list[bytes]]:
    account = ProbeAccount(size)
    return account, [account.record_sent(1000 * seq) for seq in range(count)]


def flipped(data: bytes, index: int) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0x10
    return bytes(changed)


class AccountingTests(TestCase):
    def test_datagram_layout(self) -> None:
        """
        Magic, sequence, send time, then padding up to the size; the
        padding depends on the sequence number.
        """
        data = probe_datagram(7, 123, SIZE)
        self.assertEqual(len(data), SIZE)
        self.assertEqual(data[:4], b"SEPR")
        self.assertEqual(int.from_bytes(data[4:12], "big"), 7)
        self.assertEqual(int.from_bytes(data[12:20], "big"), 123)
        self.assertEqual(HEADER_SIZE, 20)
        self.assertNotEqual(data[20:], probe_datagram(8, 123, SIZE)[20:])
        self.assertRaises(ValueError, probe_datagram, 0, 0, HEADER_SIZE - 1)

    def test_clean(self) -> None:
        account, sent = sent_account(4)
        for seq, data in enumerate(sent):
            account.record_arrival(data, 1000 * seq + 250_000)
        report = account.report()
        self.assertEqual(
            counts(report),
            {
                "sent": 4,
                "received": 4,
                "lost": 0,
                "lost_pct": 0.0,
                "duplicated": 0,
                "reordered": 0,
                "corrupted": 0,
                "truncated": 0,
                "unidentified": 0,
            },
        )
        self.assertEqual(
            report["rtt_us"], {"p50": 250, "p90": 250, "p99": 250, "max": 250}
        )

    def test_loss_duplicates_reorders(self) -> None:
        """
        Of 0..5: 1 never comes, 3 comes twice, 2 comes after 4 (reordered,
        once), 5 after 2 (not reordered: higher than all before it).
        """
        account, sent = sent_account(6)
        for seq in (0, 3, 3, 4, 2, 5):
            account.record_arrival(sent[seq], 10_000)
        self.assertEqual(
            counts(account.report()),
            {
                "sent": 6,
                "received": 6,
                "lost": 1,
                "lost_pct": 16.67,
                "duplicated": 1,
                "reordered": 1,
                "corrupted": 0,
                "truncated": 0,
                "unidentified": 0,
            },
        )

    def test_damage(self) -> None:
        """
        A truncated echo and one with a flipped padding bit are told which
        datagram they were (not lost); one with its sequence number flipped
        cannot be, and its datagram counts as lost. Damaged echoes give no
        round trip.
        """
        account, sent = sent_account(4)
        account.record_arrival(sent[0][:-8], 5_000)
        account.record_arrival(flipped(sent[1], 40), 5_000)
        account.record_arrival(flipped(sent[2], 11), 5_000)
        account.record_arrival(sent[3][:5], 5_000)
        report = account.report()
        self.assertEqual(
            counts(report),
            {
                "sent": 4,
                "received": 4,
                "lost": 2,
                "lost_pct": 50.0,
                "duplicated": 0,
                "reordered": 0,
                "corrupted": 2,
                "truncated": 2,
                "unidentified": 2,
            },
        )
        self.assertEqual(report["rtt_us"]["max"], 0)

    def test_foreign_and_forged(self) -> None:
        """
        A datagram naming a sequence never sent, or a sent one with another
        send time, is not taken for it.
        """
        account, sent = sent_account(2)
        account.record_arrival(probe_datagram(9, 0, SIZE), 1)
        account.record_arrival(probe_datagram(1, 999, SIZE), 1)
        account.record_arrival(b"x" * SIZE, 1)
        self.assertEqual(account.lost, 2)
        self.assertEqual(account.corrupted, 3)


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.connected: tuple[str, int] | None = None

    def connect(self, host: str, port: int) -> None:
        self.connected = (host, port)

    def write(self, data: bytes) -> None:
        self.written.append(data)


class PacingTests(TestCase):
    def test_rate_count_and_grace(self) -> None:
        """
        10 datagrams at 100/s: one at once, one every 10 ms; done 1 s of
        grace after the last; echoes counted with the clock's time.
        """
        clock = Clock()
        config = ProbeConfig.of("udp:127.0.0.1:7", 100.0, 10, None, SIZE, 1.0)
        protocol = ProbeProtocol(
            config, clock, lambda: round(clock.seconds() * 1e9), ("127.0.0.1", 7)
        )
        transport = FakeTransport()
        protocol.makeConnection(transport)  # type: ignore[arg-type]
        self.assertEqual(transport.connected, ("127.0.0.1", 7))
        self.assertEqual(len(transport.written), 1)
        clock.advance(0.0101)
        self.assertEqual(len(transport.written), 2)
        clock.pump([0.01] * 20)
        self.assertEqual(len(transport.written), 10)
        for data in transport.written:
            protocol.datagramReceived(data, ("127.0.0.1", 7))
        self.assertFalse(protocol.done.called)
        clock.advance(1.0)
        self.assertTrue(protocol.done.called)
        report = protocol.report()
        self.assertEqual(
            (report["sent"], report["received"], report["lost"]), (10, 10, 0)
        )
        text = format_probe_report(report)
        self.assertIn("lost        0 (0.00 %)", text)
        self.assertIn("10 datagrams of 64 B at 100/s", text)


class OptionTests(TestCase):
    def test_rate(self) -> None:
        self.assertEqual(parse_rate("100/s"), 100.0)
        self.assertEqual(parse_rate("2.5"), 2.5)
        for bad in ("0", "-1", "fast", "inf"):
            self.assertRaises(ValueError, parse_rate, bad)

    def test_count_from_duration_and_bounds(self) -> None:
        self.assertEqual(
            ProbeConfig.of("udp:h:7", 100.0, None, 2.5, SIZE, 1.0).count, 250
        )
        self.assertEqual(
            ProbeConfig.of("udp:h:7", 100.0, None, None, SIZE, 1.0).count, 1000
        )
        for args in (
            ("tcp:h:7", 100.0, 10, None, SIZE, 1.0),
            ("udp:h:7", 100.0, 10, 1.0, SIZE, 1.0),
            ("udp:h:7", 1e6, None, 10.0, SIZE, 1.0),
            ("udp:h:7", 100.0, 10, None, 70000, 1.0),
            ("udp:h:7", 100.0, 10, None, SIZE, 61.0),
        ):
            self.assertRaises(ClientUsageError, ProbeConfig.of, *args)

    def test_parser(self) -> None:
        args = build_parser().parse_args(
            ["probe", "udp:127.0.0.1:7", "--rate", "50/s", "--duration", "2", "--json"]
        )
        self.assertEqual(
            (args.rate, args.duration, args.count, args.json), (50.0, 2.0, None, True)
        )


class RefusedTests(TestCase):
    async def test_nothing_listens(self) -> None:
        """
        A probe of a UDP port nothing listens on (found by binding and
        closing one) ends early, says so and exits 1: no traceback.
        """
        import socket

        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
        sock.close()
        out = io.StringIO()
        config = ProbeConfig.of(f"udp:{HOST}:{port}", 100.0, 20, None, SIZE, 0.5)
        status = await run_probe(reactor, config, False, out)
        self.assertEqual(status, 1)
        self.assertIn("nothing listens there (ICMP port unreachable)", out.getvalue())
        self.assertIn("ended early", out.getvalue())
        self.assertEqual(self.flushLoggedErrors(), [])


def replayed(profile: str, count: int) -> dict[str, Any]:
    """
    @return: the counts a probe of C{count} datagrams sees behind a UDP
        listener with C{profile}, as the faults engine replays them on a
        clock (the listener's key is C{udp}, as twistd's first UDP echo
        listener).
    """
    clock = Clock()
    account, sent = sent_account(count)
    faults = DatagramFaults(
        parse_profile(profile, datagram=True),
        "udp",
        clock,
        ServiceCounters(),
        log=False,
    )
    arrivals: list[bytes] = []
    send = faults.wrap(lambda data, addr: arrivals.append(data), None)
    for data in sent:
        send(data, ("127.0.0.1", 1))
    clock.advance(REORDER_MAX_HOLD)
    for data in arrivals:
        account.record_arrival(data, 0)
    return counts(account.report())


class RealServerTests(TestCase):
    async def probe(self, port: int, count: int, rate: float) -> dict[str, Any]:
        out = io.StringIO()
        config = ProbeConfig.of(f"udp:{HOST}:{port}", rate, count, None, SIZE, 1.5)
        status = await run_probe(reactor, config, True, out)
        self.assertEqual(status, 0)
        report: dict[str, Any] = json.loads(out.getvalue())
        return report

    async def test_clean(self) -> None:
        """
        A real twistd UDP echo on loopback: every datagram comes back once,
        in order, intact, with round trips.
        """
        server = start_server(self)
        report = await self.probe(server.ports["udp"], 300, 300.0)
        self.assertEqual(
            counts(report),
            {
                "sent": 300,
                "received": 300,
                "lost": 0,
                "lost_pct": 0.0,
                "duplicated": 0,
                "reordered": 0,
                "corrupted": 0,
                "truncated": 0,
                "unidentified": 0,
            },
        )
        self.assertGreater(report["rtt_us"]["max"], 0)

    async def test_seeded_faults_match_the_replay(self) -> None:
        """
        Behind C{--faults udp=loss,p=10%;duplicate,p=5%;reorder=2,p=5%;
        truncate=8,p=5%;seed=21}, the probe's counts of 600 datagrams are
        exactly those the engine's replay of that seed gives. 300/s stays
        well under the server's --udp-rate and its socket buffer, above
        reorder's K per second.
        """
        profile = "loss,p=10%;duplicate,p=5%;reorder=2,p=5%;truncate=8,p=5%;seed=21"
        server = start_server(self, ["--faults", f"udp={profile}"])
        report = await self.probe(server.ports["udp"], 600, 300.0)
        expected = replayed(profile, 600)
        self.assertEqual(counts(report), expected)
        for name in ("lost", "duplicated", "reordered", "truncated"):
            self.assertGreater(expected[name], 0, name)
