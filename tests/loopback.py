"""
Real-socket helpers for tests: servers on 127.0.0.1 port 0, Twisted clients.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from twisted_echo._twisted.transport import use_lean_transport


def listen_tcp(test: TestCase, factory: Factory) -> int:
    """
    Listen with C{factory} on 127.0.0.1, a free port, with the transport
    the server uses (L{use_lean_transport}); stop at test cleanup.

    @return: the port number.
    """
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    use_lean_transport(port)
    test.addCleanup(port.stopListening)
    return int(port.getHost().port)


@implementer(IHalfCloseableProtocol)
class HalfCloseClient(Protocol):
    """
    Sends C{payload}, half-closes, and collects every byte that comes back.

    C{done} fires with the bytes received when the server closes.
    """

    def __init__(self, payload: bytes, chunk: int = 0) -> None:
        self.payload = payload
        self.received: list[bytes] = []
        self.count = 0
        self.digest = hashlib.sha256()
        self.done: Deferred[bytes] = Deferred()
        self.keep = len(payload) <= 1 << 20

    def connectionMade(self) -> None:
        self.transport.write(self.payload)  # type: ignore[union-attr]
        self.transport.loseWriteConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.count += len(data)
        self.digest.update(data)
        if self.keep:
            self.received.append(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(b"".join(self.received))


async def exchange(port: int, payload: bytes) -> HalfCloseClient:
    """
    Connect to 127.0.0.1:C{port}, send C{payload}, half-close, and wait
    until the server closes.

    @return: the finished client, with C{count}, C{digest}, C{received}.
    """
    client = HalfCloseClient(payload)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
    await endpoint.connect(Factory.forProtocol(lambda: client))
    await client.done
    return client


@implementer(IHalfCloseableProtocol, IPushProducer)
class StalledReader(Protocol):
    """
    A client that writes as fast as the connection takes it and does not
    read, until told to L{drain}.

    @ivar sent: bytes handed to the transport.
    @ivar received: bytes read back (only during L{drain}).
    """

    chunk = os.urandom(64 * 1024)

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.digest_out = hashlib.sha256()
        self.digest_in = hashlib.sha256()
        self.producing = True
        self.closed: Deferred[None] = Deferred()
        self.limit = 0

    def connectionMade(self) -> None:
        transport = self.transport
        transport.pauseProducing()  # type: ignore[union-attr]  # do not read
        transport.registerProducer(self, True)  # type: ignore[union-attr]

    def pauseProducing(self) -> None:
        self.producing = False

    def resumeProducing(self) -> None:
        self.producing = True
        reactor.callLater(0, self._pump)  # type: ignore[attr-defined]

    def stopProducing(self) -> None:
        self.producing = False

    def _pump(self) -> None:
        while self.producing and self.sent < self.limit:
            self.transport.write(self.chunk)  # type: ignore[union-attr]
            self.digest_out.update(self.chunk)
            self.sent += len(self.chunk)

    async def fill(
        self, limit: int, until: Callable[[], object], timeout: float = 30.0
    ) -> None:
        """
        Write until C{limit} bytes were sent, or C{until()} is true (polled
        every 10 ms), or C{timeout} seconds passed.
        """
        self.limit = limit
        started = reactor.seconds()  # type: ignore[attr-defined]
        self._pump()
        while self.sent < limit and reactor.seconds() - started < timeout:  # type: ignore[attr-defined]
            if until():
                break
            await deferLater(reactor, 0.01)

    async def drain(self, timeout: float = 60.0) -> None:
        """
        Stop writing, half-close, read everything back until the server
        closes.
        """
        self.limit = self.sent
        self.transport.unregisterProducer()  # type: ignore[union-attr]
        self.transport.loseWriteConnection()  # type: ignore[union-attr]
        self.transport.resumeProducing()  # type: ignore[union-attr]
        self.closed.addTimeout(timeout, reactor)
        await self.closed

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self.digest_in.update(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Any = None) -> None:
        if not self.closed.called:
            self.closed.callback(None)


async def connect_stalled_reader(port: int) -> StalledReader:
    """
    Connect a L{StalledReader} to 127.0.0.1:C{port}.
    """
    client = StalledReader()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
    await endpoint.connect(Factory.forProtocol(lambda: client))
    return client


def record_protocols(factory: Factory) -> list[Protocol]:
    """
    Make C{factory} remember every protocol it builds.

    @return: the list the protocols are appended to.
    """
    built: list[Protocol] = []
    build = factory.buildProtocol

    def buildProtocol(addr: Any) -> Protocol | None:
        protocol = build(addr)
        if protocol is not None:
            built.append(protocol)
        return protocol

    factory.buildProtocol = buildProtocol  # type: ignore[method-assign]
    return built


async def wait_until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """
    Let the reactor run until C{condition()} is true, checking every 10 ms.

    @raise AssertionError: after C{timeout} seconds.
    """
    started = reactor.seconds()  # type: ignore[attr-defined]
    while not condition():
        if reactor.seconds() - started > timeout:  # type: ignore[attr-defined]
            raise AssertionError(f"condition not met within {timeout} s")
        await deferLater(reactor, 0.01)
