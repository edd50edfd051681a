# -*- test-case-name: tests.test_testing_faults -*-
"""
A fault profile for the duration of one test (issue 21): the C{faults}
context manager of the test servers, C{with server.faults("echo",
"reset-after=10"): ...}, which sets a listener's profile for the block and
puts the previous one back afterwards, even when the block raises.

L{AdminClient} changes a spawned server's profiles over its admin API
(C{--admin}: C{/faults} on its loopback C{--metrics} listener,
docs/faults.md); L{profile_block} does it in this process, on the slots of
a server in the test's reactor (L{twisted_echo.testing.trial}). This
module imports nothing from Twisted.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

#: Seconds an admin request may take.
ADMIN_TIMEOUT = 10.0


def admin_request(
    url: str,
    method: str,
    body: bytes | None = None,
    not_found: Callable[[str], str | None] = lambda reason: None,
) -> Any:
    """
    One request to a spawned server's admin API (C{/faults}, C{/health}).

    @param url: the route's URL.
    @param method: C{GET}, C{PUT}, C{DELETE}.
    @param body: a JSON body, or L{None}.
    @param not_found: given a 404's text, the message of the
        C{LookupError} to raise (L{None}: the server has no admin API).
    @return: the decoded JSON answer.
    @raise ValueError: 400, with the server's reason.
    @raise LookupError: 404.
    @raise RuntimeError: another error status, with the server's reason.
    """
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=ADMIN_TIMEOUT) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        reason = e.read().decode("utf-8", "replace").strip()
        if e.code == 400:
            raise ValueError(reason) from None
        if e.code == 404:
            raise LookupError(
                not_found(reason) or "no admin API (start the server with --admin)"
            ) from None
        route = urllib.parse.urlsplit(url).path
        raise RuntimeError(f"sockecho's {route} answered {e.code}: {reason}") from None


def pinned(profile: str | None, seed: int | None) -> str | None:
    """
    @param profile: a profile's text as a server reports it, or L{None}.
    @param seed: its seed (the one picked at random when it gives none).
    @return: the same profile with its seed given, so that putting it back
        replays the same decisions; L{None} for L{None}.
    """
    if profile is None:
        return None
    clauses = [c.strip() for c in profile.split(";")]
    if seed is None or any(c.startswith("seed=") for c in clauses):
        return profile
    return f"{profile};seed={seed}"


@contextmanager
def profile_block(
    read: Callable[[], tuple[str | None, int | None]],
    write: Callable[[str | None], None],
    profile: str,
) -> Iterator[None]:
    """
    Put C{profile} in force for the block, then the one before it.

    @param read: the profile in force and its seed.
    @param write: put a profile in force (L{None}: clear it).
    @param profile: the block's profile text.
    """
    before = pinned(*read())
    write(profile)
    try:
        yield
    finally:
        write(before)


class AdminClient:
    """
    A spawned server's admin API (C{/faults}), with blocking C{urllib}.

    @ivar url: its C{http://HOST:PORT/faults} URL.
    """

    def __init__(self, url: str) -> None:
        self.url = url

    def _request(self, listener: str, method: str, body: bytes | None = None) -> Any:
        return admin_request(
            f"{self.url}/{listener}",
            method,
            body,
            not_found=lambda reason: reason if "takes a profile" in reason else None,
        )

    def get(self, listener: str) -> tuple[str | None, int | None]:
        """
        @return: C{listener}'s profile text (L{None}: none) and seed.
        @raise LookupError: no such listener, or no admin API.
        """
        document = self._request(listener, "GET")
        return document["profile"], document["seed"]

    def set(self, listener: str, profile: str | None) -> None:
        """
        Put C{profile} in force on C{listener} (L{None}: clear it).

        @raise ValueError: the profile does not parse (the server's reason).
        @raise LookupError: no such listener, or no admin API.
        @raise RuntimeError: the server refused the change (409), or a
            worker of C{--workers} did not confirm it (504).
        """
        if profile is None:
            self._request(listener, "DELETE")
        else:
            body = json.dumps({"profile": profile}).encode("utf-8")
            self._request(listener, "PUT", body)

    def faults(self, listener: str, profile: str) -> Any:
        """
        @return: a context manager: C{profile} on C{listener} for the
            block, the previous one afterwards (L{profile_block}).
        """
        return profile_block(
            lambda: self.get(listener),
            lambda text: self.set(listener, text),
            profile,
        )
