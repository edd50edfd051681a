# -*- test-case-name: tests.test_client_websocket -*-
"""
C{sockecho-client chat ws://...} (or C{wss://...}): interactive WebSocket.

Each line read from standard input is sent as one message: by default a
text message of the line without its line ending (bytes that are not UTF-8
are replaced with U+FFFD, since a text message must be UTF-8), with
C{--binary} a binary message of the line's bytes, line ending included.
Each message received is written to standard output: a text message
followed by a newline, a binary message as its bytes.

At the end of input the client waits for the echoes still owed (one per
message sent, as an echo server owes), then closes with code 1000 and waits
for the server's close frame. If the server closes first, its close code
and reason are reported in one line on standard error and the exit status
is 1.

Standard input is flow-controlled: while more than L{MAX_OWED} messages
wait for their echo, it is not read.
"""

from __future__ import annotations

import sys
from typing import IO, Any, cast

from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IPushProducer,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.stdio import StandardIO
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_echo.client.chat import ChatSession
from twisted_echo.client.tls import TLSSettings
from twisted_echo.client.websocket import (
    NORMAL_CLOSURE,
    WebSocketClient,
    WebSocketMessage,
    WebSocketURL,
    open_websocket,
    parse_websocket_url,
    websocket_endpoint,
)

#: Messages awaiting their echo above which standard input is paused.
MAX_OWED = 64


class WebSocketChat(ChatSession):
    """
    Standard input's lines to WebSocket messages, and messages back out.

    @ivar peer: the WebSocket connection.
    """

    def __init__(self, peer: WebSocketChatClient, binary: bool = False) -> None:
        ChatSession.__init__(self)
        self.peer = peer
        self.binary = binary
        self.owed = 0
        self._line = b""
        self._input_done = False
        self._paused = False
        peer.session = self
        peer.closed.addCallback(lambda _: self._peer_closed())

    def from_user(self, data: bytes) -> None:
        *lines, self._line = (self._line + data).split(b"\n")
        for line in lines:
            self._send(line + b"\n")

    def _send(self, line: bytes) -> None:
        if not self.peer.connected_and_open:
            return
        self.owed += 1
        if self.binary:
            self.peer.send_message(line)
        else:
            text = line.removesuffix(b"\n").removesuffix(b"\r")
            self.peer.send_message(text.decode("utf-8", "replace"))
        if self.owed > MAX_OWED and not self._paused and self.output is not None:
            self._paused = True
            cast(IPushProducer, self.output).pauseProducing()

    def user_done(self) -> None:
        if self._line:
            self._send(self._line)
            self._line = b""
        self._input_done = True
        self._maybe_close()

    def from_server(self, message: WebSocketMessage) -> None:
        """
        Print C{message}; count its echo as received.
        """
        if isinstance(message.data, str):
            self.from_peer(message.data.encode("utf-8") + b"\n")
        else:
            self.from_peer(message.data)
        self.owed = max(self.owed - 1, 0)
        if self._paused and self.owed <= MAX_OWED // 2 and self.output is not None:
            self._paused = False
            cast(IPushProducer, self.output).resumeProducing()
        self._maybe_close()

    def _maybe_close(self) -> None:
        if self._input_done and self.owed == 0:
            self.peer.close(NORMAL_CLOSURE)

    def _peer_closed(self) -> None:
        peer = self.peer
        problem = peer.problem
        if problem is None and not peer.close_sent:
            if peer.close_code is None:
                problem = "the connection closed without a close frame"
            else:
                problem = f"the server closed with code {peer.close_code}" + (
                    f" ({peer.close_reason})" if peer.close_reason else ""
                )
        elif problem is None and peer.close_code not in (NORMAL_CLOSURE, None):
            problem = f"closed with 1000; the server answered {peer.close_code}"
        elif problem is None and peer.close_code is None:
            problem = "closed with 1000; the server sent no close frame"
        if self.owed and problem is None:
            problem = f"{self.owed} message(s) got no echo"
        self.end(problem)


class WebSocketChatClient(WebSocketClient):
    """
    The chat's WebSocket: hands each message to the session.
    """

    session: WebSocketChat | None = None

    def message_received(self, message: WebSocketMessage) -> None:
        if self.session is not None:
            self.session.from_server(message)


@implementer(IHalfCloseableProtocol)
class _UserSide(Protocol):
    def __init__(self, session: WebSocketChat) -> None:
        self.session = session

    def connectionMade(self) -> None:
        self.session.user_attached(cast(ITransport, self.transport))

    def dataReceived(self, data: bytes) -> None:
        self.session.from_user(data)

    def readConnectionLost(self) -> None:
        self.session.user_done()

    def writeConnectionLost(self) -> None:
        self.session.end()
        self.session.user_closed()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.session.user_closed()


async def run_websocket_chat(
    reactor: Any,
    description: str,
    timeout: float = 30.0,
    binary: bool = False,
    stdin: int = 0,
    stdout: int = 1,
    stderr: IO[str] | None = None,
    tls: TLSSettings | None = None,
) -> int:
    """
    Chat with the WebSocket server at C{description} until input ends and
    every echo owed is printed, or the server closes.

    @param reactor: the running reactor.
    @param description: a C{ws://} or C{wss://} URL.
    @param timeout: seconds to connect and finish the handshake.
    @param binary: send lines as binary messages instead of text.
    @param stdin: file descriptor read from.
    @param stdout: file descriptor messages are written to.
    @param stderr: where a problem is reported (one line).
    @param tls: how a C{wss://} server's certificate is checked.
    @return: the exit status: 0, or 1 when the connection ended badly.
    @raise ClientError: for a bad URL, a failed connection or a refused
        handshake (one line).
    """
    url: WebSocketURL = parse_websocket_url(description)
    endpoint = websocket_endpoint(reactor, url, tls)
    peer = WebSocketChatClient(url)
    session = WebSocketChat(peer, binary)
    await open_websocket(reactor, endpoint, peer, timeout)
    # mypy sees the Windows StandardIO, which has no stdin/stdout arguments.
    StandardIO(  # type: ignore[call-arg,unused-ignore]
        _UserSide(session), stdin=stdin, stdout=stdout, reactor=reactor
    )
    status = await session.done
    if session.problem is not None:
        print(f"sockecho-client: {session.problem}", file=stderr or sys.stderr)
    return status
