"""
Tests for L{twisted_echo._twisted.linereceiver}: the unfinished line a
L{LineReceiver} holds, as the welcome service counts it.
"""

from __future__ import annotations

import socket

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.protocols import basic
from twisted.trial.unittest import TestCase

from tests.loopback import listen_tcp, record_protocols, wait_until
from tests.memory import connect
from twisted_echo._twisted import linereceiver
from twisted_echo._twisted.linereceiver import line_buffer_misfit, unfinished_line_bytes
from twisted_echo.services.welcome import Welcome, WelcomeFactory


def _held_elsewhere(self: basic.LineReceiver, data: bytes) -> None:
    # What a Twisted release that renamed LineReceiver._buffer would do.
    held = self.__dict__.get("_held", b"") + data
    *lines, self._held = held.split(self.delimiter)  # type: ignore[attr-defined]
    for line in lines:
        self.lineReceived(line)


class LineReceiverTests(TestCase):
    """
    The welcome service sees its unfinished line grow and go; a changed
    Twisted is noticed and the service still answers.
    """

    def test_installed_twisted_fits(self) -> None:
        """
        The installed Twisted's L{LineReceiver} holds the unfinished line
        in C{_buffer}; this fails first when a Twisted release changes it.
        """
        self.assertIsNone(line_buffer_misfit())

    async def test_unfinished_line_over_a_real_connection(self) -> None:
        """
        A welcome client's unfinished line of 7 bytes is 7 bytes held once
        read, and none once the line is finished and answered.
        """
        factory = WelcomeFactory(reactor)
        protocols = record_protocols(factory)
        port = listen_tcp(self, factory)
        client = socket.create_connection(("127.0.0.1", port), 10)
        self.addCleanup(client.close)
        client.sendall(b"partial")
        await wait_until(
            lambda: protocols and protocols[0]._lines.unfinished_bytes() == 7  # type: ignore[attr-defined]
        )
        self.assertEqual(unfinished_line_bytes(protocols[0]._lines), 7)  # type: ignore[attr-defined]
        client.sendall(b"\n")
        await wait_until(
            lambda: protocols[0]._lines.unfinished_bytes() == 0  # type: ignore[attr-defined]
        )

    def test_changed_twisted_falls_back(self) -> None:
        """
        On a Twisted whose L{LineReceiver} keeps the line elsewhere, the
        check says so; with the read off, the welcome service counts no
        unfinished bytes and still answers every line.
        """
        original = basic.LineReceiver.dataReceived
        basic.LineReceiver.dataReceived = _held_elsewhere  # type: ignore[method-assign]
        try:
            misfit = line_buffer_misfit()
        finally:
            basic.LineReceiver.dataReceived = original  # type: ignore[method-assign]
        self.assertEqual(
            misfit, "LineReceiver._buffer does not hold the unfinished line"
        )
        self.patch(linereceiver, "LINE_BUFFER_MISFIT", "changed")
        protocol, transport = connect(WelcomeFactory(Clock()), Welcome)
        protocol.dataReceived(b"hi\npart")
        self.assertEqual(protocol._lines.unfinished_bytes(), 0)
        protocol.dataReceived(b"ial\n")
        self.assertTrue(transport.value().endswith(b"OK...hi\r\nOK...partial\r\n"))
