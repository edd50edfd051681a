# -*- test-case-name: tests.test_httpbounds -*-
"""
Bounds for the C{--metrics} HTTP listener (L{twisted.web}), so that a
scraper, a prober or a hostile client can take no more of the process than
a small fixed share:

 - a connection limit (C{--metrics-max-connections}, default 64): a
   connection beyond it is closed as soon as it is accepted (counted as
   C{max_connections}, and logged once each time the listener fills up);
 - a request-read timeout (C{--metrics-request-timeout}, default 10 s): a
   request must be complete (request line, headers, body) within that many
   seconds of its first byte, and a response must be taken by the client
   within that many seconds of being written, else the connection is
   aborted (counted as C{request} or C{response}, logged);
 - at most one response in flight per connection: once a response is
   written, the next pipelined request is not even parsed, and the socket
   not read, until the transport has handed the response to the kernel
   (RFC 9112 section 9.3.2 lets a server answer pipelined requests in
   turn; nothing obliges it to read ahead). Twisted's L{HTTPChannel} only
   stops reading once more than the transport's C{bufferSize} is queued,
   and answers every request already read first: 64 KiB of pipelined
   C{GET /metrics} became hundreds of MB of queued responses;
 - small buffers: reads of at most L{READ_SIZE} bytes, request headers of
   at most L{MAX_HEADER_BYTES} (Twisted's own limit), request bodies of at
   most L{MAX_BODY_BYTES} (the pages take none). One connection holds at
   most about C{2 * READ_SIZE + MAX_HEADER_BYTES + MAX_BODY_BYTES} plus one
   response, about 64 KiB plus a C{/metrics} page: these buffers are a
   fixed cap outside C{--max-buffer}, 64 connections some 4 MiB.

Idle connections between requests are closed by Twisted's own timeout
(L{IDLE_TIMEOUT}, counted as C{idle}).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

from twisted_echo._twisted.httpchannel import PacedHTTPChannel
from twisted_echo.policies.idle import cancel_call
from twisted_echo.policies.limits import (
    DEFAULT_METRICS_MAX_CONNECTIONS,
    DEFAULT_METRICS_REQUEST_TIMEOUT,
)
from twisted_echo.services.stream import queued_bytes

_log = Logger()

#: Default most connections open to the metrics listener at once.
DEFAULT_MAX_CONNECTIONS = DEFAULT_METRICS_MAX_CONNECTIONS
#: Default seconds a request may take to arrive, and a response to be taken.
DEFAULT_REQUEST_TIMEOUT = DEFAULT_METRICS_REQUEST_TIMEOUT
#: Seconds a connection may stay idle between requests (Twisted's timeout).
IDLE_TIMEOUT = 30
#: Most bytes read from a metrics connection at once.
READ_SIZE = 16384
#: Most bytes of a request line and headers (Twisted's C{totalHeadersSize}).
MAX_HEADER_BYTES = 16384
#: Most bytes of a request body.
MAX_BODY_BYTES = 8192
#: Reasons always exported, as 0 until they happen.
REFUSAL_REASONS = ("max_connections",)
TIMEOUT_REASONS = ("request", "response", "idle")


@dataclass
class ListenerCounters:
    """
    What the metrics listener itself has done since start.

    @ivar connections_open: connections open now.
    @ivar connections_total: connections accepted (refused ones included).
    @ivar refused: connections closed at once, by reason
        (C{max_connections}).
    @ivar timeouts: connections closed by a timeout, by reason
        (C{request}, C{response}, C{idle}).
    """

    connections_open: int = 0
    connections_total: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    timeouts: Counter[str] = field(default_factory=Counter)


class BoundedRequest(Request):
    """
    A L{Request} whose body may not exceed L{MAX_BODY_BYTES}: a larger
    C{Content-Length}, or a chunked body growing past it, aborts the
    connection (Twisted would spool a large body to a temporary file).
    """

    _body_bytes = 0

    def _refuse(self) -> None:
        # loseConnection marks the transport as disconnecting, which stops
        # the channel's parsing of what is already read; the abort drops
        # the connection without waiting for anything queued.
        transport: Any = self.channel.transport
        transport.loseConnection()
        transport.abortConnection()

    def gotLength(self, length: int | None) -> None:  # noqa: N802
        """
        Refuse a declared body over L{MAX_BODY_BYTES}.
        """
        if length is not None and length > MAX_BODY_BYTES:
            self._refuse()
            length = 0
        Request.gotLength(self, length)

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802
        """
        Keep at most L{MAX_BODY_BYTES} of body.
        """
        self._body_bytes += len(data)
        if self._body_bytes > MAX_BODY_BYTES:
            self._refuse()
            return
        Request.handleContentChunk(self, data)


class BoundedChannel(PacedHTTPChannel):
    """
    An L{HTTPChannel} with a request-read timeout, a response-taken timeout,
    and at most one response in flight (see the module docstring). Its base,
    L{PacedHTTPChannel}, holds what it needs of Twisted's private state.

    @ivar request_timeout: seconds (0: no timeout), set by L{BoundedSite}.
    """

    request_timeout = DEFAULT_REQUEST_TIMEOUT
    totalHeadersSize = MAX_HEADER_BYTES
    _read_call: IDelayedCall | None = None
    _flush_call: IDelayedCall | None = None
    _held: Request | None = None
    site: BoundedSite

    def connectionMade(self) -> None:
        """
        Read at most L{READ_SIZE} bytes at once, then start as Twisted does.
        """
        transport: Any = self.transport
        if hasattr(transport, "bufferSize"):
            transport.bufferSize = READ_SIZE
        HTTPChannel.connectionMade(self)

    def dataReceived(self, data: bytes) -> None:
        """
        The first byte of a request starts its read timeout.
        """
        if (
            data
            and self._read_call is None
            and not self.handling_request
            and self.request_timeout
        ):
            self._read_call = self.callLater(  # type: ignore[no-untyped-call]
                self.request_timeout, self._read_timed_out
            )
        HTTPChannel.dataReceived(self, data)

    def allContentReceived(self) -> None:
        """
        A request is complete: its read timeout is over.
        """
        cancel_call(self._read_call)
        self._read_call = None
        HTTPChannel.allContentReceived(self)

    def requestDone(self, request: Request) -> None:  # noqa: N802
        """
        A response is written: while any of it is still queued in the
        transport, read nothing and parse no pipelined request; go on when
        the transport says it has flushed (L{resumeProducing}).
        """
        transport: Any = self.transport
        if queued_bytes(transport) and not transport.disconnecting:
            self._held = request
            self.pause_reading()
            # The transport calls our resumeProducing once its buffer is
            # empty only when it believes it paused us.
            transport.producerPaused = True
            if self.request_timeout:
                self._flush_call = self.callLater(  # type: ignore[no-untyped-call]
                    self.request_timeout, self._flush_timed_out
                )
            return
        HTTPChannel.requestDone(self, request)

    def resumeProducing(self) -> None:
        """
        The transport's buffer is empty: if a response was held, take up
        the pipelined requests; else as Twisted does.
        """
        held, self._held = self._held, None
        if held is None:
            HTTPChannel.resumeProducing(self)
            return
        cancel_call(self._flush_call)
        self._flush_call = None
        self.transport_flushed()
        HTTPChannel.requestDone(self, held)

    def _read_timed_out(self) -> None:
        self._read_call = None
        self._time_out("request", "request not complete")

    def _flush_timed_out(self) -> None:
        self._flush_call = None
        self._time_out("response", "response not read")

    def _time_out(self, reason: str, what: str) -> None:
        self.site.counters.timeouts[reason] += 1
        _log.info(
            "metrics connection from {peer}: {what} within {timeout} s; closed",
            peer=_peer(self.transport),
            what=what,
            timeout=self.request_timeout,
        )
        self.transport.abortConnection()  # type: ignore[union-attr]

    def timeoutConnection(self) -> None:
        """
        Idle for L{IDLE_TIMEOUT} seconds between requests: count it, close.
        """
        self.site.counters.timeouts["idle"] += 1
        HTTPChannel.timeoutConnection(self)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        """
        Stop the timeouts and count the connection closed.
        """
        cancel_call(self._read_call)
        self._read_call = None
        cancel_call(self._flush_call)
        self._flush_call = None
        self._held = None
        self.site.connection_closed()
        HTTPChannel.connectionLost(self, reason)


def _peer(transport: Any) -> str:
    from twisted_echo.listening.address import describe_address

    try:
        return describe_address(transport.getPeer())
    except Exception:
        return "?"


class BoundedSite(Site):
    """
    A L{Site} of L{BoundedChannel}s, at most C{max_connections} open at once.

    @ivar counters: what the listener has done (L{ListenerCounters}).
    """

    protocol = BoundedChannel  # type: ignore[assignment]
    requestFactory = BoundedRequest

    def __init__(
        self,
        resource: Any,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        """
        @param resource: the root resource.
        @param max_connections: most connections open at once (0: no limit).
        @param request_timeout: seconds a request may take to arrive and a
            response to be taken (0: no timeout).
        @param kwargs: passed to L{Site} (C{timeout}, C{reactor}).
        """
        kwargs.setdefault("timeout", IDLE_TIMEOUT)
        Site.__init__(self, resource, **kwargs)
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.counters = ListenerCounters()
        self._full = False
        self._refused_while_full = 0

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802
        """
        A channel for a new connection, or L{None} (Twisted closes it at
        once) when C{max_connections} are open.
        """
        counters = self.counters
        counters.connections_total += 1
        if self.max_connections and counters.connections_open >= self.max_connections:
            counters.refused["max_connections"] += 1
            self._refused_while_full += 1
            if not self._full:
                self._full = True
                _log.warn(
                    "metrics listener full ({count} connections open, "
                    "--metrics-max-connections); refusing new ones",
                    count=counters.connections_open,
                )
            return None
        channel = Site.buildProtocol(self, addr)
        channel.request_timeout = self.request_timeout
        counters.connections_open += 1
        return channel

    def connection_closed(self) -> None:
        """
        A channel's connection is closed.
        """
        self.counters.connections_open -= 1
        if self._full and self.counters.connections_open < self.max_connections:
            _log.info(
                "metrics listener accepting again ({refused} refused while full)",
                refused=self._refused_while_full,
            )
            self._full = False
            self._refused_while_full = 0
