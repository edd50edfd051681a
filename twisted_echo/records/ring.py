# -*- test-case-name: tests.test_records -*-
"""
The last records of a server, in a bounded ring (C{--records N}), and the
waits of readers who want the next one (the C{/records} long-poll).

Memory: a record held costs about L{RECORD_BYTES} bytes (its object, its
address strings and numbers; C{sys.getsizeof} summed, CPython 3.11), plus
the C{--record-bytes} it keeps; the ring holds at most C{--records} of
them, outside C{--max-buffer} (the budget counts the bytes connections hold
now; the ring's bound is fixed and small: 2,000 records about 1.2 MB).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from twisted_echo.records.record import ConnectionRecord

#: C{--records}' default: records kept.
DEFAULT_RECORDS = 2000
#: About the bytes one record held in the ring costs, without its
#: C{first_bytes} (C{tests.test_records} measures it).
RECORD_BYTES = 600


def matcher(
    service: str | None = None, client: str | None = None
) -> Callable[[ConnectionRecord], bool]:
    """
    @param service: keep only this service's records (L{None}: all).
    @param client: keep only this client's (L{ConnectionRecord.client_matches}).
    @return: the test of a record.
    """

    def matches(record: ConnectionRecord) -> bool:
        if service is not None and record.service != service:
            return False
        return client is None or record.client_matches(client)

    return matches


class _Wait:
    """
    One reader waiting for records (L{RecordRing.wait}).
    """

    __slots__ = ("matches", "since", "done", "timer")

    def __init__(
        self,
        matches: Callable[[ConnectionRecord], bool],
        since: int,
        done: Deferred[list[ConnectionRecord]],
    ) -> None:
        self.matches = matches
        self.since = since
        self.done = done
        self.timer: IDelayedCall | None = None


class RecordRing:
    """
    The last C{capacity} records, numbered from 1 in the order they closed.

    @ivar capacity: the most records kept (0: none kept, none numbered).
    @ivar last_id: the number of the last record added (0 before any).
    """

    def __init__(self, capacity: int, clock: IReactorTime) -> None:
        """
        @param capacity: the most records kept (C{--records}).
        @param clock: the reactor's clock, for waits' timeouts.
        """
        self.capacity = capacity
        self.clock = clock
        self.last_id = 0
        self._records: deque[ConnectionRecord] = deque(maxlen=capacity or 1)
        self._waits: list[_Wait] = []
        #: Called with every record added (the JSON log's event).
        self.observers: list[Callable[[ConnectionRecord], Any]] = []

    def add(self, record: ConnectionRecord) -> None:
        """
        Number C{record}, keep it (the oldest goes when full), tell the
        observers, and end the waits it matches.
        """
        if not self.capacity:
            return
        self.last_id += 1
        record.id = self.last_id
        self._records.append(record)
        for observer in self.observers:
            observer(record)
        if self._waits:
            for wait in [w for w in self._waits if w.matches(record)]:
                self._end_wait(wait)

    def __len__(self) -> int:
        return len(self._records) if self.capacity else 0

    def since(
        self,
        since: int = 0,
        matches: Callable[[ConnectionRecord], bool] | None = None,
        limit: int | None = None,
    ) -> list[ConnectionRecord]:
        """
        @param since: return only records numbered above this.
        @param matches: the test records must pass (L{matcher}).
        @param limit: the most records returned (the oldest first).
        @return: the records kept numbered above C{since} that match, in
            order.
        """
        records: Iterator[ConnectionRecord]
        if not self.capacity or since >= self.last_id:
            return []
        first_id = self.last_id - len(self._records) + 1
        skip = max(0, since - first_id + 1)
        records = islice(self._records, skip, None)
        if matches is not None:
            records = (r for r in records if matches(r))
        return list(islice(records, limit))

    def wait(
        self,
        since: int,
        matches: Callable[[ConnectionRecord], bool],
        timeout: float,
    ) -> Deferred[list[ConnectionRecord]]:
        """
        Wait for records above C{since} that match.

        @param timeout: seconds to wait at most.
        @return: a L{Deferred} firing with the matching records numbered
            above C{since} as soon as there is one (at once if there are
            already), or with C{[]} after C{timeout} seconds. Cancelling it
            ends the wait.
        """
        found = self.since(since, matches)
        if found or not self.capacity:
            done: Deferred[list[ConnectionRecord]] = Deferred()
            done.callback(found)
            return done

        def cancel(_: Deferred[list[ConnectionRecord]]) -> None:
            self._forget(wait)

        done = Deferred(cancel)
        wait = _Wait(matches, since, done)
        wait.timer = self.clock.callLater(timeout, self._end_wait, wait)
        self._waits.append(wait)
        return done

    def waiting(self) -> int:
        """
        @return: how many readers wait now.
        """
        return len(self._waits)

    def _forget(self, wait: _Wait) -> None:
        if wait in self._waits:
            self._waits.remove(wait)
        timer, wait.timer = wait.timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _end_wait(self, wait: _Wait) -> None:
        if wait.timer is not None and not wait.timer.active():
            wait.timer = None
        self._forget(wait)
        if not wait.done.called:
            wait.done.callback(self.since(wait.since, wait.matches))
