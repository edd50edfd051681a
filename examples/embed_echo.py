"""
An example: sockecho's echo service inside someone else's Twisted program.

It listens on a free port of 127.0.0.1 with sockecho's L{EchoFactory}
(half-close, flow control and limits included), prints the port, talks to
itself once, stops gracefully (the drain), and exits: status 0 when the
reply was the bytes sent.

Run it with C{python examples/embed_echo.py}.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol

from twisted_echo.services.echo import EchoFactory

MESSAGE = b"Hello, world"


class OneRoundTrip(Protocol):
    """
    Sends L{MESSAGE}, half-closes, and keeps every byte until the server
    closes.
    """

    def connectionMade(self) -> None:
        self.received = b""
        self.transport.write(MESSAGE)  # type: ignore[union-attr]
        self.transport.loseWriteConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.done.callback(self.received)  # type: ignore[attr-defined]


async def main(reactor: Any) -> None:
    echo = EchoFactory(reactor)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(echo)
    print(f"echo listening on 127.0.0.1:{port.getHost().port}", flush=True)

    client = Factory.forProtocol(OneRoundTrip)
    client.done = Deferred()  # type: ignore[attr-defined]
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port, timeout=5)
    await endpoint.connect(client)
    reply = await client.done.addTimeout(5, reactor)  # type: ignore[attr-defined]
    print(f"sent {MESSAGE!r}, got back {reply!r}", flush=True)

    await port.stopListening()
    await echo.drain(5.0)
    if reply != MESSAGE:
        sys.exit(1)


if __name__ == "__main__":
    task.react(lambda reactor: task.ensureDeferred(main(reactor)))
