# -*- test-case-name: tests.test_tls -*-
"""
TLS with half-close: sockecho's own layer over Twisted's memory-BIO TLS.

Over 500 lines: the TLS layer (about 350 lines of half-close rules over
Twisted's memory-BIO protocol), its factories and the in-memory probe that
checks, once, that the layer still fits the installed Twisted (about 250
lines: a TLS 1.3 pair run without sockets). The probe tests the layer's own
methods, so it stays beside them; certificates are in
L{twisted_echo.listening.certificate}.

TLS 1.3 lets a peer that sent its close_notify keep reading (RFC 8446
section 6.1: close_notify closes the sender's write side only). A client
may therefore send a request, send close_notify where a plain TCP client
would shut down its sending side, and read the whole reply. Twisted's
L{TLSMemoryBIOProtocol} answers a peer's close_notify with its own and
closes at once, so an echo still owed is lost. L{HalfCloseTLSProtocol}
instead treats a peer's close_notify like a FIN:

 - the wrapped protocol, if it provides L{IHalfCloseableProtocol}, is told
   C{readConnectionLost()} and may go on writing; its C{loseConnection()}
   then sends our close_notify after every byte written before it, and
   closes the TCP connection once they are all sent;
 - C{loseWriteConnection()} (what a client calls to half-close) sends our
   close_notify, then a TCP FIN, and leaves the connection open for
   reading; C{writeConnectionLost()} is called once both are sent;
 - a TCP FIN without a close_notify (a truncated stream) aborts the
   connection, as Twisted reports it: the wrapped protocol is told the
   connection was lost;
 - a C{loseConnection()} of ours sends close_notify and closes once the
   bytes queued are sent, without waiting for the peer's close_notify
   (RFC 8446 section 6.1 and RFC 5246 section 7.2.1 allow it): a peer that
   never answers cannot hold the connection open;
 - C{loseConnection()} before the handshake finished aborts at once if
   nothing is waiting to be sent (Twisted's rule), else gives the handshake
   L{HalfCloseTLSFactory.close_grace} seconds to finish, then aborts (a
   refused welcome client that never finishes its handshake is not kept).

A server's connection must finish its handshake within
L{HalfCloseTLSFactory.handshake_timeout} seconds (C{--handshake-timeout})
or is aborted, counted as C{timeouts[handshake]} of its service and logged.
Until its handshake finishes it holds L{HANDSHAKE_BYTES} of the memory
budget (L{twisted_echo.policies.budget.MemoryBudget.hold_handshake}). At close it
lets go of its OpenSSL state at once (no reference cycle is left for the
cyclic garbage collector), and the heap is trimmed after bursts of closes
(L{twisted_echo.system.malloc.HeapTrimmer}): a client that opens thousands of
connections and closes them unused leaves the server's memory as it was.

Flow control goes through the layer unchanged: a protocol registered as
the TLS transport's producer is paused and resumed by the TCP transport's
buffer (Twisted's C{_ProducerMembrane}); C{pauseProducing} on the TLS
transport stops reading from TCP.

The layer reaches no Twisted private itself: it implements the public
hooks of L{twisted_echo._twisted.tlsmemorybio.HookedTLSMemoryBIOProtocol},
which overrides Twisted internals of L{TLSMemoryBIOProtocol}
(C{_flushReceiveBIO}, C{_shutdownTLS}, C{_checkHandshakeStatus}, ...) and
reads the state they keep. L{tls_layer_misfit} checks at start-up, on a TLS
conversation held in memory, that the installed Twisted still behaves as
the layer expects; when it does not, listeners and clients use Twisted's
stock TLS (a peer's close_notify then closes at once) and say so in the
log (L{server_tls_factory}).
"""

from __future__ import annotations

import socket
from types import TracebackType
from typing import Any

from OpenSSL import SSL
from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.protocols.tls import (
    BufferingTLSTransport,
    TLSMemoryBIOFactory,
    TLSMemoryBIOProtocol,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_echo._twisted.fastpaths import note
from twisted_echo._twisted.tlsmemorybio import (
    HookedTLSMemoryBIOProtocol,
    twisted_tls_missing,
)
from twisted_echo.listening.address import describe_address, tls_address
from twisted_echo.listening.certificate import (
    self_signed_certificate as self_signed_certificate,
)
from twisted_echo.listening.endpoints import parse_description
from twisted_echo.listening.nodelay import no_delay
from twisted_echo.listening.tlsextras import TLSExtras
from twisted_echo.policies.budget import MemoryBudget
from twisted_echo.policies.counters import ServiceCounters
from twisted_echo.records import causes
from twisted_echo.system.malloc import HeapTrimmer

_log = Logger()

#: Seconds a connection closed before its TLS handshake finished, with bytes
#: still to deliver, is given to finish the handshake before it is aborted.
CLOSE_GRACE = 10.0
#: Seconds a server's connection is given to finish its TLS handshake
#: (C{--handshake-timeout}; 0: no limit).
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: Bytes a server's TLS connection holds before its handshake finished
#: (OpenSSL's state and buffers; measured: 46.0 KiB per connection that
#: sent nothing, C{benchmarks/abuse.py --tls-bursts}), counted in the
#: memory budget meanwhile, and reported freed at close.
HANDSHAKE_BYTES = 48 * 1024
#: Bytes read from a TLS connection's TCP socket at once (as the plain TCP
#: services read: L{twisted_echo.services.stream.READ_SIZE}).
TLS_READ_SIZE = 262144


class _NamedTLS:
    """
    What both TLS protocols of sockecho add to Twisted's: addresses marked
    as TLS (so logs say C{ssl:HOST:PORT}), C{TCP_NODELAY} and the read size
    of the plain TCP services, and the lean transport's failed-start report
    passed on to the wrapped protocol.
    """

    transport: Any
    wrappedProtocol: Any

    def _tune(self, transport: object) -> None:
        if isinstance(transport, tcp.Connection):
            transport.bufferSize = TLS_READ_SIZE
            no_delay(transport)

    #: Says that setting L{bufferSize} reaches the TCP transport (see
    #: L{twisted_echo.services.stream.StreamProtocol.set_allowance}).
    forwards_buffer_size = True

    @property
    def bufferSize(self) -> int:
        """
        The TCP transport's read size and write-queue limit (flow control).
        """
        size: int = self.transport.bufferSize
        return size

    @bufferSize.setter
    def bufferSize(self, size: int) -> None:
        self.transport.bufferSize = size

    def tcp_socket(self) -> socket.socket | None:
        """
        @return: the TCP socket under the TLS layer, whose kernel counters
            say what the peer acknowledged (the stall timeout,
            L{twisted_echo.services.stream.StreamProtocol._peer_progress}), or
            L{None} when the layer does not run over a socket transport.
        """
        sock = getattr(self.transport, "socket", None)
        return sock if isinstance(sock, socket.socket) else None

    def getPeer(self) -> Any:
        """
        The peer's address, marked as TLS (L{tls_address}).
        """
        return tls_address(self.transport.getPeer())

    def getHost(self) -> Any:
        """
        Our address, marked as TLS (L{tls_address}).
        """
        return tls_address(self.transport.getHost())

    def connection_failed_to_start(self) -> None:
        """
        The transport could not be built (see
        L{twisted_echo._twisted.transport.Server}): tell the wrapped protocol.
        """
        failed = getattr(self.wrappedProtocol, "connection_failed_to_start", None)
        if failed is not None:
            failed()


class StockTLSProtocol(_NamedTLS, BufferingTLSTransport):
    """
    Twisted's own TLS protocol, its addresses marked as TLS: the fallback
    when L{tls_layer_misfit} finds the installed Twisted changed. A peer's
    close_notify closes the connection at once.
    """

    def makeConnection(self, transport: Any) -> None:
        self._tune(transport)
        BufferingTLSTransport.makeConnection(self, transport)


@implementer(IHalfCloseableProtocol)
class HalfCloseTLSProtocol(_NamedTLS, TimeoutMixin, HookedTLSMemoryBIOProtocol):
    """
    A TLS connection on which a close_notify closes one direction only (see
    the module's description).

    @ivar verify_problem: set by a client's certificate check
        (L{twisted_echo.client.tls}) to say why the server's certificate was
        refused, else L{None}.
    """

    factory: HalfCloseTLSFactory
    verify_problem: str | None = None
    _peer_closed = False
    _close_write_wanted = False
    _write_closed = False
    _grace_call: Any = None
    _handshake_waiters: list[Deferred[None]] | None = None
    _failure: Failure | None = None
    #: The failure Twisted passed on at close when not L{_failure}.
    _passed_on: Failure | None = None
    _lost = False
    #: The budget this connection's unfinished handshake is counted in.
    _handshake_budget: MemoryBudget | None = None

    def makeConnection(self, transport: Any) -> None:
        self._tune(transport)
        TLSMemoryBIOProtocol.makeConnection(self, transport)
        factory = self.factory
        if factory.is_client or self.handshake_done or self._lost:
            return
        if factory.handshake_timeout:
            self.setTimeout(factory.handshake_timeout)  # type: ignore[no-untyped-call]
        budget = getattr(factory.wrappedFactory, "budget", None)
        if isinstance(budget, MemoryBudget):
            self._handshake_budget = budget
            budget.hold_handshake(HANDSHAKE_BYTES)

    # The handshake timeout (TimeoutMixin), servers only.

    def callLater(self, period: float, func: Any) -> Any:
        """
        Schedule on the factory's clock (for L{TimeoutMixin}).
        """
        return self.factory.clock.callLater(period, func)

    def timeoutConnection(self) -> None:
        """
        The handshake did not finish within
        L{HalfCloseTLSFactory.handshake_timeout} seconds: count it as
        C{timeouts[handshake]} of the service, log it, and abort.
        """
        wrapped = self.wrappedProtocol
        service_factory = getattr(wrapped, "factory", None)
        counters = getattr(service_factory, "counters", None)
        if isinstance(counters, ServiceCounters):
            counters.timeouts["handshake"] += 1
        set_close_cause = getattr(wrapped, "set_close_cause", None)
        if set_close_cause is not None:
            set_close_cause(causes.HANDSHAKE_TIMEOUT)
        _log.info(
            "{service} connection from {peer}: no TLS handshake within "
            "{timeout} s; aborting",
            service=getattr(service_factory, "service_name", "tls"),
            peer=describe_address(self.getPeer()),
            timeout=self.factory.handshake_timeout,
        )
        self._abort()

    def _handshake_over(self) -> None:
        """
        The handshake finished, or the connection is gone: stop its timeout
        and give back what it held of the memory budget.
        """
        self.setTimeout(None)  # type: ignore[no-untyped-call]
        budget, self._handshake_budget = self._handshake_budget, None
        if budget is not None:
            budget.hold_handshake(-HANDSHAKE_BYTES)

    # The handshake, for clients that wait for it.

    def when_handshaken(self) -> Deferred[None]:
        """
        @return: a L{Deferred} that fires with L{None} once the handshake is
            done (the server's certificate accepted), or fails with the
            reason the connection was lost before.
        """
        waiter: Deferred[None] = Deferred(lambda d: self._abort())
        if self.handshake_done:
            waiter.callback(None)
        elif self._lost:
            waiter.errback(self._failure or Failure(ConnectionError("closed")))
        else:
            if self._handshake_waiters is None:
                self._handshake_waiters = []
            self._handshake_waiters.append(waiter)
        return waiter

    def _abort(self) -> None:
        TLSMemoryBIOProtocol.abortConnection(self)

    # The hooks of HookedTLSMemoryBIOProtocol.

    def handshake_status_checked(self) -> None:
        """
        Once the handshake is done: stop its timeout, give back what it
        held of the budget, and fire L{when_handshaken}'s waiters.
        """
        if self.handshake_done:
            self._handshake_over()
        if self.handshake_done and not self.aborted:
            waiters, self._handshake_waiters = self._handshake_waiters, None
            for waiter in waiters or []:
                if not waiter.called:
                    waiter.callback(None)

    def tls_shutdown_finished(self, reason: Failure | None) -> None:
        """
        The TLS session is over: keep the first failure (for
        L{when_handshaken}'s waiters), then lose the TCP connection as
        Twisted does.
        """
        if reason is not None and self._failure is None:
            self._failure = reason
        super().tls_shutdown_finished(reason)
        # Twisted may pass on another failure than C{reason} (a peer's EOF
        # becomes a ConnectionLost, made while OpenSSL's error is handled)
        # and forgets it once passed on: note it, to lighten it at close.
        passed_on = self.passed_on_reason
        if passed_on is not None and passed_on is not reason:
            self._passed_on = passed_on

    def buffered_write(self, octets: bytes) -> None:
        """
        Bytes wait for the handshake: only keep them. Twisted pauses the
        producer meanwhile; a protocol that is its transport's producer
        (StreamProtocol) then stops reading, and the handshake never
        finishes: the welcome banner, written on connection, would hang the
        connection. After the handshake (OpenSSL's buffer full), pause it.
        """
        producer = self.registered_producer
        if producer is not None and self.handshake_done:
            producer.pauseProducing()

    # Reading: the peer's close_notify is an end of input.

    def dataReceived(self, data: bytes) -> None:
        """
        Decrypt C{data} and pass on what it holds; after the peer's
        close_notify, ignore it (RFC 8446 section 6.1).
        """
        if self._peer_closed:
            return
        TLSMemoryBIOProtocol.dataReceived(self, data)
        self._close_write_if_ready()

    def close_notify_received(self) -> bool:
        """
        The peer's close_notify came: tell the wrapped protocol its input
        ended, if it can go on writing (RFC 8446 section 6.1).

        @return: whether it was told (else Twisted's way applies: the
            connection closes).
        """
        if self._peer_closed:
            return True
        half = IHalfCloseableProtocol(self.wrappedProtocol, None)
        if half is None or self.disconnecting or self.aborted:
            return False
        self._peer_closed = True
        half.readConnectionLost()
        if self._write_closed and not self.disconnecting:
            # Both sides have said they are done.
            self.loseConnection()
        return True

    # IHalfCloseableProtocol, called by the TCP transport.

    def readConnectionLost(self) -> None:
        """
        The peer's TCP FIN: after its close_notify, or while we close,
        nothing to do; otherwise the stream was cut short: abort, and the
        wrapped protocol is told the connection was lost.
        """
        if self._peer_closed or self.disconnecting or self.tls_lost:
            return
        self.transport.abortConnection()

    def writeConnectionLost(self) -> None:
        """
        Our TCP FIN is sent, after our close_notify: tell the wrapped
        protocol.
        """
        if not self._write_closed:
            return
        half = IHalfCloseableProtocol(self.wrappedProtocol, None)
        if half is not None:
            half.writeConnectionLost()

    # Writing and closing.

    def write(self, data: bytes) -> None:
        """
        Encrypt and send C{data}; dropped once our close_notify is sent.
        """
        if self._write_closed:
            return
        TLSMemoryBIOProtocol.write(self, data)

    def loseWriteConnection(self) -> None:
        """
        Half-close: send our close_notify after everything written so far,
        then a TCP FIN; go on reading until the peer's close_notify.
        """
        if self._close_write_wanted or self.disconnecting or not self.connected:
            return
        self._close_write_wanted = True
        self._close_write_if_ready()

    def _close_write_if_ready(self) -> None:
        if not (
            self._close_write_wanted
            and not self._write_closed
            and self.handshake_done
            and not self.writes_pending
            and not self.disconnecting
            and not self.tls_lost
        ):
            return
        self._write_closed = True
        self.send_close_notify()
        if self._peer_closed:
            # Both sides are done.
            self.loseConnection()
            return
        lose_write = getattr(self.transport, "loseWriteConnection", None)
        if lose_write is not None:
            lose_write()
        else:
            self.writeConnectionLost()

    def loseConnection(self) -> None:
        """
        Send our close_notify after everything written, and close once it
        is all sent. Before the handshake finished: abort, or if bytes wait
        for the handshake, give it L{HalfCloseTLSFactory.close_grace}
        seconds first.
        """
        if self.disconnecting or not self.connected:
            return
        if not self.handshake_done and self.writes_pending:
            grace = self.factory.close_grace
            self._grace_call = self.factory.clock.callLater(grace, self._grace_over)
        TLSMemoryBIOProtocol.loseConnection(self)

    def _grace_over(self) -> None:
        self._grace_call = None
        if self.connected:
            TLSMemoryBIOProtocol.abortConnection(self)

    def shutdown_tls(self) -> None:
        """
        Send our close_notify and close the TCP connection once it is sent,
        whatever the peer does (Twisted closes only once the peer's
        close_notify came). Mid-handshake OpenSSL cannot send one: close
        all the same.
        """
        if not self.send_close_notify():
            return
        if not self.aborted:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        """
        Tell the wrapped protocol; give back what the handshake held; and
        let go of everything that would keep this connection's objects
        (its C{SSL.Connection} above all) alive in a reference cycle, so
        they are freed now rather than by the cyclic garbage collector.
        """
        self._handshake_over()
        grace, self._grace_call = self._grace_call, None
        if grace is not None and grace.active():
            grace.cancel()
        waiters, self._handshake_waiters = self._handshake_waiters, None
        self._lost = True
        TLSMemoryBIOProtocol.connectionLost(self, reason)
        failure = self._failure or reason or Failure(ConnectionError("closed"))
        for waiter in waiters or []:
            if not waiter.called:
                waiter.errback(failure)
        # A failure raised inside this connection (OpenSSL's error on a peer
        # that left mid-handshake, or after its TCP FIN) holds its
        # traceback, whose frames hold this protocol and its SSL.Connection:
        # a cycle. Keep the failure, without its frames.
        passed_on, self._passed_on = self._passed_on, None
        for held in (self._failure, passed_on, reason):
            if held is not None:
                forget_traceback(held)
        # The wrapped protocol registered as our producer (Twisted's
        # _ProducerMembrane) holds us as its transport: another cycle.
        self.release_buffers()
        if not self.factory.is_client:
            self.factory.heap_trimmer.freed(HANDSHAKE_BYTES)


def forget_traceback(failure: Failure) -> None:
    """
    Let go of the traceback C{failure} holds, and of those of the exceptions
    its exception was raised from or while handling: their frames, and all
    their locals. What the failure says (its type and value, and its frames
    as text) stays.

    L{Failure.cleanFailure} does so, but not for exceptions chained
    (C{__context__}, C{__cause__}), nor for copies of the traceback that
    others stored on the failure: test runners may replace it
    (C{pytest-twisted} makes it keep everything, for its reports), and
    pytest, on Twisted 24 and older, keeps each failure's C{sys.exc_info()}
    in an attribute of its own (C{_twisted_raw_excinfo}, set by its patch of
    C{Failure.__init__}). Any attribute holding a traceback, alone or in a
    tuple, keeps the rest with the traceback replaced by L{None}.

    @param failure: the failure to lighten; changed in place.
    """
    failure.cleanFailure()
    failure.tb = None
    for name, held in list(vars(failure).items()):
        if isinstance(held, TracebackType):
            setattr(failure, name, None)
        elif isinstance(held, tuple) and any(
            isinstance(item, TracebackType) for item in held
        ):
            setattr(
                failure,
                name,
                tuple(None if isinstance(i, TracebackType) else i for i in held),
            )
    value: BaseException | None = failure.value
    seen = 0
    while value is not None and seen < 100:
        value.__traceback__ = None
        value = value.__cause__ or value.__context__
        seen += 1


class HalfCloseTLSFactory(TLSMemoryBIOFactory):
    """
    Wraps a factory's protocols in L{HalfCloseTLSProtocol}.

    @ivar clock: the reactor's clock, for L{close_grace}.
    @ivar close_grace: seconds given to a handshake still under way when the
        connection is closed with bytes waiting for it.
    @ivar handshake_timeout: seconds a server's connection is given to
        finish its handshake before it is aborted (0: no limit; clients
        are not limited).
    @ivar is_client: whether our side starts the handshake.
    @ivar heap_trimmer: told of the memory each closed server connection
        frees (L{HANDSHAKE_BYTES}), and trims the heap after bursts.
    """

    protocol = HalfCloseTLSProtocol
    close_grace = CLOSE_GRACE
    handshake_timeout = DEFAULT_HANDSHAKE_TIMEOUT

    def __init__(
        self,
        contextFactory: Any,  # noqa: N803
        isClient: bool,  # noqa: N803
        wrappedFactory: Any,  # noqa: N803
        clock: IReactorTime | None = None,
        handshake_timeout: float | None = None,
    ) -> None:
        """
        @param handshake_timeout: seconds, overriding the class's
            L{handshake_timeout} (0: no limit).
        """
        if clock is None:
            from twisted.internet import reactor as clock
        TLSMemoryBIOFactory.__init__(
            self, contextFactory, isClient, wrappedFactory, clock
        )
        assert clock is not None
        self.clock = clock
        self.is_client = isClient
        if handshake_timeout is not None:
            self.handshake_timeout = handshake_timeout
        self.heap_trimmer = HeapTrimmer(clock)

    def doStart(self) -> None:
        """
        A listener started: trim the heap after bursts of closes.
        """
        self.heap_trimmer.start()
        super().doStart()  # type: ignore[no-untyped-call]

    def doStop(self) -> None:
        """
        The last listener stopped: cancel a heap trim still scheduled.
        """
        self.heap_trimmer.stop()
        super().doStop()  # type: ignore[no-untyped-call]


class StockTLSFactory(TLSMemoryBIOFactory):
    """
    Twisted's own TLS factory, its addresses marked as TLS.
    """

    protocol = StockTLSProtocol


def tls_factory(
    context_factory: Any,
    is_client: bool,
    wrapped: Any,
    clock: IReactorTime,
    what: str,
    handshake_timeout: float | None = None,
) -> TLSMemoryBIOFactory:
    """
    Wrap C{wrapped} in sockecho's TLS layer, or in Twisted's own if the
    layer does not fit the installed Twisted (L{tls_layer_problem}); log
    that once per call.

    @param context_factory: the TLS settings (a connection creator or
        context factory).
    @param is_client: whether our side starts the handshake.
    @param wrapped: the factory of the protocols spoken over TLS.
    @param clock: the reactor.
    @param what: what it is for, in the log (C{"ssl:7207"}).
    @param handshake_timeout: for a server, seconds each connection is
        given to finish its handshake (0: no limit; L{None}:
        L{DEFAULT_HANDSHAKE_TIMEOUT}); Twisted's own TLS has no such limit.
    """
    problem = tls_layer_problem()
    if problem is None:
        return HalfCloseTLSFactory(
            context_factory, is_client, wrapped, clock, handshake_timeout
        )
    _log.warn(
        "sockecho's half-close TLS layer does not fit this Twisted ({problem});"
        " {what} uses Twisted's own TLS: a peer's close_notify closes the "
        "connection at once, and replies still owed are lost",
        problem=problem,
        what=what,
    )
    return StockTLSFactory(context_factory, is_client, wrapped, clock)


def server_tls_factory(
    context_factory: Any,
    wrapped: Any,
    clock: IReactorTime,
    what: str = "ssl",
    handshake_timeout: float | None = None,
) -> TLSMemoryBIOFactory:
    """
    L{tls_factory} for a listener.
    """
    return tls_factory(context_factory, False, wrapped, clock, what, handshake_timeout)


class TLSListeningReactor:
    """
    The reactor given to C{serverFromString} for C{ssl:} descriptions: its
    C{listenSSL} listens on TCP with sockecho's TLS layer
    (L{server_tls_factory}) where Twisted's would use its own; all else is
    the reactor's.
    """

    def __init__(
        self,
        reactor: Any,
        handshake_timeout: float | None = None,
        extras: TLSExtras | None = None,
    ) -> None:
        """
        @param handshake_timeout: seconds each connection is given to finish
            its handshake (0: no limit; L{None}: L{DEFAULT_HANDSHAKE_TIMEOUT}).
        @param extras: sockecho's own C{ssl:} parameters (client
            certificates, ALPN), set on the listener's context.
        """
        self._reactor = reactor
        self._handshake_timeout = handshake_timeout
        self._extras = extras or TLSExtras()

    def listenSSL(
        self,
        port: int,
        factory: Any,
        contextFactory: Any,  # noqa: N803
        backlog: int = 50,
        interface: str = "",
    ) -> Any:
        """
        L{twisted.internet.interfaces.IReactorSSL.listenSSL}: listen on TCP
        C{port} with TLS. Clients may not renegotiate (TLS 1.2): a
        renegotiation would hold replies until it finished.
        """
        get_context = getattr(contextFactory, "getContext", None)
        no_renegotiation = getattr(SSL, "OP_NO_RENEGOTIATION", 0)
        if get_context is not None and no_renegotiation:
            get_context().set_options(no_renegotiation)
        if self._extras:
            if get_context is None:
                raise ValueError("clientCA= and alpn= need an OpenSSL context")
            self._extras.apply(get_context())
        wrapper = server_tls_factory(
            contextFactory,
            factory,
            self._reactor,
            f"ssl:{port}",
            self._handshake_timeout,
        )
        return self._reactor.listenTCP(
            port, wrapper, backlog=backlog, interface=interface
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


def is_tls_description(description: str) -> bool:
    """
    @param description: a server endpoint description.
    @return: whether it is an C{ssl:} one.
    """
    return parse_description(description).tls


def is_tls_port(port: object) -> bool:
    """
    @param port: a listening port.
    @return: whether its connections speak TLS (sockecho's or Twisted's).
    """
    return isinstance(getattr(port, "factory", None), TLSMemoryBIOFactory)


# The start-up check.


@implementer(IHalfCloseableProtocol, IPushProducer)
class _ProbeSide(Protocol):
    """
    One side of the probe conversation: records what it is told; the
    server side answers the end of input with C{b"owed"}, then closes.
    """

    def __init__(self, server: bool) -> None:
        self.server = server
        self.received = b""
        self.events: list[str] = []

    def connectionMade(self) -> None:
        if self.server:
            # As StreamProtocol does; then a greeting before the handshake
            # (the welcome banner).
            self.transport.registerProducer(self, True)  # type: ignore[union-attr]
            self.transport.write(b"hi ")  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        self.events.append("read lost")
        if self.server:
            self.transport.write(b"owed")  # type: ignore[union-attr]
            self.transport.unregisterProducer()  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        self.events.append("write lost")

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.events.append("lost")

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def stopProducing(self) -> None:
        pass


class _ProbeTransport:
    """
    An in-memory transport for the probe: collects what is written.
    """

    disconnecting = False
    #: Whether reading is paused: nothing is delivered to the protocol.
    paused = False

    def __init__(self) -> None:
        self.written = b""
        self.producer: object = None
        self.write_closed = False
        self.protocol: Any = None

    def write(self, data: bytes) -> None:
        self.written += data

    def writeSequence(self, data: list[bytes]) -> None:
        self.written += b"".join(data)

    def loseConnection(self) -> None:
        self.disconnecting = True

    def abortConnection(self) -> None:
        self.disconnecting = True

    def loseWriteConnection(self) -> None:
        self.write_closed = True
        self.protocol.writeConnectionLost()

    def registerProducer(self, producer: object, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def getPeer(self) -> Any:
        from twisted.internet.address import IPv4Address

        return IPv4Address("TCP", "127.0.0.1", 1)

    getHost = getPeer


class _Prebuilt(Factory):
    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self._protocol


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLClientConnectionCreator)
class _ProbeCreator:
    """
    TLS 1.3 connections for the probe: with a key and certificate, the
    server's; without, the client's (which verifies nothing).
    """

    def __init__(self, key: Any = None, certificate: Any = None) -> None:
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(SSL.TLS1_3_VERSION)
        if key is not None:
            try:
                context.use_privatekey(key)
                context.use_certificate(certificate)
            except TypeError:
                # pyOpenSSL before 24.3 takes only its own types.
                from OpenSSL import crypto

                context.use_privatekey(crypto.PKey.from_cryptography_key(key))
                context.use_certificate(crypto.X509.from_cryptography(certificate))
        self._context = context

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:  # noqa: N803
        return SSL.Connection(self._context, None)

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:  # noqa: N803
        return SSL.Connection(self._context, None)


class _NoClock:
    def callLater(self, *args: object) -> Any:
        raise AssertionError("the probe schedules nothing")


def _pair() -> tuple[Any, ...]:
    """
    Two L{HalfCloseTLSProtocol} sides of a TLS 1.3 connection in memory,
    handshake done: C{(server, server TLS, server wire, client, client TLS,
    client wire, pump)}, C{pump()} moving bytes until none move.
    """
    key, certificate = self_signed_certificate()
    server_options = _ProbeCreator(key, certificate)
    client_options = _ProbeCreator()
    clock: Any = _NoClock()
    sides: list[Any] = []
    for options, is_client in ((server_options, False), (client_options, True)):
        inner = _ProbeSide(server=not is_client)
        factory = HalfCloseTLSFactory(
            options, is_client, _Prebuilt(inner), clock, handshake_timeout=0
        )
        protocol = factory.buildProtocol(None)
        transport = _ProbeTransport()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        sides += [inner, protocol, transport]
    server_wire, client_tls, client_wire, server_tls = (
        sides[2],
        sides[4],
        sides[5],
        sides[1],
    )

    def pump() -> None:
        for _ in range(20):
            moved = False
            for source, target, target_wire in (
                (client_wire, server_tls, server_wire),
                (server_wire, client_tls, client_wire),
            ):
                if target_wire.paused:
                    continue
                data, source.written = source.written, b""
                if data:
                    moved = True
                    target.dataReceived(data)
            if not moved:
                return

    pump()
    return (*sides, pump)


def _probe() -> str | None:
    """
    Hold two TLS 1.3 conversations in memory between L{HalfCloseTLSProtocol}
    sides. In the first the client sends C{b"ping"} and half-closes; the
    server must be told its input ended, answer C{b"owed"} and close; the
    client must get every byte and both ends of the conversation. In the
    second the server closes first and the client does not answer: the
    server must close its TCP side all the same.

    @return: L{None} when they went so, else what went otherwise.
    """
    server, server_tls, server_wire, client, client_tls, client_wire, pump = _pair()
    if not client_tls.handshake_done or not server_tls.handshake_done:
        return "the handshake did not finish (with a greeting written before it)"
    if client.received != b"hi ":
        return f"the greeting written before the handshake came as {client.received!r}"
    if server_wire.producer is None:
        return "no producer was registered through the TLS layer"
    client_tls.write(b"ping")
    client_tls.loseWriteConnection()
    pump()
    if server.received != b"ping" or server.events != ["read lost"]:
        return (
            f"the server side got {server.received!r} and {server.events} "
            "for b'ping' and a close_notify"
        )
    if not client_wire.write_closed or client.events[:1] != ["write lost"]:
        return "the client's half-close did not shut down its TCP side"
    if client.received != b"hi owed" or "read lost" not in client.events:
        return f"the client got {client.received!r} and {client.events} back"
    if not server_wire.disconnecting or not client_wire.disconnecting:
        return "the connection was not closed after both close_notify alerts"
    if server_wire.producer is not None:
        return "the producer is still registered with the TCP transport"

    server, server_tls, server_wire, client, client_tls, client_wire, pump = _pair()
    server_tls.unregisterProducer()
    server_tls.loseConnection()
    if not server_wire.written or not server_wire.disconnecting:
        return "closing did not send close_notify and close at once"
    return None


def tls_layer_misfit() -> str | None:
    """
    Check that L{HalfCloseTLSProtocol} fits the installed Twisted: that
    L{TLSMemoryBIOProtocol} still has the methods and state it uses
    (C{TWISTED_METHODS} and C{TWISTED_STATE} of
    L{twisted_echo._twisted.tlsmemorybio}), and that a TLS 1.3 conversation
    held in memory half-closes as it should (L{_probe}).

    @return: L{None} when it fits, else what does not.
    """
    missing = twisted_tls_missing()
    if missing is not None:
        return missing
    if not getattr(SSL, "TLS1_3_VERSION", None):
        return "this pyOpenSSL has no TLS 1.3"
    try:
        return _probe()
    except Exception as error:
        return f"the half-close check raised {error!r}"


_checked: list[str | None] = []


def tls_layer_problem() -> str | None:
    """
    L{tls_layer_misfit}, checked once per process.
    """
    if not _checked:
        _checked.append(tls_layer_misfit())
        note("TLS half-close", _checked[0])
    return _checked[0]


__all__ = [
    "CLOSE_GRACE",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "HANDSHAKE_BYTES",
    "HalfCloseTLSFactory",
    "HalfCloseTLSProtocol",
    "StockTLSFactory",
    "TLSListeningReactor",
    "is_tls_description",
    "is_tls_port",
    "self_signed_certificate",
    "server_tls_factory",
    "tls_factory",
    "tls_layer_misfit",
    "tls_layer_problem",
]
