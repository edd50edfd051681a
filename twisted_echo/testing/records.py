# -*- test-case-name: tests.test_testing_records -*-
"""
Asserting on what sockecho saw: a test's view of a server's connection
records (L{twisted_echo.records}), over the server's C{/records}
(L{twisted_echo.operations.recordspage}).

L{RecordsView} is what the pytest fixtures' servers
(L{twisted_echo.testing.spawn.SockechoProcess}) offer as C{records()},
C{wait_for()}, C{assert_no_connections()}, C{expect_close()}: blocking
calls with the standard library's HTTP client, no Twisted, so any test
(blocking, asyncio, another process's) can use them. A view sees only the
records that closed after its mark (L{RecordsView.reset}): a server shared
by several tests is "reset" between them without a restart by moving the
mark to the server's last record.

Each record is the dict of C{twisted_echo/records/schema.json}
(C{record["cause"]}, C{record["bytes_in"]}...).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

#: Seconds one long-poll request waits at most (below the server's bound).
POLL_WAIT = 5.0
#: The default seconds L{RecordsView.wait_for} waits.
DEFAULT_TIMEOUT = 10.0

Record = dict[str, Any]


def describe(records: list[Record]) -> str:
    """
    @return: one line per record, for failure messages: its number,
        service, client, cause (and limit), bytes in and out.
    """
    if not records:
        return "  (none)"
    return "\n".join(
        f"  #{r['id']} {r['service']} from {r['client']}: {r['cause']}"
        f"{' (' + r['limit'] + ')' if r.get('limit') else ''}, "
        f"{r['bytes_in']} bytes in, {r['bytes_out']} bytes out"
        for r in records
    )


class RecordsView:
    """
    The records of one server that closed after a mark.

    @ivar url: the server's C{/records} URL.
    @ivar mark: the number of the last record before this view's start.
    """

    def __init__(self, url: str) -> None:
        """
        @param url: C{http://HOST:PORT/records} of the server's C{--metrics}
            listener.
        """
        self.url = url
        self.mark = 0
        #: Records seen so far, after the mark, by number.
        self._seen: dict[int, Record] = {}
        #: Records already checked by L{expect_close}, by number.
        self._expected: set[int] = set()

    def _get(self, **query: object) -> dict[str, Any]:
        given = {k: v for k, v in query.items() if v is not None}
        url = self.url + ("?" + urllib.parse.urlencode(given) if given else "")
        wait = float(query.get("wait") or 0)  # type: ignore[arg-type]
        try:
            with urllib.request.urlopen(url, timeout=wait + 10) as response:
                document: dict[str, Any] = json.load(response)
        except urllib.error.HTTPError as e:
            raise AssertionError(
                f"sockecho's /records answered {e.code}: "
                f"{e.read().decode('utf-8', 'replace').strip()}"
            ) from None
        return document

    def reset(self) -> None:
        """
        Forget the records so far: from now on only records that close
        after this call are seen.
        """
        self.mark = self._get(limit=0)["last_id"]
        self._seen.clear()
        self._expected.clear()

    def _fetch(self, wait: float = 0.0) -> int:
        """
        Read the records that closed since the last seen (waiting up to
        C{wait} seconds for one); @return: how many were new.
        """
        since = max(self._seen, default=self.mark)
        document = self._get(since=since, wait=wait or None)
        for record in document["records"]:
            self._seen[record["id"]] = record
        return len(document["records"])

    def records(self, service: str | None = None) -> list[Record]:
        """
        @param service: only this service's (C{"echo"}...), or all.
        @return: the records that closed since the mark, oldest first.
        """
        while self._fetch():
            pass
        return [
            r
            for _, r in sorted(self._seen.items())
            if service is None or r["service"] == service
        ]

    def wait_for(
        self, n: int, service: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> list[Record]:
        """
        Wait until at least C{n} connections (of C{service}) have closed
        since the mark.

        @param timeout: seconds to wait at most.
        @return: their records (all of them so far, oldest first).
        @raise AssertionError: after C{timeout} seconds with fewer, listing
            the records that did arrive.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = self.records(service)
            if len(found) >= n:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"waited {timeout:g} s for {n} closed "
                    f"{service or 'sockecho'} connection(s); "
                    f"{len(found)} arrived:\n{describe(self.records())}"
                )
            self._fetch(min(left, POLL_WAIT))

    def assert_no_connections(self, service: str | None = None) -> None:
        """
        @raise AssertionError: listing them, if any connection (of
            C{service}) closed since the mark.
        """
        found = self.records(service)
        if found:
            raise AssertionError(
                f"expected no {service or 'sockecho'} connection; "
                f"{len(found)} closed:\n{describe(found)}"
            )

    def expect_close(
        self,
        cause: str,
        service: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Record:
        """
        The next connection (of C{service}) to close, in order, ended with
        C{cause} (L{twisted_echo.records.causes}: C{"client_fin"}: my client
        closed cleanly; C{"client_reset"}; C{"idle_timeout"}: sockecho gave
        up, not my client...). Each call checks the next record: two
        calls check the first two connections.

        @return: that record.
        @raise AssertionError: if it ended otherwise, or none closed
            within C{timeout} seconds (listing what arrived).
        """
        deadline = time.monotonic() + timeout
        while True:
            fresh = [r for r in self.records(service) if r["id"] not in self._expected]
            if fresh:
                record = fresh[0]
                self._expected.add(record["id"])
                if record["cause"] != cause:
                    raise AssertionError(
                        f"expected a {service or 'sockecho'} connection closed "
                        f"by {cause}; it closed by {record['cause']}:\n"
                        f"{describe([record])}"
                    )
                return record
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"waited {timeout:g} s for a {service or 'sockecho'} "
                    f"connection to close by {cause}; none closed:\n"
                    f"{describe(self.records())}"
                )
            self._fetch(min(left, POLL_WAIT))
