# -*- test-case-name: tests.test_stream -*-
"""
What every TCP service of sockecho shares: half-close, flow control and
per-connection accounting.

Half-close (RFC 9293 section 3.6, C{shutdown(SHUT_WR)}, C{nc -N}): when the
peer stops sending, every reply byte still owed is sent before the connection
closes. Twisted's plain L{twisted.protocols.wire.Echo} closes at once and
loses what was still queued.

Flow control: the transport is registered as its own streaming producer, so
when its write buffer is full (the peer does not read) Twisted stops reading
from the peer, and resumes when the buffer drains. Server memory per
connection stays bounded by the transport's buffer size.
"""

from __future__ import annotations

from typing import ClassVar

from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_echo.address import describe_address
from twisted_echo.counters import ServiceCounters


class StreamFactory(Factory):
    """
    Builds one service's protocols and holds that service's settings.

    @ivar service_name: the name used in logs and counters (C{"echo"}...).
    @ivar clock: the reactor's clock, for connection durations (seconds).
    @ivar counters: this service's L{ServiceCounters}.
    """

    protocol: type[StreamProtocol]  # type: ignore[assignment]
    service_name: ClassVar[str] = "stream"
    noisy = False

    def __init__(
        self, clock: IReactorTime, counters: ServiceCounters | None = None
    ) -> None:
        self.clock = clock
        self.counters = counters if counters is not None else ServiceCounters()


@implementer(IHalfCloseableProtocol)
class StreamProtocol(Protocol):
    """
    Base protocol of the TCP services: half-close, flow control, accounting.

    Subclasses implement C{dataReceived}, count what they read in
    C{bytes_in}, reply with L{send}, and may override L{end_of_input} to send
    what they still hold when the peer stops sending.

    @ivar bytes_in: bytes read from the peer on this connection.
    @ivar bytes_out: bytes written to the peer on this connection.
    """

    factory: StreamFactory
    _log = Logger()
    bytes_in = 0
    bytes_out = 0
    _opened_at = 0.0
    _producing = False

    def connectionMade(self) -> None:
        """
        Register the transport as its own push producer (flow control), and
        account for the new connection.
        """
        transport = self.transport
        assert transport is not None
        if IConsumer.providedBy(transport) and IPushProducer.providedBy(transport):
            transport.registerProducer(transport, True)
            self._producing = True
        factory = self.factory
        self._opened_at = factory.clock.seconds()
        factory.counters.connections_open += 1
        factory.counters.connections_total += 1
        self._log.info(
            "{service} connection from {peer}",
            service=factory.service_name,
            peer=describe_address(transport.getPeer()),
        )

    def send(self, data: bytes) -> None:
        """
        Write C{data} to the peer and count it.

        @param data: the bytes to send.
        """
        self.bytes_out += len(data)
        self.transport.write(data)  # type: ignore[union-attr]

    def close(self) -> None:
        """
        Close the connection after every byte already written is sent.
        """
        transport = self.transport
        assert transport is not None
        if self._producing:
            # A paused streaming producer would keep the transport from
            # closing once its buffer drains; unregister it first.
            self._producing = False
            transport.unregisterProducer()  # type: ignore[attr-defined]
        transport.loseConnection()

    def end_of_input(self) -> None:
        """
        Called when the peer has stopped sending (half-close), before the
        connection is closed; send here whatever is still owed.
        """

    def readConnectionLost(self) -> None:
        """
        The peer shut down its sending side: send what is still owed, then
        close once it is all written.
        """
        self.end_of_input()
        self.close()

    def writeConnectionLost(self) -> None:
        """
        Our sending side was closed: nothing more can be delivered, so close.
        """
        self.close()

    def connectionLost(self, reason: Failure | None = None) -> None:
        """
        Account for the closed connection and log its totals.
        """
        factory = self.factory
        counters = factory.counters
        counters.connections_open -= 1
        counters.bytes_in += self.bytes_in
        counters.bytes_out += self.bytes_out
        transport = self.transport
        self._log.info(
            "{service} connection from {peer} closed: {bytes_in} bytes in, "
            "{bytes_out} bytes out, {duration:.3f} s",
            service=factory.service_name,
            peer=describe_address(transport.getPeer()) if transport else "?",
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            duration=factory.clock.seconds() - self._opened_at,
        )
