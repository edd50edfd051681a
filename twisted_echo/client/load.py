# -*- test-case-name: tests.test_client_load -*-
"""
C{sockecho-client load}: many connections at once, every reply byte checked
against the service's contract (L{twisted_echo.client.contracts}).

Over 500 lines: the three TCP modes (rr, stream, connect), their shared
pacing and the report; WebSocket load is in L{twisted_echo.client.ws_load}.

Modes:
 - C{rr}: request/response; each connection sends one request of C{size}
   bytes, waits for its whole reply, and sends the next.
 - C{stream}: each connection keeps up to L{STREAM_WINDOW} bytes of
   requests in flight, so data flows both ways at once.
 - C{connect}: each request is its own connection: connect, send, half-close
   (C{SHUT_WR}), read the whole reply until the server closes.
 - C{websocket} (C{ws://} and C{wss://} URLs): one message in flight per
   WebSocket connection (L{twisted_echo.client.ws_load}).
 - C{udp}: each worker sends one datagram (RFC 862 UDP echo), waits for it
   to come back, and sends the next; a reply missing after the reply
   timeout is a lost datagram.

Everything is bounded: no request starts after C{duration} seconds or once
C{max_requests} have started, and replies still owed C{timeout} seconds
after that are counted lost.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any
from typing import Protocol as Protocol_

from twisted.internet import error
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    gatherResults,
    maybeDeferred,
)
from twisted.internet.endpoints import connectProtocol
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import (
    DatagramProtocol,
    Protocol,
    connectionDone,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_echo.client.contracts import ReplyChecker, checker_for, request_payload
from twisted_echo.client.endpoints import (
    DatagramTarget,
    explain_connect_failure,
    parse_datagram_endpoint,
    resolve_datagram_target,
    stream_endpoint,
)
from twisted_echo.client.errors import ClientError
from twisted_echo.client.progress import LiveProgress
from twisted_echo.client.stats import LoadStats
from twisted_echo.client.tls import TLSSettings

MODES = ("rr", "stream", "connect", "udp")

#: Bytes of requests a C{stream} connection keeps in flight.
STREAM_WINDOW = 256 * 1024

#: The largest UDP payload over IPv4 (65535 - 20 IP - 8 UDP header bytes).
MAX_DATAGRAM = 65507


class LoadError(ClientError):
    """
    The load run could not start (e.g. no connection could be made); C{str()}
    is one line saying why.
    """


@dataclass(frozen=True)
class LoadConfig:
    """
    What to run.

    @ivar endpoint: the endpoint string, for reports.
    @ivar connections: connections (or UDP workers) at once.
    @ivar size: request size in bytes.
    @ivar duration: seconds during which new requests start.
    @ivar mode: one of L{MODES}.
    @ivar service: the contract replies are checked against.
    @ivar max_requests: stop starting requests after this many, or C{None}.
    @ivar timeout: seconds to connect, and to wait after C{duration} for the
        replies still owed; also the UDP reply timeout, at most 1 second.
    @ivar banner: the welcome banner expected (bytes), or C{None} for any.
    @ivar tls: how an C{ssl:} endpoint checks the server, or C{None} for
        the default (the system's trust store).
    """

    endpoint: str
    connections: int = 1
    size: int = 64
    duration: float = 5.0
    mode: str = "rr"
    service: str = "echo"
    max_requests: int | None = None
    timeout: float = 5.0
    banner: bytes | None = None
    tls: TLSSettings | None = None

    @property
    def udp_reply_timeout(self) -> float:
        """
        Seconds to wait for one datagram's reply before counting it lost.
        """
        return min(self.timeout, 1.0)


class Worker(Protocol_):
    """
    What L{LoadRun} asks of a connection or worker it stops or aborts.
    """

    def stop_when_idle(self) -> None:
        """
        Start nothing more; finish once nothing is owed.
        """

    def abort(self, why: str) -> object:
        """
        Stop at once, counting what is owed as lost; C{why} is one line.
        """


class LoadRun:
    """
    What all connections of a run share: the totals, whether new requests
    may start, and the clock.

    @ivar stats: the run's L{LoadStats}.
    @ivar stopping: set once no new request may start.
    """

    def __init__(
        self,
        config: LoadConfig,
        clock: IReactorTime,
        now: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.config = config
        self.clock = clock
        self.now = now
        self.stats = LoadStats()
        self.stopping = False
        self.live: set[Worker] = set()
        self._budget = config.max_requests

    def take_request(self) -> bool:
        """
        @return: whether one more request may start (and count it if so).
        """
        if self.stopping:
            return False
        if self._budget is not None:
            if self._budget <= 0:
                return False
            self._budget -= 1
        return True

    def stop(self) -> None:
        """
        Start no more requests; each connection half-closes once its owed
        replies are in.
        """
        self.stopping = True
        for worker in list(self.live):
            worker.stop_when_idle()

    def abort_all(self, why: str) -> None:
        """
        Abort every connection still open, counting what it was owed as lost.

        @param why: one line for the report (e.g. C{"timed out"}).
        """
        for worker in list(self.live):
            worker.abort(why)


@implementer(IHalfCloseableProtocol)
class LoadConnection(Protocol):
    """
    One load connection: sends requests, checks replies, times each request
    from its write to the arrival of its reply's last byte.

    @ivar done: fires with C{None} when the connection has closed.
    """

    def __init__(
        self,
        run: LoadRun,
        checker: ReplyChecker,
        payload: bytes,
        in_flight: int = 1,
        one_shot: bool = False,
    ) -> None:
        """
        @param run: the shared run.
        @param checker: checks this connection's replies.
        @param payload: each request's bytes.
        @param in_flight: requests sent before waiting for a reply.
        @param one_shot: send one request (not counted against the run's
            budget, nor timed: the caller times the connection), then
            half-close.
        """
        self.run = run
        self.checker = checker
        self.payload = payload
        self.in_flight = in_flight
        self.one_shot = one_shot
        self.done: Deferred[None] = Deferred()
        self._pending: deque[tuple[int, float]] = deque()
        self._sending_done = False
        self._aborted = False
        self._stop_when_idle = False

    def connectionMade(self) -> None:
        self.run.live.add(self)
        if self.run.stopping and not self.one_shot:
            self._finish_sending()
            return
        self._fill()

    def _fill(self) -> None:
        checker = self.checker
        if self._sending_done or not checker.ready:
            return
        run = self.run
        transport = self.transport
        assert transport is not None
        while len(self._pending) < self.in_flight:
            if not self.one_shot and not run.take_request():
                self._finish_sending()
                return
            checker.sent(self.payload)
            self._pending.append((checker.owed_total, run.now()))
            run.stats.bytes_sent += len(self.payload)
            transport.write(self.payload)
            if self.one_shot:
                self._finish_sending()
                return

    def dataReceived(self, data: bytes) -> None:
        checker = self.checker
        stats = self.run.stats
        before = checker.received_total
        if not checker.received(data):
            if not self._aborted:
                stats.mismatches += 1
                stats.record_problem(checker.mismatch or "mismatch")
                self._abort_transport()
            return
        stats.bytes_received += checker.received_total - before
        pending = self._pending
        if pending and checker.received_total >= pending[0][0]:
            now = self.run.now()
            while pending and checker.received_total >= pending[0][0]:
                _, sent_at = pending.popleft()
                if not self.one_shot:
                    stats.record_latency(now - sent_at)
        if self._stop_when_idle and not pending:
            self._finish_sending()
        else:
            self._fill()

    def stop_when_idle(self) -> None:
        """
        Send no more; half-close once every owed reply is in.
        """
        self._stop_when_idle = True
        if not self._pending:
            self._finish_sending()

    def _finish_sending(self) -> None:
        if self._sending_done:
            return
        self._sending_done = True
        self.checker.end_of_input()
        self.transport.loseWriteConnection()  # type: ignore[union-attr]

    def readConnectionLost(self) -> None:
        """
        The server has sent all it will; close our side too.
        """
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        """
        Our sending side is closed; keep reading.
        """

    def abort(self, why: str) -> None:
        """
        Abort now, counting the reply bytes still owed as lost.

        @param why: one line for the report.
        """
        if self._aborted:
            return
        stats = self.run.stats
        owed = self.checker.outstanding
        if owed:
            stats.lost_bytes += owed
            stats.record_problem(f"{why}: {owed} reply bytes still owed")
        else:
            stats.errors += 1
            stats.record_problem(f"{why}: the server did not close the connection")
        self._abort_transport()

    def _abort_transport(self) -> None:
        self._aborted = True
        self.transport.abortConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.run.live.discard(self)
        stats = self.run.stats
        if not self._aborted:
            owed = self.checker.outstanding
            if owed:
                stats.lost_bytes += owed
                stats.record_problem(
                    f"connection closed with {owed} reply bytes still owed "
                    f"({explain_connect_failure(reason.value or Exception())})"
                )
            elif not self._sending_done:
                stats.errors += 1
                stats.record_problem("the server closed the connection mid-run")
            elif not reason.check(error.ConnectionDone):
                stats.errors += 1
                stats.record_problem(
                    f"connection ended badly: "
                    f"{explain_connect_failure(reason.value or Exception())}"
                )
            else:
                stats.connections += 1
        self.done.callback(None)



class DatagramLoadWorker(DatagramProtocol):
    """
    One UDP worker: sends a datagram, waits for it to come back (RFC 862),
    sends the next. Datagrams of 8 bytes or more carry a sequence number in
    their first 8 bytes so a late reply is told apart from a wrong one.

    @ivar done: fires with C{None} when the worker has stopped.
    """

    def __init__(self, run: LoadRun, payload: bytes, address: tuple[str, int]):
        self.run = run
        self.payload = payload
        self.address = address
        self.done: Deferred[None] = Deferred()
        self._seq = 0
        self._expected: bytes | None = None
        self._sent_at = 0.0
        self._timer: Any = None
        self._stopped = False

    def startProtocol(self) -> None:
        self.transport.connect(*self.address)  # type: ignore[union-attr]
        self.run.live.add(self)
        self._send()

    def _send(self) -> None:
        if not self.run.take_request():
            self._stop()
            return
        self._seq += 1
        payload = self.payload
        if len(payload) >= 8:
            payload = self._seq.to_bytes(8, "big") + payload[8:]
        self._expected = payload
        self._sent_at = self.run.now()
        self.run.stats.bytes_sent += len(payload)
        self._timer = self.run.clock.callLater(
            self.run.config.udp_reply_timeout, self._timed_out
        )
        try:
            self.transport.write(payload)  # type: ignore[union-attr,call-arg]
        except (OSError, error.MessageLengthError) as e:
            self._cancel_timer()
            self.run.stats.errors += 1
            self.run.stats.record_problem(f"cannot send a datagram: {e}")
            self._stop()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        expected = self._expected
        stats = self.run.stats
        if expected is not None and datagram == expected:
            self._cancel_timer()
            self._expected = None
            stats.bytes_received += len(datagram)
            stats.record_latency(self.run.now() - self._sent_at)
            self._send()
            return
        if (
            len(datagram) == len(self.payload) >= 8
            and datagram[8:] == self.payload[8:]
            and int.from_bytes(datagram[:8], "big") < self._seq
        ):
            return  # a late reply to a datagram already counted lost
        stats.mismatches += 1
        stats.record_problem(
            f"udp: datagram of {len(datagram)} bytes differs from the one sent"
        )
        if expected is not None:
            self._cancel_timer()
            self._expected = None
            self._send()

    def _timed_out(self) -> None:
        self._timer = None
        self._expected = None
        self.run.stats.lost_datagrams += 1
        self.run.stats.record_problem(
            f"udp: no reply to datagram {self._seq} within "
            f"{self.run.config.udp_reply_timeout} s"
        )
        self._send()

    def connectionRefused(self) -> None:
        """
        The peer's host says nothing listens there (ICMP port unreachable).
        """
        self._cancel_timer()
        self._expected = None
        self.run.stats.errors += 1
        self.run.stats.record_problem("udp: connection refused (port unreachable)")
        self._stop()

    def stop_when_idle(self) -> None:
        """
        Nothing to do: no datagram starts once the run is stopping.
        """

    def abort(self, why: str) -> None:
        """
        Stop at once; a datagram still awaited is lost.
        """
        if self._expected is not None:
            self._cancel_timer()
            self._expected = None
            self.run.stats.lost_datagrams += 1
        self._stop()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.run.live.discard(self)
        self.done.callback(None)


async def run_stream_load(
    endpoint: IStreamClientEndpoint,
    run: LoadRun,
    on_start: Callable[[], object] = lambda: None,
) -> float:
    """
    Run an C{rr}, C{stream} or C{connect} load.

    @param endpoint: where to connect.
    @param run: the run; its config says the mode and bounds.
    @param on_start: called once connected, when the timed part starts.
    @return: the timed part's length, seconds; totals are in C{run.stats}.
    @raise LoadError: when not one connection could be made.
    """
    config = run.config
    if config.mode == "connect":
        return await _run_connect_load(endpoint, run, on_start)
    in_flight = 1
    if config.mode == "stream":
        in_flight = max(2, STREAM_WINDOW // config.size)
    connections = [
        LoadConnection(
            run,
            checker_for(config.service, config.banner),
            request_payload(config.service, config.size, seed=i),
            in_flight,
        )
        for i in range(config.connections)
    ]
    results = await DeferredList(
        [_connect(endpoint, c, run) for c in connections], consumeErrors=True
    )
    failures = [r for ok, r in results if not ok]
    connected = [c for c, (ok, _) in zip(connections, results, strict=True) if ok]
    if not connected:
        run.stop()
        raise LoadError(
            f"cannot connect to {config.endpoint}: "
            f"{explain_connect_failure(failures[0].value)}"
        )
    for failure in failures:
        run.stats.errors += 1
        run.stats.record_problem(
            f"cannot connect: {explain_connect_failure(failure.value)}"
        )
    return await _timed(run, [c.done for c in connected], on_start)


async def _run_connect_load(
    endpoint: IStreamClientEndpoint,
    run: LoadRun,
    on_start: Callable[[], object],
) -> float:
    config = run.config

    async def worker(index: int) -> None:
        payload = request_payload(config.service, config.size, seed=index)
        while run.take_request():
            started = run.now()
            connection = LoadConnection(
                run, checker_for(config.service, config.banner), payload, 1, True
            )
            try:
                await _connect(endpoint, connection, run)
            except Exception as e:
                run.stats.errors += 1
                run.stats.record_problem(
                    f"cannot connect: {explain_connect_failure(e)}"
                )
                return
            await connection.done
            run.stats.record_latency(run.now() - started)

    return await _timed(
        run,
        [Deferred.fromCoroutine(worker(i)) for i in range(config.connections)],
        on_start,
    )


async def run_datagram_load(
    reactor: Any,
    target: DatagramTarget,
    run: LoadRun,
    on_start: Callable[[], object] = lambda: None,
) -> float:
    """
    Run a C{udp} load: C{connections} workers, each with its own socket.

    @param reactor: provides L{twisted.internet.interfaces.IReactorUDP} and C{resolve}.
    @param target: the UDP echo server.
    @param run: the run.
    @param on_start: called when the timed part starts.
    @return: the timed part's length, seconds; totals are in C{run.stats}.
    @raise twisted_echo.client.endpoints.EndpointError: when the host name
        does not resolve.
    """
    config = run.config
    address, _family = await resolve_datagram_target(reactor, target)
    interface = "::" if ":" in address else ""
    workers = []
    ports = []
    try:
        for i in range(config.connections):
            worker = DatagramLoadWorker(
                run,
                request_payload("echo", config.size, seed=i),
                (address, target.port),
            )
            workers.append(worker)
            ports.append(
                reactor.listenUDP(0, worker, interface=interface, maxPacketSize=65535)
            )
        return await _timed(run, [w.done for w in workers], on_start)
    finally:
        await gatherResults([maybeDeferred(port.stopListening) for port in ports])


async def _timed(
    run: LoadRun, finished: list[Deferred[None]], on_start: Callable[[], object]
) -> float:
    config = run.config
    clock = run.clock
    started = run.now()
    on_start()
    stopper = clock.callLater(config.duration, run.stop)
    aborter = clock.callLater(
        config.duration + config.timeout, run.abort_all, "timed out"
    )
    try:
        await gatherResults(finished)
    finally:
        for call in (stopper, aborter):
            if call.active():
                call.cancel()
        run.stopping = True
    return max(run.now() - started, 0.0)


def _connect(
    endpoint: IStreamClientEndpoint, protocol: Protocol, run: LoadRun
) -> Deferred[Any]:
    connecting: Deferred[Any] = connectProtocol(endpoint, protocol)
    return connecting.addTimeout(run.config.timeout, run.clock)


def format_report(config: LoadConfig, report: dict[str, Any]) -> str:
    """
    @param config: what was run.
    @param report: L{LoadStats.report}'s result.
    @return: the human-readable summary, several lines, no final newline.
    """
    latency = report["latency_us"]
    # A WebSocket load's request is one message's round trip.
    label = "messages" if config.mode == "websocket" else "requests"
    lines = [
        f"load {config.endpoint}: mode={config.mode} service={config.service} "
        f"connections={config.connections} size={config.size} B "
        f"duration={report['elapsed_s']} s",
        f"{label:<12} {report['requests']} ({report['requests_per_s']}/s)",
        f"throughput   {report['mb_per_s']} MB/s of replies "
        f"({report['bytes_sent']} bytes sent, {report['bytes_received']} received)",
        f"connections  {report['connections']} closed cleanly "
        f"({report['connections_per_s']}/s)",
        f"latency us   p50 {latency['p50']}  p90 {latency['p90']}  "
        f"p99 {latency['p99']}  max {latency['max']}",
        f"errors {report['errors']}  mismatches {report['mismatches']}  "
        f"lost bytes {report['lost_bytes']}  "
        f"lost datagrams {report['lost_datagrams']}",
    ]
    lines.extend(f"  problem: {p}" for p in report["problems"])
    lines.append("result       " + ("OK" if report["ok"] else "FAILED"))
    return "\n".join(lines)


async def run_load(
    reactor: Any,
    config: LoadConfig,
    json_output: bool,
    stdout: IO[str],
    rate: float | None = None,
) -> int:
    """
    Run the load C{config} describes and print its report.

    @param reactor: the running reactor.
    @param config: what to run.
    @param json_output: print one JSON object instead of the text report
        (and no progress line).
    @param stdout: where the report (and, on a terminal, the progress line)
        goes.
    @param rate: C{websocket} mode: messages per second over all
        connections, or C{None} for a closed loop as fast as echoes come.
    @return: the exit status: 0, or 1 on any error, mismatch or loss.
    @raise ClientError: when the endpoint is bad or no connection can be
        made.
    """
    run = LoadRun(config, reactor)
    progress = LiveProgress(
        reactor, run.stats, config.duration, stdout if not json_output else None
    )
    try:
        if config.mode == "udp":
            target = parse_datagram_endpoint(config.endpoint)
            elapsed = await run_datagram_load(reactor, target, run, progress.start)
        elif config.mode == "websocket":
            from twisted_echo.client.websocket import (
                parse_websocket_url,
                websocket_endpoint,
            )
            from twisted_echo.client.ws_load import run_websocket_load

            url = parse_websocket_url(config.endpoint)
            endpoint = websocket_endpoint(reactor, url, config.tls)
            elapsed = await run_websocket_load(
                reactor, endpoint, url, run, rate, progress.start
            )
        else:
            endpoint = stream_endpoint(reactor, config.endpoint, config.tls)
            elapsed = await run_stream_load(endpoint, run, progress.start)
    finally:
        progress.stop()
    report: dict[str, Any] = {
        "endpoint": config.endpoint,
        "mode": config.mode,
        "service": config.service,
        "connections_wanted": config.connections,
        "size": config.size,
        "duration_s": config.duration,
    }
    report.update(run.stats.report(elapsed))
    if rate is not None:
        report["rate"] = rate
    if json_output:
        print(json.dumps(report), file=stdout, flush=True)
    else:
        print(format_report(config, report), file=stdout, flush=True)
    return 0 if run.stats.ok else 1
