# -*- test-case-name: tests.test_client_websocket -*-
"""
C{sockecho-client check ws://...} (or C{wss://...}): a conformance run
against any WebSocket echo server (RFC 6455), one row per check, each with
its own timeout, PASS or FAIL and one line of detail:

 - text: a non-ASCII text message comes back as text, identical;
 - binary: all 256 byte values come back as a binary message, identical;
 - 0-byte text and 0-byte binary messages come back, of their type;
 - 1 MiB text and 1 MiB binary messages come back identical (SHA-256);
 - a fragmented message (a text and a binary one, 3 frames each) comes back
   as one message of the same type and bytes (the server may frame it its
   own way: the row says in how many frames it came);
 - ping/pong: a ping's payload comes back in a pong (section 5.5.3);
 - close code echoed: a close with code 4321 and a reason gets a close frame
   with code 4321 back (section 5.5.1: "typically echos the status code");
 - oversize refused: a message of C{max_message + 1} bytes gets close 1009
   (section 7.4.1), not an echo. C{max_message} is C{--max-message}, by
   default 1 MiB, the limit of sockecho (C{--websocket-max-message}) and of
   the C{websockets} library (C{max_size}) alike, so with the default both
   the 1 MiB row (at the limit: echoed) and this one (one byte over:
   refused) test the boundary. C{--max-message 0} leaves the row out, for a
   server without a limit;
 - concurrent connections: 100 at once, each sending its own text and
   binary message, each gets back exactly its own.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from typing import IO, Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IStreamClientEndpoint

from twisted_echo.client.check import (
    CheckResult,
    ConformanceError,
    _timed_check,
    format_results,
)
from twisted_echo.client.tls import TLSSettings
from twisted_echo.client.websocket import (
    MESSAGE_TOO_BIG,
    ConnectionClosedError,
    WebSocketClient,
    WebSocketMessage,
    WebSocketURL,
    open_websocket,
    parse_websocket_url,
    websocket_endpoint,
)

MIB = 1024 * 1024
#: The message size limit assumed when none is given (bytes).
DEFAULT_MAX_MESSAGE = MIB
#: Seconds a check's connections get to close cleanly when it is done.
CLOSE_WAIT = 2.0
#: Seconds the ping row waits for the pong after the echo of the message
#: sent after the ping.
PONG_WAIT = 1.0
#: Connections of the concurrent row.
CONCURRENT = 100
#: The close code and reason the close row sends (4000-4999: private use).
CLOSE_CODE = 4321
CLOSE_REASON = "sockecho-client check"


class _WSChecker:
    """
    Opens one check's connections, aborting them when the check is done.
    """

    def __init__(
        self,
        reactor: Any,
        endpoint: IStreamClientEndpoint,
        url: WebSocketURL,
        timeout: float,
    ) -> None:
        self.reactor = reactor
        self.endpoint = endpoint
        self.url = url
        self.timeout = timeout
        self.clients: list[WebSocketClient] = []

    async def open(self) -> WebSocketClient:
        client = WebSocketClient(self.url)
        self.clients.append(client)
        return await open_websocket(self.reactor, self.endpoint, client, self.timeout)

    async def cleanup(self) -> None:
        """
        Close the connections still open with 1000, aborting those not
        closed within L{CLOSE_WAIT} seconds.
        """
        for client in self.clients:
            client.close()
        closing = gatherResults([c.closed for c in self.clients])
        closing.addTimeout(CLOSE_WAIT, self.reactor, onTimeoutCancel=lambda *a: None)
        await closing
        await gatherResults([c.abort() for c in self.clients])


def _describe(data: str | bytes) -> str:
    kind = "text" if isinstance(data, str) else "binary"
    size = len(data.encode("utf-8")) if isinstance(data, str) else len(data)
    return f"{size}-byte {kind}"


async def _round_trip(
    client: WebSocketClient, data: str | bytes, fragments: int = 1
) -> WebSocketMessage:
    """
    Send C{data} as one message (in C{fragments} frames) and check that the
    next message back is the same, of the same type.

    @raise ConformanceError: when it is not, or the connection closes.
    """
    if fragments == 1:
        client.send_message(data)
    else:
        step = max(1, -(-len(data) // fragments))
        for i in range(fragments):
            piece = data[i * step : (i + 1) * step]
            client.send_message(piece, finished=i == fragments - 1)
    try:
        reply = await client.receive()
    except ConnectionClosedError as e:
        raise ConformanceError(f"{_describe(data)} message: {e}") from None
    if reply.is_text != isinstance(data, str):
        raise ConformanceError(
            f"a {_describe(data)} message came back as {_describe(reply.data)}"
        )
    if reply.data != data:
        got = reply.data
        if len(got) != len(data):
            raise ConformanceError(
                f"a {_describe(data)} message came back as {_describe(got)}"
            )
        raise ConformanceError(
            f"a {_describe(data)} message came back with different content"
        )
    return reply


async def check_text(c: _WSChecker) -> str:
    client = await c.open()
    text = "héllo wörld ✓ sockecho-client check"
    await _round_trip(client, text)
    return f"{_describe(text)} message (non-ASCII) came back as the same text"


async def check_binary(c: _WSChecker) -> str:
    client = await c.open()
    await _round_trip(client, bytes(range(256)))
    return "all 256 byte values came back in a binary message, identical"


async def check_empty(c: _WSChecker) -> str:
    client = await c.open()
    await _round_trip(client, "")
    await _round_trip(client, b"")
    return "a 0-byte text and a 0-byte binary message came back, of their type"


async def check_mib(c: _WSChecker) -> str:
    client = await c.open()
    rng = random.Random(1)
    letters = b"abcdefghijklmnopqrstuvwxyz0123456789 ?"
    text = rng.randbytes(MIB).translate(bytes(letters[i % 38] for i in range(256)))
    binary = rng.randbytes(MIB)
    await _round_trip(client, text.decode("ascii"))
    reply = await _round_trip(client, binary)
    digest = hashlib.sha256(binary).hexdigest()[:12]
    return (
        f"1 MiB text and 1 MiB binary came back identical "
        f"(binary sha256 {digest}..., in {reply.frames} frame(s))"
    )


async def check_fragmented(c: _WSChecker) -> str:
    client = await c.open()
    text = await _round_trip(client, "fragmented text message, three frames", 3)
    binary = await _round_trip(client, random.Random(2).randbytes(3000), 3)
    return (
        "text and binary sent in 3 frames each came back as one message "
        f"(in {text.frames} and {binary.frames} frame(s))"
    )


async def check_ping(c: _WSChecker) -> str:
    client = await c.open()
    payload = b"sockecho-client ping"
    pong = client.next_pong()
    client.ping(payload)
    # A server that answers in order sends the pong before the echo of a
    # message sent after the ping; one that is slower to pong gets
    # PONG_WAIT seconds more.
    await _round_trip(client, "after the ping")
    pong.addTimeout(PONG_WAIT, c.reactor, onTimeoutCancel=lambda *a: None)
    try:
        await pong
    except ConnectionClosedError as e:
        raise ConformanceError(f"waiting for a pong: {e}") from None
    if payload not in client.pongs:
        if client.pongs:
            raise ConformanceError(f"pong payloads {client.pongs!r}, not {payload!r}")
        raise ConformanceError("no pong for a ping")
    return f"a ping's {len(payload)}-byte payload came back in a pong"


async def check_close(c: _WSChecker) -> str:
    client = await c.open()
    client.close(CLOSE_CODE, CLOSE_REASON)
    await client.closed
    if client.close_code is None:
        raise ConformanceError(
            f"sent close {CLOSE_CODE}; the connection closed without a close frame"
        )
    if client.close_code != CLOSE_CODE:
        raise ConformanceError(
            f"sent close {CLOSE_CODE}; the server's close frame has code "
            f"{client.close_code}"
        )
    reason = (
        "and its reason"
        if client.close_reason == CLOSE_REASON
        else f"(reason {client.close_reason!r}, not the one sent)"
    )
    return f"close code {CLOSE_CODE} came back in the server's close frame {reason}"


Check = Callable[[_WSChecker], Coroutine[Any, Any, str]]


def oversize_check(max_message: int) -> Check:
    """
    @param max_message: the server's limit, bytes.
    @return: the check that one byte more is refused with close 1009.
    """

    async def check_oversize(c: _WSChecker) -> str:
        client = await c.open()
        size = max_message + 1
        client.send_message(b"\x00" * size)
        try:
            reply = await client.receive()
        except ConnectionClosedError as e:
            if e.code == MESSAGE_TOO_BIG:
                return f"a {size}-byte message got close {MESSAGE_TOO_BIG}" + (
                    f" ({e.reason})" if e.reason else ""
                )
            raise ConformanceError(
                f"a {size}-byte message: {e}, not {MESSAGE_TOO_BIG}"
            ) from None
        raise ConformanceError(
            f"a {size}-byte message came back ({_describe(reply.data)}): no limit "
            f"at {max_message} bytes (give the server's with --max-message)"
        )

    return check_oversize


async def check_concurrent(c: _WSChecker) -> str:
    clients = await gatherResults(
        [Deferred.fromCoroutine(c.open()) for _ in range(CONCURRENT)]
    )
    payloads = [
        (f"client {i} ✓", f"client {i}:".encode() + random.Random(i).randbytes(1024))
        for i in range(CONCURRENT)
    ]

    async def exchange(client: WebSocketClient, text: str, binary: bytes) -> None:
        await _round_trip(client, text)
        await _round_trip(client, binary)

    await gatherResults(
        [
            Deferred.fromCoroutine(exchange(client, text, binary))
            for client, (text, binary) in zip(clients, payloads, strict=True)
        ]
    )
    for client in clients:
        client.close()
    await gatherResults([client.closed for client in clients])
    return (
        f"{CONCURRENT} connections at once, each got back exactly its own text "
        "and binary message"
    )


def websocket_checks(max_message: int) -> list[tuple[str, Check]]:
    """
    @param max_message: the server's message size limit (bytes), or 0 for
        none (the oversize row is left out).
    @return: the checks in order, as C{(name, check)}.
    """
    checks: list[tuple[str, Check]] = [
        ("text message", check_text),
        ("binary message (all 256 byte values)", check_binary),
        ("0-byte text and binary messages", check_empty),
        ("1 MiB text and binary messages", check_mib),
        ("fragmented messages (3 frames)", check_fragmented),
        ("ping answered with pong", check_ping),
        (f"close code {CLOSE_CODE} echoed", check_close),
    ]
    if max_message:
        checks.append(
            (
                f"message of {max_message + 1} bytes refused with 1009",
                oversize_check(max_message),
            )
        )
    checks.append((f"{CONCURRENT} concurrent connections", check_concurrent))
    return checks


async def run_websocket_checks(
    reactor: Any,
    url: WebSocketURL,
    endpoint: IStreamClientEndpoint,
    timeout: float,
    max_message: int = DEFAULT_MAX_MESSAGE,
    only: Callable[[str], bool] = lambda name: True,
) -> list[CheckResult]:
    """
    Run every WebSocket check, one after another.

    @param reactor: the reactor.
    @param url: the server.
    @param endpoint: the stream endpoint under C{url}.
    @param timeout: seconds each check may take.
    @param max_message: the server's message size limit, bytes (0: none).
    @param only: picks checks by name.
    @return: one L{CheckResult} per check run.
    """
    results = []
    for name, check in websocket_checks(max_message):
        if not only(name):
            continue
        checker = _WSChecker(reactor, endpoint, url, timeout)
        results.append(
            await _timed_check(
                reactor,
                name,
                lambda check=check, checker=checker: check(checker),  # type: ignore[misc]
                checker.cleanup,
                timeout,
            )
        )
    return results


async def run_websocket_check(
    reactor: Any,
    description: str,
    timeout: float,
    stdout: IO[str],
    json_output: bool = False,
    tls: TLSSettings | None = None,
    max_message: int = DEFAULT_MAX_MESSAGE,
) -> int:
    """
    Run every WebSocket check against C{description} and print the table.

    @param reactor: the running reactor.
    @param description: a C{ws://} or C{wss://} URL.
    @param timeout: seconds each check may take.
    @param stdout: where the table (or JSON) goes.
    @param json_output: print a JSON list instead of the table.
    @param tls: how a C{wss://} server's certificate is checked.
    @param max_message: the server's message size limit, bytes (0: none).
    @return: 0 when every check passed, else 1.
    @raise ClientError: for a bad URL, or when no WebSocket can be opened
        at all (one line).
    """
    url = parse_websocket_url(description)
    endpoint = websocket_endpoint(reactor, url, tls)
    probe = await open_websocket(reactor, endpoint, WebSocketClient(url), timeout)
    await probe.abort()
    results = await run_websocket_checks(reactor, url, endpoint, timeout, max_message)
    if json_output:
        print(json.dumps([asdict(r) for r in results]), file=stdout, flush=True)
    else:
        print(format_results(results), file=stdout, flush=True)
    return 0 if all(r.passed for r in results) else 1
