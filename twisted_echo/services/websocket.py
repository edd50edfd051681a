# -*- test-case-name: tests.test_websocket -*-
"""
WebSocket echo (RFC 6455), and a page to try it from a browser.

Over 500 lines: the WebSocket protocol is one state machine over h11 and
wsproto (handshake, messages under the size, rate and budget bounds, the
close handshake, drain), whose states share the connection; the HTTP side,
deflate and the whoami flavour are in their own modules
(C{websocket_http}, C{websocket_deflate}, C{websocket_whoami}).

One listener (C{--websocket ENDPOINT}) answers HTTP/1.1 (RFC 9112, parsed by
C{h11}) and upgrades to WebSocket (the handshake and frames by C{wsproto},
the library Twisted's own L{twisted.web.websocket} is built on):

 - C{GET PATH} with C{Upgrade: websocket} (C{PATH}: C{--websocket-path},
   C{/} by default; the flavours' paths below are relative to it:
   C{--websocket-path /ws} serves C{/ws}, C{/ws/upper} and C{/ws/whoami},
   so a reverse proxy can mount the service under a prefix): the echo.
   Each message comes back as it came: text as text, binary as binary, a
   0-byte message as a 0-byte message. A message is echoed as it arrives,
   not reassembled: each piece read from the socket goes back at once as a
   fragment of the echoed message (the message is the same; its frame
   boundaries may differ), so a message of any size costs no memory beyond
   one read. A message longer than C{--websocket-max-message} bytes (text:
   its UTF-8 bytes) is cut with close code 1009. A ping is answered with a
   pong of the same payload; the client's close code and reason come back in
   the server's close frame.
   Subprotocols (C{Sec-WebSocket-Protocol}, RFC 6455 section 4.2.2): the
   first one the client offers is accepted, or with
   C{--websocket-subprotocols a,b} the first offered that is in that list;
   when none is, the handshake succeeds without the header (the server
   "selects none"; the client decides whether to go on).
   permessage-deflate (RFC 7692) is accepted, its inflating bounded by
   C{--websocket-max-message} (L{twisted_echo.services.websocket_deflate}).
 - C{GET PATH/upper} with C{Upgrade: websocket}: the same, with text messages
   upper-cased as the TCP upper service does
   (L{twisted_echo.services.upper.upper_bytes}); binary ones unchanged.
 - C{GET PATH/whoami} with C{Upgrade: websocket}: one JSON text message
   saying how the server saw the request and the client
   (L{twisted_echo.services.websocket_whoami}), then close 1000.
   The paths, the subprotocol choice, the page and the HTTP responses are
   in L{twisted_echo.services.websocket_http}.
 - C{GET PATH} (or C{HEAD}) without C{Upgrade}: a small self-contained HTML
   page (C{websocket_page.html}; no external scripts, styles or fonts) to
   send messages and see them echoed with round-trip times. C{PATH?send=TEXT}
   sends C{TEXT} once loaded.
 - Anything else: C{404}, C{405}, or C{400} for a request that is not
   HTTP/1.1 or a malformed handshake (RFC 6455 section 4.2.1), with one
   line of text, then the connection closes. A request head larger than
   C{h11}'s 16 KiB default is a C{400} too.

Bad frames get RFC 6455's answer (section 7.4.1): invalid UTF-8 in a text
message close 1007, an unmasked client frame, a bad opcode or a malformed
frame close 1002; each is counted (C{refused[websocket_NNNN]}) and logged as
one line. Every guard of the TCP services applies
(L{twisted_echo.services.stream}): connection limits, the idle timeout (close
1000 "idle timeout"), flow control (a client that does not read its echo is
not read from), the stall timeout, connection log lines and counters
(C{service="websocket"}); when the server drains (SIGTERM) each open
WebSocket gets close 1001 "server shutting down".

Two guards of its own:
 - the handshake timeout (C{--websocket-handshake-timeout}): a connection
   whose HTTP request is not complete within it (counted from the
   connection's start, after a PROXY header; a TLS handshake included)
   gets C{408} and is closed, counted as C{timeouts[websocket_handshake]}
   and logged; the idle timeout is separate and applies after;
 - the message rate (C{--websocket-max-messages-per-second RATE[/BURST]},
   a L{twisted_echo.policies.ratelimit.TokenBucket} per connection; each
   message and each ping takes a token): over the rate the server stops
   reading from that client (backpressure, as TCP flow control does) until
   the bucket has a token again. Nothing is lost or refused: the client is
   slowed to the rate. Each pause is counted as C{refused[websocket_rate]}
   and the first of a connection logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import h11
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure
from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    TextMessage,
)
from wsproto.handshake import H11Handshake
from wsproto.utilities import ProtocolError

from twisted_echo.policies.idle import cancel_call
from twisted_echo.policies.ratelimit import TokenBucket
from twisted_echo.services.stream import StreamFactory, StreamProtocol
from twisted_echo.services.upper import upper_bytes
from twisted_echo.services.websocket_deflate import (
    RECEIVE,
    BoundedDeflate,
    deflate_extensions,
)
from twisted_echo.services.websocket_http import (
    DEFAULT_PATH,
    check_path,
    choose_subprotocol,
    flavour_paths,
    http_response,
    load_page,
)
from twisted_echo.services.websocket_whoami import encode_report, whoami_report
from twisted_echo.services.whoami import WhoamiInfo

#: The service's name, in logs, counters and metrics.
SERVICE_NAME = "websocket"
#: Default most bytes of one message (1 MiB); a longer one is closed with 1009.
DEFAULT_MAX_MESSAGE = 1024 * 1024
#: Default seconds a connection has to send its whole HTTP request.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: Default message rate, C{(messages per second, burst)}; C{0}: no limit.
DEFAULT_MESSAGE_RATE = (0.0, 1)

#: Most WebSocket events (messages' pieces, pings...) one connection has
#: answered in one reactor turn: a read of 256 KiB can hold 43,690 empty
#: messages, which held the reactor 1.7 s when answered in one go (34 ms
#: per 1,000; in memory, on a loaded machine).
EVENTS_PER_TURN = 1000

#: RFC 6455 section 7.4.1 close codes used here.
NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
MESSAGE_TOO_BIG = 1009


def upper_text(text: str) -> str:
    """
    @return: C{text} upper-cased as the TCP upper service does it.
    """
    return upper_bytes(text.encode("utf-8")).decode("utf-8")


class WebSocketEcho(StreamProtocol):
    """
    One connection to the WebSocket listener: an HTTP request, then either
    one HTTP response and a close, or a WebSocket echo (see the module
    docstring).

    @ivar flavour: C{"echo"}, C{"upper"} or C{"whoami"} once upgraded, else
        L{None}.
    """

    factory: WebSocketFactory

    def __init__(self) -> None:
        StreamProtocol.__init__(self)
        self._http: h11.Connection | None = h11.Connection(h11.SERVER)
        self._ws: Connection | None = None
        self.flavour: str | None = None
        self._message_bytes = 0
        self._mid_message = False
        self._handshake_call: IDelayedCall | None = None
        self._deflate: BoundedDeflate | None = None
        self._bucket: TokenBucket | None = None
        self._held_event: Event | None = None
        self._rate_call: IDelayedCall | None = None
        self._rate_logged = False

    # StreamProtocol hooks.

    def on_open(self) -> None:
        """
        Start the handshake timeout.
        """
        timeout = self.factory.handshake_timeout
        if timeout:
            self._handshake_call = self.callLater(timeout, self._handshake_timed_out)

    def on_close(self, reason: Failure | None) -> None:
        """
        Stop the handshake and rate timers; drop the WebSocket state.
        """
        cancel_call(self._handshake_call)
        self._handshake_call = None
        cancel_call(self._rate_call)
        self._rate_call = None
        self._held_event = None

    def handle_data(self, data: bytes) -> None:
        """
        Feed C{data} (bytes read) to the HTTP parser until the request is
        whole, then to the WebSocket connection.
        """
        if self.closing:
            return
        if self._ws is not None:
            self._ws_data(data)
        elif self._http is not None:
            self._http_data(data)

    def timeoutConnection(self) -> None:
        """
        Idle (or, while draining, quiet): say so in a close frame, then close.
        """
        if self.closing:
            return
        if self.factory._draining is None:
            self._send_close(NORMAL_CLOSURE, "idle timeout")
        else:
            self._send_close(GOING_AWAY, "server shutting down")
        StreamProtocol.timeoutConnection(self)

    # HTTP.

    def _handshake_timed_out(self) -> None:
        """
        The HTTP request is not complete within the handshake timeout: count,
        log, answer C{408} and close.
        """
        self._handshake_call = None
        if self.closing or self._http is None:
            return
        factory = self.factory
        factory.counters.timeouts["websocket_handshake"] += 1
        self._log.info(
            "{service} connection from {peer}: no complete HTTP request "
            "within {timeout:g} s; closing",
            service=factory.service_name,
            peer=self.client_text(),
            timeout=factory.handshake_timeout,
        )
        self._respond(408, "request not complete in time")

    def _http_data(self, data: bytes) -> None:
        http = self._http
        assert http is not None
        http.receive_data(data)
        try:
            event = http.next_event()
        except h11.RemoteProtocolError as e:
            self._respond(400, f"bad HTTP request: {e}")
            return
        if event is h11.NEED_DATA:
            return
        if not isinstance(event, h11.Request):
            self._respond(400, "bad HTTP request")
            return
        self._request(http, event)

    def _request(self, http: h11.Connection, request: h11.Request) -> None:
        cancel_call(self._handshake_call)
        self._handshake_call = None
        factory = self.factory
        path = request.target.partition(b"?")[0]
        upgrade = any(name == b"upgrade" for name, _ in request.headers)
        flavour = factory.paths.get(path)
        if flavour is None:
            self._respond(404, f"not found; WebSocket paths: {factory.paths_text()}")
            return
        if request.method not in (b"GET", b"HEAD"):
            self._respond(405, "only GET is served here")
            return
        if not upgrade:
            if flavour != "echo":
                self._respond(404, f"not found; the page is at {factory.path}")
                return
            self._respond(
                200,
                factory.page,
                "text/html; charset=utf-8",
                head=request.method == b"HEAD",
            )
            return
        handshake = H11Handshake(ConnectionType.SERVER)
        extensions = deflate_extensions(factory.deflate, factory.max_message)
        try:
            handshake.initiate_upgrade_connection(list(request.headers), request.target)
            offer = next(handshake.events())
            subprotocol = choose_subprotocol(
                getattr(offer, "subprotocols", []), factory.subprotocols
            )
            accepted = handshake.send(
                AcceptConnection(
                    subprotocol=subprotocol,
                    extensions=list(extensions),
                )
            )
        except ProtocolError as e:
            self._respond(400, f"bad WebSocket handshake: {e}")
            return
        connection = handshake.connection
        assert connection is not None
        self._deflate = next((e for e in extensions if e.enabled()), None)
        self.flavour = flavour
        self._http = None
        self._ws = connection
        rate, burst = factory.message_rate
        if rate:
            self._bucket = TokenBucket(rate, burst, factory.clock)
        self.send(accepted)
        if flavour == "whoami":
            self._whoami(request, subprotocol)
            return
        rest, _ = http.trailing_data
        if rest:
            self._ws_data(bytes(rest))

    def _whoami(self, request: h11.Request, subprotocol: str | None) -> None:
        """
        Send the C{/whoami} report as one text message, then close 1000.
        """
        ws = self._ws
        assert ws is not None
        report = whoami_report(
            self.factory.info,
            request,
            self.client_address(),
            self.transport.getHost(),  # type: ignore[union-attr]
            self.proxy_address(),
            self.transport,
            subprotocol,
            [] if self._deflate is None else [self._deflate.name],
        )
        self.send(ws.send(TextMessage(encode_report(report))))
        self._send_close(NORMAL_CLOSURE, "")

    def _respond(
        self,
        status: int,
        body: str | bytes,
        content_type: str = "text/plain; charset=utf-8",
        head: bool = False,
    ) -> None:
        """
        Send one HTTP/1.1 response (C{status}, C{body}: text or bytes),
        then close. A C{400} is counted as C{refused[websocket_http]} and
        logged.
        """
        cancel_call(self._handshake_call)
        self._handshake_call = None
        payload = body.encode("utf-8") + b"\n" if isinstance(body, str) else body
        if status == 400:
            self.factory.counters.refused["websocket_http"] += 1
            self._log.info(
                "{service} connection from {peer}: {reason}; closing",
                service=self.factory.service_name,
                peer=self.client_text(),
                reason=str(body),
            )
        self._http = None
        self.send(http_response(status, payload, content_type, head))
        self.close()

    # WebSocket.

    def _ws_data(self, data: bytes) -> None:
        ws = self._ws
        assert ws is not None
        ws.receive_data(data)
        if self._rate_call is not None:
            # Over the message rate: what came is kept in wsproto's buffer
            # (one read at most, since reading stays paused) until the
            # bucket has a token.
            self._pause_reading()
            return
        self._ws_events(ws)

    def _ws_events(self, ws: Connection) -> None:
        """
        Answer the events wsproto has parsed, until one is over the message
        rate (then it is held, and reading paused, until a token comes), or
        L{WebSocketFactory.events_per_turn} were answered (then the rest
        waits for the next reactor turn).
        """
        held, self._held_event = self._held_event, None
        events = ws.events()
        answered = 0
        while not self.closing:
            if answered == self.factory.events_per_turn:
                # Enough for one reactor turn: let the other connections
                # have theirs, go on at the next (what is left waits in
                # wsproto's buffer; reading is paused meanwhile).
                self._pause_reading()
                self._rate_call = self.callLater(0, self._unthrottle)
                return
            answered += 1
            event = held if held is not None else next(events, None)
            held = None
            if event is None:
                return
            if (
                isinstance(event, TextMessage | BytesMessage | Ping)
                and ws.state is not ConnectionState.OPEN
            ):
                # Sent before the client read our close frame (drain, idle
                # timeout, /whoami): nothing more is sent but the closing
                # handshake's answer (RFC 6455 section 5.5.1).
                continue
            if self._bucket is not None and not self._take_token(event):
                self._held_event = event
                self._throttle(self._bucket)
                return
            if isinstance(event, TextMessage | BytesMessage):
                if self.flavour != "whoami":
                    self._message(ws, event)
            elif isinstance(event, Ping):
                self.send(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self._peer_closed(ws, event)

    def _take_token(self, event: Event) -> bool:
        """
        @return: whether C{event} may be answered now: a message's first
            piece and a ping each take a token of the bucket; the rest of a
            message, pongs and close frames take none.
        """
        assert self._bucket is not None
        if isinstance(event, TextMessage | BytesMessage):
            starts = not self._mid_message
            self._mid_message = not event.message_finished
            if not starts:
                return True
        elif not isinstance(event, Ping):
            return True
        if self._bucket.allow():
            return True
        if isinstance(event, TextMessage | BytesMessage):
            # Not answered yet: it starts the message again when it is.
            self._mid_message = False
        return False

    def _throttle(self, bucket: TokenBucket) -> None:
        """
        Over the message rate: stop reading until the bucket has a token.
        """
        factory = self.factory
        factory.counters.refused["websocket_rate"] += 1
        if not self._rate_logged:
            self._rate_logged = True
            self._log.info(
                "{service} connection from {peer}: over {rate:g} messages/s; "
                "reading paused until the rate allows",
                service=factory.service_name,
                peer=self.client_text(),
                rate=bucket.rate,
            )
        self._pause_reading()
        wait = max(0.0, 1.0 - bucket.tokens) / bucket.rate
        self._rate_call = self.callLater(wait, self._unthrottle)

    def _pause_reading(self) -> None:
        transport = self.transport
        assert transport is not None
        transport.pauseProducing()  # type: ignore[attr-defined]

    def _unthrottle(self) -> None:
        """
        The bucket has a token again, or the next reactor turn came: answer
        what is held and waiting, read again.
        """
        self._rate_call = None
        ws = self._ws
        if self.closing or ws is None:
            return
        self._ws_events(ws)
        if not self.closing and self._rate_call is None:
            self.resume_reading()

    def _message(self, ws: Connection, event: TextMessage | BytesMessage) -> None:
        chunk = event.data
        if isinstance(chunk, str):
            size = len(chunk.encode("utf-8")) if not chunk.isascii() else len(chunk)
        else:
            size = len(chunk)
        self._message_bytes += size
        limit = self.factory.max_message
        if limit and self._message_bytes > limit:
            self._protocol_error(MESSAGE_TOO_BIG, f"message over {limit} bytes")
            return
        if event.message_finished:
            self._message_bytes = 0
        if isinstance(chunk, str):
            if self.flavour == "upper":
                chunk = upper_text(chunk)
            reply: bytes = ws.send(
                TextMessage(chunk, message_finished=event.message_finished)
            )
        else:
            reply = ws.send(
                BytesMessage(chunk, message_finished=event.message_finished)
            )
        self.send(reply)

    def _peer_closed(self, ws: Connection, event: CloseConnection) -> None:
        """
        A close frame came (or wsproto made one of a frame it could not
        parse: RFC 6455's code for the fault). Answer a client's close with
        its own code and reason; then close the connection.
        """
        if ws.state is ConnectionState.CLOSED:
            # The answer to our own close frame.
            self.close()
            return
        if ws.state is ConnectionState.LOCAL_CLOSING:
            # A frame wsproto could not parse after our own close frame:
            # no second close frame (RFC 6455 section 5.5.1); just close.
            self.close()
            return
        if ws.state is ConnectionState.OPEN:
            # wsproto found a protocol error (1002, 1007, 1009 inflating...).
            deflate = self._deflate
            if deflate is not None and deflate.inflated_too_large:
                self._protocol_error(
                    event.code,
                    f"message inflates to over {deflate.max_message} bytes",
                    "websocket_1009_inflated",
                )
                return
            self._protocol_error(event.code, event.reason or "protocol error")
            return
        self.send(ws.send(event.response()))
        self.close()

    def _protocol_error(self, code: int, reason: str, key: str = "") -> None:
        """
        The client broke a rule (RFC 6455 section 7.4.1 C{code}): count it
        (as C{refused[key]}, by default C{refused[websocket_CODE]}) and log
        it, send the close frame, close.
        """
        self.factory.counters.refused[key or f"websocket_{int(code)}"] += 1
        self._log.info(
            "{service} connection from {peer}: close {code} ({reason}); closing",
            service=self.factory.service_name,
            peer=self.client_text(),
            code=int(code),
            reason=reason,
        )
        self._send_close(code, reason)
        self.close()

    def _send_close(self, code: int, reason: str) -> None:
        """
        Send a close frame (C{code}, C{reason}: truncated to fit) if the
        WebSocket is open; no-op otherwise.
        """
        ws = self._ws
        if ws is None or ws.state is not ConnectionState.OPEN:
            return
        self.send(ws.send(CloseConnection(code, reason)))

    def going_away(self) -> None:
        """
        The server is draining: an open WebSocket gets close 1001 and
        closes once the client answers (or the drain's quiet time passes);
        a connection still in HTTP closes now.
        """
        if self.closing:
            return
        if self._ws is None:
            self.close()
            return
        self._send_close(GOING_AWAY, "server shutting down")


class WebSocketFactory(StreamFactory):
    """
    Builds L{WebSocketEcho} protocols.

    @ivar max_message: most bytes of one message (bytes; text: UTF-8; 0: no
        limit), inflated size for a compressed one.
    @ivar path: the echo's path; the flavours' are relative to it.
    @ivar paths: each path served and its flavour (L{flavour_paths}).
    @ivar subprotocols: the subprotocols accepted, or L{None} for any.
    @ivar deflate: the permessage-deflate mode
        (L{twisted_echo.services.websocket_deflate.DEFLATE_MODES}).
    @ivar handshake_timeout: seconds a connection has to send its whole
        HTTP request (0: no limit).
    @ivar message_rate: C{(messages per second, burst)} per connection;
        C{(0, 1)}: no limit.
    @ivar events_per_turn: most events one connection has answered in one
        reactor turn (L{EVENTS_PER_TURN}).
    @ivar info: who the server is, for C{/whoami}.
    @ivar page: the HTML page served at C{GET PATH} (bytes).
    """

    protocol = WebSocketEcho
    service_name: ClassVar[str] = SERVICE_NAME

    def __init__(
        self,
        *args: Any,
        max_message: int = DEFAULT_MAX_MESSAGE,
        path: str = DEFAULT_PATH,
        subprotocols: Sequence[str] | None = None,
        deflate: str = RECEIVE,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        message_rate: tuple[float, int] = DEFAULT_MESSAGE_RATE,
        info: WhoamiInfo | None = None,
        **kw: Any,
    ) -> None:
        """
        @param args: L{StreamFactory}'s arguments.
        @param max_message: see L{max_message}.
        @param path: see L{path}.
        @param subprotocols: see L{subprotocols}.
        @param deflate: see L{deflate}.
        @param handshake_timeout: see L{handshake_timeout}.
        @param message_rate: see L{message_rate}.
        @param info: see L{info}; default: no worker number.
        @param kw: L{StreamFactory}'s keyword arguments.
        @raise ValueError: for a bad C{path} (L{check_path}), C{deflate}
            mode or C{message_rate}.
        """
        StreamFactory.__init__(self, *args, **kw)
        self.max_message = max_message
        self.path = check_path(path)
        self.paths = flavour_paths(path)
        self.subprotocols = tuple(subprotocols) if subprotocols is not None else None
        deflate_extensions(deflate, max_message)
        self.deflate = deflate
        self.handshake_timeout = handshake_timeout
        rate, burst = message_rate
        if rate:
            # Checked as the bucket checks it, once.
            TokenBucket(rate, burst, self.clock)
        self.message_rate = (rate, burst)
        self.info = info if info is not None else WhoamiInfo()
        self.events_per_turn = EVENTS_PER_TURN
        self.page = load_page()

    def paths_text(self) -> str:
        """
        @return: the paths served, for a 404's text.
        """
        return ", ".join(path.decode("ascii") for path in self.paths)

    def drain(self, timeout: float) -> Deferred[None]:
        """
        L{StreamFactory.drain}, after sending each open WebSocket close 1001
        (RFC 6455 section 7.4.1: "going away").
        """
        for protocol in list(self.open_protocols):
            if isinstance(protocol, WebSocketEcho):
                protocol.going_away()
        return StreamFactory.drain(self, timeout)
