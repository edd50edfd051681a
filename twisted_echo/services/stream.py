# -*- test-case-name: tests.test_stream -*-
"""
What every TCP service of sockecho shares: half-close, flow control, limits,
timeouts, graceful shutdown and per-connection accounting.

Over 500 lines: the service base is one class, L{StreamProtocol}, whose
half-close, flow control, budget, idle and stall handling, drain and close
path share state on every read and write (the counted cost of a request
is spent here, so it is not spread over more calls); how records are made
is in L{twisted_echo.services.recording}, faults in L{twisted_echo.faults}.
The contract a service is written
against (the hooks L{StreamProtocol.on_open}, L{StreamProtocol.handle_data},
L{StreamProtocol.end_of_input}, L{StreamProtocol.on_close},
L{StreamProtocol.held_bytes}, and L{StreamProtocol.send},
L{StreamProtocol.close}, L{StreamProtocol.closing}) is in docs/services.md.
The PROXY header is read before the service's protocol is connected
(L{twisted_echo.listening.proxyheader.ProxyHeaderProtocol}).

Half-close (RFC 9293 section 3.6, C{shutdown(SHUT_WR)}, C{nc -N}): when the
peer stops sending, every reply byte still owed is sent before the connection
closes. Twisted's plain L{twisted.protocols.wire.Echo} closes at once and
loses what was still queued.

Flow control: the protocol is its transport's streaming producer. When the
transport's write buffer is full (the peer does not read) Twisted pauses it
and it stops reading from the peer; when the buffer drains it reads again.
Server memory per connection stays bounded by the transport's buffer size.

Stall timeout: while anything written is not yet taken by the peer, the
connection is checked L{STALL_CHECKS} times per stall timeout; a peer that
has taken no byte for the whole stall timeout is aborted. A peer that reads,
however slowly, is not. On Linux TCP (TLS included, below the TLS layer) a
byte is taken when the peer acknowledges it (C{tcpi_bytes_acked},
L{twisted_echo.listening.sendqueue}), so what waits in the kernel's send queue (several
megabytes on loopback) counts as owed: the watch starts when the transport
pauses, when closing with bytes owed, or when the factory's
sweep (L{IdleSweeper}) finds bytes sent since its last sweep still unacknowledged
in the kernel. The acknowledged count moves in steps (the peer's window
opens only once it has read a good part of its buffer: on loopback up to
about 1.3 s apart at 100 KB/s, 6.5 s at 20 KB/s), so slower readers need a
longer stall timeout. Where the kernel does not say (other systems, UNIX
sockets), a byte is taken when it leaves the transport's queue, and only
while that queue is paused or closing.

Twisted internals: L{send} writes straight to the socket when the
transport's queue is empty, and the stall check reads how much is queued,
both through L{twisted.internet.abstract.FileDescriptor}'s C{dataBuffer},
C{offset} and C{_tempDataLen}. Sending at once saves a reactor turn and two
C{epoll_ctl} calls per reply (part of what put request/response at 1.12x
asyncio's rate in docs/benchmarks.md). L{TRANSPORT_LAYOUT_FITS} checks at
import that Twisted still has them; when it does not, every reply goes
through C{transport.write} and a stall is counted from the pause, as in
Twisted's own servers.
"""

from __future__ import annotations

import socket
import time
from typing import Any, ClassVar

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_echo._twisted.logpublisher import sole_line_taker
from twisted_echo._twisted.writequeue import WRITE_QUEUE_FITS as TRANSPORT_LAYOUT_FITS
from twisted_echo._twisted.writequeue import (
    nothing_queued,
    write_queue_misfit,
)
from twisted_echo._twisted.writequeue import (
    queued_bytes as queued_bytes,
)
from twisted_echo.faults.engine import ConnectionPlan, ListenerFaults
from twisted_echo.listening.address import describe_address, peer_host
from twisted_echo.listening.nodelay import no_delay
from twisted_echo.listening.proxyheader import ProxyHeader, ProxyHeaderProtocol
from twisted_echo.listening.sendqueue import bytes_acked, kernel_unsent
from twisted_echo.policies.budget import MAX_ALLOWANCE, MemoryBudget
from twisted_echo.policies.counters import ServiceCounters
from twisted_echo.policies.idle import IdleSweeper, cancel_call
from twisted_echo.policies.limits import DRAIN_QUIET, ConnectionLimits, Timeouts
from twisted_echo.records import causes
from twisted_echo.records.log import record_fields
from twisted_echo.records.ring import RecordRing
from twisted_echo.services import recording

#: Bytes read from a TCP connection at once (Twisted's default: 64 KiB), and
#: the write buffer size above which reading pauses (flow control), while the
#: memory budget (L{twisted_echo.policies.budget}) does not ask for less.
READ_SIZE = MAX_ALLOWANCE
#: Checks per stall timeout (and stall sweeps, L{IdleSweeper}): a stall is
#: noticed between 1 and 1 + 1/4 stall timeouts after the peer last took a
#: byte, or after the watch started if it started later (a pause, a close,
#: or a sweep finding unacknowledged bytes, within 1/4 timeout of a write).
STALL_CHECKS = 4
#: After the drain timeout aborts the connections left, the longest wait for
#: them to report (Twisted reports an abort on the next reactor turn).
ABORT_REPORT_WAIT = 1.0


def transport_layout_fits() -> bool:
    """
    @return: whether Twisted's socket transports still queue writes the way
        L{StreamProtocol.send} and L{queued_bytes} expect
        (L{twisted_echo._twisted.writequeue.write_queue_misfit}; checked
        once, at import, as L{TRANSPORT_LAYOUT_FITS}).
    """
    return write_queue_misfit() is None


#: The reason a connection closed by L{StreamProtocol.close} ends with: one
#: L{Failure}, made once, as Twisted's C{loseConnection} makes its default
#: (a L{Failure} costs about 1 µs to build).
_CONNECTION_DONE = Failure(ConnectionDone("Connection done"))

#: The line logged as a connection closes (C{info}), with the fields
#: C{service}, C{peer}, C{bytes_in}, C{bytes_out} and C{duration} (seconds);
#: with C{records_in_log}, the record's too
#: (L{twisted_echo.records.log.record_fields}).
CLOSE_LINE = (
    "{service} connection from {peer} closed: {bytes_in} bytes in, "
    "{bytes_out} bytes out, {duration:.3f} s"
)
#: The L{twisted.logger.Logger} of each protocol class (see
#: L{StreamProtocol._log_connection}).
_CLASS_LOGGERS: dict[type[Protocol], Logger] = {}


@implementer(IHalfCloseableProtocol)
class Refused(Protocol):
    """
    Answers a connection over a limit: an optional one-line reason, then a
    clean close; recorded as a C{limit_refusal} naming the limit.
    """

    def __init__(
        self, line: bytes, factory: StreamFactory | None = None, limit: str = ""
    ) -> None:
        self.line = line
        self.service_factory = factory
        self.limit = limit
        self.opened_at = 0.0
        self.listener = ""

    def connectionMade(self) -> None:
        factory = self.service_factory
        if factory is not None and factory.records is not None:
            self.opened_at = factory.clock.seconds()
            self.listener = factory.listener_text(self.transport)
        if self.line:
            self.transport.write(self.line)  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure | None = None) -> None:
        factory = self.service_factory
        if factory is not None and factory.records is not None:
            factory.record_refused(
                self.transport,
                self.listener,
                self.opened_at,
                causes.LIMIT_REFUSAL,
                self.limit,
                bytes_out=len(self.line),
            )

    def readConnectionLost(self) -> None:
        pass

    def writeConnectionLost(self) -> None:
        pass


class StreamFactory(Factory):
    """
    Builds one service's protocols and holds that service's settings.

    @ivar service_name: the name used in logs and counters (C{"echo"}...).
    @ivar clock: the reactor's clock (seconds), for timeouts and durations.
    @ivar counters: this service's L{ServiceCounters}.
    @ivar limits: the L{ConnectionLimits} shared by the server's services.
    @ivar timeouts: the L{Timeouts} of each connection.
    @ivar open_protocols: the protocols of the connections open now.
    @ivar budget: the L{MemoryBudget} shared by the server's services.
    @cvar refusal_line: whether a refused client is told why in a line
        (line services) or just closed (byte-transparent services).
    @cvar expansion: the most the reply to one read can outgrow the read
        (a ratio of bytes), for the memory budget.
    @ivar log_connections: whether a line is logged as each connection
        opens and closes (C{info} level: off below C{--log-level info}, and
        then not even made).
    @ivar records: where each connection's record goes when it closes
        (L{twisted_echo.records}), or L{None} for no records.
    @ivar records_in_log: whether the records go to the log too
        (C{--log-format json}): then a connection's close line is one event
        with its record (L{twisted_echo.records.log.record_fields}).
    @ivar record_bytes: how many of the first bytes read a record keeps
        (C{--record-bytes}; 0: none).
    """

    protocol: type[StreamProtocol]  # type: ignore[assignment]
    service_name: ClassVar[str] = "stream"
    refusal_line: ClassVar[bool] = False
    expansion: ClassVar[int] = 1
    noisy = False
    log_connections = True
    records: RecordRing | None = None
    records_in_log = False
    record_bytes = 0
    #: The fault profile of this service's listeners (C{--faults}), or
    #: L{None}: then connections cost what they cost without faults.
    faults: ListenerFaults | None = None

    def __init__(
        self,
        clock: IReactorTime,
        counters: ServiceCounters | None = None,
        limits: ConnectionLimits | None = None,
        timeouts: Timeouts | None = None,
        budget: MemoryBudget | None = None,
    ) -> None:
        self.clock = clock
        self.counters = counters if counters is not None else ServiceCounters()
        self.limits = limits if limits is not None else ConnectionLimits()
        self.timeouts = timeouts if timeouts is not None else Timeouts()
        self.open_protocols: set[StreamProtocol] = set()
        self._listener_names: dict[Any, str] = {}
        self.budget = budget if budget is not None else MemoryBudget(0)
        self.budget.add_source(self.open_protocols)
        self._draining: Deferred[None] | None = None
        self.idle_sweeper = IdleSweeper(
            clock, self.open_protocols, self.timeouts.stall / STALL_CHECKS
        )
        self.idle_sweeper.set_timeout(self.timeouts.idle)

    def buildProtocol(self, addr: Any, proxy_header: bool = False) -> Protocol | None:
        """
        Build a protocol for a new connection from C{addr}, or a L{Refused}
        one when a connection limit is reached.

        @param proxy_header: whether the connection starts with a PROXY
            header (a C{haproxy:} listener, L{twisted_echo.listening.proxyheader}):
            then C{addr} is the proxy's, so only C{max_connections} is
            checked now, and the per-peer limit once the header names the
            client (L{ProxyHeaderProtocol}, which this then returns: it
            hands the connection to the service's protocol once the header
            is read and its client admitted).
        """
        host = None if proxy_header else peer_host(addr)
        refusal = self.limits.admit(host)
        if refusal is not None:
            self.counters.refused[refusal] += 1
            return Refused(self.refusal_message(refusal), self, refusal)
        protocol = self.protocol()
        protocol.factory = self
        protocol.peer_host = host
        if proxy_header:
            return ProxyHeaderProtocol(protocol, self)
        return protocol

    def refusal_message(self, refusal: str) -> bytes:
        """
        @return: the line a client refused for C{refusal} is sent (line
            services), or nothing.
        """
        if not self.refusal_line:
            return b""
        return b"ERROR: too many connections (%s); try again later\r\n" % (
            refusal.encode("ascii")
        )

    def listener_text(self, transport: Any) -> str:
        """
        @return: the listening address C{transport}'s connection arrived
            at, for records (L{recording.listener_text}; ask at its start):
            on plain TCP, the description made for its port already.
        """
        names = self._listener_names
        text = names.get(getattr(transport, "server", None))
        if text is None:
            text = recording.listener_text(names, transport)
        return text

    def record_refused(
        self,
        transport: Any,
        listener: str,
        opened_at: float,
        cause: str,
        limit: str | None = None,
        bytes_in: int = 0,
        bytes_out: int = 0,
    ) -> None:
        """
        Record a connection refused before this service took it (a limit,
        a PROXY header missing or late), if records are kept: its
        C{transport} (being lost), the L{listener_text} and time it was
        accepted at, why (C{cause}, C{limit}), bytes read and sent.
        """
        if self.records is not None:
            self.records.add(
                recording.refused_record(
                    self, transport, listener, opened_at, cause, limit,
                    bytes_in, bytes_out,
                )  # fmt: skip
            )


    def drain(self, timeout: float) -> Deferred[None]:
        """
        Shut down gracefully: every open connection closes once it has been
        quiet for L{DRAIN_QUIET} seconds (so transfers in progress finish);
        those still open after C{timeout} seconds are aborted.

        @return: a L{twisted.internet.defer.Deferred} that fires when no
            connection is left open.
        """
        done: Deferred[None] = Deferred()
        self._draining = done
        if not self.open_protocols:
            self._drained()
            return done
        self.idle_sweeper.set_timeout(DRAIN_QUIET)
        abort = self.clock.callLater(timeout, self._abort_remaining)
        done.addCallback(lambda _: cancel_call(abort))
        return done

    def _abort_remaining(self) -> None:
        for protocol in list(self.open_protocols):
            self.counters.timeouts["drain"] += 1
            protocol.set_close_cause(causes.DRAIN)
            protocol.abort()
        # Twisted reports each abort (connectionLost) on a later reactor turn,
        # and connection_closed ends the drain once the last has; this only
        # bounds the wait.
        if self.open_protocols:
            self.clock.callLater(ABORT_REPORT_WAIT, self._drained)
        else:
            self._drained()

    def _drained(self) -> None:
        done, self._draining = self._draining, None
        if done is not None and not done.called:
            done.callback(None)

    def held_bytes(self) -> int:
        """
        @return: the bytes this service's connections hold in user space
            now (queued replies, unfinished lines), where transports say.
        """
        return sum(protocol.held_bytes() for protocol in self.open_protocols)

    def connection_closed(self, protocol: StreamProtocol) -> None:
        """
        Forget a closed connection (called by the protocol).
        """
        self.open_protocols.discard(protocol)
        if not self.open_protocols:
            self.idle_sweeper.stop()
            if self._draining is not None:
                self._drained()


@implementer(IHalfCloseableProtocol, IPushProducer)
class StreamProtocol(Protocol):
    """
    Base protocol of the TCP services: half-close, flow control, timeouts,
    accounting.

    The base does the accounting: L{dataReceived} counts the bytes in and
    marks the connection busy for the idle sweep, then hands the bytes to
    L{handle_data}, which subclasses implement and which replies with
    L{send}. Subclasses implement only the hooks (docs/services.md):
    L{on_open} (a banner), L{handle_data}, L{end_of_input} (what is still
    owed when the peer stops sending), L{on_close} (release what they
    hold) and L{held_bytes}; they call L{send} and L{close} and read
    L{closing}, and never override Twisted's C{connectionMade},
    C{dataReceived} or C{connectionLost}, nor L{close}.

    @ivar bytes_in: bytes read from the peer on this connection.
    @ivar bytes_out: bytes written to the peer on this connection.
    @ivar peer_host: the peer's address for per-peer limits, or L{None}.
    @ivar proxy_header: the PROXY header read, if any (C{haproxy:}
        listeners: L{ProxyHeaderProtocol} sets it, and the client's
        C{peer_host}, before it hands the connection to this protocol).
    @ivar quiet_ticks: idle sweeps since the last traffic (see
        L{twisted_echo.policies.idle}).
    """

    factory: StreamFactory
    _log = Logger()

    def __init__(self) -> None:
        # Every attribute a connection ever has is set here, at once (and
        # factory by buildProtocol right after): CPython then keeps them in
        # one compact shared-key array (about 0.1 KiB). Attributes first set
        # later (on the first byte) outgrow that array and turn each
        # instance's attributes into a dict of 0.45 KiB.
        self.transport = None
        self.connected = 0
        self.peer_host: str | None = None
        self.proxy_header: ProxyHeader | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.quiet_ticks = 0
        self._opened_at = 0.0
        self._producing = False
        self._stall_call: IDelayedCall | None = None
        self._stall_mark: tuple[int, float] | None = None
        self._swept_out = 0
        self._closing = False
        # While dataReceived runs: a close() then only records the request
        # (_close_requested), completed once dataReceived returns.
        self._reading = False
        self._close_requested = False
        self._socket: socket.socket | None = None
        self.allowance = READ_SIZE
        # The connection's record (twisted_echo.records): reads and writes,
        # when the first byte came and went, the first bytes kept, whether
        # the peer sent its FIN, and why it closed (set_close_cause).
        self.reads_in = 0
        self.writes_out = 0
        self._first_in: float | None = None
        self._first_out: float | None = None
        self._first_bytes: bytes | None = None
        self._peer_finished = False
        self.close_cause: str | None = None
        self.close_limit: str | None = None
        self._listener = ""
        # The client's address as logs and records write it (client_text),
        # made once, as the connection opens.
        self._client = ""
        # The connection's fault plan (twisted_echo.faults), if it has one.
        self._faults: ConnectionPlan | None = None

    @property
    def weight(self) -> int:
        """
        How many times its allowance a connection may hold (its queue up to
        the allowance, plus the reply to one read), for the memory budget.
        """
        return 1 + self.factory.expansion

    def set_allowance(self, allowance: int) -> None:
        """
        Read at most C{allowance} bytes at once and stop reading once more
        than that is queued (set by the L{MemoryBudget}). Applies to socket
        transports and to sockecho's TLS layer (which passes it on to its TCP
        transport); others keep their own buffer size.
        """
        self.allowance = allowance
        transport = self.transport
        if self._socket is not None or getattr(
            transport, "forwards_buffer_size", False
        ):
            transport.bufferSize = allowance  # type: ignore[union-attr]

    def held_bytes(self) -> int:
        """
        @return: bytes this connection holds in user space now: its queued
            replies (0 where the transport does not say), and those its
            faults hold back.
        """
        held = queued_bytes(self.transport) or 0
        if self._faults is not None:
            held += self._faults.held_bytes()
        return held

    def callLater(self, period: float, func: Any) -> IDelayedCall:
        """
        Schedule on the factory's clock.
        """
        return self.factory.clock.callLater(period, func)

    def client_address(self) -> Any:
        """
        @return: the client's address: the source named by the PROXY header
            when there is one, else the peer's.
        """
        header = self.proxy_header
        if header is not None and header.source is not None:
            return header.source
        return self.transport.getPeer()  # type: ignore[union-attr]

    def client_text(self) -> str:
        """
        @return: L{client_address} as an endpoint description
            (L{describe_address}), for log lines: C{tcp:HOST:PORT} made
            straight from the transport's peer tuple on a plain IPv4
            connection, without the address object C{getPeer} builds; made
            once (the connection's log lines and its record share it).
        """
        if self._client:
            return self._client
        if self._socket is not None and self.proxy_header is None:
            client = getattr(self.transport, "client", None)
            if type(client) is tuple and len(client) == 2 and type(client[1]) is int:
                return f"tcp:{client[0]}:{client[1]}"
        return describe_address(self.client_address())

    def proxy_address(self) -> Any:
        """
        @return: the address of the proxy that sent a PROXY header naming
            the client, or L{None} (no header, or one naming no client:
            C{LOCAL}, C{UNKNOWN}, C{UNSPEC}).
        """
        header = self.proxy_header
        if header is None or header.source is None:
            return None
        return self.transport.getPeer()  # type: ignore[union-attr]

    def _log_connection(self, format: str, **fields: object) -> None:
        """
        Log the C{info} event C{self._log.info(format, **fields)} would log,
        for less.

        When sockecho's text observer is the only observer of the log
        (twistd's default here,
        L{twisted_echo._twisted.logpublisher.sole_line_taker}),
        it is handed the line it would make of the event, made with
        C{format.format_map(fields)} (fields escaped as in every text
        line, L{twisted_echo.log.classic.escape}), and no event is made at all: a test
        checks the two lines are the same. Otherwise the event is the one
        C{Logger.emit} makes (a test compares their keys and values, so a
        change in Twisted's events fails it), without what C{self._log.info}
        costs on the way: C{Logger}'s descriptor builds a new
        L{twisted.logger.Logger} at each C{self._log}, and C{Logger.emit}
        sorts the L{twisted.logger.LogLevel} constants to check the level.

        Per connection (its two lines), in memory: 17.5 µs through
        C{self._log.info} and sockecho's observer, 7.5 µs with the direct
        line (and 0 with C{--log-level warn}).

        @param format: the PEP 3101 format of the line.
        @param fields: the event's fields.
        """
        cls = type(self)
        log = _CLASS_LOGGERS.get(cls)
        if log is None:
            log = _CLASS_LOGGERS[cls] = cls._log  # one per class
        observer = sole_line_taker(log.observer)
        if observer is not None:
            # Only sockecho's text observer would see the event: hand it the
            # line it would make of it (a test compares them), without the
            # event, the publisher and the generic formatting.
            observer.take_message(
                log.namespace, LogLevel.info, format, fields, time.time()
            )
            return
        fields.update(
            log_logger=log,
            log_level=LogLevel.info,
            log_namespace=log.namespace,
            log_source=self,
            log_format=format,
            log_time=time.time(),
        )
        log.observer(fields)

    def connectionMade(self) -> None:
        """
        Become the transport's streaming producer (flow control), switch
        Nagle's algorithm off on TCP (C{TCP_NODELAY}, RFC 896), start the idle
        timeout, account for the new connection, then call L{on_open}.
        Services do not override it (see docs/services.md).
        """
        transport = self.transport
        assert transport is not None
        factory = self.factory
        transport.registerProducer(self, True)  # type: ignore[attr-defined]
        self._producing = True
        if (
            TRANSPORT_LAYOUT_FITS
            and isinstance(transport, tcp.Connection)
            and not transport.TLS
        ):
            self._socket = transport.socket
            # Not transport.socket.family: a new enum member at each read
            # (2 µs per connection here).
            no_delay(transport)
        factory.budget.attach(self)
        self._opened_at = factory.clock.seconds()
        if factory.records is not None:
            self._listener = factory.listener_text(transport)
        if factory.record_bytes:
            self._first_bytes = b""
        factory.open_protocols.add(self)
        factory.counters.connections_open += 1
        factory.counters.connections_total += 1
        if factory.log_connections or factory.records is not None:
            self._client = self.client_text()
        if factory.log_connections:
            proxy = self.proxy_address()
            self._log_connection(
                "{service} connection from {peer}{via}",
                service=factory.service_name,
                peer=self._client,
                via="" if proxy is None else f" via {describe_address(proxy)}",
            )
        factory.idle_sweeper.wake()
        if factory.faults is not None:
            self._faults = factory.faults.plan(self)
            if self._faults is not None:
                self._faults.start()
        self.on_open()

    def dataReceived(self, data: bytes) -> None:
        """
        Count C{data} (bytes read from the peer), note the traffic for the
        idle sweep, and pass it to L{handle_data}.

        A L{close} requested meanwhile (by L{handle_data}) is completed
        when this returns, not in the middle: the connection's
        C{connectionLost} (which gives back what it holds to the memory
        budget and the counters) never runs while the service is still
        reading and counting. Once the connection is L{closing}, bytes
        still read (a TLS layer delivers what came before the close) are
        counted and dropped: L{handle_data} is not called again.
        """
        self.bytes_in += len(data)
        self.quiet_ticks = 0
        if not self.reads_in:
            self._first_in = self.factory.clock.seconds()
        self.reads_in += 1
        if self._first_bytes is not None:
            self._first_bytes = recording.first_bytes(
                self._first_bytes, data, self.factory.record_bytes
            )
        if self._closing:
            return
        if self._faults is not None:
            data = self._faults.received(data)
            if not data:
                return
        nested = self._reading
        self._reading = True
        try:
            self.handle_data(data)
        finally:
            self._reading = nested
        if self._close_requested and not nested:
            self._close_requested = False
            self._finish_close()

    def handle_data(self, data: bytes) -> None:
        """
        Hook: answer C{data}, bytes read from the peer (already counted);
        each service implements it, replying with L{send}. It may call
        L{close}: the close completes once this returns.
        """
        raise NotImplementedError

    def on_open(self) -> None:
        """
        Hook: the connection is open and accounted for (producer, limits,
        budget, counters, log line; after the PROXY header on C{haproxy:}
        listeners): send a banner here. It may call L{close}. Does nothing
        by default.
        """

    def on_close(self, reason: Failure | None) -> None:
        """
        Hook: the connection is gone (C{reason}, as Twisted's
        C{connectionLost} gives it); called before the base gives back
        what it held (budget, limits) and counts and logs it. Stop timers
        and release what the service holds here. Does nothing by default.
        """

    @property
    def closing(self) -> bool:
        """
        Whether the connection is closing (L{close} was called): nothing
        more is read or answered, what is owed is being sent.
        """
        return self._closing

    def stop_reading(self) -> None:
        """
        The memory budget is spent while this connection holds unfinished
        input (L{MemoryBudget.hold_line}): stop reading from the peer (see
        L{twisted_echo.policies.budget}).
        """
        if not self._closing:
            self.transport.pauseProducing()  # type: ignore[union-attr]
            self.factory.counters.pauses += 1

    def resume_reading(self) -> None:
        """
        The memory budget has room again: read from the peer, unless flow
        control holds the connection.
        """
        transport = self.transport
        if not self._closing and not getattr(transport, "producerPaused", False):
            transport.resumeProducing()  # type: ignore[union-attr]

    def send(self, data: bytes) -> None:
        """
        Write C{data} to the peer and count it.

        When the transport is a plain TCP or UNIX socket connection with
        nothing queued, C{data} goes straight to the socket; whatever the
        socket does not take (and everything, on other transports such as
        TLS) goes through C{transport.write}, which queues it and applies
        flow control. Sending at once saves a reactor turn and two
        C{epoll_ctl} calls per reply.

        @param data: the bytes to send.
        """
        if self._faults is not None:
            self._faults.send(data)  # it writes with send_unfaulted
            return
        self.bytes_out += len(data)
        self.quiet_ticks = 0
        if not self.writes_out:
            self._first_out = self.factory.clock.seconds()
        self.writes_out += 1
        transport = self.transport
        sock = self._socket
        if (
            sock is not None
            and nothing_queued(transport)
        ):
            try:
                sent = sock.send(data)
            except OSError:
                # EAGAIN, or the connection is gone: let the transport queue
                # it, or find out and report the loss as usual.
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        transport.write(data)  # type: ignore[union-attr]

    def send_unfaulted(self, data: bytes) -> None:
        """
        L{send} C{data} past the connection's faults (their plan writes
        what it lets through, when it does, with this).
        """
        faults, self._faults = self._faults, None
        try:
            self.send(data)
        finally:
            self._faults = faults

    # IPushProducer, called by the transport.

    def pauseProducing(self) -> None:
        """
        The peer is not reading what we send: stop reading from it, and
        abort if it stays so for the stall timeout.
        """
        self.transport.pauseProducing()  # type: ignore[union-attr]
        self.factory.counters.pauses += 1
        self._watch_stall()

    def resumeProducing(self) -> None:
        """
        The transport's queue drained: read from the peer again, with a
        larger allowance if the memory budget has room (see
        L{MemoryBudget.drained}). Where the kernel counts what the peer
        acknowledged, the stall watch goes on while the kernel holds bytes
        for it (L{_check_stall} ends it); elsewhere the resume is the
        peer's progress and ends the watch.
        """
        if self._stall_call is not None and self._peer_progress() is None:
            self._cancel_stall()
        self.factory.budget.drained(self)
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def stopProducing(self) -> None:
        """
        The connection is going away: nothing to do.
        """

    def _watch_stall(self) -> None:
        """
        Start checking that the peer takes what it is owed, unless already
        checking (so closing does not extend a stalled peer's deadline).
        """
        stall = self.factory.timeouts.stall
        if stall and self._stall_call is None:
            self._stall_mark = (self._delivered(), self.factory.clock.seconds())
            self._stall_call = self.callLater(stall / STALL_CHECKS, self._check_stall)

    def sweep_stall(self) -> None:
        """
        Called by the factory's L{IdleSweeper} every 1/L{STALL_CHECKS}
        stall timeout: if bytes were written since the last sweep and the
        peer has not acknowledged them all, start the stall watch. Bytes the
        kernel took at once never pause the transport, so nothing else
        would notice a peer that stopped reading them.
        """
        sent = self.bytes_out
        if sent == self._swept_out or self._stall_call is not None:
            return
        self._swept_out = sent
        sock = self._tcp_socket()
        # The kernel's queue first (one ioctl): the acknowledged count is
        # read only when something waits there.
        if (
            sock is not None
            and kernel_unsent(sock)
            and self._peer_progress() is not None
        ):
            self._watch_stall()

    def _tcp_socket(self) -> socket.socket | None:
        """
        @return: the TCP socket this connection's bytes leave through (for
            TLS, the one under the TLS layer:
            L{twisted_echo.listening.tls._NamedTLS.tcp_socket}), or L{None}.
        """
        sock = self._socket
        if sock is None:
            tcp_socket = getattr(self.transport, "tcp_socket", None)
            if tcp_socket is not None:
                sock = tcp_socket()
        return sock

    def _peer_progress(self) -> tuple[int, int] | None:
        """
        Read what the kernel says of the peer's progress.

        @return: C{(acked, owed)}: the bytes the peer has acknowledged since
            the connection opened (C{tcpi_bytes_acked}, in bytes on the
            wire: TLS records for TLS) and the bytes still owed to it, in the
            transport's queue or unacknowledged in the kernel's
            (C{SIOCOUTQ}); L{None} where the kernel or the transport does
            not say.
        """
        sock = self._tcp_socket()
        if sock is None:
            return None
        acked = bytes_acked(sock)
        unsent = kernel_unsent(sock)
        queued = queued_bytes(self.transport)
        if acked is None or unsent is None or queued is None:
            return None
        return acked, unsent + queued

    def _delivered(self) -> int:
        """
        @return: the peer's progress count: bytes it acknowledged where the
            kernel says (L{_peer_progress}); else bytes handed to the
            kernel; -1 when neither is known (then only a resume counts as
            progress).
        """
        progress = self._peer_progress()
        if progress is not None:
            return progress[0]
        queued = queued_bytes(self.transport)
        return -1 if queued is None else self.bytes_out - queued

    def _check_stall(self) -> None:
        """
        One check of the stall watch: note the peer's progress; stop
        watching once nothing is owed (where the kernel says); abort when
        the peer has taken nothing for the whole stall timeout.
        """
        self._stall_call = None
        assert self._stall_mark is not None
        stall = self.factory.timeouts.stall
        now = self.factory.clock.seconds()
        progress = self._peer_progress()
        if progress is None:
            delivered = self._delivered()
        else:
            delivered, owed = progress
            if not owed:
                self._stall_mark = None
                return
        last_delivered, since = self._stall_mark
        if delivered != last_delivered:
            self._stall_mark = (delivered, now)
        elif now - since >= stall * (1 - 1e-9):
            self._stalled()
            return
        self._stall_call = self.callLater(stall / STALL_CHECKS, self._check_stall)

    def _cancel_stall(self) -> None:
        call, self._stall_call = self._stall_call, None
        self._stall_mark = None
        cancel_call(call)

    def _stalled(self) -> None:
        self._stall_mark = None
        self.set_close_cause(causes.STALL_TIMEOUT)
        self.factory.counters.timeouts["stall"] += 1
        self._log.info(
            "{service} connection from {peer}: peer read nothing for "
            "{stall} s; aborting",
            service=self.factory.service_name,
            peer=describe_address(self.client_address()),
            stall=self.factory.timeouts.stall,
        )
        self.abort()

    def timeoutConnection(self) -> None:
        """
        No traffic for the idle timeout (or, while shutting down, for
        L{DRAIN_QUIET}): close, after sending what is owed.
        """
        if self._closing:
            return
        if self.factory._draining is None:
            self.factory.counters.timeouts["idle"] += 1
            self.set_close_cause(causes.IDLE_TIMEOUT)
        else:
            self.set_close_cause(causes.DRAIN)
        self.close()

    def set_close_cause(self, cause: str, limit: str | None = None) -> None:
        """
        Say why the connection is being closed or aborted, for its record
        (L{twisted_echo.records}): call it before L{close} or L{abort} when
        closing for a reason of your own (a timeout, a limit, a fault). The
        first cause given is kept; with none given, the cause is worked out
        at close (L{twisted_echo.records.causes.cause_of_loss}).

        @param cause: one of L{twisted_echo.records.causes.CAUSES}.
        @param limit: with C{limit_refusal}, the limit (C{max_line}...).
        """
        if self.close_cause is None:
            self.close_cause = cause
            self.close_limit = limit

    def close(self) -> None:
        """
        Close the connection after every byte already written is sent; abort
        it if the peer does not read them within the stall timeout. Services
        call it, never override it; L{closing} tells it was called.

        Called while L{dataReceived} runs, it only marks the connection
        closing (nothing more is sent or answered) and the close is
        completed when L{dataReceived} returns.
        """
        if self._closing:
            return
        self._closing = True
        transport = self.transport
        assert transport is not None
        if self._producing:
            # A paused producer would keep the transport from closing once
            # its buffer drains; unregister it first.
            self._producing = False
            transport.unregisterProducer()  # type: ignore[attr-defined]
        if self._reading:
            # Called from inside dataReceived (a service's handle_data): the
            # caller goes on after this returns, so the close, which may end
            # the connection at once, waits until dataReceived returns.
            self._close_requested = True
            return
        self._finish_close()

    def _finish_close(self) -> None:
        """
        Complete L{close}: end the connection now when nothing is queued on
        a plain socket, else once the queue is sent (watching for a stall).
        """
        transport = self.transport
        assert transport is not None
        if self._faults is not None and self._faults.hold_close(self._finish_close):
            return  # completed once the faults have sent what they hold
        if self._socket is not None and queued_bytes(transport) == 0:
            # Nothing left to send on a plain socket: close it now, as
            # Twisted's loseConnection itself does once the write side is
            # shut down. Its usual way (watch for writability, wake up, send
            # nothing, stop watching) costs two epoll_ctl, an epoll_wait
            # wake-up and an empty send per connection: 14.9 system calls
            # per short connection became 12.7, asyncio's count (strace -c,
            # 2,000 connections). connectionLost stops reading and writing
            # itself.
            transport.connectionLost(_CONNECTION_DONE)  # type: ignore[attr-defined]
            return
        self._watch_stall()
        transport.loseConnection()

    def abort(self) -> None:
        """
        Drop the connection now, unsent bytes included.
        """
        self.transport.abortConnection()  # type: ignore[union-attr]

    def end_of_input(self) -> None:
        """
        Hook: the peer has stopped sending (half-close, RFC 9293 section
        3.6); send here whatever is still owed (L{send}). The base closes
        the connection when this returns, once all is sent. Does nothing
        by default.
        """

    def readConnectionLost(self) -> None:
        """
        The peer shut down its sending side: send what is still owed
        (L{end_of_input}), then close once it is all written.
        """
        self._peer_finished = True
        self.end_of_input()
        self.close()

    def writeConnectionLost(self) -> None:
        """
        Our sending side was closed: nothing more can be delivered, so close
        (unless a C{half-close-after} fault closed it: then reading goes on).
        """
        if self._faults is not None and self._faults.half_closed:
            return
        self.close()

    def connection_failed_to_start(self) -> None:
        """
        The transport could not be built for the connection this protocol
        was built for (see L{twisted_echo._twisted.transport.Server}): it will never
        be connected nor lost; give back its connection limits place.
        """
        self.factory.limits.release(self.peer_host)

    def connectionLost(self, reason: Failure | None = None) -> None:
        """
        Tell the service (L{on_close}), then account for the closed
        connection, record it and log its totals (the close line is made
        from the record when there is one, and carries it with
        C{records_in_log}: one event). Services do not override it.
        """
        owed = self._stall_call is not None or bool(queued_bytes(self.transport))
        self._cancel_stall()
        if self._faults is not None:
            self._faults.connection_lost()
        self.on_close(reason)
        factory = self.factory
        factory.limits.release(self.peer_host)
        factory.budget.detach(self)
        counters = factory.counters
        counters.connections_open -= 1
        counters.bytes_in += self.bytes_in
        counters.bytes_out += self.bytes_out
        now = factory.clock.seconds()
        records = factory.records
        if records is not None and self.transport is not None:
            record = recording.connection_record(self, reason, owed, now)
            record.logged = factory.log_connections and factory.records_in_log
            records.add(record)  # numbers it: the close line's record_id
            if record.logged:  # the JSON log: one event, the record on it
                self._log_connection(
                    CLOSE_LINE,
                    service=record.service,
                    peer=record.client,
                    bytes_in=record.bytes_in,
                    bytes_out=record.bytes_out,
                    duration=record.duration,
                    **record_fields(record),
                )
            elif factory.log_connections:
                self._log_connection(
                    CLOSE_LINE,
                    service=record.service,
                    peer=record.client,
                    bytes_in=record.bytes_in,
                    bytes_out=record.bytes_out,
                    duration=record.duration,
                )
        elif factory.log_connections:
            self._log_connection(
                CLOSE_LINE,
                service=factory.service_name,
                peer=self._client or "?",
                bytes_in=self.bytes_in,
                bytes_out=self.bytes_out,
                duration=now - self._opened_at,
            )
        factory.connection_closed(self)
