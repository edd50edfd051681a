# -*- test-case-name: tests.test_twisted_tlsmemorybio -*-
"""
Tests for L{twisted_echo._twisted.tlsmemorybio}: the base class that turns
L{TLSMemoryBIOProtocol}'s private methods into public hooks behaves as
Twisted's own when no hook is overridden, calls each hook where Twisted
calls the private method, and the check of Twisted's privates fails when
Twisted changes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_echo._twisted import tlsmemorybio
from twisted_echo._twisted.tlsmemorybio import (
    HookedTLSMemoryBIOProtocol,
    twisted_tls_missing,
)
from twisted_echo.listening.certificate import self_signed_certificate
from twisted_echo.listening.tls import _ProbeCreator, tls_layer_misfit


class Recording(HookedTLSMemoryBIOProtocol):
    """
    The base class with every hook recorded, then left to its default.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hooks: list[Any] = []

    def handshake_status_checked(self) -> None:
        self.hooks.append(("handshake", self.handshake_done))
        super().handshake_status_checked()

    def close_notify_received(self) -> bool:
        self.hooks.append("close_notify")
        return super().close_notify_received()

    def tls_shutdown_finished(self, reason: Failure | None) -> None:
        self.hooks.append(("finished", reason))
        super().tls_shutdown_finished(reason)

    def buffered_write(self, octets: bytes) -> None:
        self.hooks.append(("buffered", octets))
        super().buffered_write(octets)

    def shutdown_tls(self) -> None:
        self.hooks.append("shutdown")
        super().shutdown_tls()


class Side(Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = True


class Producer:
    def __init__(self) -> None:
        self.paused = 0

    def pauseProducing(self) -> None:
        self.paused += 1

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class Prebuilt(Factory):
    def __init__(self, protocol: Protocol) -> None:
        self.protocol_built = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self.protocol_built


class RecordingFactory(TLSMemoryBIOFactory):
    protocol = Recording


def side(creator: Any, is_client: bool) -> tuple[Side, Recording, StringTransport]:
    inner = Side()
    factory = RecordingFactory(creator, is_client, Prebuilt(inner))
    protocol: Any = factory.buildProtocol(None)
    wire = StringTransport()
    protocol.makeConnection(wire)
    return inner, protocol, wire


def pump(*pairs: tuple[StringTransport, Recording]) -> None:
    """
    Move bytes written to each transport to the other side, until none
    move (bounded).
    """
    for _ in range(20):
        moved = False
        for wire, target in pairs:
            data = wire.value()
            wire.clear()
            if data:
                moved = True
                target.dataReceived(data)
        if not moved:
            return


class HookedTLSTests(SynchronousTestCase):
    """
    L{HookedTLSMemoryBIOProtocol} over a TLS 1.3 conversation in memory.
    """

    def setUp(self) -> None:
        key, certificate = self_signed_certificate()
        self.server, self.server_tls, self.server_wire = side(
            _ProbeCreator(key, certificate), False
        )
        self.client, self.client_tls, self.client_wire = side(_ProbeCreator(), True)

    def pump(self) -> None:
        pump((self.client_wire, self.server_tls), (self.server_wire, self.client_tls))

    def test_handshake_hook(self) -> None:
        """
        C{handshake_status_checked} is called at each step of the
        handshake, the last with L{handshake_done} true.
        """
        self.assertFalse(self.server_tls.handshake_done)
        self.pump()
        self.assertTrue(self.server_tls.handshake_done)
        self.assertTrue(self.client_tls.handshake_done)
        steps = [h for h in self.server_tls.hooks if h[0] == "handshake"]
        self.assertEqual(steps[0], ("handshake", False))
        self.assertEqual(steps[-1], ("handshake", True))

    def test_buffered_write_hook(self) -> None:
        """
        Bytes written before the handshake go to C{buffered_write} and
        wait (L{writes_pending}); by default the producer registered is
        paused, as Twisted does; they arrive once the handshake is done.
        """
        producer = Producer()
        self.server_tls.registerProducer(producer, True)
        self.server_tls.write(b"hello")
        self.assertIn(("buffered", b"hello"), self.server_tls.hooks)
        self.assertTrue(self.server_tls.writes_pending)
        self.assertIsNotNone(self.server_tls.registered_producer)
        self.assertEqual(producer.paused, 1)
        self.pump()
        self.assertFalse(self.server_tls.writes_pending)
        self.assertEqual(self.client.received, b"hello")

    def test_close_notify_the_stock_way(self) -> None:
        """
        With the hooks left to their defaults, a peer's close_notify goes
        to C{close_notify_received}, then closes as Twisted's does: our
        close_notify (C{shutdown_tls}), the TLS session finished cleanly,
        the TCP connection closed.
        """
        self.pump()
        self.client_tls.write(b"ping")
        self.client_tls.loseConnection()
        self.pump()
        self.assertEqual(self.server.received, b"ping")
        hooks = [h for h in self.server_tls.hooks if h[0] != "handshake"]
        self.assertEqual(hooks, ["close_notify", "shutdown", ("finished", None)])
        self.assertTrue(self.server_tls.tls_lost)
        self.assertTrue(self.server_wire.disconnecting)

    def test_close_notify_handled(self) -> None:
        """
        A C{close_notify_received} that returns L{True} keeps the
        connection open: Twisted's close is not taken.
        """
        self.pump()
        self.server_tls.close_notify_received = lambda: True  # type: ignore[method-assign]
        self.client_tls.loseConnection()
        self.pump()
        self.assertFalse(self.server_tls.tls_lost)
        self.assertFalse(self.server_wire.disconnecting)
        self.assertTrue(self.server_tls.send_close_notify())
        self.assertTrue(self.server_wire.value())

    def test_released_at_close(self) -> None:
        """
        After C{connectionLost} the SSL connection is let go of
        (L{tls_open}); L{release_buffers} drops the producer and the
        bytes waiting, and L{send_close_notify} then does nothing.
        """
        self.server_tls.registerProducer(Producer(), True)
        self.server_tls.write(b"waiting")
        self.server_tls.connectionLost(Failure(ConnectionError("gone")))
        self.assertFalse(self.server_tls.tls_open)
        self.server_tls.release_buffers()
        self.assertIsNone(self.server_tls.registered_producer)
        self.assertFalse(self.server_tls.writes_pending)
        self.assertFalse(self.server_tls.send_close_notify())
        self.assertTrue(self.server.lost)


class TwistedChangedTests(SynchronousTestCase):
    """
    The check of Twisted's privates fails, and the TLS layer falls back to
    Twisted's stock TLS, when Twisted changes.
    """

    def test_installed_twisted_fits(self) -> None:
        """
        The installed Twisted has every private the base needs.
        """
        self.assertIsNone(twisted_tls_missing())

    def test_missing_method_found(self) -> None:
        """
        A private method gone from L{TLSMemoryBIOProtocol} is reported,
        and the layer does not fit.
        """
        self.patch(TLSMemoryBIOProtocol, "_flushSendBIO", None)
        reason = "TLSMemoryBIOProtocol._flushSendBIO is missing"
        self.assertEqual(twisted_tls_missing(), reason)
        self.assertEqual(tls_layer_misfit(), reason)

    def test_missing_state_found(self) -> None:
        """
        Private state gone from L{TLSMemoryBIOProtocol} is reported.
        """
        self.patch(tlsmemorybio, "TWISTED_STATE", ("_handshakeState",))
        self.assertEqual(
            twisted_tls_missing(), "TLSMemoryBIOProtocol._handshakeState is missing"
        )

    def test_changed_flush_found(self) -> None:
        """
        A Twisted whose C{_checkHandshakeStatus} no longer flushes the
        handshake's bytes (the base's hooks then see no handshake finish)
        fails the layer's behaviour check.
        """
        self.patch(TLSMemoryBIOProtocol, "_checkHandshakeStatus", lambda self: None)
        self.assertIsNotNone(tls_layer_misfit())
