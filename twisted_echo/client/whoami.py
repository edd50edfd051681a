# -*- test-case-name: tests.test_client_whoami -*-
"""
C{sockecho-client whoami ENDPOINT [--count N]}: ask a sockecho whoami
service (L{twisted_echo.services.whoami}) how it sees this client, and, called N
times, how a load balancer in front of it spreads the connections.

With one call it prints the reply's fields one per line; with C{--count N}
it prints, for each backend that answered (host, process id, worker), how
many of the N answers it gave, and the client addresses the backends saw.
C{--json} prints the replies as a JSON list instead.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import IO, Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.python.failure import Failure

from twisted_echo.client.endpoints import (
    explain_connect_failure,
    is_datagram,
    parse_datagram_endpoint,
    resolve_datagram_target,
    stream_endpoint,
)
from twisted_echo.client.errors import ClientError
from twisted_echo.client.tls import TLSSettings

#: The largest whoami reply read, bytes (a reply is a few hundred).
MAX_REPLY = 65536


class _LineReader(Protocol):
    """
    Collects what the server sends until it closes.
    """

    def __init__(self) -> None:
        self.received = bytearray()
        self.done: Deferred[bytes] = Deferred()
        self.gave_up = False

    def give_up(self) -> None:
        """
        No answer in time: drop the connection (L{done} fires once it is
        gone).
        """
        self.gave_up = True
        self.transport.abortConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) > MAX_REPLY:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.done.callback(bytes(self.received))


class _DatagramAsker(DatagramProtocol):
    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.reply: Deferred[bytes] = Deferred()

    def ask(self) -> None:
        self.transport.write(b"whoami?", self.address)  # type: ignore[union-attr]

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if not self.reply.called:
            self.reply.callback(datagram)


def parse_reply(raw: bytes, endpoint: str) -> dict[str, Any]:
    """
    @param raw: a whoami reply: one JSON object (a line over TCP).
    @return: its fields.
    @raise ClientError: when it is not one JSON object.
    """
    try:
        fields = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        fields = None
    if not isinstance(fields, dict):
        shown = raw[:60].decode("utf-8", "replace")
        raise ClientError(f"{endpoint} is not a whoami service (got {shown!r})")
    return fields


async def ask_once(
    reactor: Any, endpoint: str, timeout: float, tls: TLSSettings | None = None
) -> dict[str, Any]:
    """
    Ask the whoami service at C{endpoint} once.

    @param endpoint: a stream client endpoint string or C{udp:HOST:PORT}.
    @param timeout: seconds for the answer.
    @return: the reply's fields.
    @raise ClientError: when the connection fails or the reply is not
        whoami's.
    """
    if is_datagram(endpoint):
        target = parse_datagram_endpoint(endpoint)
        address, _ = await resolve_datagram_target(reactor, target)
        asker = _DatagramAsker((address, target.port))
        port = reactor.listenUDP(0, asker, interface="::" if ":" in address else "")
        try:
            asker.ask()
            raw = await asker.reply.addTimeout(timeout, reactor)
        except Exception:
            raise ClientError(
                f"no answer from {endpoint} within {timeout:g} s"
            ) from None
        finally:
            await port.stopListening()
        return parse_reply(raw, endpoint)
    reader = _LineReader()
    connecting = stream_endpoint(reactor, endpoint, tls).connect(
        Factory.forProtocol(lambda: reader)
    )
    try:
        await connecting.addTimeout(timeout, reactor)
    except Exception as e:
        raise ClientError(
            f"cannot connect to {endpoint}: {explain_connect_failure(e)}"
        ) from None
    answered = reactor.callLater(timeout, reader.give_up)
    raw = await reader.done
    if answered.active():
        answered.cancel()
    if reader.gave_up:
        raise ClientError(f"no answer from {endpoint} within {timeout:g} s")
    return parse_reply(raw, endpoint)


def backend_of(fields: Mapping[str, Any]) -> str:
    """
    @return: which backend answered: host, process id and worker.
    """
    worker = fields.get("worker")
    return f"{fields.get('host')} pid {fields.get('pid')}" + (
        f" worker {worker}" if worker is not None else ""
    )


def describe(replies: Sequence[Mapping[str, Any]]) -> str:
    """
    @return: one reply's fields one per line, or for several the count of
        answers per backend and the client addresses seen.
    """
    if len(replies) == 1:
        width = max(len(k) for k in replies[0])
        return "".join(
            f"{key:<{width}}  {json.dumps(value)}\n"
            for key, value in replies[0].items()
        )
    backends = Counter(backend_of(r) for r in replies)
    clients = Counter(str(r.get("client_host", r.get("client"))) for r in replies)
    lines = [f"{len(replies)} answers from {len(backends)} backend(s):"]
    lines += [f"  {count:>5}  {name}" for name, count in backends.most_common()]
    lines.append("client address as the backends saw it:")
    lines += [f"  {count:>5}  {name}" for name, count in clients.most_common()]
    return "\n".join(lines) + "\n"


async def run_whoami(
    reactor: Any,
    endpoint: str,
    count: int,
    timeout: float,
    out: IO[str],
    as_json: bool = False,
    tls: TLSSettings | None = None,
) -> int:
    """
    Ask C{count} times, one connection (or datagram) after another, and
    print the answers (see the module docstring).

    @return: the exit status, 0.
    @raise ClientError: when an answer cannot be had.
    """
    replies = [await ask_once(reactor, endpoint, timeout, tls) for _ in range(count)]
    if as_json:
        out.write(json.dumps(replies, indent=2) + "\n")
    else:
        out.write(describe(replies))
    out.flush()
    return 0
