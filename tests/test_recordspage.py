"""
Tests for L{twisted_echo.operations.recordspage}: C{/records} on the
metrics listener, its filters, its errors and its long-poll (on a
L{DummyRequest} and a L{Clock}; over HTTP in C{tests.test_records_causes}).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from tests.test_records import a_record
from twisted_echo.operations.recordspage import MAX_WAIT, RecordsPage
from twisted_echo.records.ring import RecordRing
from twisted_echo.records.schema import problems


def get(page: RecordsPage, **query: object) -> tuple[DummyRequest, Any]:
    """
    Render C{GET /records} with C{query}.

    @return: the request and what C{render} returned (the body, or
        C{NOT_DONE_YET}).
    """
    request = DummyRequest([b""])
    request.method = b"GET"
    for name, value in query.items():
        request.addArg(name.encode("ascii"), str(value).encode("utf-8"))
    return request, page.render(request)


def answered(request: DummyRequest, body: Any) -> dict[str, Any]:
    if body is NOT_DONE_YET:
        body = b"".join(request.written)
    assert request.responseCode in (None, 200), request.responseCode
    document: dict[str, Any] = json.loads(body)
    return document


class RecordsPageTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.ring = RecordRing(10, self.clock)
        self.page = RecordsPage(self.ring)

    def test_all(self) -> None:
        """
        Without parameters: every record kept, each fitting the schema,
        with the last number and the capacity.
        """
        self.ring.add(a_record("echo"))
        self.ring.add(a_record("upper"))
        request, body = get(self.page)
        document = answered(request, body)
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-type"),
            [b"application/json"],
        )
        self.assertEqual(
            (document["last_id"], document["capacity"], document["next_since"]),
            (2, 10, 2),
        )
        self.assertEqual([r["service"] for r in document["records"]], ["echo", "upper"])
        for record in document["records"]:
            self.assertEqual(problems(record), [])

    def test_filters(self) -> None:
        self.ring.add(a_record("echo", "tcp:192.0.2.1:1"))
        self.ring.add(a_record("upper", "tcp:192.0.2.1:2"))
        self.ring.add(a_record("echo", "tcp:192.0.2.2:3"))

        def ids(**q: object) -> list[int]:
            return [r["id"] for r in answered(*get(self.page, **q))["records"]]

        self.assertEqual(ids(service="echo"), [1, 3])
        self.assertEqual(ids(client="192.0.2.1"), [1, 2])
        self.assertEqual(ids(since=1), [2, 3])
        self.assertEqual(ids(since=1, limit=1), [2])
        self.assertEqual(ids(limit=0), [])

    def test_bad_parameters(self) -> None:
        """
        A bad number is answered 400 in one line naming the parameter.
        """
        for query, name in (
            ({"since": "x"}, "since"),
            ({"wait": MAX_WAIT + 1}, "wait"),
            ({"wait": "nan"}, "wait"),
            ({"limit": -1}, "limit"),
        ):
            request, body = get(self.page, **query)
            self.assertEqual(request.responseCode, 400)
            self.assertTrue(body.startswith(f"{name} takes a number".encode()), body)
            self.assertEqual(body.count(b"\n"), 1)

    def test_no_ring(self) -> None:
        """
        Without records (C{--records 0}): 501, saying why.
        """
        request, body = get(RecordsPage(None))
        self.assertEqual(request.responseCode, 501)
        self.assertIn(b"--records 0", body)

    def test_long_poll(self) -> None:
        """
        C{wait=} without C{since} waits for the next matching record and
        answers as soon as it is added.
        """
        self.ring.add(a_record("echo"))
        request, body = get(self.page, wait=5, service="upper")
        self.assertIs(body, NOT_DONE_YET)
        self.ring.add(a_record("echo"))
        self.assertEqual(request.finished, 0)
        self.ring.add(a_record("upper"))
        self.assertEqual(request.finished, 1)
        document = answered(request, body)
        self.assertEqual([r["id"] for r in document["records"]], [3])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_long_poll_times_out(self) -> None:
        request, body = get(self.page, wait=5)
        self.clock.advance(5)
        self.assertEqual(answered(request, body)["records"], [])

    def test_long_poll_client_gone(self) -> None:
        """
        A client that goes away while waiting leaves no wait behind.
        """
        request, body = get(self.page, wait=5)
        self.assertEqual(self.ring.waiting(), 1)
        # What a lost connection does to a request: notifyFinish errs.
        request.processingFailed(Failure(ConnectionLost()))
        self.assertEqual(self.ring.waiting(), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
