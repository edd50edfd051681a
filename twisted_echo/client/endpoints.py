# -*- test-case-name: tests.test_client_endpoints -*-
"""
Where the client connects: Twisted client endpoint strings for streams
(C{tcp:HOST:PORT}, C{tcp6:}, C{unix:PATH}, anything L{clientFromString}
takes), C{ssl:HOST:PORT} with sockecho's own TLS client
(L{twisted_echo.client.tls}: certificates verified, half-close) and
C{udp:HOST:PORT} for datagrams, which Twisted has no client endpoint for.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
from dataclasses import dataclass

from twisted.internet import defer, error
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IReactorCore, IStreamClientEndpoint
from twisted.python.failure import Failure

from twisted_echo.client.errors import ClientUsageError
from twisted_echo.client.tls import (
    TLSClientEndpoint,
    TLSSettings,
    is_tls_endpoint,
    parse_tls_endpoint,
    split_endpoint_fields,
)

_UNESCAPED_COLON = re.compile(r"(?<!\\):")


class EndpointError(ClientUsageError, ValueError):
    """
    An endpoint string the user gave cannot be used; C{str()} is one line
    naming it and why.
    """


@dataclass(frozen=True)
class DatagramTarget:
    """
    A UDP peer as the user named it.

    @ivar host: a host name or an IPv4 or IPv6 address literal.
    @ivar port: the UDP port, 1 to 65535.
    """

    host: str
    port: int

    def __str__(self) -> str:
        host = self.host.replace(":", "\\:")
        return f"udp:{host}:{self.port}"


def is_datagram(description: str) -> bool:
    """
    @param description: an endpoint string.
    @return: whether it names a UDP peer (C{udp:...}).
    """
    return description.strip().lower().startswith("udp:")


def parse_datagram_endpoint(description: str) -> DatagramTarget:
    """
    Parse C{udp:HOST:PORT}. HOST may be an IPv6 literal with its colons
    escaped (C{udp:\\:\\:1:7}) or in brackets (C{udp:[::1]:7}); the
    keyword form C{udp:host=H:port=P} is accepted too.

    @param description: the endpoint string.
    @return: the peer it names.
    @raise EndpointError: when it is not of that form.
    """
    kind, _, rest = description.strip().partition(":")
    if kind.lower() != "udp":
        raise EndpointError(f"bad endpoint {description!r}: not a udp: endpoint")
    fields: dict[str, str] = {}
    positional: list[str] = []
    if rest.startswith("["):
        host, bracket, after = rest[1:].partition("]")
        if not bracket or not after.startswith(":"):
            raise EndpointError(f"bad endpoint {description!r}: unclosed '['")
        positional.append(host)
        rest = after[1:]
    for part in _UNESCAPED_COLON.split(rest) if rest else []:
        part = part.replace("\\:", ":")
        key, eq, value = part.partition("=")
        if eq and key in ("host", "port"):
            fields[key] = value
        else:
            positional.append(part)
    for key, value in zip(("host", "port"), positional, strict=False):
        fields.setdefault(key, value)
    if len(positional) > 2 or "host" not in fields or "port" not in fields:
        raise EndpointError(f"bad endpoint {description!r}: expected udp:HOST:PORT")
    host, port_text = fields["host"], fields["port"]
    if not host:
        raise EndpointError(f"bad endpoint {description!r}: empty host")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise EndpointError(
            f"bad endpoint {description!r}: port {port_text!r} is not 1-65535"
        )
    return DatagramTarget(host, port)


def stream_endpoint(
    reactor: object, description: str, tls: TLSSettings | None = None
) -> IStreamClientEndpoint:
    """
    Build a stream client endpoint: L{TLSClientEndpoint} for C{ssl:} (with
    sockecho's TLS layer, certificate verification and half-close), else
    L{clientFromString}'s.

    @param reactor: the reactor to connect with.
    @param description: e.g. C{tcp:127.0.0.1:7007}, C{unix:/run/s.sock},
        C{ssl:localhost:7207}.
    @param tls: how an C{ssl:} endpoint checks the server (default: against
        the system's trust store).
    @return: the endpoint (nothing is connected yet).
    @raise EndpointError: when the string is not a client endpoint, or names
        C{udp:} where a stream is needed, or the TLS settings cannot be used.
    """
    if is_datagram(description):
        raise EndpointError(
            f"bad endpoint {description!r}: udp is not a stream endpoint here"
        )
    if is_tls_endpoint(description):
        try:
            target = parse_tls_endpoint(description)
            return TLSClientEndpoint(reactor, target, tls or TLSSettings())
        except ValueError as e:
            raise EndpointError(f"bad endpoint {description!r}: {e}") from None
    try:
        endpoint: IStreamClientEndpoint = clientFromString(reactor, description)
    except Exception as e:
        reason = str(e) or type(e).__name__
        raise EndpointError(f"bad endpoint {description!r}: {reason}") from None
    return endpoint


def resolve_datagram_target(
    reactor: IReactorCore, target: DatagramTarget
) -> Deferred[tuple[str, int]]:
    """
    Find the address to send datagrams to.

    @param reactor: used for name resolution (IPv4 only for names).
    @param target: the peer.
    @return: a L{Deferred} firing with C{(address literal, address family)},
        the family being C{socket.AF_INET} or C{socket.AF_INET6}; it fails
        with L{EndpointError} when the name does not resolve.
    """
    try:
        literal = ipaddress.ip_address(target.host)
    except ValueError:
        pass
    else:
        family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
        return succeed((str(literal), family))

    def failed(failure: Failure) -> tuple[str, int]:
        raise EndpointError(
            f"cannot resolve {target.host!r} for {target}: "
            f"{explain_connect_failure(failure.value or Exception())}"
        )

    resolving: Deferred[str] = reactor.resolve(target.host)
    return resolving.addCallbacks(lambda ip: (ip, socket.AF_INET), failed)


def explain_connect_failure(reason: BaseException) -> str:
    """
    Say in words why a connection failed or ended badly.

    @param reason: the exception (e.g. L{error.ConnectionRefusedError}).
    @return: e.g. C{"connection refused"}, C{"timed out"}.
    """
    if isinstance(reason, error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, error.TimeoutError | defer.TimeoutError | TimeoutError):
        return "timed out"
    if isinstance(reason, error.DNSLookupError):
        return "host name not found"
    if isinstance(reason, error.NoRouteError):
        return "no route to host"
    if isinstance(reason, error.ConnectionDone):
        return "connection closed"
    if isinstance(reason, error.ConnectionLost):
        return "connection lost (reset by peer)"
    code = getattr(reason, "osError", None) or getattr(reason, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return os.strerror(code).lower()
    text = str(reason).strip().rstrip(".")
    return text.splitlines()[0] if text else type(reason).__name__


@dataclass(frozen=True)
class StreamTarget:
    """
    Where to connect, from an endpoint string.

    @ivar kind: C{tcp}, C{tcp6}, C{unix} or C{ssl}.
    @ivar host: host name or address literal (not for C{unix}).
    @ivar port: TCP port (0 for C{unix}).
    @ivar path: the socket's path for C{unix}.
    @ivar server_name: C{ssl}: the name checked and sent as SNI.
    """

    kind: str
    host: str = ""
    port: int = 0
    path: str = ""
    server_name: str | None = None

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        return f"{self.kind}:{self.host.replace(':', chr(92) + ':')}:{self.port}"


def parse_stream_target(description: str) -> StreamTarget:
    """
    Parse C{tcp:HOST:PORT}, C{tcp6:HOST:PORT} (keyword forms C{host=},
    C{port=}; C{timeout=} and C{bindAddress=} are not taken: see
    C{--connect-timeout}), C{unix:PATH} (or C{unix:path=PATH}) or
    C{ssl:HOST:PORT[:hostname=NAME]}. An IPv6 literal has its colons
    escaped (C{tcp6:\\:\\:1:7}) or is bracketed (C{tcp6:[::1]:7}).

    @return: the target.
    @raise ClientUsageError: one line saying what is wrong.
    """
    text = description.strip()
    kind, _, rest = text.partition(":")
    kind = kind.lower()
    if is_tls_endpoint(text):
        try:
            tls = parse_tls_endpoint(text)
        except ValueError as e:
            raise EndpointError(f"bad endpoint {description!r}: {e}") from None
        return StreamTarget("ssl", tls.host, tls.port, server_name=tls.server_name)
    if kind == "unix":
        path = rest[5:] if rest.startswith("path=") else rest
        if not path or ":" in path.replace("\\:", ""):
            raise EndpointError(f"bad endpoint {description!r}: expected unix:PATH")
        return StreamTarget("unix", path=path.replace("\\:", ":"))
    if kind not in ("tcp", "tcp6"):
        raise EndpointError(
            f"bad endpoint {description!r}: faults takes tcp:HOST:PORT, "
            "tcp6:HOST:PORT, unix:PATH or ssl:HOST:PORT"
        )
    try:
        positional, parts = split_endpoint_fields(rest)
    except ValueError as e:
        raise EndpointError(f"bad endpoint {description!r}: {e}") from None
    fields: dict[str, str] = {}
    for part in parts:
        key, eq, value = part.partition("=")
        if eq and key in ("host", "port"):
            fields[key] = value
        elif eq:
            raise EndpointError(
                f"bad endpoint {description!r}: faults takes no {key}= "
                "(see --connect-timeout)"
            )
        else:
            positional.append(part)
    for key, value in zip(("host", "port"), positional, strict=False):
        fields.setdefault(key, value)
    if len(positional) > 2 or "host" not in fields or "port" not in fields:
        raise EndpointError(f"bad endpoint {description!r}: expected {kind}:HOST:PORT")
    try:
        port = int(fields["port"])
    except ValueError:
        port = -1
    if not fields["host"] or not 0 < port < 65536:
        raise EndpointError(
            f"bad endpoint {description!r}: expected {kind}:HOST:PORT "
            "with a port 1-65535"
        )
    return StreamTarget(kind, fields["host"], port)
