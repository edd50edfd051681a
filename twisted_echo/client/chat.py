# -*- test-case-name: tests.test_client_chat -*-
"""
C{sockecho-client chat}: interactive, like telnet or netcat.

Over a stream (TCP, UNIX, TLS), what is read from standard input is sent as
it comes, and replies are written to standard output as they arrive. At the
end of standard input the client half-closes (C{SHUT_WR}, as C{nc -N} does)
and keeps printing until the server closes, so every reply owed is shown.

A stream chat is flow-controlled both ways, as C{nc} is: standard input is
the connection's streaming producer and the connection is standard
output's (L{IPushProducer}), so while the server does not read, standard
input is not read either once the connection's write buffer (64 KiB) is
full, and while standard output is not taken, the connection is not read.
Each way the client holds at most about one buffer plus one read, however
much is sent.

Over UDP each input line (with its C{\\n}) is one datagram (RFC 862 UDP
echo); at the end of input the client waits up to C{reply_wait} seconds for
the replies still owed. UDP has no flow control: each line is sent as soon
as it is read, and a datagram the network or the server cannot take is
lost, not queued; replies are printed as they come.
"""

from __future__ import annotations

import sys
from typing import IO, Any, cast

from twisted.internet import error
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import (
    DatagramProtocol,
    Factory,
    Protocol,
    connectionDone,
)
from twisted.internet.stdio import StandardIO
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_echo.client.endpoints import (
    explain_connect_failure,
    is_datagram,
    parse_datagram_endpoint,
    resolve_datagram_target,
    stream_endpoint,
)
from twisted_echo.client.errors import ClientError
from twisted_echo.client.tls import TLSSettings

#: Seconds a UDP chat waits at end of input for the replies still owed.
DEFAULT_REPLY_WAIT = 1.0


class ChatSession:
    """
    Ties the user's side (standard input and output) to the peer.

    @ivar output: where replies are written (the standard I/O transport).
    @ivar done: fires with the exit status (C{int}: 0, or 1 when the
        connection ended badly) once everything owed has been printed and
        the output is closed.
    @ivar problem: one line for standard error, or C{None}.
    """

    def __init__(self) -> None:
        self.output: ITransport | None = None
        self.done: Deferred[int] = Deferred()
        self.problem: str | None = None
        self._status = 0

    def user_attached(self, output: ITransport) -> None:
        """
        @param output: the transport replies are written to.
        """
        self.output = output

    def from_user(self, data: bytes) -> None:
        """
        Send C{data} (bytes read from standard input) to the peer.
        """
        raise NotImplementedError

    def user_done(self) -> None:
        """
        Standard input ended.
        """
        raise NotImplementedError

    def from_peer(self, data: bytes) -> None:
        """
        Print C{data} (reply bytes).
        """
        if self.output is not None:
            self.output.write(data)

    def end(self, problem: str | None = None) -> None:
        """
        Close the output once written; then L{done} fires.

        @param problem: one line saying what went wrong, or C{None}.
        """
        if problem is not None and self.problem is None:
            self.problem = problem
            self._status = 1
        if self.output is None:
            self.user_closed()
        else:
            self.output.loseConnection()

    def user_closed(self) -> None:
        """
        Standard I/O is closed (output flushed): the session is over.
        """
        if not self.done.called:
            self.done.callback(self._status)


@implementer(IHalfCloseableProtocol)
class UserSide(Protocol):
    """
    The protocol on standard I/O (L{twisted.internet.stdio.StandardIO}).
    Half-closeable, so the end of input leaves standard output open.
    """

    def __init__(self, session: ChatSession) -> None:
        self.session = session

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.session.user_attached(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self.session.from_user(data)

    def readConnectionLost(self) -> None:
        self.session.user_done()

    def writeConnectionLost(self) -> None:
        # Standard output went away (e.g. a closed pipe): nothing more can
        # be shown, so the session is over now. (StandardIO would call
        # connectionLost only once input ends too, which it no longer reads.)
        self.session.end()
        self.session.user_closed()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.session.user_closed()


class StreamChat(ChatSession):
    """
    A chat over a stream connection, flow-controlled both ways.

    Once both sides are attached (L{user_attached}, L{peer_attached}, in
    either order), standard input is registered as the connection's
    streaming producer and the connection as standard output's: a full
    write buffer on one side pauses reading on the other, and resumes it
    once drained. Each registration is undone before the transport it is on
    is half-closed or closed, since a transport with a producer registered
    resumes the producer instead of closing.

    @ivar peer: the connection's protocol, once connected.
    """

    def __init__(self) -> None:
        ChatSession.__init__(self)
        self.peer: StreamPeer | None = None
        self._user_done = False
        self._peer_closing = False
        # Standard input is registered on the connection; the connection is
        # registered on standard output.
        self._input_paces_peer = False
        self._peer_paces_output = False

    def user_attached(self, output: ITransport) -> None:
        """
        @param output: the standard I/O transport: replies are written to
            it, and it is the producer of what is sent.
        """
        ChatSession.user_attached(self, output)
        self._couple()

    def peer_attached(self, peer: StreamPeer) -> None:
        """
        @param peer: the connection's protocol, now connected.
        """
        self.peer = peer
        self._couple()

    def _peer_transport(self) -> ITransport | None:
        if self.peer is None:
            return None
        return self.peer.transport

    def _couple(self) -> None:
        """
        Make standard I/O and the connection each other's streaming
        producers, once both are attached (and only once).
        """
        transport = self._peer_transport()
        if self.output is None or transport is None or self._peer_paces_output:
            return
        if not (self._user_done or self._peer_closing):
            cast(IConsumer, transport).registerProducer(
                cast(IPushProducer, self.output), True
            )
            self._input_paces_peer = True
        cast(IConsumer, self.output).registerProducer(
            cast(IPushProducer, transport), True
        )
        self._peer_paces_output = True

    def _stop_sending_input(self) -> None:
        """
        Unregister standard input from the connection: nothing more will be
        sent.
        """
        transport = self._peer_transport()
        if self._input_paces_peer and transport is not None:
            self._input_paces_peer = False
            cast(IConsumer, transport).unregisterProducer()

    def from_user(self, data: bytes) -> None:
        transport = self._peer_transport()
        if transport is not None and not self._peer_closing:
            transport.write(data)

    def user_done(self) -> None:
        """
        Standard input ended: unregister it, then half-close, so that
        everything sent is delivered and replies are still read.
        """
        self._user_done = True
        self._stop_sending_input()
        transport = self._peer_transport()
        if transport is not None and not self._peer_closing:
            transport.loseWriteConnection()  # type: ignore[attr-defined]

    def peer_closing(self) -> None:
        """
        The server has sent all it will and the connection is closing:
        input is no longer read nor sent.
        """
        self._peer_closing = True
        self._stop_sending_input()
        if self.output is not None and not self._user_done:
            cast(IPushProducer, self.output).pauseProducing()

    def end(self, problem: str | None = None) -> None:
        """
        Unregister the connection from standard output, then close the
        output once written (see L{ChatSession.end}).
        """
        if self._peer_paces_output and self.output is not None:
            self._peer_paces_output = False
            cast(IConsumer, self.output).unregisterProducer()
        ChatSession.end(self, problem)


@implementer(IHalfCloseableProtocol)
class StreamPeer(Protocol):
    """
    The protocol on the connection to the server.
    """

    def __init__(self, session: StreamChat) -> None:
        self.session = session
        self._eof = False

    def connectionMade(self) -> None:
        self.session.peer_attached(self)

    def dataReceived(self, data: bytes) -> None:
        self.session.from_peer(data)

    def readConnectionLost(self) -> None:
        """
        The server has sent all it will: close, as netcat does.
        """
        self._eof = True
        self.session.peer_closing()
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        problem = None
        if not self._eof and not reason.check(error.ConnectionDone):
            why = explain_connect_failure(reason.value or Exception())
            problem = f"connection lost: {why}"
        self.session.end(problem)


class StreamPeerFactory(Factory):
    """
    Builds the one L{StreamPeer} of a L{StreamChat}.
    """

    def __init__(self, session: StreamChat) -> None:
        self.session = session

    def buildProtocol(self, addr: Any) -> StreamPeer:
        return StreamPeer(self.session)


class DatagramChat(ChatSession, DatagramProtocol):
    """
    A chat over UDP: one datagram per input line, sent as soon as the line
    is read. There is no flow control: a UDP send is done at once or not at
    all (a datagram the network or the server cannot take is lost, one the
    local socket refuses ends the chat), so nothing is queued to send; and
    replies are written out as they come.

    @ivar sent: datagrams sent.
    @ivar replies: datagrams received.
    """

    def __init__(
        self,
        address: tuple[str, int],
        clock: IReactorTime,
        reply_wait: float = DEFAULT_REPLY_WAIT,
    ) -> None:
        """
        @param address: the peer, C{(address literal, port)}.
        @param clock: for the wait at end of input.
        @param reply_wait: seconds to wait at end of input for replies.
        """
        ChatSession.__init__(self)
        self.address = address
        self.clock = clock
        self.reply_wait = reply_wait
        self.sent = 0
        self.replies = 0
        self._line = b""
        self._waiting = False
        self._timer: Any = None

    def startProtocol(self) -> None:
        self.transport.connect(*self.address)  # type: ignore[union-attr]

    def from_user(self, data: bytes) -> None:
        *lines, self._line = (self._line + data).split(b"\n")
        for line in lines:
            self._send(line + b"\n")

    def _send(self, datagram: bytes) -> None:
        try:
            self.transport.write(datagram)  # type: ignore[union-attr,call-arg]
        except Exception as e:
            self.end(f"cannot send a {len(datagram)}-byte datagram: {e}")
            return
        self.sent += 1

    def user_done(self) -> None:
        if self._line:
            self._send(self._line)
            self._line = b""
        self._waiting = True
        if self.replies >= self.sent:
            self.end()
        else:
            self._timer = self.clock.callLater(self.reply_wait, self._gave_up)

    def _gave_up(self) -> None:
        self._timer = None
        missing = self.sent - self.replies
        self.end(f"{missing} datagram(s) got no reply within {self.reply_wait} s")

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.replies += 1
        self.from_peer(datagram)
        if self._waiting and self.replies >= self.sent:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
                self._timer = None
            self.end()

    def connectionRefused(self) -> None:
        """
        ICMP port unreachable: nothing listens there.
        """
        self.end("connection refused (nothing listens on that UDP port)")


async def run_chat(
    reactor: Any,
    description: str,
    reply_wait: float = DEFAULT_REPLY_WAIT,
    timeout: float = 30.0,
    stdin: int = 0,
    stdout: int = 1,
    stderr: IO[str] | None = None,
    tls: TLSSettings | None = None,
) -> int:
    """
    Chat with the server at C{description} until input ends and every reply
    owed is printed, or the server closes.

    @param reactor: the running reactor.
    @param description: a stream client endpoint string, or C{udp:HOST:PORT}.
    @param reply_wait: for UDP, seconds to wait at end of input for replies.
    @param timeout: seconds to connect.
    @param stdin: file descriptor read from.
    @param stdout: file descriptor replies are written to.
    @param stderr: where a problem is reported (one line).
    @param tls: how an C{ssl:} endpoint checks the server.
    @return: the exit status: 0, or 1 when the connection ended badly.
    @raise ClientError: when the endpoint is bad or the connection fails.
    """
    session: ChatSession
    if is_datagram(description):
        target = parse_datagram_endpoint(description)
        address, _family = await resolve_datagram_target(reactor, target)
        datagram_session = DatagramChat((address, target.port), reactor, reply_wait)
        session = datagram_session
        interface = "::" if ":" in address else ""
        port = reactor.listenUDP(
            0, datagram_session, interface=interface, maxPacketSize=65535
        )
        _attach_stdio(reactor, session, stdin, stdout)
        try:
            status = await session.done
        finally:
            await maybeDeferred(port.stopListening)
    else:
        endpoint = stream_endpoint(reactor, description, tls)
        stream_session = StreamChat()
        session = stream_session
        connecting = endpoint.connect(StreamPeerFactory(stream_session))
        try:
            await connecting.addTimeout(timeout, reactor)
        except Exception as e:
            why = explain_connect_failure(e)
            raise ClientError(f"cannot connect to {description}: {why}") from None
        _attach_stdio(reactor, session, stdin, stdout)
        status = await session.done
    if session.problem is not None:
        print(f"sockecho-client: {session.problem}", file=stderr or sys.stderr)
    return status


def _attach_stdio(reactor: Any, session: ChatSession, stdin: int, stdout: int) -> None:
    # mypy sees the Windows StandardIO, which has no stdin/stdout arguments.
    StandardIO(  # type: ignore[call-arg,unused-ignore]
        UserSide(session), stdin=stdin, stdout=stdout, reactor=reactor
    )
