# -*- test-case-name: tests.test_recordspage -*-
"""
C{/records} on the C{--metrics} listener: the server's last connection
records (L{twisted_echo.records}) as JSON, filtered, with a long-poll.

C{GET /records?service=echo&client=127.0.0.1&since=41&wait=5&limit=100}:

 - C{service}: only that service's records; C{client}: only that client's
   (C{tcp:HOST:PORT}, C{HOST:PORT} or C{HOST});
 - C{since}: only records numbered above it (0 by default: every record
   kept);
 - C{wait}: seconds (at most L{MAX_WAIT}) to wait, when no record matches
   yet, for the first one that does; answered as soon as it closes, or
   with none at the end of the wait. Without C{since}, a wait is for
   records that close from now on;
 - C{limit}: the most records in the answer (L{DEFAULT_LIMIT}, at most
   L{MAX_LIMIT}), the oldest first; ask again with C{since=next_since} for
   the rest.

The answer is C{{"schema": 1, "last_id": N, "capacity": C, "next_since":
M, "records": [...]}}: C{last_id} the number of the last record made,
whether it matched or not (a test remembers it to see only what comes
next), each record as C{twisted_echo/records/schema.json} says. A bad
parameter is answered 400 with one line saying which. With C{--workers}
the supervisor serves its own ring, fed by every worker's records and
numbered there (L{twisted_echo.app.forwarded}): the same answers, ids
unique across the workers.

The bounds of the listener apply (L{twisted_echo.operations.httpbounds}):
a waiting request holds its connection (at most
C{--metrics-max-connections} of them), and its response, of at most
L{MAX_LIMIT} records, is one response in flight.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from twisted_echo.records.record import SCHEMA_VERSION, ConnectionRecord
from twisted_echo.records.ring import RecordRing, matcher

#: The longest C{wait=}, in seconds (below the listener's idle timeout).
MAX_WAIT = 25.0
#: Records in one answer by default, and at most.
DEFAULT_LIMIT = 1000
MAX_LIMIT = 5000


class BadQueryError(ValueError):
    """
    A parameter of C{/records} is wrong; the message says which.
    """


def _argument(request: Request, name: str) -> str | None:
    values = (request.args or {}).get(name.encode("ascii"))
    if not values:
        return None
    value: bytes = values[-1]
    return value.decode("utf-8", "replace")


def _number(request: Request, name: str, kind: type, top: float) -> Any:
    text = _argument(request, name)
    if text is None:
        return None
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or value != value or value < 0 or value > top:
        raise BadQueryError(f"{name} takes a number from 0 to {top:g}, not {text!r}")
    return value


class RecordsPage(Resource):
    """
    C{/records} (see the module's description).
    """

    isLeaf = True

    def __init__(self, ring: RecordRing | None) -> None:
        """
        @param ring: the server's records (a supervisor's: its workers'),
            or L{None} where none are kept (C{--records 0}).
        """
        Resource.__init__(self)
        self.ring = ring

    def render_GET(self, request: Request) -> bytes | int:
        ring = self.ring
        if ring is None:
            return _text(
                request,
                501,
                "no connection records here: --records 0\n",
            )
        try:
            since = _number(request, "since", int, float("inf"))
            wait = _number(request, "wait", float, MAX_WAIT)
            limit = _number(request, "limit", int, MAX_LIMIT)
        except BadQueryError as e:
            return _text(request, 400, f"{e}\n")
        if limit is None:
            limit = DEFAULT_LIMIT
        matches = matcher(_argument(request, "service"), _argument(request, "client"))
        if since is None:
            since = ring.last_id if wait else 0
        if not wait:
            return _answer(request, ring, since, ring.since(since, matches, limit))
        waiting = ring.wait(since, matches, wait)

        def send(records: list[ConnectionRecord]) -> None:
            request.write(_answer(request, ring, since, records[:limit]))
            request.finish()

        def gone(failure: Failure) -> None:
            failure.trap(CancelledError)

        waiting.addCallbacks(send, gone)
        finished: Deferred[None] = request.notifyFinish()
        finished.addErrback(lambda _: waiting.cancel())
        return NOT_DONE_YET


def _text(request: Request, code: int, text: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return text.encode("utf-8")


def _answer(
    request: Request, ring: RecordRing, since: int, records: list[ConnectionRecord]
) -> bytes:
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    head = json.dumps(
        {
            "schema": SCHEMA_VERSION,
            "last_id": ring.last_id,
            "capacity": ring.capacity,
            "next_since": records[-1].id if records else since,
        }
    ).encode("utf-8")
    # Each record's own text (a worker's comes as it was sent: never
    # decoded here), spliced in as the last field.
    texts = b", ".join(record.as_json() for record in records)
    return head[:-1] + b', "records": [' + texts + b"]}\n"
