# -*- test-case-name: tests.test_proxyheader -*-
"""
The PROXY protocol header (HAProxy's C{proxy-protocol.txt}, versions 1 and
2), read by sockecho's own protocol layer on listeners given as
C{haproxy:ENDPOINT} (e.g. C{haproxy:tcp:7007:interface=127.0.0.1}).

Over 500 lines: a parser for each of the two header versions (v1's text
line and v2's binary header with its TLV list, each field checked as
C{proxy-protocol.txt} says) and the protocol that reads one and hands the
connection on.

Twisted's C{haproxy:} endpoint cannot be used as it is: it wraps each
protocol in a C{ProtocolWrapper}, which hides C{IHalfCloseableProtocol} (the
tail of a half-closed echo is lost) and runs C{connectionMade} (the welcome
banner) before the header is read. Here the listener only marks the
connections it accepts (L{ProxyHeaderEndpoint}, L{ProxyHeaderFactory});
the service factory builds its protocol and gives it to a
L{ProxyHeaderProtocol}, which reads the header with L{HeaderReader}, admits
the client it names, then hands the transport over to the service's protocol
(C{transport.protocol}, where Twisted's TCP and UNIX transports look for the
protocol they deliver to): from then on the transport talks to the service
directly, half-close (C{IHalfCloseableProtocol}) and flow control included.

Twisted's parsers (C{twisted.protocols.haproxy._v1parser} and
C{_v2parser}) are private and accept what section 2.1 rejects (ports over
65535, leading zeroes, addresses that do not parse; a bad port escapes as a
C{ValueError}) and give IPv6 hosts in a non-canonical form, which would make
one client two hosts for C{--max-per-peer}; L{HeaderReader} is a strict
reading of sections 2.1 and 2.2 with C{ipaddress}.

A version 1 C{TCP6} address may carry a zone (C{fe80::1%eth0}, RFC 4007
section 11; HAProxy itself never sends one). C{ipaddress} takes any
characters after the C{%}, so the zone is checked here against L{ZONE}
(RFC 6874's unreserved characters, at most Linux's C{IFNAMSIZ} less its
NUL) and kept apart from the host, in the address's C{scopeID}: the host
(what C{--max-per-peer} counts) is the bare address, so C{fe80::1%0} and
C{fe80::1%1} are one client. Version 2 carries raw 16-byte addresses, with
no zone.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from typing import Protocol as Interface

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_echo.listening.address import describe_address, peer_host
from twisted_echo.policies.counters import ServiceCounters
from twisted_echo.policies.limits import ConnectionLimits
from twisted_echo.records import causes

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IListeningPort

#: The endpoint description prefix of a listener whose clients send a PROXY
#: header (the prefix Twisted's own C{haproxy:} endpoint uses).
PREFIX = "haproxy:"
#: Seconds a client has to send its whole header (section 2: "a few seconds
#: (at least 3 seconds to cover a TCP retransmit)").
HEADER_TIMEOUT = 5.0
#: Version 1 starts with C{"PROXY "} (section 2.1).
V1_SIGNATURE = b"PROXY "
#: The longest version 1 line, CRLF included (section 2.1: 107 bytes).
V1_MAX_LENGTH = 107
#: Version 2's 12-byte signature (section 2.2).
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: Version 2's fixed part: signature, version and command, family and
#: protocol, address length (section 2.2).
V2_FIXED_LENGTH = 16
#: The longest version 2 header accepted: the fixed part, the longest
#: addresses (UNIX, 216 bytes) and room for TLVs (section 2.2.x).
V2_MAX_LENGTH = 4096
#: Why a header is refused, as counted in C{refused[proxy_REASON]}.
REASONS = ("missing", "malformed", "oversized", "incomplete", "timeout")

_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")
#: A version 1 IPv6 zone accepted: RFC 3986's unreserved characters (those
#: RFC 6874 allows unencoded in a ZoneID), 1 to 15 of them (Linux's
#: C{IFNAMSIZ}, 16, less the NUL; a numeric zone is an interface index).
ZONE = re.compile(rb"[A-Za-z0-9._~-]{1,15}")


class HeaderError(Exception):
    """
    The bytes read are not a valid PROXY header.

    @ivar reason: C{"missing"} (neither signature), C{"malformed"} or
        C{"oversized"}.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ProxyHeader:
    """
    A PROXY header read.

    @ivar version: 1 or 2.
    @ivar command: C{"PROXY"}, or C{"LOCAL"} (version 2 only: a health check
        from the proxy itself, section 2.2).
    @ivar source: the client's address; L{None} when the real connection's
        peer is the client (C{LOCAL}, version 1 C{UNKNOWN}, version 2
        C{UNSPEC}).
    @ivar destination: the address the client connected to, or L{None}.
    @ivar length: the header's length in bytes.
    """

    version: int
    command: str
    source: IAddress | None
    destination: IAddress | None
    length: int


def is_proxy_description(description: str) -> bool:
    """
    @return: whether a listener description asks for a PROXY header.
    """
    return description.startswith(PREFIX)


def split_proxy_description(description: str) -> tuple[bool, str]:
    """
    @return: whether C{description} asks for a PROXY header, and the
        endpoint description without the C{haproxy:} prefix.
    """
    if is_proxy_description(description):
        return True, description[len(PREFIX) :]
    return False, description


class HeaderReader:
    """
    Reads one PROXY header, version 1 or 2, fed as it arrives.

    @ivar timer: the header timeout's delayed call, kept here by the
        protocol that reads.
    @ivar finished: whether the header was read, or found invalid.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self.timer: Any = None
        self.finished = False

    @property
    def buffered(self) -> int:
        """
        @return: bytes read and held so far.
        """
        return len(self._buffer)

    def feed(self, data: bytes) -> tuple[ProxyHeader, bytes] | None:
        """
        @param data: the next bytes read from the connection.
        @return: L{None} while the header is not complete; then the header
            and the bytes after it.
        @raise HeaderError: when the bytes cannot start, or are not, a valid
            header (section 2: "MUST NOT try to guess"; section 2.1: "Any
            sequence which does not exactly match the protocol must be
            discarded").
        """
        buffer = self._buffer + data
        self._buffer = buffer
        size = len(buffer)
        if buffer[:12] == V2_SIGNATURE[:size]:
            return self._feed_v2(buffer)
        if buffer[:6] == V1_SIGNATURE[:size]:
            return self._feed_v1(buffer)
        raise HeaderError("missing")

    def _feed_v1(self, buffer: bytes) -> tuple[ProxyHeader, bytes] | None:
        end = buffer.find(b"\r\n", 0, V1_MAX_LENGTH)
        if end < 0:
            if len(buffer) >= V1_MAX_LENGTH:
                raise HeaderError("oversized")
            if b"\n" in buffer or b"\r" in buffer[:-1]:
                # Section 2.1: "must not tolerate a single CR or LF".
                raise HeaderError("malformed")
            return None
        self._buffer = b""
        return parse_v1(buffer[:end], end + 2), buffer[end + 2 :]

    def _feed_v2(self, buffer: bytes) -> tuple[ProxyHeader, bytes] | None:
        if len(buffer) < V2_FIXED_LENGTH:
            return None
        version, command = buffer[12] >> 4, buffer[12] & 0x0F
        if version != 2 or command > 1:
            raise HeaderError("malformed")
        (address_length,) = struct.unpack("!H", buffer[14:16])
        length = V2_FIXED_LENGTH + address_length
        if length > V2_MAX_LENGTH:
            raise HeaderError("oversized")
        if len(buffer) < length:
            return None
        self._buffer = b""
        return parse_v2(buffer[:length]), buffer[length:]


def _ip(text: bytes, kind: type[Any]) -> str:
    try:
        return str(kind(text.decode("ascii")))
    except ValueError:
        raise HeaderError("malformed") from None


def _ip6(text: bytes) -> tuple[str, str | int]:
    """
    @param text: a version 1 C{TCP6} address, with or without a zone.
    @return: the canonical address without its zone, and the zone (or 0,
        as L{IPv6Address} has it for none).
    @raise HeaderError: C{"malformed"} for an address C{ipaddress} rejects or
        a zone L{ZONE} does not match.
    """
    host, percent, zone = text.partition(b"%")
    if percent and not ZONE.fullmatch(zone):
        raise HeaderError("malformed")
    return _ip(host, ipaddress.IPv6Address), zone.decode("ascii") if percent else 0


def _port(text: bytes) -> int:
    if not _PORT.fullmatch(text) or int(text) > 65535:
        raise HeaderError("malformed")
    return int(text)


def parse_v1(line: bytes, length: int) -> ProxyHeader:
    """
    Read a version 1 line (section 2.1), without its CRLF.

    @param line: e.g. C{b"PROXY TCP4 192.0.2.1 192.0.2.2 56324 7007"}.
    @param length: the header's length, CRLF included.
    @raise HeaderError: C{"malformed"} unless it matches section 2.1
        exactly (single spaces, canonical addresses of the family given,
        ports without leading zeroes), or for an IPv6 zone L{ZONE} does not
        match.
    """
    fields = line.split(b" ")
    if len(fields) >= 2 and fields[:2] == [b"PROXY", b"UNKNOWN"]:
        # Section 2.1: "UNKNOWN": use the real connection's addresses;
        # whatever follows up to the CRLF is ignored.
        return ProxyHeader(1, "PROXY", None, None, length)
    if len(fields) != 6 or fields[0] != b"PROXY":
        raise HeaderError("malformed")
    _, protocol, source, destination, source_port, destination_port = fields
    client: IAddress
    server: IAddress
    if protocol == b"TCP4":
        kind = ipaddress.IPv4Address
        client = IPv4Address("TCP", _ip(source, kind), _port(source_port))
        server = IPv4Address("TCP", _ip(destination, kind), _port(destination_port))
    elif protocol == b"TCP6":
        host, zone = _ip6(source)
        client = IPv6Address("TCP", host, _port(source_port), 0, zone)
        host, zone = _ip6(destination)
        server = IPv6Address("TCP", host, _port(destination_port), 0, zone)
    else:
        raise HeaderError("malformed")
    return ProxyHeader(1, "PROXY", client, server, length)


def parse_v2(header: bytes) -> ProxyHeader:
    """
    Read a whole version 2 header (section 2.2); TLVs (section 2.2.x) are
    skipped.

    @raise HeaderError: C{"malformed"} for a version other than 2, an
        unassigned command, family or protocol, or addresses shorter than
        their family needs.
    """
    length = len(header)
    command = header[12] & 0x0F
    family, protocol = header[13] >> 4, header[13] & 0x0F
    if command > 1 or family > 3 or protocol > 2:
        raise HeaderError("malformed")
    if command == 0:
        # LOCAL: "use the real connection endpoints and discard the protocol
        # block including the family".
        return ProxyHeader(2, "LOCAL", None, None, length)
    if family == 0 or protocol == 0:
        # UNSPEC: "use the real endpoint addresses"; address ignored.
        return ProxyHeader(2, "PROXY", None, None, length)
    block = header[V2_FIXED_LENGTH:]
    kind: Literal["TCP", "UDP"] = "TCP" if protocol == 1 else "UDP"
    source: IAddress
    destination: IAddress
    if family == 1:
        if len(block) < 12:
            raise HeaderError("malformed")
        src, dst, sport, dport = struct.unpack("!4s4sHH", block[:12])
        source = IPv4Address(kind, str(ipaddress.IPv4Address(src)), sport)
        destination = IPv4Address(kind, str(ipaddress.IPv4Address(dst)), dport)
    elif family == 2:
        if len(block) < 36:
            raise HeaderError("malformed")
        src, dst, sport, dport = struct.unpack("!16s16sHH", block[:36])
        source = IPv6Address(kind, str(ipaddress.IPv6Address(src)), sport)
        destination = IPv6Address(kind, str(ipaddress.IPv6Address(dst)), dport)
    else:
        if len(block) < 216:
            raise HeaderError("malformed")
        source = UNIXAddress(block[:108].split(b"\x00", 1)[0])
        destination = UNIXAddress(block[108:216].split(b"\x00", 1)[0])
    return ProxyHeader(2, "PROXY", source, destination, length)


class ServiceFactory(Interface):
    """
    What L{ProxyHeaderProtocol} needs of the service's factory
    (L{twisted_echo.services.stream.StreamFactory} has it).
    """

    @property
    def service_name(self) -> str: ...

    clock: IReactorTime
    counters: ServiceCounters
    limits: ConnectionLimits

    def refusal_message(self, refusal: str) -> bytes: ...

    def listener_text(self, transport: Any) -> str: ...

    def record_refused(
        self,
        transport: Any,
        listener: str,
        opened_at: float,
        cause: str,
        limit: str | None = None,
        bytes_in: int = 0,
        bytes_out: int = 0,
    ) -> None: ...


class ServiceProtocol(Interface):
    """
    What L{ProxyHeaderProtocol} needs of the service's protocol
    (L{twisted_echo.services.stream.StreamProtocol} has it): where to put
    the header read and the admitted client's host, whether it closed as
    it started (whoami answers and closes: what followed the header is then
    not passed on), and the protocol's own connection methods.
    """

    proxy_header: ProxyHeader | None
    peer_host: str | None

    @property
    def closing(self) -> bool: ...

    def makeConnection(self, transport: Any) -> None: ...

    def dataReceived(self, data: bytes) -> None: ...

    def logPrefix(self) -> str: ...


@implementer(IHalfCloseableProtocol)
class ProxyHeaderProtocol(Protocol):
    """
    The protocol of a C{haproxy:} listener's connection until its PROXY
    header is read: reads the header (at most L{HEADER_TIMEOUT} seconds),
    admits the client it names against the per-peer limit
    (L{ConnectionLimits.admit_peer}; the connection was admitted by
    C{max_connections} only, its peer being the proxy), then hands the
    transport to the service's protocol: sets the transport's C{protocol}
    to it, calls its C{makeConnection} (its C{connectionMade}: the
    accounting, the log line, a banner) and passes it the bytes that
    followed the header. Nothing wraps the service's protocol (a
    C{ProtocolWrapper} hides half-close). Section 2: the receiver "MUST
    NOT start processing the connection before it receives a complete and
    valid PROXY protocol header".

    A missing, malformed, oversized, incomplete (the peer half-closed or
    left) or late header is counted as C{refused[proxy_REASON]}
    (L{REASONS}), logged in one line and the connection closed without a
    reply (section 2.1: "Any sequence which does not exactly match the
    protocol must be discarded and cause the receiver to abort the
    connection"); a client over the per-peer limit is counted as
    C{refused[max_per_peer]} and sent the service's refusal line, if any.

    @ivar service: the service's protocol, built by its factory.
    @ivar finished: whether the header was read, or found invalid.
    """

    def __init__(self, service: ServiceProtocol, factory: ServiceFactory) -> None:
        self.service = service
        self.factory = factory
        self.reader = HeaderReader()
        self.finished = False
        self.timer: IDelayedCall | None = None
        # For the record of a connection the service never takes: when it
        # was accepted, bytes read and sent, why it was refused.
        self.opened_at = 0.0
        self.listener = ""
        self.bytes_in = 0
        self.bytes_out = 0
        self.refusal: tuple[str, str | None] | None = None

    def logPrefix(self) -> str:
        """
        @return: the service's protocol's (the transport's log prefix, made
            once by Twisted's C{tcp.Server}, names the service as before).
        """
        prefix: str = self.service.logPrefix()
        return prefix

    def connectionMade(self) -> None:
        """
        Start the header timeout.
        """
        factory = self.factory
        self.opened_at = factory.clock.seconds()
        if getattr(factory, "records", None) is not None:
            self.listener = factory.listener_text(self.transport)
        self.timer = self.factory.clock.callLater(HEADER_TIMEOUT, self._timed_out)

    def _log(self) -> Logger:
        # The service's namespace, as when the service read the header.
        cls = type(self.service)
        return Logger(namespace=f"{cls.__module__}.{cls.__name__}", source=self.service)

    def dataReceived(self, data: bytes) -> None:
        """
        Read C{data} (bytes) into the header; once it is whole, admit the
        client and hand the connection over to the service.
        """
        if self.finished:
            return
        self.bytes_in += len(data)
        try:
            result = self.reader.feed(data)
        except HeaderError as e:
            self._failed(e.reason)
            return
        if result is None:
            return
        header, rest = result
        self._finish()
        service = self.service
        transport = self.transport
        assert transport is not None
        service.proxy_header = header
        source = header.source if header.source is not None else transport.getPeer()
        host = peer_host(source)
        factory = self.factory
        if host is not None:
            refusal = factory.limits.admit_peer(host)
            if refusal is not None:
                factory.counters.refused[refusal] += 1
                self._log().info(
                    "{service} connection from {peer}: too many connections "
                    "from its host; closing",
                    service=factory.service_name,
                    peer=describe_address(source),
                )
                message = factory.refusal_message(refusal)
                self.refusal = (causes.LIMIT_REFUSAL, refusal)
                self.bytes_out = len(message)
                if message:
                    transport.write(message)
                transport.loseConnection()
                return
            service.peer_host = host
        # The hand-off: Twisted's tcp.Connection and unix.Server deliver to
        # (and report the loss to) whatever their protocol attribute holds.
        transport.protocol = service  # type: ignore[attr-defined]
        service.makeConnection(transport)
        if rest and not service.closing:
            service.dataReceived(rest)

    def _finish(self) -> None:
        self.finished = True
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _failed(self, reason: str) -> None:
        """
        No valid PROXY header (C{reason}: see L{REASONS}): count it as
        C{refused[proxy_REASON]}, log it and close without a reply.
        """
        self._finish()
        factory = self.factory
        factory.counters.refused["proxy_" + reason] += 1
        if reason == "timeout":
            self.refusal = (causes.PROXY_HEADER_TIMEOUT, None)
        else:
            self.refusal = (causes.PROXY_HEADER_INVALID, None)
        transport = self.transport
        assert transport is not None
        self._log().info(
            "{service} connection from {peer}: no valid PROXY header "
            "({reason}); closing",
            service=factory.service_name,
            peer=describe_address(transport.getPeer()),
            reason=reason,
        )
        transport.loseConnection()

    def _timed_out(self) -> None:
        self.timer = None
        if not self.finished:
            self._failed("timeout")

    def readConnectionLost(self) -> None:
        """
        The peer stopped sending before the header was whole: it is
        incomplete; close.
        """
        self._closed()

    def writeConnectionLost(self) -> None:
        """
        Our sending side was closed: close.
        """
        self._closed()

    def _closed(self) -> None:
        if self.finished:
            self.transport.loseConnection()  # type: ignore[union-attr]
        else:
            self._failed("incomplete")

    def connection_failed_to_start(self) -> None:
        """
        The transport could not be built
        (L{twisted_echo._twisted.transport.Server}): give back the
        connection's C{max_connections} place.
        """
        self.factory.limits.release(None)

    def connectionLost(self, reason: Failure | None = None) -> None:
        """
        Lost before the service took the connection: count a header not
        finished as C{refused[proxy_incomplete]} and give back the
        connection's C{max_connections} place.
        """
        if not self.finished:
            self.factory.counters.refused["proxy_incomplete"] += 1
            self.refusal = (causes.PROXY_HEADER_INVALID, None)
        self._finish()
        self.factory.limits.release(None)
        if self.refusal is not None and self.transport is not None:
            record = getattr(self.factory, "record_refused", None)
            if record is not None:
                cause, limit = self.refusal
                record(
                    self.transport,
                    self.listener,
                    self.opened_at,
                    cause,
                    limit,
                    self.bytes_in,
                    self.bytes_out,
                )


class ProxyHeaderFactory(Factory):
    """
    The factory a C{haproxy:} listener listens with: it asks the service
    factory for a L{ProxyHeaderProtocol} in front of its own protocol (not
    a C{ProtocolWrapper}: once the header is read the transport talks to
    the service's protocol).
    """

    noisy = False

    def __init__(self, factory: Any) -> None:
        """
        @param factory: the service's factory, whose C{buildProtocol} takes
            C{proxy_header=True} (L{twisted_echo.services.stream.StreamFactory}).
        """
        self.factory = factory

    def doStart(self) -> None:
        self.factory.doStart()

    def doStop(self) -> None:
        self.factory.doStop()

    def logPrefix(self) -> str:
        """
        @return: the service factory's, for Twisted's port log lines.
        """
        prefix: str = self.factory.logPrefix()
        return prefix

    def buildProtocol(self, addr: Any) -> Protocol | None:
        protocol: Protocol | None = self.factory.buildProtocol(addr, proxy_header=True)
        return protocol


@implementer(IStreamServerEndpoint)
class ProxyHeaderEndpoint:
    """
    A stream endpoint whose clients send a PROXY header first.
    """

    def __init__(self, endpoint: IStreamServerEndpoint) -> None:
        self.endpoint = endpoint

    def listen(self, factory: Any) -> Deferred[IListeningPort]:
        """
        Listen with C{factory}'s protocols, each reading a header first.
        """
        return self.endpoint.listen(ProxyHeaderFactory(factory))
