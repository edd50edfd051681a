"""
Tests for L{twisted_echo.records.recordjson}: the one-pass JSON text of a
record gives the values C{as_dict} gives, on every kind of record.
"""

from __future__ import annotations

import json
import random
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.test_records import a_record
from twisted_echo.records import causes
from twisted_echo.records.record import SCHEMA_VERSION, ConnectionRecord
from twisted_echo.records.recordjson import fields_json, json_string
from twisted_echo.records.schema import problems, record_schema


def spliced(record: ConnectionRecord) -> dict[str, Any]:
    """
    @return: the record as the supervisor of C{--workers} answers it: its
        text behind C{schema} and C{id}, read back.
    """
    text = fields_json(record)
    document: dict[str, Any] = json.loads(
        f'{{"schema":{SCHEMA_VERSION},"id":{record.id},{text}'
    )
    return document


class FieldsJsonTests(SynchronousTestCase):
    def assert_same(self, record: ConnectionRecord) -> None:
        record.id = 41
        text = fields_json(record)
        self.assertTrue(text.isascii())
        self.assertFalse(any(ord(c) < 0x20 for c in text), text)
        self.assertEqual(spliced(record), record.as_dict())
        self.assertEqual(list(spliced(record)), list(record.as_dict()))
        self.assertEqual(problems(spliced(record), record_schema()), [])

    def test_plain_tcp(self) -> None:
        self.assert_same(a_record())

    def test_every_field_set(self) -> None:
        """
        TLS, a proxy, first bytes with quotes, backslashes, control and
        non-ASCII bytes, faults and a limit: the same values.
        """
        self.assert_same(
            a_record(
                client='unix:/tmp/a"b\\c\n\x1e\x1f\u00e9',
                proxy="tcp:10.0.0.1:443",
                tls={
                    "version": "TLSv1.3",
                    "cipher": "TLS_AES_256_GCM_SHA384",
                    "sni": 'we"ird\\',
                    "alpn": None,
                    "client_subject": "/CN=caf\u00e9",
                },
                first_bytes=b'GET / "x"\\\x00\x1e\x1f\n\xff',
                faults=["close-after", "delay"],
                cause=causes.LIMIT_REFUSAL,
                limit="max-connections",
                first_in=None,
                first_out=None,
            )
        )

    def test_udp_flow(self) -> None:
        record = a_record(service="udp", cause=causes.UDP_FLOW_IDLE)
        record.transport = "udp"
        record.dropped = {"rate": 3}
        record.last_seen = 1.5
        self.assert_same(record)
        record.dropped, record.last_seen = None, 0.0
        self.assert_same(record)

    def test_times_read_back_as_rounded(self) -> None:
        """
        Times written with C{%.6f} read back as C{round(value, 6)}, whatever
        the value.
        """
        draw = random.Random(22)
        for _ in range(2000):
            record = a_record(
                start=1.7e9 + draw.random() * 1e8,
                first_in=draw.random() * 10 ** draw.randint(-9, 3),
                first_out=draw.random(),
                duration=draw.random() * 10 ** draw.randint(-9, 5),
                id=7,
            )
            self.assertEqual(spliced(record), record.as_dict())

    def test_json_string(self) -> None:
        self.assertEqual(json_string('a"\u00e9\n'), json.dumps('a"\u00e9\n'))
