"""
What connection records and UDP peer flows cost, counted in memory
(issue 22): instructions per connection or per datagram, with no reactor
wait and no load generator, so that the figures repeat exactly.

The `connect` and `udp` loads of `benchmarks/run.py --count` count a whole
server process, which includes what it does per second of wall time and
what batching a loaded machine causes (a count under valgrind runs at the
machine's pace): their figures move by a few per cent (`udp` by up to
15 %) from run to run, which blurs a difference of a few thousand
instructions. Here one case runs N1 and N2 times under cachegrind and
the cost of one is (count2 - count1) / (N2 - N1):

    python benchmarks/records_cost.py            # this tree
    PYTHONPATH=/tmp/base python benchmarks/records_cost.py   # another one

TCP cases (a connection's life on a real `tcp.Server` over a socketpair:
open, a 64-byte echo, the client's FIN, the close; the connection lines
logged by sockecho's text observer, or as JSON): `text` (no records),
`text+records`, `json` (no records), `json+records` (the records in the
JSON log). UDP cases (`UDPEcho.datagramReceived` then the reactor's
`runUntilCurrent` and `timeout`, one datagram per reactor turn as in the
`udp` load): `udp` (no flows, no timer pending), `udp+timer` (one timer
pending: what any pending `callLater` costs each reactor turn), `udp+flows`
(`--udp-flows 4096`: its sweep timer pending while a flow is live).
Needs valgrind. Records alive when the process exits are traversed by the
interpreter's last collections; the N2 run holds N2 - N1 more of them, so
a small share of `+records` is that.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

N1, N2 = 200, 1200
CASES = (
    "text", "text+records", "json", "json+records", "udp", "udp+timer", "udp+flows",
)  # fmt: skip


def connections(case: str, n: int) -> None:
    """Open, echo and close `n` connections (in the counted process)."""
    from twisted.internet import reactor, tcp
    from twisted.internet.address import IPv4Address
    from twisted.internet.error import ConnectionDone
    from twisted.logger import globalLogPublisher
    from twisted.python.failure import Failure

    from twisted_echo.log.buffer import BufferedLogObserver
    from twisted_echo.log.classic import ClassicText
    from twisted_echo.log.jsontext import event_as_json
    from twisted_echo.records.log import log_record
    from twisted_echo.records.ring import RecordRing
    from twisted_echo.services.echo import EchoFactory

    class Port:
        _realPortNumber = 7007
        _type = "TCP"

        def getHost(self) -> IPv4Address:
            return IPv4Address("TCP", "127.0.0.1", 7007)

    out = io.StringIO()
    for observer in list(globalLogPublisher._observers):
        globalLogPublisher.removeObserver(observer)
    json = case.startswith("json")
    if json:
        globalLogPublisher.addObserver(lambda event: out.write(event_as_json(event)))
    else:
        text = BufferedLogObserver(out, ClassicText(), lambda: None, takes_lines=True)
        globalLogPublisher.addObserver(text)
    factory = EchoFactory(reactor)
    if case.endswith("+records"):
        ring = factory.records = RecordRing(2000, reactor)
        if json:
            ring.observers.append(log_record)
            factory.records_in_log = True  # what app/options.py sets
    done = Failure(ConnectionDone())
    port = Port()
    for i in range(n):
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        peer = ("127.0.0.1", 40000 + i % 1000)
        protocol: Any = factory.buildProtocol(peer)
        transport = tcp.Server(ours, protocol, peer, port, i, reactor)
        protocol.makeConnection(transport)
        protocol.dataReceived(b"x" * 64)
        theirs.recv(100)
        protocol.readConnectionLost()
        transport.connectionLost(done)
        theirs.close()
        if i % 200 == 0:
            out.seek(0)
            out.truncate()


def datagrams(case: str, n: int) -> None:
    """Echo `n` datagrams, one per reactor turn (in the counted process)."""
    from twisted.internet import reactor

    from twisted_echo.records.flows import FlowTable
    from twisted_echo.records.ring import RecordRing
    from twisted_echo.services.udp import UDPEcho

    protocol = UDPEcho()
    protocol._sendto = lambda data, addr: None
    if case == "udp+flows":
        protocol.flows = FlowTable("udp", RecordRing(2000, reactor), reactor)
    elif case == "udp+timer":
        reactor.callLater(3600, lambda: None)
    datagram = b"x" * 64
    host = ["127.0.0.", "1"]
    for _ in range(n):
        # a new (host, port) tuple and host string, as recvfrom makes them
        protocol.datagramReceived(datagram, ("".join(host), 40000))
        reactor.runUntilCurrent()
        reactor.timeout()


def count(case: str, n: int) -> int:
    """The instructions of a process running `case` `n` times."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        subprocess.run(
            ["valgrind", "--tool=cachegrind", "--cache-sim=no",
             f"--cachegrind-out-file={out}", sys.executable, __file__, case, str(n)],
            check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": "0"},
        )  # fmt: skip
        for line in out.read_text().splitlines():
            if line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError("no cachegrind summary")


def main() -> None:
    if len(sys.argv) == 3:
        case, n = sys.argv[1], int(sys.argv[2])
        (datagrams if case.startswith("udp") else connections)(case, n)
        return
    import twisted_echo

    print(f"twisted_echo from {Path(twisted_echo.__file__).parent}")
    per: dict[str, float] = {}
    for case in sys.argv[1:] or CASES:
        per[case] = (count(case, N2) - count(case, N1)) / (N2 - N1)
        base = per.get(case.split("+")[0])
        extra = "" if base is None or base == per[case] else (
            f"  ({per[case] - base:+,.0f}"
            # a datagram's path here lacks the socket calls and the wait
            + ("" if case.startswith("udp") else f", {per[case] / base - 1:+.1%}")
            + ")"
        )  # fmt: skip
        unit = "datagram" if case.startswith("udp") else "connection"
        print(f"{case:13} {per[case]:9,.0f} instructions per {unit}{extra}", flush=True)


if __name__ == "__main__":
    main()
