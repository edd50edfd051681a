"""
Tests for L{twisted_echo.records.flows}: UDP peer flows' records (issue 22),
on a L{Clock} and, end to end, against a real sockecho over UDP.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from twisted_echo.policies.loopguard import LoopGuard
from twisted_echo.policies.ratelimit import SourceRateLimiter
from twisted_echo.records import causes
from twisted_echo.records.flows import FLOW_BYTES, Flow, FlowTable
from twisted_echo.records.ring import RecordRing, matcher
from twisted_echo.records.schema import problems
from twisted_echo.services.udp import UDPEcho
from twisted_echo.testing.spawn import start_sockecho

PEER = ("127.0.0.1", 40000)
OTHER = ("127.0.0.1", 40001)
IO_TIMEOUT = 10.0


class Sent:
    """
    Stands in for a UDP transport: keeps what is written.
    """

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def write(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))


def listening(
    clock: Clock, window: float = 30.0, most: int = 100, **keywords: Any
) -> tuple[UDPEcho, RecordRing, Sent]:
    """
    @return: a L{UDPEcho} with flows on C{clock}, its ring and transport.
    """
    ring = RecordRing(100, clock)
    echo = UDPEcho(**keywords)
    echo.flows = FlowTable("udp", ring, clock, window, most)
    transport = Sent()
    echo.transport = transport  # type: ignore[assignment]
    echo.startProtocol()
    return echo, ring, transport


class FlowTableTests(TestCase):
    """
    L{FlowTable} on a L{Clock}: flows end after the window of silence, the
    oldest is evicted over the bound, the rest at the listener's stop.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)

    def test_idle_window(self) -> None:
        """
        Three datagrams, then the window's silence: one record, 3 in and 3
        out, ended C{udp_flow_idle} (its duration up to the window's end);
        a datagram within the window keeps the flow alive.
        """
        echo, ring, sent = listening(self.clock, window=5)
        for data in (b"a", b"bb", b"ccc"):
            echo.datagramReceived(data, PEER)
            self.clock.advance(4)
        self.assertEqual(len(ring), 0)
        self.clock.advance(0.5)
        self.assertEqual(len(ring), 0)
        # The sweep comes at most every quarter window: by then it has
        # ended, its end put at the window's end.
        self.clock.advance(0.5 + 5 / 4)
        (record,) = ring.since()
        made = record.as_dict()
        self.assertEqual(
            (made["reads_in"], made["bytes_in"], made["writes_out"], made["bytes_out"]),
            (3, 6, 3, 6),
        )
        self.assertEqual(made["cause"], causes.UDP_FLOW_IDLE)
        self.assertEqual(made["transport"], "udp")
        self.assertEqual(made["client"], "udp:127.0.0.1:40000")
        self.assertEqual(made["service"], "udp")
        self.assertEqual((made["start"], made["last_seen"]), (1000, 8))
        self.assertEqual(made["duration"], 13)
        self.assertEqual((made["first_in"], made["first_out"]), (0, 0))
        self.assertEqual(made["dropped"], {})
        self.assertEqual(problems(made), [])
        self.assertEqual(len(echo.flows or ()), 0)
        self.assertEqual(sent.sent, [(b"a", PEER), (b"bb", PEER), (b"ccc", PEER)])

    def test_one_timer_ends_each_flow_in_turn(self) -> None:
        """
        Two sources: each flow ends its own window after its last datagram.
        """
        echo, ring, _ = listening(self.clock, window=5)
        echo.datagramReceived(b"x", PEER)
        self.clock.advance(2)
        echo.datagramReceived(b"y", OTHER)
        self.clock.advance(3)
        self.assertEqual([r.client for r in ring.since()], ["udp:127.0.0.1:40000"])
        self.clock.advance(2)
        self.assertEqual(
            [r.client for r in ring.since()],
            ["udp:127.0.0.1:40000", "udp:127.0.0.1:40001"],
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_evicted_over_the_bound(self) -> None:
        """
        With room for 2 flows, a third source ends the oldest started flow
        (C{udp_flow_evicted}); the table never holds more than 2.
        """
        echo, ring, _ = listening(self.clock, most=2)
        echo.datagramReceived(b"1", PEER)
        echo.datagramReceived(b"2", OTHER)
        echo.datagramReceived(b"3", PEER)
        echo.datagramReceived(b"4", ("127.0.0.1", 40002))
        (record,) = ring.since()
        self.assertEqual(
            (record.client, record.cause, record.reads_in),
            ("udp:127.0.0.1:40000", causes.UDP_FLOW_EVICTED, 2),
        )
        for port in range(50000, 50050):
            echo.datagramReceived(b"flood", ("127.0.0.1", port))
        self.assertEqual(len(echo.flows or ()), 2)
        self.assertEqual(len(ring.since(matches=matcher(service="udp"))), 51)

    def test_drops_counted_by_reason(self) -> None:
        """
        Datagrams not answered are counted in the flow by reason: a
        never-answered source port, a source over its rate.
        """
        limit = SourceRateLimiter(1, 1, self.clock)
        echo, ring, _ = listening(
            self.clock, source_limit=limit, loop_guard=LoopGuard([40001])
        )
        for _ in range(3):
            echo.datagramReceived(b"ab", PEER)
        echo.datagramReceived(b"x", OTHER)
        echo.stopProtocol()
        first, second = ring.since()
        self.assertEqual(
            (first.reads_in, first.writes_out, first.dropped, first.cause),
            (3, 1, {"rate_source": 2}, causes.DRAIN),
        )
        self.assertEqual((second.writes_out, second.dropped), (0, {"loop_port": 1}))
        self.assertEqual(second.as_dict()["first_out"], None)
        self.assertEqual(problems(second.as_dict()), [])

    def test_faults(self) -> None:
        """
        A reply that C{--faults udp=loss} dropped is counted not answered
        (C{fault_loss}); the record names the faults the flow's replies had.
        """
        from twisted_echo.faults.datagrams import DatagramFaults
        from twisted_echo.faults.profile import parse_profile
        from twisted_echo.policies.counters import ServiceCounters

        ring = RecordRing(10, self.clock)
        counters = ServiceCounters()
        echo = UDPEcho(counters)
        echo.flows = FlowTable("udp", ring, self.clock)
        echo.faults = DatagramFaults(
            parse_profile("loss,p=1", datagram=True),
            "udp",
            self.clock,
            counters,
            log=False,
        )
        echo.transport = Sent()  # type: ignore[assignment]
        echo.startProtocol()
        echo.datagramReceived(b"ab", PEER)
        echo.datagramReceived(b"cd", PEER)
        echo.stopProtocol()
        (record,) = ring.since()
        self.assertEqual(
            (record.reads_in, record.writes_out, record.bytes_out, record.dropped),
            (2, 0, 0, {"fault_loss": 2}),
        )
        self.assertEqual(record.faults, ["loss"])
        self.assertEqual(record.as_dict()["first_out"], None)
        self.assertEqual(counters.datagrams_out, 0)

    def test_stop_ends_all_with_drain(self) -> None:
        """
        The listener's stop ends every live flow (C{drain}) and its timer.
        """
        echo, ring, _ = listening(self.clock)
        echo.datagramReceived(b"x", PEER)
        echo.stopProtocol()
        self.assertEqual([r.cause for r in ring.since()], [causes.DRAIN])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_flows_without_records(self) -> None:
        """
        Without a flow table (C{--records 0}) the echo is as before.
        """
        echo = UDPEcho()
        transport = Sent()
        echo.transport = transport  # type: ignore[assignment]
        echo.startProtocol()
        echo.datagramReceived(b"x", PEER)
        self.assertEqual(transport.sent, [(b"x", PEER)])

    def test_bad_bounds(self) -> None:
        """
        A window not above 0 or a bound under 1 is refused.
        """
        ring = RecordRing(1, self.clock)
        self.assertRaises(ValueError, FlowTable, "udp", ring, self.clock, 0)
        self.assertRaises(ValueError, FlowTable, "udp", ring, self.clock, 1, 0)

    def test_size(self) -> None:
        """
        A live flow costs about L{FLOW_BYTES} (what C{--udp-flows}' help
        and the module's docstring say): its object, key and table entry.
        """
        flow = Flow(1.0)
        flow.drop("rate_source")
        key = ("203.0.113.200", 65535)
        size = (
            sys.getsizeof(flow)
            + sys.getsizeof(key)
            + sum(sys.getsizeof(part) for part in key)
            + sys.getsizeof(flow.dropped)
            + 100  # the table's entry
        )
        self.assertLessEqual(size, FLOW_BYTES)


class RealSocketTests(TestCase):
    """
    A real sockecho (a child process) and a real UDP client.
    """

    def test_three_datagrams_one_record(self) -> None:
        """
        A client sends 3 datagrams and gets 3 echoes; once the (short)
        window has passed, C{/records?service=udp} has one flow record for
        it: 3 in, 3 out, ended C{udp_flow_idle}.
        """
        server = start_sockecho("--udp-flow-window", "0.3", "--udp-flows", "64")
        self.addCleanup(server.stop)
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(client.close)
        client.settimeout(IO_TIMEOUT)
        client.bind(("127.0.0.1", 0))
        target = server.address("udp")
        for data in (b"one", b"two", b"three"):
            client.sendto(data, target)
            self.assertEqual(client.recvfrom(100)[0], data)
        (record,) = server.wait_for(1, service="udp", timeout=IO_TIMEOUT)
        host, port = client.getsockname()
        self.assertEqual(record["client"], f"udp:{host}:{port}")
        self.assertEqual(record["listener"], f"udp:{target[0]}:{target[1]}")
        self.assertEqual(
            (record["reads_in"], record["bytes_in"]), (3, len(b"onetwothree"))
        )
        self.assertEqual(
            (record["writes_out"], record["bytes_out"]), (3, len(b"onetwothree"))
        )
        self.assertEqual(record["cause"], "udp_flow_idle")
        self.assertEqual(problems(record), [])
        self.assertEqual(server.records("echo"), [])


class OptionTests(TestCase):
    """
    C{--udp-flow-window} and C{--udp-flows}: defaults, and one clear error
    for a value out of range.
    """

    def test_defaults(self) -> None:
        """
        30 s of silence; UDP flows not recorded (0) unless asked for.
        """
        from twisted_echo.app.options import Options

        options = Options()
        options.parseOptions([])
        self.assertEqual((options["udp-flow-window"], options["udp-flows"]), (30, 0))

    def test_out_of_range(self) -> None:
        """
        A window of 0 or a negative number of flows is refused, naming the
        option.
        """
        from twisted.python.usage import UsageError

        from twisted_echo.app.options import Options

        for given, named in (
            (["--udp-flow-window", "0"], "--udp-flow-window takes"),
            (["--udp-flows", "-1"], "--udp-flows takes"),
        ):
            error = self.assertRaises(UsageError, Options().parseOptions, given)
            self.assertIn(named, str(error))

    def test_flows_recorded_only_when_asked(self) -> None:
        """
        By default the UDP listeners record no flows (each datagram costs
        what it did); C{--udp-flows N} gives each a flow table of N, and
        C{--records 0} none at all.
        """
        from twisted_echo.app.options import Options, makeService
        from twisted_echo.listening.listen import DatagramListenerService

        def tables(*given: str) -> list[object]:
            options = Options()
            options.parseOptions(["--no-echo", "--no-upper", "--no-welcome", *given])
            top = makeService(options)  # built, not started: nothing listens
            return [
                getattr(child.protocol, "flows", None)
                for child in top
                if isinstance(child, DatagramListenerService)
            ]

        self.assertEqual(tables(), [None])
        (table,) = tables("--udp-flows", "16")
        self.assertIsNotNone(table)
        self.assertEqual(tables("--udp-flows", "16", "--records", "0"), [None])
