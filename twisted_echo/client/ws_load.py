# -*- test-case-name: tests.test_client_websocket -*-
"""
C{sockecho-client load ws://...} (or C{wss://...}): many WebSocket
connections, every echoed message checked.

Each connection sends one binary message of C{size} bytes (its own bytes,
with a sequence number in the first 8), waits for the echo, checks it is
the same binary message, and sends the next: a closed loop, one message in
flight per connection. With a rate (C{--rate}, messages per second over all
connections) each connection sends at most one message every
C{connections / rate} seconds (the starts spread over the first interval),
still waiting for each echo before the next: latency is measured from the
send to the echo's arrival either way.

The run is bounded like the TCP load: no message starts after C{duration}
seconds or once C{max_requests} have started; then each connection closes
with code 1000 once its echo is in, and counts as closed cleanly when the
server answers with close 1000. Echoes still owed C{timeout} seconds after
the duration are counted lost and their connections aborted.

The report is the TCP load's (L{twisted_echo.client.load.format_report}),
a request being one message's round trip.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint

from twisted_echo.client.endpoints import explain_connect_failure
from twisted_echo.client.load import LoadError, LoadRun, _timed
from twisted_echo.client.websocket import (
    NORMAL_CLOSURE,
    WebSocketClient,
    WebSocketMessage,
    WebSocketURL,
    open_websocket,
)

#: The report's mode for a WebSocket load.
MODE = "websocket"


class WebSocketLoadConnection(WebSocketClient):
    """
    One load connection: sends a message, checks its echo, sends the next.

    @ivar done: fires with C{None} once the connection has closed.
    """

    def __init__(
        self, url: WebSocketURL, run: LoadRun, payload: bytes, interval: float = 0.0
    ) -> None:
        """
        @param url: the server.
        @param run: the shared run.
        @param payload: each message's bytes (the first 8 replaced by a
            sequence number when there are at least 8).
        @param interval: least seconds between two sends, or 0 for none.
        """
        WebSocketClient.__init__(self, url)
        self.run = run
        self.payload = payload
        self.interval = interval
        self.done: Deferred[None] = Deferred()
        self._seq = 0
        self._expected: bytes | None = None
        self._sent_at = 0.0
        self._next_at = 0.0
        self._timer: IDelayedCall | None = None
        self._stopping = False
        self._aborted = False
        self.closed.addCallback(self._closed)

    def start(self, delay: float = 0.0) -> None:
        """
        Start sending, after C{delay} seconds (pacing's spread).
        """
        self.run.live.add(self)
        if delay > 0:
            self._timer = self.run.clock.callLater(delay, self._send)
        else:
            self._send()

    def _send(self) -> None:
        self._timer = None
        if not self.connected_and_open:
            return
        if self._stopping or not self.run.take_request():
            self._finish()
            return
        run = self.run
        self._seq += 1
        payload = self.payload
        if len(payload) >= 8:
            payload = self._seq.to_bytes(8, "big") + payload[8:]
        self._expected = payload
        self._sent_at = run.now()
        if self.interval:
            self._next_at = self._sent_at + self.interval
        run.stats.bytes_sent += len(payload)
        self.send_message(payload)

    def message_received(self, message: WebSocketMessage) -> None:
        stats = self.run.stats
        expected = self._expected
        if expected is None or message.data != expected:
            if expected is None:
                problem = "websocket: a message came that was not owed"
            elif message.is_text:
                problem = "websocket: a binary message came back as text"
            else:
                problem = (
                    f"websocket: a {len(expected)}-byte message came back as "
                    f"{len(message.data)} different bytes"
                )
            stats.mismatches += 1
            stats.record_problem(problem)
            self._expected = None
            self._aborted = True
            self.abort()
            return
        now = self.run.now()
        self._expected = None
        stats.bytes_received += len(expected)
        stats.record_latency(now - self._sent_at)
        if self._stopping:
            self._finish()
        elif self.interval and self._next_at > now:
            self._timer = self.run.clock.callLater(self._next_at - now, self._send)
        else:
            self._send()

    def stop_when_idle(self) -> None:
        """
        Send no more; close once the owed echo is in.
        """
        self._stopping = True
        if self._expected is None:
            self._finish()

    def _finish(self) -> None:
        self._cancel_timer()
        self.close(NORMAL_CLOSURE)

    def abort(self, why: str | None = None) -> Deferred[None]:
        """
        Abort now; with C{why}, count an echo still owed as lost.
        """
        self._cancel_timer()
        if why is not None and not self._aborted:
            self._aborted = True
            stats = self.run.stats
            if self._expected is not None:
                stats.lost_bytes += len(self._expected)
                stats.record_problem(f"{why}: a {len(self._expected)}-byte echo owed")
            else:
                stats.errors += 1
                stats.record_problem(f"{why}: the server did not close")
        return WebSocketClient.abort(self)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _closed(self, _: None) -> None:
        self._cancel_timer()
        self.run.live.discard(self)
        stats = self.run.stats
        if not self._aborted:
            if self._expected is not None:
                stats.lost_bytes += len(self._expected)
                stats.record_problem(
                    f"connection closed with a {len(self._expected)}-byte echo owed"
                    + self._why_closed()
                )
            elif self.problem is not None:
                stats.errors += 1
                stats.record_problem(self.problem)
            elif not self.close_sent:
                stats.errors += 1
                stats.record_problem(
                    "the server closed the connection mid-run" + self._why_closed()
                )
            elif self.close_code != NORMAL_CLOSURE:
                stats.errors += 1
                stats.record_problem(
                    f"closed with 1000; the server answered {self.close_code}"
                )
            else:
                stats.connections += 1
        self.done.callback(None)

    def _why_closed(self) -> str:
        if self.close_code is None:
            return " (no close frame)"
        return f" (close {self.close_code}" + (
            f" {self.close_reason})" if self.close_reason else ")"
        )


async def run_websocket_load(
    reactor: Any,
    endpoint: IStreamClientEndpoint,
    url: WebSocketURL,
    run: LoadRun,
    rate: float | None = None,
    on_start: Any = lambda: None,
) -> float:
    """
    Open C{run.config.connections} WebSockets, then run the load.

    @param reactor: the reactor (the run's clock is used for the timers).
    @param endpoint: the stream endpoint under C{url}.
    @param url: the server.
    @param run: the run: its config gives connections, size, duration,
        bound and timeout.
    @param rate: messages per second over all connections, or C{None} for
        as fast as the echoes come.
    @param on_start: called once connected, when the timed part starts.
    @return: the timed part's length, seconds; totals are in C{run.stats}.
    @raise LoadError: when not one WebSocket could be opened.
    """
    config = run.config
    count = config.connections
    interval = count / rate if rate else 0.0
    connections = [
        WebSocketLoadConnection(
            url, run, random.Random(i).randbytes(config.size), interval
        )
        for i in range(count)
    ]
    results = await DeferredList(
        [
            Deferred.fromCoroutine(open_websocket(reactor, endpoint, c, config.timeout))
            for c in connections
        ],
        consumeErrors=True,
    )
    failures: list[Any] = [r for ok, r in results if not ok]
    opened = [c for c, (ok, _) in zip(connections, results, strict=True) if ok]
    if not opened:
        run.stop()
        raise LoadError(str(failures[0].value))
    for failure in failures:
        run.stats.errors += 1
        run.stats.record_problem(
            f"cannot open: {explain_connect_failure(failure.value)}"
        )

    def start() -> None:
        for i, connection in enumerate(opened):
            connection.start(interval * i / len(opened) if interval else 0.0)
        on_start()

    return await _timed(run, [c.done for c in opened], start)
