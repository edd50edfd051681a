# -*- test-case-name: tests.test_records -*-
"""
The connection record: one per TCP connection (issue 22), as JSON by
L{ConnectionRecord.as_dict}, following the schema in C{schema.json} beside
this module (L{SCHEMA_VERSION}; checked by L{twisted_echo.records.schema}).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

#: The version of the record's JSON form (C{schema.json}'s C{version}); a
#: field added keeps it, a field removed or changed in meaning bumps it.
#: (UDP flow records added the optional fields C{transport}, C{dropped},
#: C{last_seen} and two causes, and kept version 1: a TCP record is as it
#: was.)
SCHEMA_VERSION = 1


def escape_bytes(data: bytes) -> str:
    """
    @param data: bytes a client sent.
    @return: C{data} as printable ASCII: printable ASCII bytes but the
        backslash as they are, every other byte as C{\\xHH} (so control
        characters, terminal escapes and non-ASCII bytes never reach a log or
        a terminal raw).
    """
    return "".join(
        chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02x}" for b in data
    )


class ConnectionRecord:
    """
    What happened on one connection. Made at close by the stream base
    (L{twisted_echo.services.stream.StreamProtocol}), or where a connection
    is refused before its service takes it.

    @ivar id: its number in the server's ring (from 1, L{None} until added).
    @ivar service: the service's name (C{echo}...).
    @ivar listener: the listening address it arrived on, as an endpoint
        description (C{tcp:127.0.0.1:7007}, C{ssl:...}).
    @ivar client: the client's address (the PROXY header's source on
        C{haproxy:} listeners), as an endpoint description.
    @ivar proxy: the proxy's address when a PROXY header named the client,
        else L{None}.
    @ivar local: our address as the client addressed it (the PROXY header's
        destination, else the socket's).
    @ivar tls: C{version}, C{cipher}, C{sni}, C{alpn}, C{client_subject}
        of a TLS connection, else L{None}.
    @ivar start: when it was accepted, seconds since the epoch.
    @ivar first_in: seconds from C{start} to the first byte read, or L{None}.
    @ivar first_out: seconds from C{start} to the first byte sent, or L{None}.
    @ivar duration: seconds from C{start} to the close.
    @ivar bytes_in: bytes read from the client.
    @ivar bytes_out: bytes sent to it (handed to the transport).
    @ivar reads_in: reads (C{dataReceived} calls).
    @ivar writes_out: writes (replies sent).
    @ivar first_bytes: the first bytes read (C{--record-bytes}), or L{None}.
    @ivar faults: the names of the faults the connection had (C{--faults},
        L{twisted_echo.faults}), sorted; empty without (a shared empty
        tuple: no list made per record).
    @ivar cause: how it ended (L{twisted_echo.records.causes}).
    @ivar limit: the limit that refused it (C{limit_refusal}), else L{None}.
    @ivar transport: C{"tcp"}, or C{"udp"} for a UDP peer flow's record
        (L{twisted_echo.records.flows}); only a UDP flow's JSON has the
        field (and C{dropped}, C{last_seen}).
    @ivar dropped: a UDP flow's datagrams not answered, by reason.
    @ivar last_seen: seconds from C{start} to a UDP flow's last datagram.
    @ivar logged: whether the record is in the log already, carried by its
        connection's close line (L{twisted_echo.records.log.record_fields}),
        so that L{twisted_echo.records.log.log_record} does not log it again.
    """

    __slots__ = (
        "id",
        "service",
        "listener",
        "client",
        "proxy",
        "local",
        "tls",
        "start",
        "first_in",
        "first_out",
        "duration",
        "bytes_in",
        "bytes_out",
        "reads_in",
        "writes_out",
        "first_bytes",
        "faults",
        "cause",
        "limit",
        "transport",
        "dropped",
        "last_seen",
        "logged",
    )

    def __init__(
        self,
        service: str,
        listener: str,
        client: str,
        proxy: str | None,
        local: str,
        tls: dict[str, str | None] | None,
        start: float,
        first_in: float | None,
        first_out: float | None,
        duration: float,
        bytes_in: int,
        bytes_out: int,
        reads_in: int,
        writes_out: int,
        first_bytes: bytes | None,
        cause: str,
        limit: str | None = None,
    ) -> None:
        self.id: int | None = None
        self.service = service
        self.listener = listener
        self.client = client
        self.proxy = proxy
        self.local = local
        self.tls = tls
        self.start = start
        self.first_in = first_in
        self.first_out = first_out
        self.duration = duration
        self.bytes_in = bytes_in
        self.bytes_out = bytes_out
        self.reads_in = reads_in
        self.writes_out = writes_out
        self.first_bytes = first_bytes
        self.faults: Sequence[str] = ()
        self.cause = cause
        self.limit = limit
        self.transport = "tcp"
        self.dropped: dict[str, int] | None = None
        self.last_seen: float | None = None
        self.logged = False

    def client_matches(self, client: str) -> bool:
        """
        @param client: an address as C{/records?client=} takes it: the
            whole description (C{tcp:127.0.0.1:5555}), C{HOST:PORT} or
            C{HOST}.
        @return: whether this record's client is that address.
        """
        described = self.client
        if client == described:
            return True
        host_port = described.split(":", 1)[-1]
        if client == host_port:
            return True
        host = host_port.rsplit(":", 1)[0]
        return client == host or client == host.strip("[]")

    def as_dict(self) -> dict[str, Any]:
        """
        @return: the record as JSON holds it (C{schema.json}): times in
            seconds rounded to the microsecond, C{first_bytes} escaped
            (L{escape_bytes}).
        """

        def seconds(value: float | None) -> float | None:
            return None if value is None else round(value, 6)

        first = self.first_bytes
        made: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "id": self.id,
            "service": self.service,
            "listener": self.listener,
            "client": self.client,
            "proxy": self.proxy,
            "local": self.local,
            "tls": self.tls,
            "start": round(self.start, 6),
            "first_in": seconds(self.first_in),
            "first_out": seconds(self.first_out),
            "duration": round(self.duration, 6),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "reads_in": self.reads_in,
            "writes_out": self.writes_out,
            "first_bytes": None if first is None else escape_bytes(first),
            "faults": list(self.faults),
            "cause": self.cause,
            "limit": self.limit,
        }
        if self.transport != "tcp":
            made["transport"] = self.transport
            made["dropped"] = dict(self.dropped or {})
            made["last_seen"] = seconds(self.last_seen)
        return made

    def as_json(self) -> bytes:
        """
        @return: L{as_dict} as JSON text (UTF-8, ASCII only).
        """
        return json.dumps(self.as_dict()).encode("utf-8")

    def __repr__(self) -> str:
        return (
            f"<record {self.id} {self.service} {self.client} {self.cause}"
            f"{'' if self.limit is None else ' ' + self.limit}: "
            f"{self.bytes_in} in, {self.bytes_out} out>"
        )


def tls_details(transport: object) -> dict[str, str | None] | None:
    """
    @param transport: a connection's transport (sockecho's TLS layer over
        TCP, or anything else).
    @return: the record's C{tls} field: C{version} (C{"TLSv1.3"}),
        C{cipher}, C{sni} (the server name the client asked for), C{alpn}
        (the protocol agreed, RFC 7301) and C{client_subject} (the client
        certificate's subject, RFC 4514 order reversed as OpenSSL prints
        it: C{"/CN=client"}), each L{None} when absent; L{None} when the
        transport is not TLS.
    """
    get_handle = getattr(transport, "getHandle", None)
    if get_handle is None:
        return None
    from OpenSSL import SSL

    handle = get_handle()
    if not isinstance(handle, SSL.Connection):
        return None
    name = handle.get_servername()
    alpn = handle.get_alpn_proto_negotiated()
    certificate = handle.get_peer_certificate()
    subject = None
    if certificate is not None:
        subject = "".join(
            "/{}={}".format(
                key.decode("ascii", "replace"), value.decode("utf-8", "replace")
            )
            for key, value in certificate.get_subject().get_components()
        )
    return {
        "version": handle.get_protocol_version_name() or None,
        "cipher": handle.get_cipher_name(),
        "sni": name.decode("ascii", "replace") if name else None,
        "alpn": alpn.decode("ascii", "replace") if alpn else None,
        "client_subject": subject,
    }
