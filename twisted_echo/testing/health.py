# -*- test-case-name: tests.test_testing_health -*-
"""
A backend that fails its checks for the duration of one test (issue 21):
the C{unready} and C{health} context managers of the test servers,
C{with server.unready(): ...} (C{/readyz} answers 503 for the block) and
C{with server.health(healthz="fail", listeners="pause"): ...}, which put
the state before the block back afterwards, even when the block raises.

L{HealthClient} changes a spawned server's switch over its admin API
(C{--admin}: C{/health} on its loopback C{--metrics} listener,
docs/faults.md); the trial helper (L{twisted_echo.testing.trial}) changes
the switch of the server in the test's reactor. This module imports
nothing from Twisted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from twisted_echo.testing.faults import admin_request

__all__ = ["HealthClient", "health_block", "requested"]


def requested(
    readyz: str | None = None,
    healthz: str | None = None,
    listeners: str | None = None,
) -> dict[str, str]:
    """
    @param readyz: C{"pass"} or C{"fail"} (L{None}: as it is).
    @param healthz: C{"pass"} or C{"fail"} (L{None}: as it is).
    @param listeners: C{"serve"} or C{"pause"} (L{None}: as it is).
    @return: the fields given, as C{PUT /health} takes them.
    @raise ValueError: none given.
    """
    changes = {
        field: value
        for field, value in (
            ("readyz", readyz),
            ("healthz", healthz),
            ("listeners", listeners),
        )
        if value is not None
    }
    if not changes:
        raise ValueError("give readyz, healthz or listeners")
    return changes


@contextmanager
def health_block(
    read: Callable[[], Mapping[str, str]],
    write: Callable[[Mapping[str, str]], object],
    changes: Mapping[str, str],
) -> Iterator[None]:
    """
    Put C{changes} in force for the block, then the whole state before it.

    @param read: the state now (C{readyz}, C{healthz}, C{listeners}).
    @param write: set fields of the state.
    @param changes: the block's fields.
    """
    before = dict(read())
    write(changes)
    try:
        yield
    finally:
        write(before)


class HealthClient:
    """
    A spawned server's C{/health}, with blocking C{urllib}.

    @ivar url: its C{http://HOST:PORT/health} URL.
    """

    def __init__(self, url: str) -> None:
        self.url = url

    def _request(self, method: str, body: bytes | None = None) -> Any:
        return admin_request(self.url, method, body)

    def get(self) -> dict[str, str]:
        """
        @return: the state (C{readyz}, C{healthz}, C{listeners}).
        @raise LookupError: no admin API.
        """
        document: dict[str, str] = self._request("GET")
        return document

    def set(self, changes: Mapping[str, str]) -> dict[str, str]:
        """
        Set the fields given.

        @return: the new state.
        @raise ValueError: a bad field or value (the server's reason).
        @raise LookupError: no admin API.
        @raise RuntimeError: a change the server cannot make (501:
            C{pause} with C{--workers}).
        """
        document: dict[str, str] = self._request(
            "PUT", json.dumps(dict(changes)).encode("utf-8")
        )
        return document

    def block(self, changes: Mapping[str, str]) -> Any:
        """
        @return: a context manager: C{changes} for the block, the state
            before it afterwards (L{health_block}).
        """
        return health_block(self.get, self.set, changes)
