"""
Tests for L{twisted_echo.records}: the close causes, the record, its JSON
schema, the ring and its waits, the JSON log event, and the records the
stream base makes (on L{StringTransport} and a L{Clock}; the real-client
tests are in C{tests.test_records_causes}).
"""

from __future__ import annotations

import json
import sys

from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogPublisher, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.memory import PEER, connect, run_clock
from twisted_echo.log.jsontext import event_as_json
from twisted_echo.policies.limits import ConnectionLimits, Timeouts
from twisted_echo.records import causes
from twisted_echo.records.log import log_record
from twisted_echo.records.record import (
    SCHEMA_VERSION,
    ConnectionRecord,
    escape_bytes,
)
from twisted_echo.records.ring import RECORD_BYTES, RecordRing, matcher
from twisted_echo.records.schema import problems, record_schema
from twisted_echo.services.echo import Echo, EchoFactory
from twisted_echo.services.stream import Refused


def a_record(
    service: str = "echo", client: str = "tcp:192.0.2.7:40000", **fields: object
) -> ConnectionRecord:
    record = ConnectionRecord(
        service,
        "tcp:127.0.0.1:7007",
        client,
        None,
        "tcp:127.0.0.1:7007",
        None,
        1_700_000_000.25,
        0.001,
        0.002,
        0.5,
        5,
        5,
        1,
        1,
        None,
        causes.CLIENT_FIN,
    )
    for name, value in fields.items():
        setattr(record, name, value)
    return record


class CauseTests(TestCase):
    """
    L{causes.cause_of_loss}: the cause of a close no code named.
    """

    def test_clean_close(self) -> None:
        """
        A clean close after the peer's FIN is C{client_fin}; without the
        peer's FIN, the service closed (whoami's answer).
        """
        self.assertEqual(
            causes.cause_of_loss(ConnectionDone, True, False), causes.CLIENT_FIN
        )
        self.assertEqual(
            causes.cause_of_loss(ConnectionDone, False, False), causes.SERVICE_CLOSE
        )

    def test_lost(self) -> None:
        """
        A lost connection is a reset, or a client that left with replies
        unsent when some were still owed.
        """
        for kind in (ConnectionLost, ConnectionAborted, ConnectionResetError):
            self.assertEqual(
                causes.cause_of_loss(kind, False, False), causes.CLIENT_RESET
            )
            self.assertEqual(
                causes.cause_of_loss(kind, True, True), causes.CLIENT_LEFT_UNSENT
            )

    def test_errors(self) -> None:
        """
        An exception of sockecho's own is C{server_error}; OpenSSL's is
        C{tls_error}.
        """
        from OpenSSL import SSL

        self.assertEqual(
            causes.cause_of_loss(ZeroDivisionError, False, False), causes.SERVER_ERROR
        )
        self.assertEqual(
            causes.cause_of_loss(SSL.Error, False, False), causes.TLS_ERROR
        )

    def test_vocabulary_is_the_schema_enum(self) -> None:
        """
        The schema's C{cause} enum is the vocabulary, in order, without
        duplicates.
        """
        self.assertEqual(
            record_schema()["properties"]["cause"]["enum"], list(causes.CAUSES)
        )
        self.assertEqual(len(set(causes.CAUSES)), len(causes.CAUSES))


class RecordTests(TestCase):
    """
    L{ConnectionRecord} and its JSON form.
    """

    def test_escape(self) -> None:
        """
        First bytes are kept printable: control bytes, the backslash and
        non-ASCII bytes as C{\\xHH}.
        """
        self.assertEqual(
            escape_bytes(b"GET /\r\n\x1b[2J\\\xff"),
            "GET /\\x0d\\x0a\\x1b[2J\\x5c\\xff",
        )

    def test_as_dict_fits_the_schema(self) -> None:
        """
        A record's JSON form fits the schema, with and without TLS, PROXY
        and first bytes; the schema's version is the record's.
        """
        plain = a_record()
        plain.id = 3
        rich = a_record(
            proxy="tcp:10.0.0.1:5000",
            first_bytes=b"\x00hi",
            tls={
                "version": "TLSv1.3",
                "cipher": "TLS_AES_256_GCM_SHA384",
                "sni": "localhost",
                "alpn": None,
                "client_subject": "/CN=client",
            },
            cause=causes.LIMIT_REFUSAL,
            limit="max_per_peer",
        )
        rich.id = 4
        for record in (plain, rich):
            document = json.loads(json.dumps(record.as_dict()))
            self.assertEqual(problems(document), [])
        self.assertEqual(record_schema()["version"], SCHEMA_VERSION)
        self.assertEqual(rich.as_dict()["first_bytes"], "\\x00hi")

    def test_checker_finds_problems(self) -> None:
        """
        The schema checker names what does not fit: a missing field, a
        wrong type, an unknown cause, an unknown field.
        """
        document = a_record().as_dict()
        document["id"] = 1
        del document["bytes_in"]
        document["bytes_out"] = "5"
        document["cause"] = "tired"
        document["mood"] = "fine"
        self.assertEqual(
            sorted(problems(document)),
            sorted(
                [
                    "record: 'bytes_in' is missing",
                    "bytes_out: '5' is not of type integer",
                    "cause: 'tired' is not one of " + str(list(causes.CAUSES)),
                    "record: 'mood' is not a field of the schema",
                ]
            ),
        )

    def test_client_matches(self) -> None:
        """
        C{client=} takes the whole description, C{HOST:PORT} or C{HOST}.
        """
        record = a_record(client="tcp:192.0.2.7:40000")
        for given in ("tcp:192.0.2.7:40000", "192.0.2.7:40000", "192.0.2.7"):
            self.assertTrue(record.client_matches(given), given)
        self.assertFalse(record.client_matches("192.0.2.8"))
        six = a_record(client="tcp:[::1]:40000")
        self.assertTrue(six.client_matches("::1"))

    def test_size(self) -> None:
        """
        A record held costs about L{RECORD_BYTES} (what C{--records}' help
        and the ring's docstring say).
        """
        record = a_record()
        size = sys.getsizeof(record) + sum(
            sys.getsizeof(getattr(record, name))
            for name in ("service", "listener", "client", "local", "faults", "cause")
        )
        self.assertLessEqual(size, RECORD_BYTES)


class RingTests(TestCase):
    """
    L{RecordRing}: bounded, numbered, filtered, waited for.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.ring = RecordRing(3, self.clock)

    def test_bounded_and_numbered(self) -> None:
        """
        Records are numbered from 1; only the last C{capacity} are kept.
        """
        for _ in range(5):
            self.ring.add(a_record())
        self.assertEqual(len(self.ring), 3)
        self.assertEqual([r.id for r in self.ring.since(0)], [3, 4, 5])
        self.assertEqual([r.id for r in self.ring.since(3)], [4, 5])
        self.assertEqual(self.ring.since(5), [])
        self.assertEqual([r.id for r in self.ring.since(0, limit=2)], [3, 4])

    def test_zero_keeps_none(self) -> None:
        ring = RecordRing(0, self.clock)
        ring.add(a_record())
        self.assertEqual((len(ring), ring.last_id, ring.since(0)), (0, 0, []))

    def test_filters(self) -> None:
        self.ring.add(a_record("echo", "tcp:192.0.2.7:1"))
        self.ring.add(a_record("upper", "tcp:192.0.2.7:2"))
        self.ring.add(a_record("echo", "tcp:192.0.2.8:3"))
        self.assertEqual([r.id for r in self.ring.since(0, matcher("echo"))], [1, 3])
        self.assertEqual(
            [r.id for r in self.ring.since(0, matcher(client="192.0.2.7"))], [1, 2]
        )
        self.assertEqual(
            [r.id for r in self.ring.since(0, matcher("echo", "192.0.2.8"))], [3]
        )

    def test_wait_ends_at_a_matching_record(self) -> None:
        """
        A wait fires as soon as a matching record is added (not for one
        that does not match), and leaves no timer behind.
        """
        results: list[list[ConnectionRecord]] = []
        self.ring.wait(0, matcher("upper"), 10).addCallback(results.append)
        self.ring.add(a_record("echo"))
        self.assertEqual(results, [])
        self.ring.add(a_record("upper"))
        self.assertEqual([[r.id for r in found] for found in results], [[2]])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.ring.waiting(), 0)

    def test_wait_at_once(self) -> None:
        self.ring.add(a_record())
        results: list[list[ConnectionRecord]] = []
        self.ring.wait(0, matcher(), 10).addCallback(results.append)
        self.assertEqual(len(results[0]), 1)

    def test_wait_times_out_empty(self) -> None:
        results: list[list[ConnectionRecord]] = []
        self.ring.wait(0, matcher(), 10).addCallback(results.append)
        self.clock.advance(9.9)
        self.assertEqual(results, [])
        self.clock.advance(0.1)
        self.assertEqual(results, [[]])
        self.assertEqual(self.ring.waiting(), 0)

    def test_wait_cancelled(self) -> None:
        waiting = self.ring.wait(0, matcher(), 10)
        waiting.cancel()
        self.failureResultOf(waiting, CancelledError)
        self.assertEqual(self.ring.waiting(), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class LogTests(TestCase):
    """
    With C{--log-format json}, each record is one event.
    """

    def test_event(self) -> None:
        """
        The event names the service, number and cause, and holds the
        record (fitting the schema) and the schema's version in its JSON.
        """
        events: list[dict[str, object]] = []
        publisher = LogPublisher(events.append)
        globalLogPublisher.addObserver(publisher)
        self.addCleanup(globalLogPublisher.removeObserver, publisher)
        record = a_record()
        record.id = 7
        log_record(record)
        (event,) = [e for e in events if "record" in e]
        document = json.loads(event_as_json(event))
        self.assertEqual(document["record_schema"], SCHEMA_VERSION)
        self.assertEqual(problems(document["record"]), [])
        self.assertEqual(document["record"]["id"], 7)
        self.assertEqual(
            document["log_format"], "{service} connection record {record_id}: {cause}"
        )


class StreamRecordTests(TestCase):
    """
    What the stream base records, on a L{StringTransport} and a L{Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.ring = RecordRing(100, self.clock)
        self.factory = EchoFactory(self.clock, timeouts=Timeouts(idle=30, stall=10))
        self.factory.records = self.ring

    def test_client_fin(self) -> None:
        """
        An echo whose client half-closes is recorded once as C{client_fin},
        with its bytes, reads, writes and times, and fits the schema.
        """
        self.factory.record_bytes = 4
        protocol, transport = connect(self.factory, Echo)
        self.clock.advance(0.5)
        protocol.dataReceived(b"hel")
        self.clock.advance(0.25)
        protocol.dataReceived(b"lo")
        protocol.readConnectionLost()
        protocol.connectionLost(Failure(ConnectionDone()))
        (record,) = self.ring.since(0)
        document = record.as_dict()
        self.assertEqual(problems(document), [])
        self.assertEqual(
            {k: document[k] for k in ("service", "client", "local", "cause")},
            {
                "service": "echo",
                "client": "tcp:192.0.2.7:40000",
                "local": "tcp:127.0.0.1:7007",
                "cause": "client_fin",
            },
        )
        self.assertEqual(
            (record.bytes_in, record.bytes_out, record.reads_in, record.writes_out),
            (5, 5, 2, 2),
        )
        self.assertEqual((record.first_in, record.first_out), (0.5, 0.5))
        self.assertEqual(record.duration, 0.75)
        self.assertEqual(record.first_bytes, b"hell")

    def test_idle_timeout(self) -> None:
        protocol, transport = connect(self.factory, Echo)
        protocol.dataReceived(b"x")
        run_clock(self.clock, 40)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual([r.cause for r in self.ring.since(0)], ["idle_timeout"])

    def test_stall_timeout(self) -> None:
        protocol, transport = connect(self.factory, Echo)
        protocol.pauseProducing()
        run_clock(self.clock, 15)
        protocol.connectionLost(Failure(ConnectionAborted()))
        self.assertEqual([r.cause for r in self.ring.since(0)], ["stall_timeout"])

    def test_first_cause_kept(self) -> None:
        """
        The first cause set is kept: a connection closing at its idle
        timeout and then aborted by the drain is an idle timeout.
        """
        protocol, _ = connect(self.factory, Echo)
        protocol.set_close_cause(causes.IDLE_TIMEOUT)
        protocol.set_close_cause(causes.DRAIN)
        protocol.connectionLost(Failure(ConnectionAborted()))
        self.assertEqual([r.cause for r in self.ring.since(0)], ["idle_timeout"])

    def test_drain(self) -> None:
        """
        Connections closed by the drain, quiet or aborted, are C{drain}.
        """
        quiet, _ = connect(self.factory, Echo)
        busy, _ = connect(self.factory, Echo)
        self.factory.drain(5)
        for _ in range(3):
            busy.dataReceived(b"x")
            run_clock(self.clock, 0.75)
        quiet.connectionLost(Failure(ConnectionDone()))
        run_clock(self.clock, 5)
        busy.connectionLost(Failure(ConnectionAborted()))
        self.assertEqual([r.cause for r in self.ring.since(0)], ["drain", "drain"])

    def test_server_error(self) -> None:
        """
        A connection Twisted closes because the service raised is a
        C{server_error}.
        """
        protocol, _ = connect(self.factory, Echo)
        protocol.connectionLost(Failure(ZeroDivisionError()))
        self.assertEqual([r.cause for r in self.ring.since(0)], ["server_error"])

    def test_left_unsent(self) -> None:
        """
        A reset while replies wait in the transport's queue is
        C{client_left_unsent}.
        """
        protocol, transport = connect(self.factory, Echo)
        protocol.dataReceived(b"x" * 10)
        protocol.pauseProducing()
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual([r.cause for r in self.ring.since(0)], ["client_left_unsent"])

    def test_refused(self) -> None:
        """
        A connection over a limit is recorded as a C{limit_refusal} naming
        the limit.
        """
        self.factory.limits = ConnectionLimits(max_connections=0, max_per_peer=1)
        connect(self.factory, Echo)
        refused = self.factory.buildProtocol(PEER)
        assert isinstance(refused, Refused)
        transport = StringTransport(peerAddress=PEER)
        refused.makeConnection(transport)
        refused.connectionLost(Failure(ConnectionDone()))
        (record,) = self.ring.since(0)
        self.assertEqual(
            (record.cause, record.limit), ("limit_refusal", "max_per_peer")
        )
        self.assertEqual(problems(record.as_dict()), [])

    def test_no_records(self) -> None:
        """
        Without a ring (C{--records 0}) nothing is recorded, nothing fails.
        """
        self.factory.records = None
        protocol, _ = connect(self.factory, Echo)
        protocol.dataReceived(b"x")
        protocol.connectionLost(Failure(ConnectionDone()))


class CloseLineRecordTests(TestCase):
    """
    A connection's close line is made from its record (the same client,
    bytes and duration) and, with the records in the log
    (C{--log-format json}), is the one event that carries the record: the
    record is not logged again on its own.
    """

    def setUp(self) -> None:
        self.events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.clock = Clock()
        self.ring = RecordRing(100, self.clock)
        self.factory = EchoFactory(self.clock)
        self.factory.records = self.ring

    def close_one(self) -> ConnectionRecord:
        protocol, _ = connect(self.factory, Echo)
        self.clock.advance(0.25)
        protocol.dataReceived(b"hello")
        protocol.readConnectionLost()
        self.clock.advance(0.5)
        protocol.connectionLost(Failure(ConnectionDone()))
        (record,) = self.ring.since(0)
        return record

    def logged(self) -> list[dict[str, object]]:
        return [
            e
            for e in self.events
            if e.get("log_namespace") == "twisted_echo.services.echo.Echo"
            or e.get("log_namespace") == "twisted_echo.records"
        ]

    def test_text_line_from_the_record(self) -> None:
        """
        The close line says what the record says (client, bytes, duration),
        and carries no record when the records are not in the log.
        """
        record = self.close_one()
        opened, closed = self.logged()
        self.assertEqual(
            formatEvent(closed),
            f"echo connection from {record.client} closed: 5 bytes in, "
            "5 bytes out, 0.750 s",
        )
        self.assertEqual(record.duration, 0.75)
        self.assertNotIn("record", closed)

    def test_json_one_event_per_close(self) -> None:
        """
        With C{records_in_log}, the close line's event holds the record
        (fitting the schema, numbered) and the ring's log observer logs
        nothing more: two events per connection, not three.
        """
        self.factory.records_in_log = True
        self.ring.observers.append(log_record)
        record = self.close_one()
        events = self.logged()
        self.assertEqual(len(events), 2, events)
        document = json.loads(event_as_json(events[-1]))
        self.assertEqual(
            document["log_format"],
            "{service} connection from {peer} closed: {bytes_in} bytes in, "
            "{bytes_out} bytes out, {duration:.3f} s",
        )
        self.assertEqual(document["record"], record.as_dict())
        self.assertEqual(problems(document["record"]), [])
        self.assertEqual(
            (document["record_id"], document["cause"], document["record_schema"]),
            (1, "client_fin", SCHEMA_VERSION),
        )
        self.assertEqual(document["peer"], document["record"]["client"])

    def test_json_without_connection_lines(self) -> None:
        """
        With the connection lines off, the record is still logged, on its
        own.
        """
        self.factory.records_in_log = True
        self.factory.log_connections = False
        self.ring.observers.append(log_record)
        record = self.close_one()
        (event,) = self.logged()
        self.assertEqual(event["record"], record.as_dict())
        self.assertEqual(event["log_namespace"], "twisted_echo.records")
