# -*- test-case-name: tests.test_client_check -*-
"""
C{sockecho-client check}: a conformance run against any RFC 862 echo server.

Over 500 lines: one function per check (about 40 lines each, each with
its own timeout and detail line) and the runner that prints the rows.

Each check has its own timeout, and a PASS or FAIL with one line of detail:

 - binary transparency: all 256 byte values come back identical;
 - 10 concurrent clients, each getting back exactly its own bytes;
 - a request sent with its FIN in the same segment (write, then
   C{loseWriteConnection} at once) still gets its whole reply;
 - 1 MiB and 20 MB with half-close (C{SHUT_WR}, RFC 9293 section 3.6): the
   whole reply (compared by length and SHA-256) arrives before the close;
   the client reads only once its FIN is out (or after L{HALF_CLOSE_PAUSE}
   seconds), so the server still holds replies when it sees the end of
   input;
 - a client that writes 20 MB before it reads a byte still gets it all back
   (the client pauses reading while it writes, then reads);
 - with C{--udp}: a small datagram and the largest IPv4 datagram (65507
   bytes) come back identical.

The half-close checks fail against servers that close on EOF and drop the
replies still queued, as Twisted's L{twisted.protocols.wire.Echo} does.

Over C{ssl:} (L{twisted_echo.client.tls}) the client half-closes the TLS
way, a close_notify followed by a FIN, so the half-close checks test that
the server treats a close_notify as TLS 1.3 says (RFC 8446 section 6.1):
as the end of input only. Twisted's own TLS layer fails them.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from typing import IO, Any

from twisted.internet import defer, error
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.endpoints import connectProtocol
from twisted.internet.interfaces import IHalfCloseableProtocol, IStreamClientEndpoint
from twisted.internet.protocol import (
    DatagramProtocol,
    Protocol,
    connectionDone,
)
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_echo.client.endpoints import (
    DatagramTarget,
    explain_connect_failure,
    parse_datagram_endpoint,
    resolve_datagram_target,
    stream_endpoint,
)
from twisted_echo.client.errors import ClientError
from twisted_echo.client.load import MAX_DATAGRAM
from twisted_echo.client.tls import TLSSettings

MIB = 1024 * 1024
#: The "20 MB" payloads, bytes.
BIG = 20_000_000
#: Seconds the writer-before-reader check keeps from reading.
WRITE_FIRST_PAUSE = 0.5
#: Most seconds the half-close checks keep from reading until their FIN is out.
HALF_CLOSE_PAUSE = 0.3
#: Default seconds each check may take.
DEFAULT_TIMEOUT = 30.0


class ConformanceError(Exception):
    """
    A check found the server at fault; C{str()} is one line saying how.
    """


@dataclass(frozen=True)
class CheckResult:
    """
    One check's outcome.

    @ivar name: what was checked.
    @ivar passed: whether the server conformed.
    @ivar detail: one line: what was seen.
    @ivar seconds: how long the check took.
    """

    name: str
    passed: bool
    detail: str
    seconds: float


@implementer(IHalfCloseableProtocol)
class Exchange(Protocol):
    """
    Collects one connection's reply: its length, SHA-256 and (optionally)
    its bytes.

    @ivar received: reply bytes received.
    @ivar data: the reply's bytes if kept, else empty.
    @ivar eof: whether the server closed its sending side cleanly.
    @ivar closed: whether the connection is closed.
    """

    def __init__(self, until: int | None = None, keep: bool = False) -> None:
        """
        @param until: L{finished} fires once this many bytes arrived (else
            only when the connection closes).
        @param keep: keep the reply's bytes in L{data}.
        """
        self.until = until
        self.keep = keep
        self.received = 0
        self.data = bytearray()
        self.eof = False
        self.closed = False
        self._digest = hashlib.sha256()
        self._finish_waiters: list[Deferred[None]] | None = []
        self._close_waiters: list[Deferred[None]] = []
        self._write_closed_waiters: list[Deferred[None]] | None = []

    def finished(self) -> Deferred[None]:
        """
        @return: a L{Deferred} firing with C{None} once C{until} bytes
            arrived or the connection closed, whichever is first.
        """
        waiter: Deferred[None] = Deferred()
        if self._finish_waiters is None:
            waiter.callback(None)
        else:
            self._finish_waiters.append(waiter)
        return waiter

    def _finish(self) -> None:
        waiters, self._finish_waiters = self._finish_waiters, None
        for waiter in waiters or []:
            waiter.callback(None)

    @property
    def sha256(self) -> str:
        """
        The reply's SHA-256 so far, hex.
        """
        return self._digest.hexdigest()

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self._digest.update(data)
        if self.keep:
            self.data += data
        if self.until is not None and self.received >= self.until:
            self._finish()

    def readConnectionLost(self) -> None:
        self.eof = True
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        """
        Our FIN is sent (everything written before it went out).
        """
        waiters, self._write_closed_waiters = self._write_closed_waiters, None
        for waiter in waiters or []:
            waiter.callback(None)

    def write_closed(self) -> Deferred[None]:
        """
        @return: a L{Deferred} firing with C{None} once our sending side is
            shut down after all was written (or the connection closed).
        """
        waiter: Deferred[None] = Deferred()
        if self._write_closed_waiters is None:
            waiter.callback(None)
        else:
            self._write_closed_waiters.append(waiter)
        return waiter

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.writeConnectionLost()
        self.closed = True
        self._finish()
        waiters, self._close_waiters = self._close_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def close(self) -> Deferred[None]:
        """
        Abort the connection if still open.

        @return: a L{Deferred} firing with C{None} once it is closed.
        """
        waiter: Deferred[None] = Deferred()
        if self.closed or self.transport is None:
            waiter.callback(None)
            return waiter
        self._close_waiters.append(waiter)
        self.transport.abortConnection()  # type: ignore[attr-defined]
        return waiter



class _Checker:
    """
    Runs one check's coroutine, aborting its connections when done.
    """

    def __init__(self, reactor: Any, endpoint: IStreamClientEndpoint) -> None:
        self.reactor = reactor
        self.endpoint = endpoint
        self.exchanges: list[Exchange] = []

    async def connect(self, until: int | None = None, keep: bool = False) -> Exchange:
        exchange = Exchange(until, keep)
        self.exchanges.append(exchange)
        await connectProtocol(self.endpoint, exchange)
        return exchange

    async def cleanup(self) -> None:
        await gatherResults(
            [e.close() for e in self.exchanges if e.transport is not None]
        )


def _payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _verdict_of(exchange: Exchange, payload: bytes, what: str) -> str:
    """
    @return: one line of detail when C{exchange} got back C{payload}.
    @raise ConformanceError: when it did not.
    """
    if exchange.received < len(payload):
        raise ConformanceError(
            f"{what}: got {exchange.received} of {len(payload)} bytes back "
            "before the connection closed"
        )
    if exchange.received > len(payload):
        raise ConformanceError(
            f"{what}: got {exchange.received} bytes back, {len(payload)} sent"
        )
    if exchange.sha256 != hashlib.sha256(payload).hexdigest():
        raise ConformanceError(
            f"{what}: {len(payload)} bytes back, but different bytes"
        )
    return f"{len(payload)} bytes back, sha256 {exchange.sha256[:12]}... matches"


async def check_binary(c: _Checker) -> str:
    payload = bytes(range(256)) * 4
    exchange = await c.connect(until=len(payload), keep=True)
    exchange.transport.write(payload)  # type: ignore[union-attr]
    await exchange.finished()
    got = bytes(exchange.data[: len(payload)])
    if got != payload:
        if len(got) < len(payload):
            raise ConformanceError(f"got {len(got)} of {len(payload)} bytes back")
        index = next(i for i in range(len(payload)) if got[i] != payload[i])
        raise ConformanceError(
            f"byte value {payload[index]} (offset {index}) came back as {got[index]}"
        )
    return "all 256 byte values came back identical"


async def check_concurrent(c: _Checker, clients: int = 10) -> str:
    payloads = [
        f"client {i}:".encode() + _payload(4096, seed=i) for i in range(clients)
    ]
    exchanges = await gatherResults(
        [Deferred.fromCoroutine(c.connect(until=len(p), keep=True)) for p in payloads]
    )
    for exchange, payload in zip(exchanges, payloads, strict=True):
        exchange.transport.write(payload)  # type: ignore[union-attr]
    await gatherResults([e.finished() for e in exchanges])
    for i, (exchange, payload) in enumerate(zip(exchanges, payloads, strict=True)):
        if bytes(exchange.data) != payload:
            raise ConformanceError(
                f"client {i} got {exchange.received} bytes back, not its own "
                f"{len(payload)}"
            )
    return f"{clients} clients at once, each got back exactly its own bytes"


async def _half_close(
    c: _Checker, payload: bytes, what: str, read_after_fin: bool = False
) -> str:
    exchange = await c.connect(until=len(payload))
    transport = exchange.transport
    assert transport is not None
    if read_after_fin:
        # Keep from reading until our FIN is out, so the replies the server
        # owes are still in its buffers when it sees the end of input. A
        # server with flow control stops reading from us meanwhile: bound
        # the wait.
        transport.pauseProducing()  # type: ignore[attr-defined]
    transport.write(payload)
    transport.loseWriteConnection()  # type: ignore[attr-defined]
    if read_after_fin:
        sent = exchange.write_closed()
        sent.addTimeout(HALF_CLOSE_PAUSE, c.reactor, onTimeoutCancel=lambda *a: None)
        await sent
        transport.resumeProducing()  # type: ignore[attr-defined]
    await exchange.finished()
    return _verdict_of(exchange, payload, what)


def _cork(transport: Any, on: bool) -> bool:
    """
    Set Linux's C{TCP_CORK} on a TCP transport's socket: while it is set,
    written bytes are held, and a FIN (C{shutdown}) goes out in the same
    segment as them.

    @return: whether the option could be set.
    """
    option = getattr(socket, "TCP_CORK", None)
    handle = getattr(transport, "getHandle", lambda: None)()
    if option is None or not isinstance(handle, socket.socket):
        return False
    if handle.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        handle.setsockopt(socket.IPPROTO_TCP, option, int(on))
    except OSError:
        return False
    return True


async def check_fin_with_request(c: _Checker) -> str:
    payload = b"a request sent with its FIN\r\n"
    exchange = await c.connect(until=len(payload))
    transport = exchange.transport
    assert transport is not None
    corked = _cork(transport, True)
    transport.write(payload)
    transport.loseWriteConnection()  # type: ignore[attr-defined]
    await exchange.write_closed()
    if corked:
        _cork(transport, False)
    await exchange.finished()
    how = " (one segment: TCP_CORK)" if corked else ""
    return _verdict_of(exchange, payload, "request with FIN in the same segment") + how


async def check_half_close_1mib(c: _Checker) -> str:
    return await _half_close(
        c, _payload(MIB, seed=1), "1 MiB then half-close", read_after_fin=True
    )


async def check_half_close_20mb(c: _Checker) -> str:
    return await _half_close(
        c, _payload(BIG, seed=2), "20 MB then half-close", read_after_fin=True
    )


async def check_write_before_read(c: _Checker) -> str:
    payload = _payload(BIG, seed=3)
    exchange = await c.connect(until=len(payload))
    transport = exchange.transport
    assert transport is not None
    transport.pauseProducing()  # type: ignore[attr-defined]
    transport.write(payload)
    await deferLater(c.reactor, WRITE_FIRST_PAUSE, lambda: None)
    transport.resumeProducing()  # type: ignore[attr-defined]
    await exchange.finished()
    return _verdict_of(exchange, payload, "20 MB written before reading")


class _DatagramExchange(DatagramProtocol):
    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.replies: list[bytes] = []
        self.refused = False
        self._waiter: Deferred[None] | None = None

    def startProtocol(self) -> None:
        self.transport.connect(*self.address)  # type: ignore[union-attr]

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.replies.append(datagram)
        self._wake()

    def connectionRefused(self) -> None:
        self.refused = True
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.callback(None)

    def wait(self, reactor: Any, seconds: float) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        self._waiter = waiter
        timer = reactor.callLater(seconds, self._wake)
        return waiter.addBoth(lambda r: (timer.active() and timer.cancel(), r)[1])


async def _datagram_round_trip(
    reactor: Any, target: DatagramTarget, payload: bytes, tries: int = 3
) -> str:
    address, _family = await resolve_datagram_target(reactor, target)
    protocol = _DatagramExchange((address, target.port))
    interface = "::" if ":" in address else ""
    port = reactor.listenUDP(0, protocol, interface=interface, maxPacketSize=65535)
    try:
        for attempt in range(1, tries + 1):
            try:
                protocol.transport.write(payload)  # type: ignore[union-attr,call-arg]
            except (OSError, error.MessageLengthError) as e:
                raise ConformanceError(
                    f"cannot send {len(payload)} bytes: {e}"
                ) from None
            await protocol.wait(reactor, 1.0)
            if protocol.refused:
                raise ConformanceError("connection refused (ICMP port unreachable)")
            for reply in protocol.replies:
                if reply == payload:
                    return (
                        f"{len(payload)}-byte datagram came back identical "
                        f"(try {attempt})"
                    )
            if protocol.replies:
                sizes = ", ".join(str(len(r)) for r in protocol.replies)
                raise ConformanceError(
                    f"sent {len(payload)} bytes, got back different datagrams "
                    f"of {sizes} bytes"
                )
        raise ConformanceError(
            f"no reply to a {len(payload)}-byte datagram in {tries} tries"
        )
    finally:
        await maybeDeferred(port.stopListening)


def stream_checks() -> list[tuple[str, Callable[[_Checker], Coroutine[Any, Any, str]]]]:
    """
    @return: the stream checks in order, as C{(name, check)}.
    """
    return [
        ("binary transparency (all 256 byte values)", check_binary),
        ("10 concurrent clients", check_concurrent),
        ("request and FIN in one segment", check_fin_with_request),
        ("1 MiB, half-close, sha256", check_half_close_1mib),
        ("20 MB, half-close, sha256", check_half_close_20mb),
        ("20 MB written before reading", check_write_before_read),
    ]


async def _timed_check(
    reactor: Any,
    name: str,
    body: Callable[[], Coroutine[Any, Any, str]],
    cleanup: Callable[[], Coroutine[Any, Any, None]],
    timeout: float,
) -> CheckResult:
    started = time.perf_counter()
    attempt: Deferred[str] = Deferred.fromCoroutine(body())
    attempt.addTimeout(timeout, reactor)
    try:
        detail = await attempt
        passed = True
    except ConformanceError as e:
        detail, passed = str(e), False
    except (defer.TimeoutError, error.TimeoutError):
        detail, passed = f"timed out after {timeout} s", False
    except Exception as e:
        detail, passed = f"cannot run: {explain_connect_failure(e)}", False
    finally:
        await Deferred.fromCoroutine(cleanup())
    return CheckResult(name, passed, detail, time.perf_counter() - started)


async def run_checks(
    reactor: Any,
    endpoint: IStreamClientEndpoint,
    udp: DatagramTarget | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    only: Callable[[str], bool] = lambda name: True,
) -> list[CheckResult]:
    """
    Run every check, one after another.

    @param reactor: the reactor (time, UDP, name resolution).
    @param endpoint: the TCP (or other stream) echo server.
    @param udp: the UDP echo server, or C{None} to skip the datagram checks.
    @param timeout: seconds each check may take.
    @param only: picks checks by name (for tests).
    @return: one L{CheckResult} per check run.
    """
    results = []
    for name, check in stream_checks():
        if not only(name):
            continue
        checker = _Checker(reactor, endpoint)
        results.append(
            await _timed_check(
                reactor,
                name,
                lambda check=check, checker=checker: check(checker),  # type: ignore[misc]
                checker.cleanup,
                timeout,
            )
        )
    if udp is not None:
        for name, size in (
            ("small datagram", 64),
            (f"largest datagram ({MAX_DATAGRAM} bytes)", MAX_DATAGRAM),
        ):
            if not only(name):
                continue
            payload = _payload(size, seed=size)
            results.append(
                await _timed_check(
                    reactor,
                    name,
                    lambda payload=payload: _datagram_round_trip(  # type: ignore[misc]
                        reactor, udp, payload
                    ),
                    _nothing,
                    timeout,
                )
            )
    return results


async def _nothing() -> None:
    await succeed(None)


def format_results(results: list[CheckResult]) -> str:
    """
    @param results: what L{run_checks} returned.
    @return: a PASS/FAIL table and a closing line, no final newline.
    """
    width = max([len(r.name) for r in results] + [5])
    lines = [f"{'check':<{width}}  result  time      detail"]
    for r in results:
        verdict = "PASS" if r.passed else "FAIL"
        lines.append(f"{r.name:<{width}}  {verdict:<6}  {r.seconds:6.3f} s  {r.detail}")
    failed = sum(not r.passed for r in results)
    summary = "conforms" if not failed else f"{failed} of {len(results)} checks FAILED"
    lines.append(f"result: {summary} ({len(results) - failed} passed)")
    return "\n".join(lines)


async def run_check(
    reactor: Any,
    description: str,
    udp_description: str | None,
    timeout: float,
    stdout: IO[str],
    json_output: bool = False,
    tls: TLSSettings | None = None,
) -> int:
    """
    Run every check against the server at C{description} (and the UDP echo
    server at C{udp_description}, if given) and print the table.

    @param reactor: the running reactor.
    @param description: a stream client endpoint string.
    @param udp_description: C{udp:HOST:PORT} or C{None}.
    @param timeout: seconds each check may take.
    @param stdout: where the table (or JSON) goes.
    @param json_output: print a JSON list of results instead of the table.
    @param tls: how an C{ssl:} endpoint checks the server.
    @return: the exit status: 0 when every check passed, else 1.
    @raise ClientError: when an endpoint is bad or the server cannot be
        reached at all.
    """
    endpoint = stream_endpoint(reactor, description, tls)
    udp = parse_datagram_endpoint(udp_description) if udp_description else None
    probe = Exchange()
    try:
        await connectProtocol(endpoint, probe).addTimeout(timeout, reactor)
    except Exception as e:
        why = explain_connect_failure(e)
        raise ClientError(f"cannot connect to {description}: {why}") from None
    await probe.close()
    results = await run_checks(reactor, endpoint, udp, timeout)
    if json_output:
        print(json.dumps([asdict(r) for r in results]), file=stdout, flush=True)
    else:
        print(format_results(results), file=stdout, flush=True)
    return 0 if all(r.passed for r in results) else 1
