# -*- test-case-name: tests.test_twisted_httpchannel,tests.test_httpbounds -*-
"""
The private state of Twisted's L{HTTPChannel} that the metrics listener's
channel (L{twisted_echo.operations.httpbounds.BoundedChannel}) needs to
hold a pipelined request until the response before it is sent: whether a
request is being handled (C{_handlingRequest}), the producer that reads
the connection (C{_networkProducer}), and whether the transport paused the
channel (C{_waitingForTransport}).

L{PacedHTTPChannel}, C{BoundedChannel}'s base, reads and sets them for
public names (L{PacedHTTPChannel.handling_request},
L{PacedHTTPChannel.pause_reading}, L{PacedHTTPChannel.transport_flushed}).

L{http_channel_misfit} checks, once at import, on an L{HTTPChannel} fed a
request in memory, that the state means what the channel takes it to mean:
set while a request is handled, its producer the transport, cleared
C{_waitingForTransport} letting C{requestDone} resume reading. Where it
does not fit (L{HTTP_CHANNEL_MISFIT}), the same public names use Twisted's
public ones instead: a request is being handled while C{requests} holds
one, reading is paused through the transport's C{IPushProducer}, and the
channel's own C{resumeProducing} says the transport flushed (which also
resumes a response's producer, were one still registered).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.http import HTTPChannel, Request

__all__ = ["HTTP_CHANNEL_MISFIT", "PacedHTTPChannel", "http_channel_misfit"]

#: The request the check feeds an L{HTTPChannel}.
CHECK_REQUEST = b"GET / HTTP/1.1\r\nHost: check\r\n\r\n"


def http_channel_misfit() -> str | None:
    """
    Feed an L{HTTPChannel} over a L{StringTransport} one request that is
    never answered, and check that: C{_networkProducer} is the transport;
    C{_handlingRequest} is false before and true once the request is read;
    pausing C{_networkProducer} pauses the transport; the channel's
    C{pauseProducing} sets C{_waitingForTransport}; and with it cleared,
    C{requestDone} resumes the transport and clears C{_handlingRequest}.

    @return: L{None} when it fits, else what does not.
    """

    class Unanswered(Request):
        def process(self) -> None:
            pass

    try:
        channel: Any = HTTPChannel()
        channel.requestFactory = Unanswered
        channel.timeOut = None
        channel.callLater = Clock().callLater
        transport = StringTransport()
        channel.makeConnection(transport)
        if getattr(channel, "_networkProducer", None) is not transport:
            return "HTTPChannel._networkProducer is not its transport"
        if getattr(channel, "_handlingRequest", None) is not False:
            return "HTTPChannel._handlingRequest is not false before a request"
        channel.dataReceived(CHECK_REQUEST)
        if channel._handlingRequest is not True or len(channel.requests) != 1:
            return "HTTPChannel._handlingRequest is not true while a request is handled"
        channel._networkProducer.pauseProducing()
        if transport.producerState != "paused":
            return "pausing HTTPChannel._networkProducer does not pause its transport"
        channel.pauseProducing()
        if getattr(channel, "_waitingForTransport", None) is not True:
            return "HTTPChannel.pauseProducing does not set _waitingForTransport"
        channel._waitingForTransport = False
        HTTPChannel.requestDone(channel, channel.requests[0])
        if transport.producerState != "producing":
            return (
                "HTTPChannel.requestDone does not resume reading once "
                "_waitingForTransport is cleared"
            )
        if channel._handlingRequest is not False:
            return "HTTPChannel.requestDone does not clear _handlingRequest"
    except Exception as error:
        return f"feeding an HTTPChannel raised {error!r}"
    return None


#: Why L{PacedHTTPChannel} uses Twisted's public names, or L{None}.
HTTP_CHANNEL_MISFIT = http_channel_misfit()


class PacedHTTPChannel(HTTPChannel):
    """
    An L{HTTPChannel} that a subclass can hold between requests: public
    names for the private state it needs (see the module's description).
    """

    @property
    def handling_request(self) -> bool:
        """
        Whether a request is read whole and not yet answered (pipelined
        bytes are then kept, not parsed).
        """
        if HTTP_CHANNEL_MISFIT is None:
            handling: bool = self._handlingRequest
            return handling
        return bool(self.requests)

    def pause_reading(self) -> None:
        """
        Stop reading the connection (Twisted's C{_networkProducer}, the
        transport); C{requestDone} resumes it once L{transport_flushed}.
        """
        if HTTP_CHANNEL_MISFIT is None:
            self._networkProducer.pauseProducing()
            return
        producer = IPushProducer(self.transport, None)
        if producer is not None:
            producer.pauseProducing()

    def transport_flushed(self) -> None:
        """
        The transport sent all it held: forget it paused the channel, so
        that C{requestDone} resumes reading.
        """
        if HTTP_CHANNEL_MISFIT is None:
            self._waitingForTransport = False
            return
        HTTPChannel.resumeProducing(self)
