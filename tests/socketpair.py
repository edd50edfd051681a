"""
One conversation with a service, run two ways: over Twisted's in-memory
L{StringTransport}, and over a real C{socket.socketpair()} adopted by the
reactor (C{reactor.adoptStreamConnection}), where the connection takes the
production paths: sockecho's direct socket writes, its immediate close
(C{transport.connectionLost} from L{StreamProtocol._finish_close}), the
kernel's half-close and Twisted's C{connectionLost} (issue 20, "Tests that
take the real paths": the in-memory transport never takes the production
close path, which is how a budget leak in welcome went unseen).

L{converse} sends chunks (each one read by the service as a read of its
own: over the socketpair it waits until the service counted it), optionally
half-closes, and returns what came back and whether the service closed;
L{Conversation.assert_released} checks that a closed connection gave back
everything it held (connection limits, memory budget, counters).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from tests.loopback import wait_until

#: The two ways L{converse} runs.
TRANSPORTS = ("memory", "socketpair")
#: The peer address the in-memory conversation's factory is given.
PEER = IPv4Address("TCP", "192.0.2.7", 40000)


def clock_for(over: str) -> Any:
    """
    @return: the clock a factory for a conversation C{over} runs on: a
        L{Clock} in memory, the reactor over the socketpair.
    """
    return Clock() if over == "memory" else reactor


@implementer(IHalfCloseableProtocol)
class _Peer(Protocol):
    """
    The test's end of the socketpair: keeps what the service sends, and
    fires C{lost} when the connection is gone.
    """

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.lost: Deferred[None] = Deferred()
        self.read_closed = False

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def readConnectionLost(self) -> None:
        # The service closed: close our side too.
        self.read_closed = True
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


@dataclass
class Conversation:
    """
    What one conversation gave.

    @ivar over: C{"memory"} or C{"socketpair"}.
    @ivar received: the bytes the service sent.
    @ivar closed: whether the service closed the connection.
    @ivar protocol: the service's protocol.
    @ivar factory: its factory.
    """

    over: str
    received: bytes
    closed: bool
    protocol: Any
    factory: Any

    def assert_released(self, test: Any) -> None:
        """
        Check (with C{test}'s assertions) that the closed connection gave
        back everything it held: no connection open or counted, no
        connection limits place, no memory budget weight, no unfinished
        line counted in the budget.
        """
        factory = self.factory
        budget = factory.budget
        test.assertEqual(
            {
                "open_protocols": len(factory.open_protocols),
                "connections_open": factory.counters.connections_open,
                "limits_open_total": factory.limits.open_total,
                "limits_open_by_peer": dict(factory.limits.open_by_peer),
                "budget_weight_total": budget.weight_total,
                "budget_line_bytes": budget.line_bytes,
            },
            {
                "open_protocols": 0,
                "connections_open": 0,
                "limits_open_total": 0,
                "limits_open_by_peer": {},
                "budget_weight_total": 0,
                "budget_line_bytes": 0,
            },
            self.over,
        )


async def converse(
    over: str,
    factory: Factory,
    chunks: Sequence[bytes],
    half_close: bool = True,
    timeout: float = 10.0,
) -> Conversation:
    """
    Connect to a protocol of C{factory} over C{over} (one of
    L{TRANSPORTS}), send C{chunks} one read each, half-close if
    C{half_close}, and collect what comes back.

    The service is expected to close (after the half-close, or by itself
    without one). Over the socketpair, returns once it closed and its
    connection is gone; in memory, once the chunks were fed (a close by the
    service ends in C{connectionLost}, as the reactor would report it).

    @raise AssertionError: when the socketpair conversation does not end
        within C{timeout} seconds.
    """
    if over == "memory":
        return _converse_in_memory(factory, chunks, half_close)
    if over == "socketpair":
        return await _converse_over_socketpair(factory, chunks, half_close, timeout)
    raise ValueError(over)


def _converse_in_memory(
    factory: Factory, chunks: Sequence[bytes], half_close: bool
) -> Conversation:
    protocol: Any = factory.buildProtocol(PEER)
    transport = StringTransport(peerAddress=PEER)
    protocol.makeConnection(transport)
    for chunk in chunks:
        if transport.disconnecting:
            break
        protocol.dataReceived(chunk)
    if half_close and not transport.disconnecting:
        protocol.readConnectionLost()
    closed = bool(transport.disconnecting)
    if closed:
        protocol.connectionLost(None)
    return Conversation("memory", transport.value(), closed, protocol, factory)


async def _converse_over_socketpair(
    factory: Factory, chunks: Sequence[bytes], half_close: bool, timeout: float
) -> Conversation:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    built: list[Any] = []
    build = factory.buildProtocol

    def record(addr: Any) -> Any:
        protocol = build(addr)
        built.append(protocol)
        return protocol

    factory.buildProtocol = record  # type: ignore[method-assign]
    try:
        # adoptStreamConnection takes a copy of each descriptor.
        reactor.adoptStreamConnection(  # type: ignore[attr-defined]
            theirs.fileno(), socket.AF_UNIX, factory
        )
        peer = _Peer()
        reactor.adoptStreamConnection(  # type: ignore[attr-defined]
            ours.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda: peer)
        )
    finally:
        del factory.buildProtocol
        ours.close()
        theirs.close()
    (protocol,) = built
    sent = 0
    for chunk in chunks:
        if peer.read_closed or peer.lost.called:
            break
        peer.transport.write(chunk)  # type: ignore[union-attr]
        sent += len(chunk)
        # One read per chunk: wait until the service has read this one.
        await wait_until(
            lambda sent=sent: (
                protocol.bytes_in >= sent or peer.read_closed or peer.lost.called
            ),
            timeout,
        )
    if half_close and not peer.lost.called:
        peer.transport.loseWriteConnection()  # type: ignore[union-attr]
    # Half-closed, or not: either way the service is to close.
    await wait_until(lambda: peer.lost.called, timeout)
    closed = peer.read_closed
    # The service's connectionLost comes on a reactor turn of its own.
    open_protocols = factory.open_protocols  # type: ignore[attr-defined]
    await wait_until(lambda: protocol not in open_protocols, timeout)
    return Conversation(
        "socketpair", b"".join(peer.received), closed, protocol, factory
    )
