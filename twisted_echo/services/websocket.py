# -*- test-case-name: tests.test_websocket -*-
"""
WebSocket echo (RFC 6455), and a page to try it from a browser.

One listener (C{--websocket ENDPOINT}) answers HTTP/1.1 (RFC 9112, parsed by
C{h11}) and upgrades to WebSocket (the handshake and frames by C{wsproto},
the library Twisted's own L{twisted.web.websocket} is built on):

 - C{GET /} with C{Upgrade: websocket}: the echo. Each message comes back as
   it came: text as text, binary as binary, a 0-byte message as a 0-byte
   message. A message is echoed as it arrives, not reassembled: each piece
   read from the socket goes back at once as a fragment of the echoed
   message (the message is the same; its frame boundaries may differ), so a
   message of any size costs no memory beyond one read. A message longer
   than C{--websocket-max-message} bytes (text: its UTF-8 bytes) is cut with
   close code 1009. A ping is answered with a pong of the same payload; the
   client's close code and reason come back in the server's close frame.
   The first subprotocol a client offers (C{Sec-WebSocket-Protocol}) is
   accepted; no extension (permessage-deflate) is.
 - C{GET /upper} with C{Upgrade: websocket}: the same, with text messages
   upper-cased as the TCP upper service does
   (L{twisted_echo.services.upper.upper_bytes}); binary ones unchanged.
 - C{GET /} (or C{HEAD /}) without C{Upgrade}: a small self-contained HTML
   page (C{websocket_page.html}; no external scripts, styles or fonts) to
   send messages and see them echoed with round-trip times. C{/?send=TEXT}
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
"""

from __future__ import annotations

from importlib import resources
from typing import Any, ClassVar

import h11
from twisted.internet.defer import Deferred
from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    TextMessage,
)
from wsproto.handshake import H11Handshake
from wsproto.utilities import ProtocolError

from twisted_echo.services.stream import StreamFactory, StreamProtocol
from twisted_echo.services.upper import upper_bytes

#: The service's name, in logs, counters and metrics.
SERVICE_NAME = "websocket"
#: Default most bytes of one message (1 MiB); a longer one is closed with 1009.
DEFAULT_MAX_MESSAGE = 1024 * 1024
#: The page's file, in this package.
PAGE_FILE = "websocket_page.html"
#: The page's Content-Security-Policy header: inline script and style, and
#: WebSocket connections; nothing else is fetched.
PAGE_POLICY = (
    b"Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; "
    b"style-src 'unsafe-inline'; connect-src ws: wss:; img-src data:"
)
#: The paths served, and each one's flavour.
ECHO_PATH = b"/"
UPPER_PATH = b"/upper"
FLAVOURS = {ECHO_PATH: "echo", UPPER_PATH: "upper"}

#: RFC 6455 section 7.4.1 close codes used here.
NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
MESSAGE_TOO_BIG = 1009


def load_page() -> bytes:
    """
    @return: the page's HTML (UTF-8 bytes), read from the package data.
    """
    return resources.files("twisted_echo.services").joinpath(PAGE_FILE).read_bytes()


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

    @ivar flavour: C{"echo"} or C{"upper"} once upgraded, else L{None}.
    """

    factory: WebSocketFactory

    def __init__(self) -> None:
        StreamProtocol.__init__(self)
        self._http: h11.Connection | None = h11.Connection(h11.SERVER)
        self._ws: Connection | None = None
        self.flavour: str | None = None
        self._message_bytes = 0

    # StreamProtocol hooks.

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
        path = request.target.partition(b"?")[0]
        upgrade = any(name == b"upgrade" for name, _ in request.headers)
        if path not in FLAVOURS:
            self._respond(404, f"not found; WebSocket paths: {_paths()}")
            return
        if request.method not in (b"GET", b"HEAD"):
            self._respond(405, "only GET is served here")
            return
        if not upgrade:
            if path != ECHO_PATH:
                self._respond(404, "not found; the page is at /")
                return
            self._respond(
                200,
                self.factory.page,
                "text/html; charset=utf-8",
                head=request.method == b"HEAD",
            )
            return
        handshake = H11Handshake(ConnectionType.SERVER)
        try:
            handshake.initiate_upgrade_connection(list(request.headers), request.target)
            offer = next(handshake.events())
            subprotocols = getattr(offer, "subprotocols", [])
            accepted = handshake.send(
                AcceptConnection(subprotocol=subprotocols[0] if subprotocols else None)
            )
        except ProtocolError as e:
            self._respond(400, f"bad WebSocket handshake: {e}")
            return
        connection = handshake.connection
        assert connection is not None
        self.flavour = FLAVOURS[path]
        self._http = None
        self._ws = connection
        self.send(accepted)
        rest, _ = http.trailing_data
        if rest:
            self._ws_data(bytes(rest))

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
        payload = body.encode("utf-8") + b"\n" if isinstance(body, str) else body
        if status == 400:
            self.factory.counters.refused["websocket_http"] += 1
            self._log.info(
                "{service} connection from {peer}: {reason}; closing",
                service=self.factory.service_name,
                peer=self.client_text(),
                reason=str(body),
            )
        reason = _REASONS.get(status, b"")
        head_lines = [
            b"HTTP/1.1 %d %s" % (status, reason),
            b"Content-Type: " + content_type.encode("ascii"),
            b"Content-Length: %d" % len(payload),
            b"Cache-Control: no-store",
            b"Connection: close",
        ]
        if status == 200:
            # The page is self-contained: the browser is told to fetch nothing.
            head_lines.append(PAGE_POLICY)
        self._http = None
        self.send(b"\r\n".join(head_lines) + b"\r\n\r\n" + (b"" if head else payload))
        self.close()

    # WebSocket.

    def _ws_data(self, data: bytes) -> None:
        ws = self._ws
        assert ws is not None
        ws.receive_data(data)
        for event in ws.events():
            if self.closing:
                return
            if isinstance(event, TextMessage | BytesMessage):
                self._message(ws, event)
            elif isinstance(event, Ping):
                self.send(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self._peer_closed(ws, event)

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
        if ws.state is ConnectionState.OPEN:
            # wsproto found a protocol error (1002, 1007...).
            self._protocol_error(event.code, event.reason or "protocol error")
            return
        self.send(ws.send(event.response()))
        self.close()

    def _protocol_error(self, code: int, reason: str) -> None:
        """
        The client broke a rule (RFC 6455 section 7.4.1 C{code}): count and
        log it, send the close frame, close.
        """
        self.factory.counters.refused[f"websocket_{int(code)}"] += 1
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


_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
}


def _paths() -> str:
    return ", ".join(path.decode("ascii") for path in FLAVOURS)


class WebSocketFactory(StreamFactory):
    """
    Builds L{WebSocketEcho} protocols.

    @ivar max_message: most bytes of one message (bytes; text: UTF-8).
    @ivar page: the HTML page served at C{GET /} (bytes).
    """

    protocol = WebSocketEcho
    service_name: ClassVar[str] = SERVICE_NAME

    def __init__(
        self,
        *args: Any,
        max_message: int = DEFAULT_MAX_MESSAGE,
        **kw: Any,
    ) -> None:
        """
        @param args: L{StreamFactory}'s arguments.
        @param max_message: most bytes of one message (see L{max_message}).
        @param kw: L{StreamFactory}'s keyword arguments.
        """
        StreamFactory.__init__(self, *args, **kw)
        self.max_message = max_message
        self.page = load_page()

    def drain(self, timeout: float) -> Deferred[None]:
        """
        L{StreamFactory.drain}, after sending each open WebSocket close 1001
        (RFC 6455 section 7.4.1: "going away").
        """
        for protocol in list(self.open_protocols):
            if isinstance(protocol, WebSocketEcho):
                protocol.going_away()
        return StreamFactory.drain(self, timeout)
