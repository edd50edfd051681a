# -*- test-case-name: tests.test_client_probe -*-
"""
C{sockecho-client probe udp:HOST:PORT}: measure a UDP echo path (RFC 862)
and the network between: sequence-numbered, timestamped datagrams at a
steady rate, and a report of loss, duplication, reordering, damage and
round-trip percentiles (L{twisted_echo.client.probe_accounting}).

Bounded: at most L{MAX_COUNT} datagrams, then a grace period of at most
L{MAX_GRACE} seconds for the last echoes.
"""

from __future__ import annotations

import json
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from twisted.internet import error
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.protocol import DatagramProtocol

from twisted_echo.client.endpoints import (
    parse_datagram_endpoint,
    resolve_datagram_target,
)
from twisted_echo.client.errors import ClientUsageError
from twisted_echo.client.probe_accounting import HEADER_SIZE, ProbeAccount

#: The most datagrams one probe sends (its send times are kept).
MAX_COUNT = 1_000_000
#: The longest grace period after the last send, seconds.
MAX_GRACE = 60.0
#: The largest UDP payload over IPv4, bytes.
MAX_SIZE = 65507
#: Seconds between two rounds of sending (the datagrams due are sent at
#: each round, so rates above 1/TICK are kept on average).
TICK = 0.005


@dataclass(frozen=True)
class ProbeConfig:
    """
    One probe run.

    @ivar endpoint: C{udp:HOST:PORT}.
    @ivar rate: datagrams per second, > 0.
    @ivar count: datagrams to send, 1 to L{MAX_COUNT}.
    @ivar size: bytes per datagram, C{HEADER_SIZE} to L{MAX_SIZE}.
    @ivar grace: seconds to wait for echoes after the last send.
    """

    endpoint: str
    rate: float
    count: int
    size: int
    grace: float

    @classmethod
    def of(
        cls,
        endpoint: str,
        rate: float,
        count: int | None,
        duration: float | None,
        size: int,
        grace: float,
    ) -> ProbeConfig:
        """
        @param count: datagrams to send, or C{None} to use C{duration}.
        @param duration: seconds of sending (C{rate * duration}
            datagrams, rounded up), or C{None}.
        @return: the run they describe (1,000 datagrams when neither
            C{count} nor C{duration} is given).
        @raise ClientUsageError: for values out of bounds, or C{count}
            and C{duration} both given.
        """
        if not endpoint.strip().lower().startswith("udp:"):
            raise ClientUsageError(
                f"probe measures a UDP echo: udp:HOST:PORT, not {endpoint!r}"
            )
        if count is not None and duration is not None:
            raise ClientUsageError("give --count or --duration, not both")
        if duration is not None:
            count = max(1, math.ceil(rate * duration))
        if count is None:
            count = 1000
        if count > MAX_COUNT:
            raise ClientUsageError(f"{count} datagrams is over the probe's {MAX_COUNT}")
        if not HEADER_SIZE <= size <= MAX_SIZE:
            raise ClientUsageError(
                f"--size {size}: a probe datagram is {HEADER_SIZE} to {MAX_SIZE} bytes"
            )
        if not 0 <= grace <= MAX_GRACE:
            raise ClientUsageError(f"--grace {grace:g}: 0 to {MAX_GRACE:g} seconds")
        return cls(endpoint, rate, count, size, grace)


def parse_rate(text: str) -> float:
    """
    @param text: C{N} or C{N/s}: datagrams per second (C{100}, C{2.5/s}).
    @return: the rate, > 0.
    @raise ValueError: for anything else.
    """
    number = text.strip()
    if number.lower().endswith("/s"):
        number = number[:-2]
    value = float(number)
    if not 0 < value < math.inf:
        raise ValueError(text)
    return value


class ProbeProtocol(DatagramProtocol):
    """
    Sends the datagrams as they fall due, counts what comes back.

    @ivar done: fires with C{None} once the grace period after the last
        send is over (or sending failed).
    @ivar problems: one line per send failure or ICMP refusal (the first
        few).
    """

    def __init__(
        self,
        config: ProbeConfig,
        clock: Any,
        now_ns: Callable[[], int],
        address: tuple[str, int],
    ) -> None:
        """
        @param clock: L{twisted.internet.interfaces.IReactorTime}.
        @param now_ns: the time, nanoseconds, for send times and round trips.
        """
        self.config = config
        self.clock = clock
        self.now_ns = now_ns
        self.address = address
        self.account = ProbeAccount(config.size)
        self.done: Deferred[None] = Deferred()
        self.problems: list[str] = []
        self.refused = 0
        self.send_errors = 0
        self.started = 0.0
        self.elapsed = 0.0
        self.ended_early = False
        self._call: Any = None

    def startProtocol(self) -> None:
        self.transport.connect(*self.address)  # type: ignore[union-attr]
        self.started = self.clock.seconds()
        self._send_due()

    def _send_due(self) -> None:
        self._call = None
        if self.transport is None:
            return
        config = self.config
        elapsed = self.clock.seconds() - self.started
        due = min(config.count, math.floor(elapsed * config.rate + 1e-9) + 1)
        account = self.account
        while account.sent < due:
            datagram = account.record_sent(self.now_ns())
            try:
                self.transport.write(datagram)  # type: ignore[call-arg]
            except (OSError, error.MessageLengthError) as e:
                self.send_errors += 1
                self._problem(f"cannot send a datagram: {e}")
        if account.sent >= config.count:
            self.elapsed = self.clock.seconds() - self.started
            self._call = self.clock.callLater(config.grace, self._finish)
            return
        next_due = account.sent / config.rate
        wait = max(next_due - (self.clock.seconds() - self.started), 0.0)
        self._call = self.clock.callLater(max(wait, TICK), self._send_due)

    def stopProtocol(self) -> None:
        """
        The socket closed: on the run's end, or before it (Twisted closes a
        connected UDP socket whose peer's host reports the port
        unreachable): then the run ends early.
        """
        if not self.done.called:
            self.ended_early = True
            self._problem(
                "the socket closed before the run's end: nothing listens there "
                "(ICMP port unreachable)"
            )
            self.stop()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.account.record_arrival(datagram, self.now_ns())

    def connectionRefused(self) -> None:
        """
        ICMP port unreachable: nothing listens at the address (yet).
        """
        self.refused += 1
        self._problem("connection refused (ICMP port unreachable)")

    def _problem(self, line: str) -> None:
        if len(self.problems) < 5:
            self.problems.append(line)

    def _finish(self) -> None:
        self._call = None
        if not self.done.called:
            self.done.callback(None)

    def stop(self) -> None:
        """
        Stop sending and waiting now.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._finish()

    def report(self) -> dict[str, Any]:
        """
        @return: the run's report: the configuration (C{endpoint},
            C{rate} per second, C{size} bytes, C{grace_s}), C{sending_s}
            (seconds from the first send to the last), the counts of
            L{ProbeAccount.report}, C{refused} and C{send_errors}, and
            C{problems}.
        """
        config = self.config
        report: dict[str, Any] = {
            "endpoint": config.endpoint,
            "rate": config.rate,
            "size": config.size,
            "grace_s": config.grace,
            "sending_s": round(self.elapsed, 3),
        }
        report.update(self.account.report())
        report["refused"] = self.refused
        report["send_errors"] = self.send_errors
        report["problems"] = list(self.problems)
        report["ended_early"] = self.ended_early
        return report


def format_probe_report(report: dict[str, Any]) -> str:
    """
    @param report: L{ProbeProtocol.report}'s result.
    @return: the human-readable report, several lines, no final newline.
    """
    rtt = report["rtt_us"]
    lines = [
        f"probe {report['endpoint']}: {report['sent']} datagrams of "
        f"{report['size']} B at {report['rate']:g}/s in {report['sending_s']} s, "
        f"then {report['grace_s']:g} s for echoes",
        f"received    {report['received']}",
        f"lost        {report['lost']} ({report['lost_pct']:.2f} %)",
        f"duplicated  {report['duplicated']}",
        f"reordered   {report['reordered']}",
        f"corrupted   {report['corrupted']}",
        f"truncated   {report['truncated']}"
        + (
            f" ({report['unidentified']} damaged beyond telling which)"
            if report["unidentified"]
            else ""
        ),
        f"rtt us      p50 {rtt['p50']}  p90 {rtt['p90']}  p99 {rtt['p99']}  "
        f"max {rtt['max']}",
    ]
    lines.extend(f"  problem: {p}" for p in report["problems"])
    if report["ended_early"]:
        lines.append("result      ended early: the figures are of a partial run")
    return "\n".join(lines)


async def run_probe(
    reactor: Any,
    config: ProbeConfig,
    json_output: bool,
    stdout: IO[str],
    now_ns: Callable[[], int] = time.monotonic_ns,
) -> int:
    """
    Run the probe C{config} describes and print its report.

    @param reactor: provides C{IReactorUDP}, C{IReactorTime} and
        C{resolve}.
    @param json_output: print one JSON object instead of the text report.
    @param now_ns: the clock of send times and round trips, nanoseconds.
    @return: the exit status: 0 once the report is printed (a probe
        measures; losses are its result, not a failure); 1 when the run
        ended early (nothing listens: ICMP port unreachable).
    @raise twisted_echo.client.endpoints.EndpointError: for a bad
        endpoint or a host name that does not resolve.
    """
    target = parse_datagram_endpoint(config.endpoint)
    address, _family = await resolve_datagram_target(reactor, target)
    protocol = ProbeProtocol(config, reactor, now_ns, (address, target.port))
    port = reactor.listenUDP(
        0, protocol, interface="::" if ":" in address else "", maxPacketSize=65535
    )
    try:
        port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    except (AttributeError, OSError):
        pass
    try:
        await protocol.done
    finally:
        protocol.stop()
        await maybeDeferred(port.stopListening)
    report = protocol.report()
    if json_output:
        print(json.dumps(report), file=stdout, flush=True)
    else:
        print(format_probe_report(report), file=stdout, flush=True)
    return 1 if protocol.ended_early else 0


def _rate_argument(text: str) -> float:
    import argparse

    try:
        return parse_rate(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected datagrams per second (100, 100/s), not {text!r}"
        ) from None


def _number_argument(kind: type, low: float, what: str) -> Callable[[str], Any]:
    import argparse

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not low <= value < math.inf:
            raise argparse.ArgumentTypeError(f"expected {what}, not {text!r}")
        return value

    return parse


def add_probe_command(commands: Any) -> None:
    """
    Add C{probe} to C{sockecho-client}'s subcommands (an C{argparse}
    subparsers object).
    """
    probe = commands.add_parser(
        "probe",
        help="measure UDP loss, duplication, reordering and round trips",
        description="Send sequence-numbered, timestamped datagrams to a UDP "
        "echo (udp:HOST:PORT) at a steady rate and report what came back: "
        "lost, duplicated, reordered, corrupted and truncated datagrams and "
        "round-trip percentiles. Mind the server's own rate limit (sockecho: "
        "--udp-rate, 1000/s per source by default): datagrams over it are "
        "not answered and count as lost.",
    )
    probe.add_argument("endpoint", metavar="ENDPOINT")
    probe.add_argument(
        "--rate",
        type=_rate_argument,
        default=100.0,
        metavar="N/s",
        help="datagrams per second [100/s]",
    )
    bound = probe.add_mutually_exclusive_group()
    bound.add_argument(
        "--count",
        type=_number_argument(int, 1, "a positive integer"),
        default=None,
        metavar="N",
        help=f"datagrams to send, at most {MAX_COUNT} [1000]",
    )
    bound.add_argument(
        "--duration",
        type=_number_argument(float, 1e-9, "a positive number of seconds"),
        default=None,
        metavar="SECONDS",
        help="send for this long instead (rate x duration datagrams)",
    )
    probe.add_argument(
        "--size",
        type=_number_argument(int, HEADER_SIZE, f"{HEADER_SIZE} to {MAX_SIZE} bytes"),
        default=64,
        metavar="BYTES",
        help=f"bytes per datagram, {HEADER_SIZE} to {MAX_SIZE} [%(default)s]",
    )
    probe.add_argument(
        "--grace",
        type=_number_argument(float, 0, "a number of seconds"),
        default=2.0,
        metavar="SECONDS",
        help="seconds to wait for echoes after the last send, at most "
        f"{MAX_GRACE:g} [%(default)s]",
    )
    probe.add_argument(
        "--json", action="store_true", help="print one JSON object instead"
    )


async def run_probe_command(reactor: Any, args: Any) -> int:
    """
    Run C{probe} with its parsed C{args}.

    @return: the exit status.
    @raise ClientError: for a bad endpoint or options out of bounds.
    """
    import sys

    config = ProbeConfig.of(
        args.endpoint, args.rate, args.count, args.duration, args.size, args.grace
    )
    return await run_probe(reactor, config, args.json, sys.stdout)
