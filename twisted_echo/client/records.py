# -*- test-case-name: tests.test_client_records -*-
"""
C{sockecho-client records ENDPOINT [--follow] [--json]}: a sockecho's
connection records (issue 22), read from its C{--metrics} listener's
C{/records} (twisted_echo/records/schema.json), for people (one line per
record) and for test suites in other languages (C{--json}: one JSON
object per line, as the server gives it).

C{--follow} long-polls for the records that close from now on
(C{/records?since=ID&wait=SECONDS}) until interrupted. The server keeps
only its last C{--records} records: when more closed between two polls
than it keeps, the records lost are counted and said on standard error
("skipped N records"), never silently dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import IO, Any
from urllib.parse import urlencode

from twisted.internet.error import ConnectError, DNSLookupError
from twisted.web.client import Agent, HTTPConnectionPool, readBody

from twisted_echo.client.errors import ClientError, ClientUsageError

#: Seconds each C{--follow} poll waits at the server (its most is 25).
FOLLOW_WAIT = 20.0
#: Records asked for per request.
PAGE = 5000


def records_url(endpoint: str) -> str:
    """
    @param endpoint: the metrics listener: C{http://HOST:PORT},
        C{tcp:HOST:PORT} or C{HOST:PORT}.
    @return: its C{/records} URL.
    @raise ClientUsageError: for anything else.
    """
    text = endpoint.strip()
    if text.startswith("http://"):
        return text.rstrip("/").removesuffix("/records") + "/records"
    found = re.fullmatch(
        r"(?:tcp:)?(?:host=)?([^:/]+|\[[0-9a-fA-F:]+\]):(?:port=)?(\d+)", text
    )
    if found is None:
        raise ClientUsageError(
            "records takes the --metrics listener as http://HOST:PORT, "
            f"tcp:HOST:PORT or HOST:PORT, not {endpoint!r}"
        )
    return f"http://{found.group(1)}:{found.group(2)}/records"


def describe(record: dict[str, Any]) -> str:
    """
    @return: one line for people: number, service, client (and proxy),
        cause (and limit), bytes in and out, duration.
    """
    via = f" via {record['proxy']}" if record.get("proxy") else ""
    limit = f" ({record['limit']})" if record.get("limit") else ""
    tls = f" {record['tls']['version']}" if record.get("tls") else ""
    return (
        f"#{record['id']} {record['service']} {record['client']}{via}{tls}: "
        f"{record['cause']}{limit}, {record['bytes_in']} bytes in, "
        f"{record['bytes_out']} bytes out, {record['duration']:.3f} s"
    )


class RecordsReader:
    """
    Reads C{/records} pages and prints them.

    @ivar last: the number of the last record printed or skipped.
    @ivar skipped: records lost between polls (the server's ring moved on).
    """

    def __init__(
        self,
        reactor: Any,
        url: str,
        out: IO[str],
        err: IO[str],
        as_json: bool,
        service: str | None = None,
        client: str | None = None,
    ) -> None:
        # One persistent connection for every poll: a follower polls as
        # often as records close (thousands a second), each poll on a new
        # TCP connection cost a connect and a close.
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 1
        self.agent = Agent(reactor, pool=self.pool)
        self.url = url
        self.out = out
        self.err = err
        self.show: Callable[[dict[str, Any]], str] = json.dumps if as_json else describe
        self.filters = {
            k: v for k, v in (("service", service), ("client", client)) if v
        }
        self.last = 0
        self.skipped = 0

    async def get(self, **query: object) -> dict[str, Any]:
        """
        @return: one C{/records} answer.
        @raise ClientError: when the listener cannot be reached or answers
            other than 200 (its one-line reason quoted).
        """
        url = self.url + "?" + urlencode({**self.filters, **query})
        try:
            response = await self.agent.request(b"GET", url.encode("ascii"))
            body = await readBody(response)
        except (ConnectError, DNSLookupError) as e:
            raise ClientError(f"cannot reach {self.url}: {e}") from None
        if response.code != 200:
            reason = body.decode("utf-8", "replace").strip()
            raise ClientError(f"{self.url} answered {response.code}: {reason}")
        document: dict[str, Any] = json.loads(body)
        return document

    def print_page(self, document: dict[str, Any], since: int | None) -> None:
        """
        Print a page's records; with C{since}, count the numbers above it
        that the server no longer held (without filters, where every number
        is a record of the answer).
        """
        records = document["records"]
        if records and since is not None and not self.filters:
            lost = records[0]["id"] - since - 1
            if lost > 0:
                self.skipped += lost
                self.err.write(
                    f"skipped {lost} records (more closed than the server keeps "
                    f"between two reads; {self.skipped} in all)\n"
                )
                self.err.flush()
        if records:
            # One write per page, not per record.
            self.out.write("\n".join(map(self.show, records)) + "\n")
            self.out.flush()
        self.last = document["next_since"]

    async def print_all(self) -> None:
        """
        Print every record the server holds now, oldest first.
        """
        while True:
            document = await self.get(since=self.last, limit=PAGE)
            self.print_page(document, None)
            if document["next_since"] >= document["last_id"] or not document["records"]:
                return

    async def follow(self, polls: int | None = None) -> None:
        """
        Print the records that close from now on, as they close.

        @param polls: stop after this many polls (tests); L{None}: never.
        """
        self.last = (await self.get(limit=0))["last_id"]
        while polls is None or polls > 0:
            since = self.last
            document = await self.get(since=since, wait=FOLLOW_WAIT, limit=PAGE)
            self.print_page(document, since)
            if polls is not None:
                polls -= 1


async def run_records(
    reactor: Any,
    endpoint: str,
    follow: bool,
    as_json: bool,
    out: IO[str],
    err: IO[str],
    service: str | None = None,
    client: str | None = None,
) -> int:
    """
    The C{records} command.

    @return: the exit status (0).
    @raise ClientError: when the listener cannot be read.
    """
    reader = RecordsReader(
        reactor, records_url(endpoint), out, err, as_json, service, client
    )
    try:
        if follow:
            await reader.follow()
        else:
            await reader.print_all()
    finally:
        await reader.pool.closeCachedConnections()
    return 0


def add_records_command(commands: Any) -> None:
    """
    Add C{records} to C{sockecho-client}'s subcommands (an
    C{argparse} subparsers object).
    """
    records = commands.add_parser(
        "records",
        help="print a sockecho's connection records (its --metrics /records)",
        description="Print the connection records a sockecho keeps (how each "
        "connection ended, its bytes...), read from its --metrics listener "
        "(http://HOST:PORT, tcp:HOST:PORT or HOST:PORT).",
    )
    records.add_argument("endpoint", metavar="ENDPOINT")
    records.add_argument(
        "--follow",
        action="store_true",
        help="print the records that close from now on, as they close, until "
        "interrupted (records the server no longer holds are counted on "
        "standard error)",
    )
    records.add_argument("--json", action="store_true", help="one JSON object per line")
    records.add_argument("--service", help="only this service's records")
    records.add_argument("--client", help="only this client's (HOST or HOST:PORT)")


async def run_records_command(reactor: Any, args: Any) -> int:
    """
    Run C{records} with its parsed C{args}.

    @return: the exit status.
    """
    import sys

    return await run_records(
        reactor,
        args.endpoint,
        args.follow,
        args.json,
        sys.stdout,
        sys.stderr,
        args.service,
        args.client,
    )
