"""
What the stall watch of issue 19 item 1 costs, in memory and on loopback
sockets (the machine's load does not blur it the way a request/response
A/B on a shared machine does):

 - a connection's open and close (C{connectionMade} + C{connectionLost}) on
   a L{StringTransport}, µs each; the watch adds one sweep wake-up per open,
   timed alone too;
 - one request/response through C{dataReceived} (unchanged code: the
   figure shows it did not move);
 - one stall sweep per connection: quiet (nothing written since the last
   sweep: a comparison) and busy (written since: the kernel's counters read
   on a real loopback socket, C{TCP_INFO} + C{SIOCOUTQ}).

    python benchmarks/stall_cost.py
"""

from __future__ import annotations

import socket
import timeit

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from twisted_echo.policies.limits import ConnectionLimits, Timeouts
from twisted_echo.services.echo import Echo, EchoFactory


def best(statement: object, number: int) -> float:
    """
    @return: µs per call of C{statement}, the best of 7 runs.
    """
    return min(timeit.repeat(statement, number=number, repeat=7)) / number * 1e6  # type: ignore[arg-type]


def main() -> None:
    clock = Clock()
    factory = EchoFactory(
        clock, limits=ConnectionLimits(0, 0), timeouts=Timeouts(stall=60)
    )
    factory.log_connections = False
    keep = Echo()
    keep.factory = factory
    keep.makeConnection(StringTransport())

    def open_close() -> None:
        protocol = Echo()
        protocol.factory = factory
        protocol.makeConnection(StringTransport())
        protocol.connectionLost(None)

    protocol = Echo()
    protocol.factory = factory
    transport = StringTransport()
    protocol.makeConnection(transport)
    data = b"x" * 64

    def request() -> None:
        protocol.dataReceived(data)
        transport.clear()

    print(f"open + close, in memory: {best(open_close, 20_000):.2f} us")
    print(f"one 64-byte request, in memory: {best(request, 200_000):.3f} us")
    sweep_quiet = best(protocol.sweep_stall, 500_000)
    print(f"stall sweep, quiet connection: {sweep_quiet:.3f} us")
    wake = best(factory.stall_sweeper.wake, 1_000_000)
    print(f"stall sweeper wake-up, per connection opened: {wake:.3f} us")

    if not hasattr(protocol, "_peer_progress"):
        return
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    protocol._socket = server  # as a plain TCP connection has
    protocol.transport.dataBuffer = b""  # type: ignore[union-attr]
    protocol.transport.offset = 0  # type: ignore[union-attr]
    protocol.transport._tempDataLen = 0  # type: ignore[union-attr]

    def sweep_busy() -> None:
        protocol.bytes_out += 1
        protocol.sweep_stall()

    print(f"stall sweep, connection that wrote: {best(sweep_busy, 50_000):.3f} us")
    for sock in (client, server, listener):
        sock.close()


if __name__ == "__main__":
    main()
