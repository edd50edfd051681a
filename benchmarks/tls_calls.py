"""
Count the Python calls (and calls into C) made per 1 KiB request and its
echo over sockecho's TLS layer, between two L{HalfCloseTLSProtocol} sides
held in memory (the start-up probe's pair): a count, not a timing, so it
does not move between runs. Per request = (count at 300 - count at 100) /
200, which leaves the handshake out.

Usage (compare a checkout with another by PYTHONPATH)::

    PYTHONPATH=. python benchmarks/tls_calls.py
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

from twisted_echo.listening import tls


def calls_for(requests: int) -> int:
    """
    @param requests: 1 KiB requests to send and echo.
    @return: the Python and C calls made meanwhile.
    """
    server, server_tls, _, client, client_tls, _, pump = tls._pair()
    payload = b"x" * 1024
    calls = 0

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(profile)
    try:
        for _ in range(requests):
            client_tls.write(payload)
            pump()
            data, server.received = server.received, b""
            server_tls.write(data)
            pump()
    finally:
        sys.setprofile(None)
    if len(client.received) < requests * len(payload):
        raise SystemExit("the echo did not come back whole")
    return calls


def main() -> None:
    low, high = calls_for(100), calls_for(300)
    print(f"{tls.__file__}: {(high - low) / 200:.1f} calls per 1 KiB request")


if __name__ == "__main__":
    main()
