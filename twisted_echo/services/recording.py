# -*- test-case-name: tests.test_records -*-
"""
How the stream base (L{twisted_echo.services.stream}) makes its
connection records (L{twisted_echo.records}): kept out of the base so that
the base only counts and says why it closes
(L{twisted_echo.services.stream.StreamProtocol.set_close_cause}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.python.failure import Failure

from twisted_echo.listening.address import describe_address, tls_address
from twisted_echo.records import causes
from twisted_echo.records.record import ConnectionRecord, tls_details

if TYPE_CHECKING:
    from twisted_echo.services.stream import StreamFactory, StreamProtocol


def listener_text(names: dict[Any, str], transport: Any) -> str:
    """
    @param names: the descriptions made so far, by listening port (the
        factory's cache).
    @param transport: a connection's transport, at its start (a port that
        stopped listening has no address).
    @return: the address of the listening port the connection arrived at,
        as an endpoint description (C{ssl:...} under TLS), made once per
        port.
    """
    under = getattr(transport, "transport", None)  # a TLS layer's TCP
    tcp_transport = transport if under is None else under
    port = getattr(tcp_transport, "server", None)
    text = names.get(port)
    if text is None:
        address = (port if port is not None else tcp_transport).getHost()
        if under is not None:
            address = tls_address(address)
        text = describe_address(address)
        if port is not None:
            names[port] = text
    return text


def first_bytes(kept: bytes, data: bytes, most: int) -> bytes:
    """
    @return: C{kept} and the start of C{data}, C{most} bytes in all.
    """
    wanted = most - len(kept)
    return kept + data[:wanted] if wanted > 0 else kept


def refused_record(
    factory: StreamFactory,
    transport: Any,
    listener: str,
    opened_at: float,
    cause: str,
    limit: str | None,
    bytes_in: int,
    bytes_out: int,
) -> ConnectionRecord:
    """
    @return: the record of a connection refused before the service took it
        (see L{twisted_echo.services.stream.StreamFactory.record_refused}).
    """
    return ConnectionRecord(
        factory.service_name,
        listener,
        describe_address(transport.getPeer()),
        None,
        listener,
        None,
        opened_at,
        None,
        None,
        factory.clock.seconds() - opened_at,
        bytes_in,
        bytes_out,
        1 if bytes_in else 0,
        1 if bytes_out else 0,
        None,
        cause,
        limit,
    )


def connection_record(
    protocol: StreamProtocol,
    reason: Failure | None,
    owed: bool,
    now: float | None = None,
) -> ConnectionRecord:
    """
    @param protocol: a connection of the stream base, closing (its
        transport still set).
    @param reason: what Twisted's C{connectionLost} reported.
    @param owed: whether replies were still owed to the peer.
    @param now: the time of the close, seconds since the epoch; L{None}:
        the factory's clock now.
    @return: the connection's record: its cause as set
        (C{set_close_cause}), else worked out from C{reason}
        (L{causes.cause_of_loss}); its client as the connection's log
        lines wrote it (C{client_text}, made once).
    """
    factory = protocol.factory
    cause = protocol.close_cause
    if cause is None:
        cause = causes.cause_of_loss(
            None if reason is None else reason.type,
            protocol._peer_finished,
            owed,
        )
    if now is None:
        now = factory.clock.seconds()
    opened = protocol._opened_at
    first_in = protocol._first_in
    first_out = protocol._first_out
    listener = protocol._listener
    header = protocol.proxy_header
    if header is None:
        proxy = None
        local = listener
    else:
        address = protocol.proxy_address()
        proxy = None if address is None else describe_address(address)
        destination = header.destination
        local = listener if destination is None else describe_address(destination)
    record = ConnectionRecord(
        factory.service_name,
        listener,
        protocol.client_text(),
        proxy,
        local,
        None if protocol._socket is not None else tls_details(protocol.transport),
        opened,
        None if first_in is None else first_in - opened,
        None if first_out is None else first_out - opened,
        now - opened,
        protocol.bytes_in,
        protocol.bytes_out,
        protocol.reads_in,
        protocol.writes_out,
        protocol._first_bytes,
        cause,
        protocol.close_limit,
    )
    plan = protocol._faults
    if plan is not None:
        record.faults = sorted(plan.given)
    return record
