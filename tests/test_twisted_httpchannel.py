# -*- test-case-name: tests.test_twisted_httpchannel -*-
"""
Tests for L{twisted_echo._twisted.httpchannel}: the check of
L{HTTPChannel}'s private state fits the installed Twisted and fails when
Twisted changes; where it does not fit, the metrics channel still holds a
pipelined request until the response before it is sent.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPChannel

from tests.test_httpbounds import QueuingTransport, connect, site
from twisted_echo._twisted import httpchannel
from twisted_echo._twisted.httpchannel import http_channel_misfit

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


class MisfitTests(SynchronousTestCase):
    """
    L{http_channel_misfit} on the installed Twisted and on changed ones.
    """

    def test_installed_twisted_fits(self) -> None:
        """
        The installed Twisted's L{HTTPChannel} keeps its state as the
        channel expects.
        """
        self.assertIsNone(http_channel_misfit())
        self.assertIsNone(httpchannel.HTTP_CHANNEL_MISFIT)

    def test_other_network_producer_found(self) -> None:
        """
        A channel whose C{_networkProducer} is not its transport does not
        fit.
        """
        made = HTTPChannel.connectionMade

        def connection_made(channel: Any) -> None:
            made(channel)
            channel._networkProducer = object()

        self.patch(HTTPChannel, "connectionMade", connection_made)
        self.assertEqual(
            http_channel_misfit(), "HTTPChannel._networkProducer is not its transport"
        )

    def test_waiting_flag_not_set_found(self) -> None:
        """
        A channel whose C{pauseProducing} no longer records that the
        transport paused it does not fit.
        """
        self.patch(HTTPChannel, "pauseProducing", lambda channel: None)
        self.assertEqual(
            http_channel_misfit(),
            "HTTPChannel.pauseProducing does not set _waitingForTransport",
        )

    def test_request_done_not_resuming_found(self) -> None:
        """
        A channel whose C{requestDone} no longer resumes reading once
        C{_waitingForTransport} is cleared does not fit.
        """
        self.patch(HTTPChannel, "_waitingForTransport", True)
        done = HTTPChannel.requestDone

        def request_done(channel: Any, request: Any) -> None:
            channel.__dict__.pop("_waitingForTransport", None)
            done(channel, request)

        self.patch(HTTPChannel, "requestDone", request_done)
        problem = http_channel_misfit() or ""
        self.assertIn("requestDone does not resume reading", problem)


class HeldMixin:
    """
    The metrics channel holds pipelined requests, even when the transport
    itself paused the channel (its buffer full) meanwhile.
    """

    def test_paused_by_transport_while_held(self: Any) -> None:
        """
        The transport pauses the channel while a response is held; once it
        is flushed, the next request is answered and reading resumes.
        """
        transport = QueuingTransport()
        channel = connect(site(Clock()), transport)
        channel.dataReceived(REQUEST * 2)
        self.assertEqual(transport.value().count(b"200 OK"), 1)
        channel.pauseProducing()
        transport.flush()
        self.assertEqual(transport.value().count(b"200 OK"), 2)
        transport.flush()
        self.assertEqual(transport.producerState, "producing")


class HeldTests(HeldMixin, SynchronousTestCase):
    """
    L{HeldMixin} with Twisted's private state.
    """


class FallbackTests(HeldMixin, SynchronousTestCase):
    """
    Where the check fails, the metrics channel uses Twisted's public names
    and still answers pipelined requests one at a time.
    """

    def setUp(self) -> None:
        self.patch(httpchannel, "HTTP_CHANNEL_MISFIT", "Twisted changed")

    def test_pipelined_held_until_flushed(self) -> None:
        """
        Of three pipelined requests, the second is answered only once the
        first response is flushed, and reading stops meanwhile.
        """
        transport = QueuingTransport()
        channel = connect(site(Clock()), transport)
        channel.dataReceived(REQUEST * 3)
        self.assertEqual(transport.value().count(b"200 OK"), 1)
        self.assertEqual(transport.producerState, "paused")
        transport.flush()
        self.assertEqual(transport.value().count(b"200 OK"), 2)
        transport.flush()
        self.assertEqual(transport.value().count(b"200 OK"), 3)
        transport.flush()
        self.assertEqual(transport.producerState, "producing")

    def test_request_timeout_not_restarted_while_handled(self) -> None:
        """
        The read timeout starts at a request's first byte and is over once
        it is read: requests completed in time are answered.
        """
        clock = Clock()
        made = site(clock, request_timeout=10.0)
        channel = connect(made)
        for _ in range(3):
            channel.dataReceived(b"GET /healthz HTTP/1.1\r\n")
            clock.advance(9)
            channel.dataReceived(b"Host: x\r\n\r\n")
        clock.advance(9)
        self.assertFalse(channel.transport.disconnecting)
        self.assertEqual(channel.transport.value().count(b"200 OK"), 3)
        self.assertEqual(made.counters.timeouts["request"], 0)
