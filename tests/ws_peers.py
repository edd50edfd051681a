"""
An independent WebSocket echo server for the client's tests: the
C{websockets} library (asyncio), run as C{python -m tests.ws_peers}, on
127.0.0.1 and a free port, printing C{listening on PORT} once it listens.

    python -m tests.ws_peers [--tls CERT KEY] [--broken-close] [--broken-echo]

C{--broken-close} makes a deliberately broken server: it answers every
client's close frame with code 1000 instead of echoing the client's code
(RFC 6455 section 5.5.1), so C{check}'s close row must FAIL against it.
C{--broken-echo} flips the last byte of every 100th binary message echoed,
so C{load} must count mismatches.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import subprocess
import sys
import threading
import unittest as pyunit
from typing import Any

from tests.process import HOST, STARTUP_TIMEOUT, child_env, missing

#: The checkout's root, so that C{-m tests.ws_peers} imports.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _break_close_echo() -> None:
    from websockets.frames import Close, Frame, Opcode
    from websockets.protocol import Protocol

    send_frame = Protocol.send_frame

    def send_frame_replacing_close(self: Protocol, frame: Frame) -> None:
        # Only the answer to a client's close with a private-use code (the
        # server's own 1009 stays).
        if frame.opcode is Opcode.CLOSE and Close.parse(frame.data).code >= 3000:
            frame = Frame(Opcode.CLOSE, Close(1000, "").serialize())
        send_frame(self, frame)

    Protocol.send_frame = send_frame_replacing_close  # type: ignore[method-assign]


async def _serve(tls: tuple[str, str] | None, broken_echo: bool = False) -> None:
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed

    async def echo(ws: ServerConnection) -> None:
        count = 0
        try:
            async for message in ws:
                count += 1
                if broken_echo and isinstance(message, bytes) and count % 100 == 0:
                    message = message[:-1] + bytes([message[-1] ^ 1])
                await ws.send(message)
        except ConnectionClosed:
            pass

    context = None
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
    async with serve(echo, HOST, 0, ssl=context) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"listening on {port}", flush=True)
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--broken-close", action="store_true")
    parser.add_argument("--broken-echo", action="store_true")
    args = parser.parse_args()
    if args.broken_close:
        _break_close_echo()
    asyncio.run(_serve(tuple(args.tls) if args.tls else None, args.broken_echo))


def start_websockets_peer(case: pyunit.TestCase, *args: str) -> int:
    """
    Start the C{websockets} echo server; it is killed when C{case} ends.

    @return: its port on 127.0.0.1.
    """
    try:
        import websockets  # noqa: F401
    except ImportError:
        missing(
            case, "the websockets library is not installed", "pip install -e '.[test]'"
        )
    process: subprocess.Popen[str] = subprocess.Popen(
        [sys.executable, "-m", "tests.ws_peers", *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**child_env(), "PYTHONPATH": ROOT},
    )

    def stop() -> None:
        process.kill()
        process.wait()
        assert process.stdout is not None
        process.stdout.close()

    case.addCleanup(stop)
    assert process.stdout is not None
    result: list[Any] = []
    reader = threading.Thread(
        target=lambda: result.append(process.stdout.readline()),  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()
    reader.join(STARTUP_TIMEOUT)
    line = result[0] if result else ""
    if not line.startswith("listening on "):
        raise AssertionError(f"the websockets peer did not start: {line!r}")
    return int(line.split()[-1])


if __name__ == "__main__":
    main()
