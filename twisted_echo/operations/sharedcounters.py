# -*- test-case-name: tests.test_sharedcounters -*-
"""
A worker's counters in memory its supervisor reads (C{--workers} with
C{--metrics}), so that the supervisor's metrics stay true when a worker is
killed: nothing the worker counted is lost, however it dies, and the
supervisor reads its figures when it is scraped instead of waiting for the
next report.

The supervisor makes one L{CounterTable} per worker (a C{memfd}, or a
temporary file where there is none, of L{TABLE_BYTES} bytes), maps it, and
hands its descriptor to the worker, which maps it too and counts into it:
its L{ServiceCounters} are L{SharedServiceCounters}, which write each
change of a counter (C{connections_total += 1}) to the table as well, one
aligned 64-bit store, about 0.3 us. When the worker dies, the supervisor
reads the table one last time.

This is the idea of C{prometheus_client}'s multiprocess mode (one mmap'd
file per process, C{mark_process_dead}), kept to sockecho's own counters:
that mode would have every increment site use C{prometheus_client} metric
objects with labels (a lock and a dictionary look-up per increment), a
directory of files to clean at start, and has no way to export figures a
worker computes when scraped (C{sockecho_held_bytes}).

Layout: a header of two 64-bit words (slots in use, bytes of names), then
L{MAX_SLOTS} 64-bit values, then the slots' names, one per line
(C{service<TAB>field} or C{service<TAB>field<TAB>key}). One process (the
worker) writes; a slot's name is written before the header counts it.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import fields
from typing import Any

from twisted_echo.policies.counters import ServiceCounters

#: Most counters in one table.
MAX_SLOTS = 2048
_HEADER = 16
_NAMES = _HEADER + 8 * MAX_SLOTS
#: Size of a table, bytes.
TABLE_BYTES = _NAMES + 48 * 1024
#: L{ServiceCounters} fields kept in the table: every number but
#: C{held_bytes}, which a worker measures when it reports.
INT_FIELDS = tuple(
    f.name
    for f in fields(ServiceCounters)
    if f.type in ("int", int) and f.name != "held_bytes"
)
#: L{ServiceCounters} fields that count by reason.
COUNTER_FIELDS = tuple(
    f.name for f in fields(ServiceCounters) if "Counter" in str(f.type)
)
#: Services whose counters stay in the worker's reports only: UDP echo
#: changes four counters per datagram, which the table would make cost
#: some 2-3 us more; up to a report interval of them is lost with a killed
#: worker.
UNSHARED_SERVICES = frozenset({"udp"})
#: Fields that say how things are now, not how many happened.
GAUGE_FIELDS = ("connections_open", "held_bytes")


class TableFullError(Exception):
    """
    A table has no room for another counter.
    """


class CounterTable:
    """
    Named 64-bit counters in a shared mapping (see the module docstring).
    """

    def __init__(self, memory: mmap.mmap) -> None:
        """
        @param memory: a mapping of at least L{TABLE_BYTES} bytes, zeroed
            when new.
        """
        self.memory = memory
        words = memoryview(memory).cast("q")
        self.header = words[: _HEADER // 8]
        self.values = words[_HEADER // 8 : _NAMES // 8]
        self._words = words
        self._slots: dict[str, int] = {}

    @classmethod
    def create(cls) -> tuple[CounterTable, int]:
        """
        Make a new table in anonymous shared memory.

        @return: the table and a file descriptor to hand to the process that
            writes it (the caller closes it).
        """
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("sockecho-counters", 0)
        else:
            fd = os.dup(tempfile.TemporaryFile().fileno())
        os.ftruncate(fd, TABLE_BYTES)
        return cls(mmap.mmap(fd, TABLE_BYTES)), fd

    @classmethod
    def open(cls, fd: int) -> CounterTable:
        """
        Map the table a supervisor made; C{fd} is closed.

        @raise OSError: when C{fd} cannot be mapped.
        """
        try:
            return cls(mmap.mmap(fd, TABLE_BYTES))
        finally:
            os.close(fd)

    def slot(self, name: str) -> int:
        """
        @param name: a counter's name (no newline).
        @return: its slot, added if new.
        @raise TableFullError: when there is no room left.
        """
        found = self._slots.get(name)
        if found is not None:
            return found
        count, used = self.header
        encoded = name.encode("utf-8") + b"\n"
        if count >= MAX_SLOTS or _NAMES + used + len(encoded) > TABLE_BYTES:
            raise TableFullError(name)
        self.memory[_NAMES + used : _NAMES + used + len(encoded)] = encoded
        self.header[1] = used + len(encoded)
        self.header[0] = count + 1
        self._slots[name] = count
        return count

    def read(self) -> dict[str, int]:
        """
        @return: every counter by name, as it is now.
        """
        count, used = self.header
        names = bytes(self.memory[_NAMES : _NAMES + used]).decode("utf-8", "replace")
        listed = names.split("\n")[:count]
        return {name: self.values[i] for i, name in enumerate(listed)}

    def snapshot(self) -> dict[str, ServiceCounters]:
        """
        @return: the counters as L{ServiceCounters} by service (without
            C{held_bytes}).
        """
        found: dict[str, ServiceCounters] = {}
        for name, number in self.read().items():
            service, _, rest = name.partition("\t")
            field, _, key = rest.partition("\t")
            counters = found.setdefault(service, ServiceCounters())
            if key:
                getattr(counters, field)[key] = number
            elif field in INT_FIELDS:
                setattr(counters, field, number)
        return found

    def close(self) -> None:
        """
        Unmap the table.
        """
        for view in (self.header, self.values, self._words):
            view.release()
        self.memory.close()


class SharedCounter(Counter[str]):
    """
    A C{Counter} that also writes each key's count to a L{CounterTable}.
    """

    def __init__(
        self, table: CounterTable, prefix: str, initial: Mapping[str, int] = {}
    ) -> None:
        super().__init__()
        self._table = table
        self._prefix = prefix
        self._key_slots: dict[str, int] = {}
        for key, number in initial.items():
            self[key] = number

    def __setitem__(self, key: str, value: int) -> None:
        slot = self._key_slots.get(key)
        if slot is None:
            try:
                slot = self._table.slot(f"{self._prefix}\t{key}")
            except TableFullError:
                slot = -1
            self._key_slots[key] = slot
        if slot >= 0:
            self._table.values[slot] = value
        dict.__setitem__(self, key, value)


class SharedServiceCounters(ServiceCounters):
    """
    L{ServiceCounters} that also write every counter's value to a
    L{CounterTable} as it changes (C{held_bytes} excepted).
    """

    _slots: dict[str, int]
    _values: memoryview
    _shared: tuple[CounterTable, str]

    def __init__(self, table: CounterTable, service: str) -> None:
        """
        @param table: where to write.
        @param service: the service's name.
        @raise TableFullError: when the table has no room for its fields.
        """
        slots = {name: table.slot(f"{service}\t{name}") for name in INT_FIELDS}
        object.__setattr__(self, "_slots", slots)
        object.__setattr__(self, "_values", table.values)
        object.__setattr__(self, "_shared", (table, service))
        super().__init__()

    def __setattr__(self, name: str, value: Any) -> None:
        # On every counter change: kept short (about 0.4-0.7 us here).
        slot = self._slots.get(name)
        if slot is not None:
            self._values[slot] = value
        elif name in COUNTER_FIELDS and not isinstance(value, SharedCounter):
            table, service = self._shared
            value = SharedCounter(table, f"{service}\t{name}", value)
        # No descriptors on these fields: the instance dictionary is where
        # object.__setattr__ would put them, at a third of its cost.
        self.__dict__[name] = value


def shared_counters_factory(
    table: CounterTable, unshared: Collection[str] = UNSHARED_SERVICES
) -> Any:
    """
    @param unshared: the services whose counters stay out of the table (the
        app passes the service registry's datagram-only ones).
    @return: a function of a service's name giving its
        L{SharedServiceCounters} in C{table}, for L{twisted_echo.app.options}'s
        C{makeService}.
    """

    def make(service: str) -> ServiceCounters:
        if service in unshared:
            return ServiceCounters()
        return SharedServiceCounters(table, service)

    return make


def combine(
    shared: Mapping[str, ServiceCounters], reported: Mapping[str, ServiceCounters]
) -> dict[str, ServiceCounters]:
    """
    A live or dead worker's figures from its table and its last report.

    The table is exact and current for everything counted when it happens;
    a report adds what a worker measures (C{held_bytes}) and the bytes of
    connections still open, counted into the table only when they close. So
    each counter is the larger of the two (both only grow, so the result
    never goes back); C{connections_open} is the table's.

    @param shared: L{CounterTable.snapshot}.
    @param reported: the worker's last report.
    @return: the figures by service.
    """
    combined: dict[str, ServiceCounters] = {}
    for service in set(shared) | set(reported):
        table = shared.get(service, ServiceCounters())
        report = reported.get(service)
        if report is None:
            combined[service] = table
            continue
        counters = ServiceCounters()
        for name in INT_FIELDS:
            if name in GAUGE_FIELDS:
                setattr(counters, name, getattr(table, name))
            else:
                setattr(
                    counters, name, max(getattr(table, name), getattr(report, name))
                )
        for name in COUNTER_FIELDS:
            mine: Counter[str] = getattr(table, name)
            theirs: Counter[str] = getattr(report, name)
            merged = getattr(counters, name)
            for key in set(mine) | set(theirs):
                merged[key] = max(mine.get(key, 0), theirs.get(key, 0))
        counters.held_bytes = report.held_bytes
        combined[service] = counters
    return combined


def without_gauges(figures: Iterable[tuple[str, ServiceCounters]]) -> None:
    """
    Zero the gauges of a dead worker's figures (in place): its connections
    are gone and it holds nothing.
    """
    for _, counters in figures:
        for name in GAUGE_FIELDS:
            setattr(counters, name, 0)
