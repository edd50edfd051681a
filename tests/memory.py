"""
In-memory helpers for protocol tests: a protocol on a StringTransport.
"""

from __future__ import annotations

from typing import TypeVar

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

P = TypeVar("P", bound=Protocol)

PEER = IPv4Address("TCP", "192.0.2.7", 40000)


def connect(factory: Factory, protocol_type: type[P]) -> tuple[P, StringTransport]:
    """
    Build a protocol from C{factory} and connect it to a L{StringTransport}.

    @return: the protocol and its transport.
    """
    protocol = factory.buildProtocol(PEER)
    assert isinstance(protocol, protocol_type)
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 7007), peerAddress=PEER
    )
    protocol.makeConnection(transport)
    return protocol, transport


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    """
    Split C{data} at the offsets C{cuts} (any order, clamped to its length).
    """
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def run_clock(clock: Clock, seconds: float, step: float = 0.25) -> None:
    """
    Advance C{clock} by C{seconds} in small steps, as real time passes, so
    that timers rescheduled while it runs fire when they would.
    """
    steps = round(seconds / step)
    for _ in range(steps):
        clock.advance(step)
