# -*- test-case-name: tests.test_records -*-
"""
Connection records in the log: with C{--log-format json}, each record is
one event (L{log_record}), its JSON form under the key C{record}
(C{schema.json}), so that a log shipper gets the same objects as
C{/records}. The text log keeps its two lines per connection.
"""

from __future__ import annotations

from twisted.logger import Logger

from twisted_echo.records.record import SCHEMA_VERSION, ConnectionRecord

_log = Logger(namespace="twisted_echo.records")


def log_record(record: ConnectionRecord) -> None:
    """
    Log C{record} as one C{info} event: C{"{service} connection record
    {record_id}: {cause}"}, with the fields C{record} (the record as
    L{ConnectionRecord.as_dict} makes it) and C{record_schema} (its
    version).
    """
    _log.info(
        "{service} connection record {record_id}: {cause}",
        service=record.service,
        record_id=record.id,
        cause=record.cause,
        record=record.as_dict(),
        record_schema=SCHEMA_VERSION,
    )
