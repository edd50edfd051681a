"""
Tests for L{twisted_echo._twisted.writequeue}: reading a Twisted socket
transport's write queue, on real loopback connections.
"""

from __future__ import annotations

import hashlib
import os
import socket

from twisted.internet import abstract, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from tests.loopback import exchange, listen_tcp, wait_until
from twisted_echo._twisted import writequeue
from twisted_echo._twisted.writequeue import (
    nothing_queued,
    queued_bytes,
    write_queue_misfit,
)
from twisted_echo.policies.limits import ConnectionLimits
from twisted_echo.services import stream
from twisted_echo.services.echo import EchoFactory


class Held(Protocol):
    """
    A server protocol the test writes through.
    """

    def connectionMade(self) -> None:  # noqa: N802 (Twisted's name)
        self.factory.held.append(self)  # type: ignore[union-attr]


def _queue_elsewhere(self: abstract.FileDescriptor, data: bytes) -> None:
    # What a Twisted release that renamed its write queue would do.
    self.__dict__.setdefault("_renamed_queue", []).append(data)


class WriteQueueTests(TestCase):
    """
    L{queued_bytes} and L{nothing_queued} follow what a real TCP transport
    holds, and a changed Twisted is noticed and served without them.
    """

    def test_installed_twisted_fits(self) -> None:
        """
        The installed Twisted queues writes as sockecho reads them; this
        fails first when a Twisted release changes that.
        """
        self.assertIsNone(write_queue_misfit())
        self.assertTrue(writequeue.WRITE_QUEUE_FITS)

    async def test_queue_follows_a_real_connection(self) -> None:
        """
        4 MiB written to a real loopback connection are 4 MiB queued at
        once; the queue shrinks as the peer reads, to nothing when it has
        read every byte.
        """
        factory = Factory.forProtocol(Held)
        factory.held = []  # type: ignore[attr-defined]
        port = listen_tcp(self, factory)
        client = socket.create_connection(("127.0.0.1", port), 10)
        self.addCleanup(client.close)
        client.setblocking(False)
        await wait_until(lambda: factory.held)  # type: ignore[attr-defined]
        (server,) = factory.held  # type: ignore[attr-defined]
        transport = server.transport
        self.assertTrue(nothing_queued(transport))
        self.assertEqual(queued_bytes(transport), 0)
        payload = os.urandom(4 << 20)
        transport.write(payload)
        self.assertFalse(nothing_queued(transport))
        self.assertEqual(queued_bytes(transport), len(payload))
        seen: list[int] = []
        received = bytearray()

        def read_some() -> bool:
            try:
                while chunk := client.recv(1 << 20):
                    received.extend(chunk)
            except BlockingIOError:
                pass
            queued = queued_bytes(transport)
            assert queued is not None
            seen.append(queued)
            return len(received) == len(payload) and queued == 0

        await wait_until(read_some, timeout=30)
        self.assertEqual(bytes(received), payload)
        self.assertTrue(nothing_queued(transport))
        self.assertTrue(any(0 < queued < len(payload) for queued in seen), seen[:5])

    def test_queued_bytes_of_other_transports(self) -> None:
        """
        An object that is no socket transport has no queue to read.
        """
        self.assertIsNone(queued_bytes(object()))

    async def test_changed_twisted_falls_back(self) -> None:
        """
        On a Twisted whose C{FileDescriptor.write} queues elsewhere, the
        check says so; with the fast paths off, a 1 MiB half-closed echo
        over a real connection still comes back whole, and L{queued_bytes}
        says it does not know.
        """
        original = abstract.FileDescriptor.write
        abstract.FileDescriptor.write = _queue_elsewhere  # type: ignore[method-assign]
        try:
            misfit = write_queue_misfit()
        finally:
            abstract.FileDescriptor.write = original  # type: ignore[method-assign]
        self.assertEqual(misfit, "5 bytes written are not 5 queued")
        self.patch(writequeue, "WRITE_QUEUE_FITS", False)
        self.patch(stream, "TRANSPORT_LAYOUT_FITS", False)
        factory = EchoFactory(reactor, limits=ConnectionLimits(0, 0))
        port = listen_tcp(self, factory)
        payload = os.urandom(1 << 20)
        client = await exchange(port, payload)
        self.assertEqual(client.count, len(payload))
        self.assertEqual(client.digest.digest(), hashlib.sha256(payload).digest())
        self.assertIsNone(queued_bytes(client.transport))
