# -*- test-case-name: tests.test_records -*-
"""
Connection records in the log: with C{--log-format json}, each record is
one event, its JSON form under the key C{record} (C{schema.json}), so
that a log shipper gets the same objects as C{/records}.

A TCP connection's record rides on its close line ("echo connection from
... closed: ..."): that one event carries the record's fields
(L{record_fields}), so a connection still logs two events, not three. A
record with no close line (a connection refused before its service took
it, a UDP peer flow, or any record while the connection lines are off) is
logged on its own by L{log_record}. The text log keeps its two lines per
connection and shows no record.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from twisted_echo.records.record import SCHEMA_VERSION, ConnectionRecord

_log = Logger(namespace="twisted_echo.records")


def record_fields(record: ConnectionRecord) -> dict[str, Any]:
    """
    @param record: a record numbered by its ring (C{id} set).
    @return: the fields that carry C{record} in a log event: C{record_id},
        C{cause}, C{record} (the record as L{ConnectionRecord.as_dict}
        makes it, C{schema.json}) and C{record_schema} (its version).
    """
    return {
        "record_id": record.id,
        "cause": record.cause,
        "record": record.as_dict(),
        "record_schema": SCHEMA_VERSION,
    }


def log_record(record: ConnectionRecord) -> None:
    """
    Log C{record} as one C{info} event: C{"{service} connection record
    {record_id}: {cause}"}, with L{record_fields}; unless it is logged
    already (C{record.logged}: its connection's close line carried it).
    """
    if record.logged:
        return
    _log.info(
        "{service} connection record {record_id}: {cause}",
        service=record.service,
        **record_fields(record),
    )
