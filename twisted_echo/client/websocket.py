# -*- test-case-name: tests.test_client_websocket -*-
"""
The WebSocket (RFC 6455) client under C{sockecho-client chat}, C{load} and
C{check} for C{ws://} and C{wss://} targets.

Over 500 lines: the URL parsing, the frame-level client (reassembly, pings,
the close handshake) and the connection helpers that chat, load and check
share; each of those three modes is its own module.

The handshake and frames are C{wsproto}'s (already a dependency of the
service), over a Twisted stream client endpoint: C{ws://HOST:PORT/PATH} is
C{tcp:HOST:PORT}, C{wss://HOST:PORT/PATH} is sockecho's TLS client endpoint
(L{twisted_echo.client.tls}: the certificate verified against the system's
trust store or C{--ca FILE}, or not with C{--insecure}).

A L{WebSocketClient} reassembles each message from its frames (keeping
how many frames it came in), answers pings, and on a close frame from the
server answers with the same code (RFC 6455 section 5.5.1) and closes the
TCP connection.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import error
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import connectProtocol
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from twisted_echo.client.endpoints import (
    EndpointError,
    explain_connect_failure,
    stream_endpoint,
)
from twisted_echo.client.errors import ClientError
from twisted_echo.client.tls import TLSSettings

#: The URL schemes of WebSocket targets.
SCHEMES = ("ws", "wss")
#: Each scheme's default port (RFC 6455 section 3).
DEFAULT_PORTS = {"ws": 80, "wss": 443}
#: Close code of a normal closure (RFC 6455 section 7.4.1).
NORMAL_CLOSURE = 1000
#: Close code of a message too big to process.
MESSAGE_TOO_BIG = 1009


def is_websocket_url(description: str) -> bool:
    """
    @param description: a target as the user gave it.
    @return: whether it is a C{ws://} or C{wss://} URL.
    """
    return description.strip().lower().startswith(("ws://", "wss://"))


@dataclass(frozen=True)
class WebSocketURL:
    """
    A WebSocket server as C{ws://HOST[:PORT]/PATH} or C{wss://...} names it.

    @ivar secure: C{wss://} (over TLS).
    @ivar host: a host name or an IP address literal (no brackets).
    @ivar port: the TCP port.
    @ivar resource: the path and query sent in the request line (C{/} when
        the URL has none).
    """

    secure: bool
    host: str
    port: int
    resource: str = "/"

    @property
    def endpoint_description(self) -> str:
        """
        The stream endpoint string connected to: C{tcp:HOST:PORT} or
        C{ssl:HOST:PORT}, an IPv6 literal's colons escaped.
        """
        kind = "ssl" if self.secure else "tcp"
        host = self.host.replace(":", "\\:")
        return f"{kind}:{host}:{self.port}"

    @property
    def host_header(self) -> str:
        """
        The C{Host} header's value (RFC 9110 section 7.2): the host,
        bracketed if IPv6, and the port unless it is the scheme's default.
        """
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "wss" if self.secure else "ws"
        if self.port == DEFAULT_PORTS[scheme]:
            return host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        scheme = "wss" if self.secure else "ws"
        return f"{scheme}://{self.host_header}{self.resource}"


def parse_websocket_url(description: str) -> WebSocketURL:
    """
    Parse C{ws://HOST[:PORT][/PATH[?QUERY]]} or C{wss://...} (RFC 6455
    section 3). An IPv6 address is bracketed: C{ws://[::1]:8080/}.

    @param description: the URL.
    @return: the server it names.
    @raise EndpointError: when it is not such a URL (no host, a bad port, a
        fragment, user information).
    """
    text = description.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise EndpointError(f"bad URL {description!r}: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise EndpointError(f"bad URL {description!r}: not ws:// or wss://")
    host = parts.hostname or ""
    if not host:
        raise EndpointError(f"bad URL {description!r}: no host")
    if parts.fragment or "#" in text:
        raise EndpointError(
            f"bad URL {description!r}: a WebSocket URL has no #fragment"
        )
    if parts.username is not None or parts.password is not None:
        raise EndpointError(f"bad URL {description!r}: user information is not sent")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise EndpointError(f"bad URL {description!r}: bad IPv6 address") from None
    if port == 0:
        raise EndpointError(f"bad URL {description!r}: port 0")
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    return WebSocketURL(
        secure=scheme == "wss",
        host=host,
        port=port if port is not None else DEFAULT_PORTS[scheme],
        resource=resource,
    )


class HandshakeRefusedError(ClientError):
    """
    The server did not upgrade to WebSocket; C{str()} says what it answered.
    """


class ConnectionClosedError(Exception):
    """
    The connection closed while a message was awaited.

    @ivar code: the server's close code, or C{None} if it sent none.
    @ivar reason: the server's close reason.
    """

    def __init__(self, code: int | None, reason: str) -> None:
        self.code = code
        self.reason = reason
        if code is None:
            what = "the connection closed without a close frame"
        else:
            what = f"the server closed with code {code}"
            if reason:
                what += f" ({reason})"
        Exception.__init__(self, what)


@dataclass(frozen=True)
class WebSocketMessage:
    """
    One whole message as received.

    @ivar data: C{str} for a text message, C{bytes} for a binary one.
    @ivar frames: how many frames (data events) it came in.
    """

    data: str | bytes
    frames: int = 1

    @property
    def is_text(self) -> bool:
        """
        Whether it is a text message.
        """
        return isinstance(self.data, str)


class WebSocketClient(Protocol):
    """
    One WebSocket client connection: handshake, messages, pings and the
    closing handshake, on C{wsproto}.

    Received messages go to L{message_received}, which queues them for
    L{receive} (subclasses may override it instead).

    @ivar opened: fires with C{None} once the server accepted the upgrade;
        fails with L{HandshakeRefusedError} if it answered otherwise, or with
        the connection's reason if it closed first.
    @ivar closed: fires with C{None} when the TCP connection is closed.
    @ivar close_code: the code of the server's close frame, or C{None}.
    @ivar close_reason: its reason.
    @ivar close_sent: whether this side sent a close frame first.
    @ivar subprotocol: the subprotocol the server chose, or C{None}.
    @ivar pongs: payloads of the pongs received, in order.
    @ivar problem: one line when the server broke the protocol, or C{None}.
    """

    def __init__(self, url: WebSocketURL, subprotocols: tuple[str, ...] = ()) -> None:
        """
        @param url: the server; its C{Host} header and resource are sent.
        @param subprotocols: offered in C{Sec-WebSocket-Protocol}.
        """
        self.url = url
        self.subprotocols = subprotocols
        self.opened: Deferred[None] = Deferred()
        self.closed: Deferred[None] = Deferred()
        self.close_code: int | None = None
        self.close_reason = ""
        self.close_sent = False
        self.subprotocol: str | None = None
        self.pongs: list[bytes] = []
        self.problem: str | None = None
        self.connected_and_open = False
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._parts: list[Any] = []
        self._rejected: RejectConnection | None = None
        self._reject_body = b""
        self._messages: deque[WebSocketMessage] = deque()
        self._waiters: deque[Deferred[WebSocketMessage]] = deque()
        self._lost = False
        self._pong_waiters: list[Deferred[bytes]] = []

    # Twisted's side.

    def connectionMade(self) -> None:
        # Each message is one write: send it at once (RFC 896's Nagle
        # algorithm off, as browsers and the websockets library do), or a
        # message written while an earlier segment is unacknowledged waits
        # for the peer's delayed ACK (up to 40 ms on Linux).
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            try:
                set_no_delay(True)
            except OSError:
                pass
        self._write(
            Request(
                host=self.url.host_header,
                target=self.url.resource,
                subprotocols=list(self.subprotocols),
            )
        )

    def dataReceived(self, data: bytes) -> None:
        try:
            self._ws.receive_data(data)
            for event in self._ws.events():
                self._event(event)
        except (RemoteProtocolError, LocalProtocolError) as e:
            self._broken(f"protocol error from the server: {e}")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        self.connected_and_open = False
        if not self.opened.called:
            if self._rejected is not None:
                self.opened.errback(self._refusal())
            else:
                self.opened.errback(reason)
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            waiter.errback(ConnectionClosedError(self.close_code, self.close_reason))
        pong_waiters, self._pong_waiters = self._pong_waiters, []
        for pong_waiter in pong_waiters:
            pong_waiter.errback(
                ConnectionClosedError(self.close_code, self.close_reason)
            )
        self.closed.callback(None)

    # wsproto's side.

    def _write(self, event: Any) -> None:
        if self._lost or self.transport is None:
            return
        data = self._ws.send(event)
        if data:
            self.transport.write(data)

    def _event(self, event: Any) -> None:
        if isinstance(event, TextMessage | BytesMessage):
            self._parts.append(event.data)
            if event.message_finished:
                parts, self._parts = self._parts, []
                joined: str | bytes
                joined = (
                    "".join(parts)
                    if isinstance(event, TextMessage)
                    else b"".join(parts)
                )
                self.message_received(WebSocketMessage(joined, len(parts)))
        elif isinstance(event, Ping):
            if self._ws.state is ConnectionState.OPEN:
                self._write(event.response())
        elif isinstance(event, Pong):
            payload = bytes(event.payload)
            self.pongs.append(payload)
            waiters, self._pong_waiters = self._pong_waiters, []
            for waiter in waiters:
                waiter.callback(payload)
            self.pong_received(payload)
        elif isinstance(event, CloseConnection):
            self.close_code = int(event.code)
            self.close_reason = event.reason or ""
            self.connected_and_open = False
            if self._ws.state is ConnectionState.REMOTE_CLOSING:
                self._write(event.response())
            self.transport.loseConnection()  # type: ignore[union-attr]
        elif isinstance(event, AcceptConnection):
            self.subprotocol = event.subprotocol
            self.connected_and_open = True
            self.opened.callback(None)
        elif isinstance(event, RejectConnection):
            self._rejected = event
            if not event.has_body:
                self.transport.loseConnection()  # type: ignore[union-attr]
        elif isinstance(event, RejectData):
            if len(self._reject_body) < 200:
                self._reject_body += event.data[:200]
            if event.body_finished:
                self.transport.loseConnection()  # type: ignore[union-attr]

    def _refusal(self) -> HandshakeRefusedError:
        assert self._rejected is not None
        body = self._reject_body.decode("utf-8", "replace").strip()
        line = body.splitlines()[0] if body else ""
        status = self._rejected.status_code
        return HandshakeRefusedError(
            f"{self.url} did not upgrade to WebSocket: HTTP {status}"
            + (f" ({line})" if line else "")
        )

    def _broken(self, problem: str) -> None:
        if self.problem is None:
            self.problem = problem
        self.connected_and_open = False
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # The application's side.

    def message_received(self, message: WebSocketMessage) -> None:
        """
        A whole message arrived: queue it for L{receive}.
        """
        if self._waiters:
            self._waiters.popleft().callback(message)
        else:
            self._messages.append(message)

    def pong_received(self, payload: bytes) -> None:
        """
        A pong arrived (its payload is also appended to L{pongs}).
        """

    def next_pong(self) -> Deferred[bytes]:
        """
        @return: a L{Deferred} firing with the payload of the next pong
            received, or failing with L{ConnectionClosedError} if the
            connection closes first.
        """
        waiter: Deferred[bytes] = Deferred()
        if self._lost:
            waiter.errback(ConnectionClosedError(self.close_code, self.close_reason))
        else:
            self._pong_waiters.append(waiter)
        return waiter

    def receive(self) -> Deferred[WebSocketMessage]:
        """
        @return: a L{Deferred} firing with the next whole message, or
            failing with L{ConnectionClosedError} if the connection closes first.
        """
        waiter: Deferred[WebSocketMessage] = Deferred()
        if self._messages:
            waiter.callback(self._messages.popleft())
        elif self._lost:
            waiter.errback(ConnectionClosedError(self.close_code, self.close_reason))
        else:
            self._waiters.append(waiter)
        return waiter

    def send_message(self, data: str | bytes, finished: bool = True) -> None:
        """
        Send a text (C{str}) or binary (C{bytes}) message, or with
        C{finished=False} one fragment of it (the next fragments follow
        with further calls, the last with C{finished=True}).
        """
        if not self.connected_and_open:
            return
        self._write(Message(data=data, message_finished=finished))

    def ping(self, payload: bytes = b"") -> None:
        """
        Send a ping (at most 125 bytes of payload).
        """
        if self.connected_and_open:
            self._write(Ping(payload=payload))

    def close(self, code: int = NORMAL_CLOSURE, reason: str = "") -> None:
        """
        Start the closing handshake; L{closed} fires once the server has
        answered and the connection is closed.
        """
        if not self.connected_and_open:
            if not self._lost and self.transport is not None and not self.opened.called:
                self.transport.loseConnection()
            return
        self.connected_and_open = False
        self.close_sent = True
        self._write(CloseConnection(code=code, reason=reason))

    def abort(self) -> Deferred[None]:
        """
        Abort the TCP connection if it is open.

        @return: L{closed}'s result, once closed.
        """
        waiter: Deferred[None] = Deferred()
        if self.transport is None:
            waiter.callback(None)  # never connected
            return waiter

        def fire(result: object) -> object:
            waiter.callback(None)
            return result

        self.closed.addBoth(fire)
        if not self._lost and self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]
        return waiter



def websocket_endpoint(
    reactor: Any, url: WebSocketURL, tls: TLSSettings | None = None
) -> IStreamClientEndpoint:
    """
    @param reactor: the reactor to connect with.
    @param url: the server.
    @param tls: how a C{wss://} server's certificate is checked.
    @return: the stream endpoint under C{url} (nothing connected yet).
    @raise EndpointError: when it cannot be built.
    """
    return stream_endpoint(reactor, url.endpoint_description, tls)


async def open_websocket(
    reactor: Any,
    endpoint: IStreamClientEndpoint,
    client: WebSocketClient,
    timeout: float,
) -> WebSocketClient:
    """
    Connect C{client} and wait for the server to accept the upgrade.

    @param reactor: for the timeout.
    @param endpoint: from L{websocket_endpoint}.
    @param client: a new L{WebSocketClient}.
    @param timeout: seconds for the connection and the handshake together.
    @return: C{client}, open.
    @raise HandshakeRefusedError: when the server answered without upgrading.
    @raise ClientError: when the connection failed or timed out (one line).
    """

    async def connect() -> None:
        await connectProtocol(endpoint, client)
        await client.opened

    attempt: Deferred[None] = Deferred.fromCoroutine(connect())
    attempt.addTimeout(timeout, reactor)
    try:
        await attempt
    except HandshakeRefusedError:
        raise
    except (CancelledError, Exception) as e:
        if client.transport is not None and not client.closed.called:
            await client.abort()
        why = explain_connect_failure(e)
        if isinstance(e, error.ConnectionDone | error.ConnectionLost):
            why += " before the WebSocket handshake finished"
        raise ClientError(f"cannot connect to {client.url}: {why}") from None
    return client
