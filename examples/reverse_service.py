"""
An example: a new TCP service written against sockecho's service contract
(docs/services.md): every line comes back with its characters reversed.

The service is the two classes between the markers (under 40 lines): it
implements only the contract's hooks, and gets from the stream base the
limits, the memory budget, the idle and stall timeouts, half-close, flow
control, counters and log lines, and PROXY headers and TLS when listened
with those (no registry yet: it builds its own factory and listens).

Run it with C{python examples/reverse_service.py [PORT]} (default: a free
port of 127.0.0.1), then C{printf 'abc\\n' | nc -N 127.0.0.1 PORT}.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint

from twisted_echo.services.stream import StreamFactory, StreamProtocol


# -- the service: start --
def reverse(line: bytes) -> bytes:
    """One line's UTF-8 characters reversed (bytes not UTF-8 kept)."""
    text = line.decode("utf-8", "surrogateescape")[::-1]
    return text.encode("utf-8", "surrogateescape") + b"\r\n"


class ReverseLines(StreamProtocol):
    """Answers each line (ending in LF or CR LF) reversed."""

    max_line = 1024  # bytes of an unfinished line held, at most

    def __init__(self) -> None:
        super().__init__()
        self.line = b""  # the unfinished line

    def handle_data(self, data: bytes) -> None:
        *lines, self.line = (self.line + data).split(b"\n")
        if lines:
            self.send(b"".join(reverse(x.removesuffix(b"\r")) for x in lines))
        if len(self.line) > self.max_line:
            self.send(b"ERROR: line too long; closing connection\r\n")
            self.close()  # completes once handle_data returns

    def end_of_input(self) -> None:
        if self.line:  # a last line without its LF
            self.send(reverse(self.line))

    def held_bytes(self) -> int:
        return super().held_bytes() + len(self.line)


class ReverseFactory(StreamFactory):
    protocol = ReverseLines
    service_name = "reverse"
    refusal_line = True  # a refused client is told why in a line


# -- the service: end --


async def main(reactor: Any, port: int = 0) -> None:
    endpoint = TCP4ServerEndpoint(reactor, port, interface="127.0.0.1")
    listening = await endpoint.listen(ReverseFactory(reactor))
    print(f"reverse listening on 127.0.0.1:{listening.getHost().port}", flush=True)
    await Deferred()  # until interrupted


if __name__ == "__main__":
    number = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    task.react(lambda reactor: task.ensureDeferred(main(reactor, number)))
