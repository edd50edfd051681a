"""
Tests for L{twisted_echo.client.chat}: in memory (standard I/O and the peer
are L{StringTransport}s), and flow control on real pipes and a real loopback
connection. (The command as a process is tested in
L{tests.test_client_main}.)
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

from twisted.internet import error, reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IPushProducer,
    IReadDescriptor,
    IWriteDescriptor,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tests.loopback import wait_until
from tests.test_client_load import HalfCloseTransport
from twisted_echo.client import chat
from twisted_echo.client.chat import (
    DatagramChat,
    StreamChat,
    StreamPeerFactory,
    UserSide,
    run_chat,
)


class StdioTransport(StringTransport):
    """
    Standard I/O whose C{loseConnection} closes at once, as StandardIO does
    once its output is written.
    """

    def __init__(self) -> None:
        StringTransport.__init__(self)
        self.protocol: UserSide | None = None

    #: the producer still registered when output was closed.
    producer_at_close: object = "never closed"

    def loseConnection(self) -> None:
        self.producer_at_close = self.producer
        StringTransport.loseConnection(self)
        assert self.protocol is not None
        self.protocol.connectionLost(Failure(connectionDone.value))


class PeerTransport(HalfCloseTransport):
    """
    The connection, recording which producer was registered when it was
    half-closed.
    """

    producer_at_half_close: object = "never half-closed"

    def loseWriteConnection(self) -> None:
        self.producer_at_half_close = self.producer
        HalfCloseTransport.loseWriteConnection(self)


class StreamChatTests(TestCase):
    def setUp(self) -> None:
        self.session = StreamChat()
        self.peer = StreamPeerFactory(self.session).buildProtocol(None)
        self.peer_transport = PeerTransport()
        self.peer.makeConnection(self.peer_transport)
        self.user = UserSide(self.session)
        self.stdio = StdioTransport()
        self.stdio.protocol = self.user
        self.user.makeConnection(self.stdio)

    def test_relays_both_ways(self) -> None:
        self.user.dataReceived(b"hello\n")
        self.assertEqual(self.peer_transport.value(), b"hello\n")
        self.peer.dataReceived(b"HELLO\n")
        self.assertEqual(self.stdio.value(), b"HELLO\n")

    def test_end_of_input_half_closes_and_prints_the_rest(self) -> None:
        self.user.dataReceived(b"a\nb\n")
        self.user.readConnectionLost()
        self.assertTrue(self.peer_transport.write_closed)
        self.assertNoResult(self.session.done)
        # Replies still owed come after the half-close, and are printed.
        self.peer.dataReceived(b"A\nB\n")
        self.peer.readConnectionLost()
        self.assertTrue(self.peer_transport.disconnecting)
        self.peer.connectionLost(Failure(connectionDone.value))
        self.assertEqual(self.stdio.value(), b"A\nB\n")
        self.assertEqual(self.successResultOf(self.session.done), 0)
        self.assertIsNone(self.session.problem)

    def test_stdin_and_connection_are_each_others_producers(self) -> None:
        """
        Standard input is the connection's streaming producer (a full send
        buffer pauses reading input) and the connection is standard
        output's (a full output buffer pauses reading the connection).
        """
        self.assertIs(self.peer_transport.producer, self.stdio)
        self.assertTrue(self.peer_transport.streaming)
        self.assertIs(self.stdio.producer, self.peer_transport)
        self.assertTrue(self.stdio.streaming)

    def test_user_side_attached_first_is_coupled_too(self) -> None:
        session = StreamChat()
        stdio = StdioTransport()
        stdio.protocol = UserSide(session)
        stdio.protocol.makeConnection(stdio)
        peer_transport = PeerTransport()
        StreamPeerFactory(session).buildProtocol(None).makeConnection(peer_transport)
        self.assertIs(peer_transport.producer, stdio)
        self.assertIs(stdio.producer, peer_transport)

    def test_end_of_input_unregisters_stdin_before_half_closing(self) -> None:
        """
        A transport with a producer still registered resumes it instead of
        half-closing once its buffer is flushed: standard input is
        unregistered first.
        """
        self.user.readConnectionLost()
        self.assertIsNone(self.peer_transport.producer_at_half_close)
        self.assertTrue(self.peer_transport.write_closed)
        # Replies still pause and resume the connection.
        self.assertIs(self.stdio.producer, self.peer_transport)

    def test_end_unregisters_the_connection_before_closing_output(self) -> None:
        self.peer.dataReceived(b"bye\n")
        self.peer.readConnectionLost()
        # The server is done: input is no longer sent, nor read.
        self.assertIsNone(self.peer_transport.producer)
        self.assertEqual(self.stdio.producerState, "paused")
        self.user.dataReceived(b"late\n")
        self.assertEqual(self.peer_transport.value(), b"")
        self.peer.connectionLost(Failure(connectionDone.value))
        self.assertIsNone(self.stdio.producer_at_close)
        self.assertEqual(self.stdio.value(), b"bye\n")
        self.assertEqual(self.successResultOf(self.session.done), 0)

    def test_server_closing_first_ends_the_chat(self) -> None:
        self.peer.dataReceived(b"ERROR: line too long\r\n")
        self.peer.readConnectionLost()
        self.peer.connectionLost(Failure(connectionDone.value))
        self.assertEqual(self.successResultOf(self.session.done), 0)

    def test_reset_is_reported(self) -> None:
        self.peer.connectionLost(Failure(error.ConnectionLost()))
        self.assertEqual(self.successResultOf(self.session.done), 1)
        self.assertEqual(
            self.session.problem, "connection lost: connection lost (reset by peer)"
        )


#: Twisted's write buffer size (C{FileDescriptor.bufferSize}): a transport
#: pauses its producer once more than this is buffered.
BUFFER = 64 * 1024
#: Most a flow-controlled client may hold in one write buffer: a full buffer
#: plus the one read that overflowed it, with room to spare.
HELD_AT_MOST = 4 * BUFFER
#: Held beyond this, the client is plainly not flow-controlled (and the
#: test stops waiting for it to pause).
RUNAWAY = 8 << 20
#: Bytes a flow-control test moves: more than the loopback's kernel buffers
#: and L{RUNAWAY} together, so a client without flow control shows it.
TOTAL = 32 << 20
PATTERN = os.urandom(BUFFER)


def held(descriptor: Any) -> int:
    """
    @param descriptor: a L{twisted.internet.abstract.FileDescriptor}.
    @return: bytes in its write buffer (read from Twisted's internals).
    """
    return len(descriptor.dataBuffer) - descriptor.offset + descriptor._tempDataLen


def reading(fd: int) -> bool:
    """
    @return: whether the reactor watches file descriptor C{fd} for reading.
    """
    return any(reader.fileno() == fd for reader in reactor.getReaders())  # type: ignore[attr-defined]


def writer_of(fd: int) -> Any:
    """
    @return: the descriptor the reactor writes C{fd} with, or C{None}.
    """
    for writer in reactor.getWriters():  # type: ignore[attr-defined]
        if writer.fileno() == fd:
            return writer
    return None


@implementer(IWriteDescriptor)
class PipeFeeder:
    """
    Writes C{total} bytes into a pipe as fast as it takes them.

    @ivar fed: bytes written so far; C{digest}: their SHA-256.
    """

    def __init__(self, fd: int, total: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.total = total
        self.fed = 0
        self.digest = hashlib.sha256()
        reactor.addWriter(self)  # type: ignore[attr-defined]

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "PipeFeeder"

    def doWrite(self) -> None:
        while self.fed < self.total:
            start = self.fed % len(PATTERN)
            chunk = PATTERN[start : start + self.total - self.fed]
            try:
                written = os.write(self.fd, chunk)
            except BlockingIOError:
                return
            self.digest.update(chunk[:written])
            self.fed += written
        reactor.removeWriter(self)  # type: ignore[attr-defined]

    def connectionLost(self, reason: Any) -> None:
        reactor.removeWriter(self)  # type: ignore[attr-defined]


@implementer(IReadDescriptor)
class PipeDrain:
    """
    Reads a pipe as fast as it fills, counting and hashing.
    """

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.count = 0
        self.digest = hashlib.sha256()
        self.tail = b""
        reactor.addReader(self)  # type: ignore[attr-defined]

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "PipeDrain"

    def doRead(self) -> None:
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return
        if not data:
            reactor.removeReader(self)  # type: ignore[attr-defined]
            return
        self.count += len(data)
        self.digest.update(data)
        self.tail = (self.tail + data)[-64:]

    def connectionLost(self, reason: Any) -> None:
        reactor.removeReader(self)  # type: ignore[attr-defined]


@implementer(IHalfCloseableProtocol)
class LateReader(Protocol):
    """
    A server that reads nothing until L{read} is called; at the end of the
    client's input it replies with the byte count and closes.
    """

    def __init__(self) -> None:
        self.count = 0
        self.digest = hashlib.sha256()

    def connectionMade(self) -> None:
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def read(self) -> None:
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.count += len(data)
        self.digest.update(data)

    def readConnectionLost(self) -> None:
        self.transport.write(b"received %d\n" % self.count)  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass


@implementer(IHalfCloseableProtocol, IPushProducer)
class Firehose(Protocol):
    """
    A server that sends C{TOTAL} bytes as fast as the connection takes them,
    then closes at the end of the client's input.
    """

    def __init__(self) -> None:
        self.sent = 0
        self.digest = hashlib.sha256()
        self.paused = False
        self.closed = False

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.sent < TOTAL:
            self.transport.write(PATTERN)  # type: ignore[union-attr]
            self.digest.update(PATTERN)
            self.sent += len(PATTERN)

    def readConnectionLost(self) -> None:
        self.transport.unregisterProducer()  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True


class StreamFlowControlTests(TestCase):
    """
    L{run_chat} on real pipes for standard input and output, towards a real
    loopback server that does not read, or sends faster than standard
    output is read: at most L{TOTAL} bytes each, every wait bounded.
    """

    def setUp(self) -> None:
        self.stdin_r, self.stdin_w = os.pipe()
        self.stdout_r, self.stdout_w = os.pipe()
        for fd in (self.stdin_r, self.stdin_w, self.stdout_r, self.stdout_w):
            self.addCleanup(self._close, fd)
        self.sessions: list[StreamChat] = []
        self.patch(chat, "StreamChat", self._session)
        self.servers: list[Protocol] = []
        self.stderr = io.StringIO()
        self.feeder: PipeFeeder | None = None
        self.drain: PipeDrain | None = None
        self.closed: set[int] = set()

    def _close(self, fd: int) -> None:
        if fd not in self.closed:
            self.closed.add(fd)
            os.close(fd)

    def _session(self) -> StreamChat:
        session = StreamChat()
        self.sessions.append(session)
        return session

    def start(self, server: type[Protocol]) -> Deferred[int]:
        """
        Listen with C{server} and start a chat with it on the pipes.

        @return: fires with the chat's exit status.
        """

        def build() -> Protocol:
            protocol = server()
            self.servers.append(protocol)
            return protocol

        port = reactor.listenTCP(0, Factory.forProtocol(build), interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        done = Deferred.fromCoroutine(
            run_chat(
                reactor,
                f"tcp:127.0.0.1:{port.getHost().port}",
                timeout=5,
                stdin=self.stdin_r,
                stdout=self.stdout_w,
                stderr=self.stderr,
            )
        )
        self.addCleanup(self._stop, done)
        return done

    async def _stop(self, done: Deferred[int]) -> None:
        # Whatever happened, end the chat (its output read, so that it can
        # be flushed) before the pipes are closed.
        if self.feeder is not None:
            reactor.removeWriter(self.feeder)  # type: ignore[attr-defined]
        if not done.called:
            for server in self.servers:
                if server.transport is not None:
                    server.transport.abortConnection()  # type: ignore[attr-defined]
            if self.stdout_r not in self.closed:
                self.read_stdout()
            done.addTimeout(10, reactor)
        try:
            await done
        except Exception:
            pass
        if self.drain is not None:
            reactor.removeReader(self.drain)  # type: ignore[attr-defined]

    def read_stdout(self) -> PipeDrain:
        """
        Start reading what the chat prints (once).
        """
        if self.drain is None and self.stdout_r not in self.closed:
            self.drain = PipeDrain(self.stdout_r)
        assert self.drain is not None
        return self.drain

    def attached(self) -> StreamChat | None:
        """
        @return: the chat session once standard I/O is attached, or C{None}.
        """
        if self.sessions and self.sessions[0].output is not None:
            return self.sessions[0]
        return None

    def end_of_input(self) -> None:
        self._close(self.stdin_w)

    async def test_stdin_waits_for_a_peer_that_does_not_read(self) -> None:
        """
        While the server reads nothing, the client stops reading standard
        input once the connection's send buffer is full, and holds no more
        than a buffer's worth; when the server reads, input flows again,
        all of it arrives, and after the half-close the reply is printed.
        """
        done = self.start(LateReader)
        self.feeder = feeder = PipeFeeder(self.stdin_w, TOTAL)

        def stalled_or_runaway() -> bool:
            session = self.attached()
            if session is None or session.peer is None:
                return False
            buffered = held(session.peer.transport)
            return not reading(self.stdin_r) or buffered > RUNAWAY

        await wait_until(stalled_or_runaway, timeout=20)
        session = self.attached()
        assert session is not None and session.peer is not None
        buffered = held(session.peer.transport)
        self.assertFalse(
            reading(self.stdin_r),
            f"standard input still read with {buffered} bytes buffered "
            f"for a peer that does not read ({feeder.fed} of {TOTAL} fed)",
        )
        self.assertLessEqual(buffered, HELD_AT_MOST)

        (server,) = self.servers
        assert isinstance(server, LateReader)
        server.read()
        await wait_until(lambda: feeder.fed == TOTAL, timeout=30)
        self.end_of_input()
        reply = self.read_stdout()
        status = await done.addTimeout(30, reactor)
        await wait_until(lambda: reply.tail.endswith(b"\n"), timeout=10)
        self.assertEqual((status, self.stderr.getvalue()), (0, ""))
        self.assertEqual(reply.tail, b"received %d\n" % TOTAL)
        self.assertEqual(server.digest.digest(), feeder.digest.digest())

    async def test_connection_waits_for_stdout(self) -> None:
        """
        While standard output is not read, the client stops reading the
        connection once its output buffer is full, and holds no more than a
        buffer's worth; when output is read, every byte is printed.
        """
        done = self.start(Firehose)

        def stalled_or_runaway() -> bool:
            session = self.attached()
            if session is None or session.peer is None:
                return False
            output = writer_of(self.stdout_w)
            buffered = 0 if output is None else held(output)
            peer_reading = session.peer.transport in reactor.getReaders()  # type: ignore[attr-defined]
            return not peer_reading or buffered > RUNAWAY

        await wait_until(stalled_or_runaway, timeout=20)
        session = self.attached()
        assert session is not None and session.peer is not None
        output = writer_of(self.stdout_w)
        buffered = 0 if output is None else held(output)
        self.assertNotIn(
            session.peer.transport,
            reactor.getReaders(),  # type: ignore[attr-defined]
            f"connection still read with {buffered} bytes buffered for "
            "standard output, which is not read",
        )
        self.assertLessEqual(buffered, HELD_AT_MOST)

        (server,) = self.servers
        assert isinstance(server, Firehose)
        drain = self.read_stdout()
        await wait_until(lambda: drain.count == TOTAL, timeout=30)
        self.end_of_input()
        status = await done.addTimeout(30, reactor)
        self.assertEqual((status, self.stderr.getvalue()), (0, ""))
        self.assertEqual(drain.digest.digest(), server.digest.digest())

    async def test_closed_stdout_ends_the_chat(self) -> None:
        """
        When standard output goes away (its reader closed) while input is
        still open, nothing more can be shown: the chat ends at once, and
        the connection is closed.
        """
        self._close(self.stdout_r)
        done = self.start(Firehose)
        status = await done.addTimeout(10, reactor)
        self.assertEqual((status, self.stderr.getvalue()), (0, ""))
        (server,) = self.servers
        assert isinstance(server, Firehose)
        await wait_until(lambda: server.closed, timeout=10)


class FakeUDPTransport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.connected_to: tuple[str, int] | None = None

    def connect(self, host: str, port: int) -> None:
        self.connected_to = (host, port)

    def write(self, datagram: bytes, addr: Any = None) -> None:
        self.sent.append(datagram)


class DatagramChatTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.session = DatagramChat(("127.0.0.1", 7), self.clock, reply_wait=1.0)
        self.udp = FakeUDPTransport()
        self.session.makeConnection(self.udp)  # type: ignore[arg-type]
        self.user = UserSide(self.session)
        self.stdio = StdioTransport()
        self.stdio.protocol = self.user
        self.user.makeConnection(self.stdio)

    def test_one_datagram_per_line(self) -> None:
        self.assertEqual(self.udp.connected_to, ("127.0.0.1", 7))
        self.user.dataReceived(b"ping\npo")
        self.user.dataReceived(b"ng\n")
        self.assertEqual(self.udp.sent, [b"ping\n", b"pong\n"])
        self.session.datagramReceived(b"ping\n", ("127.0.0.1", 7))
        self.assertEqual(self.stdio.value(), b"ping\n")

    def test_waits_for_owed_replies_at_end(self) -> None:
        self.user.dataReceived(b"a\nlast")
        self.user.readConnectionLost()
        self.assertEqual(self.udp.sent, [b"a\n", b"last"])
        self.session.datagramReceived(b"a\n", None)
        self.assertNoResult(self.session.done)
        self.session.datagramReceived(b"last", None)
        self.assertEqual(self.successResultOf(self.session.done), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_gives_up_after_the_wait(self) -> None:
        self.user.dataReceived(b"a\n")
        self.user.readConnectionLost()
        self.clock.advance(1.0)
        self.assertEqual(self.successResultOf(self.session.done), 1)
        self.assertEqual(
            self.session.problem, "1 datagram(s) got no reply within 1.0 s"
        )

    def test_refused(self) -> None:
        self.user.dataReceived(b"a\n")
        self.session.connectionRefused()
        self.assertEqual(self.successResultOf(self.session.done), 1)
        assert self.session.problem is not None
        self.assertIn("connection refused", self.session.problem)
