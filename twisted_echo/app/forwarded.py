# -*- test-case-name: tests.test_forwarded -*-
"""
What the C{--workers} supervisor serves on behalf of its workers, over the
control channel (L{twisted_echo.app.control}):

 - C{/faults} (C{--admin}): L{ForwardedFaultSlot} holds each listener
   key's profile in force. A change is checked once, here (a profile that
   does not parse is refused before anything is sent), becomes the state
   every worker started later gets, and is sent to every live worker
   (command L{FAULTS_COMMAND}, handled in the worker by
   L{worker_handlers}); it is answered once every worker applied it.
   A profile without C{seed=} is given one here, so every worker draws
   from the same seed (each numbering its own connections from 1 after
   the change; docs/faults.md "Seeds and replay").
 - C{/records}: the workers send each connection record as it closes
   (L{record_item}, in a line of records: L{WorkerChannel.send_record});
   the supervisor numbers them in its own ring (L{ForwardedRecord}), so
   ids are unique across the workers and the filters and the long-poll
   work as with one process. It does not decode them: it keeps each
   record's JSON text as it came, beside the fields its filters read, and
   C{/records} puts the supervisor's C{id} in front of the text. The JSON
   log's record event is logged by the supervisor, with that number.

Adding a command (a run-time switch such as "pause accepting"): a handler
in L{worker_handlers} (the worker's side: a callable of the command's
C{args} returning what to answer, or raising
L{twisted_echo.app.control.CommandError}), and on the supervisor's side
C{supervisor.control.broadcast(NAME, args, keep=KEY)}, which fires once
every live worker confirmed; C{keep} makes it the state workers started
later apply before they take any connection.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from twisted_echo.app.control import (
    RECORD_SEPARATOR,
    CommandError,
    Handler,
    WorkerControl,
)
from twisted_echo.app.registry import is_datagram_key
from twisted_echo.faults.profile import FaultProfile, parse_profile
from twisted_echo.faults.runtime import FaultSlot, SwapRefusedError
from twisted_echo.operations.health import HealthSwitch
from twisted_echo.records.record import SCHEMA_VERSION, ConnectionRecord
from twisted_echo.records.recordjson import fields_json, json_string
from twisted_echo.records.ring import RecordRing

#: The command that sets or clears a listener's fault profile:
#: C{{"listener": KEY, "profile": TEXT or null}} (the text with its seed).
FAULTS_COMMAND = "faults"
#: The command that pauses a worker's listeners or has them serve again
#: (C{/health}'s C{listeners}): C{{"paused": true|false}}.
PAUSE_COMMAND = "pause"
#: The event a worker sends the count of events it dropped in.
SKIPPED_EVENT = "skipped"

_log = Logger()


def with_seed(text: str, seed: int) -> str:
    """
    @return: profile C{text} with C{;seed=SEED} added, unless it gives one.
    """
    clauses = [c.strip() for c in text.split(";")]
    if any(c.startswith("seed=") for c in clauses):
        return text
    return f"{text};seed={seed}"


class ForwardedFaultSlot:
    """
    One listener key's profile in a supervisor of workers: the state in
    force (read by C{GET /faults}), changed on every worker by L{replace}
    and L{clear}.

    @ivar key: the listener key (C{echo}, C{udp}...).
    @ivar datagram: whether it is a UDP listener key.
    @ivar profile: the profile in force (L{None}: none).
    @ivar seed: its seed: given, or picked here for a run-time change;
        L{None} for a C{--faults} profile without one (each worker then
        picked its own at start).
    """

    def __init__(
        self, key: str, control: WorkerControl, profile: FaultProfile | None = None
    ) -> None:
        self.key = key
        self.datagram = is_datagram_key(key)
        self.control = control
        self.profile = profile
        self.seed = None if profile is None else profile.seed

    def describe(self) -> dict[str, Any]:
        """
        @return: C{{"listener", "profile", "seed"}}, as L{FaultSlot.describe}.
        """
        return {
            "listener": self.key,
            "profile": None if self.profile is None else self.profile.text,
            "seed": self.seed,
        }

    def replace(self, text: str) -> Deferred[dict[str, Any]]:
        """
        Put profile C{text} in force on every worker.

        @return: fires with L{describe} and C{workers}, the numbers of the
            workers that applied it, once all live ones did; fails with
            L{twisted_echo.app.control.NotConfirmedError} otherwise (the
            state is changed all the same: workers started later get it).
        @raise twisted_echo.faults.profile.ProfileError: it does not parse
            (nothing is sent).
        """
        profile = parse_profile(text, datagram=self.datagram)
        seed = profile.seed
        if seed is None:
            seed = random.SystemRandom().randrange(1 << 32)
        self.profile, self.seed = profile, seed
        return self._send(with_seed(profile.text, seed))

    def clear(self) -> Deferred[dict[str, Any]]:
        """
        No profile on any worker: see L{replace}.
        """
        self.profile, self.seed = None, None
        return self._send(None)

    def _send(self, text: str | None) -> Deferred[dict[str, Any]]:
        described = self.describe()
        sent = self.control.broadcast(
            FAULTS_COMMAND,
            {"listener": self.key, "profile": text},
            keep=f"{FAULTS_COMMAND}/{self.key}",
        )

        def answer(results: Mapping[int, Any]) -> dict[str, Any]:
            return {**described, "workers": sorted(results)}

        return sent.addCallback(answer)


def forwarded_fault_slots(
    keys: Iterable[str],
    profiles: Mapping[str, FaultProfile],
    control: WorkerControl,
) -> dict[str, ForwardedFaultSlot]:
    """
    @param keys: the listener keys of the running listeners
        (L{twisted_echo.app.options.listener_keys}' first items).
    @param profiles: C{--faults}' profiles, by listener key.
    @return: each key's slot, stream keys first, as a single process lists
        them.
    """
    ordered = list(dict.fromkeys(keys))
    ordered.sort(key=is_datagram_key)
    return {key: ForwardedFaultSlot(key, control, profiles.get(key)) for key in ordered}


#: Between the fields of one record item (L{record_item}).
FIELD_SEPARATOR = "\x1f"
_FIELD_SEPARATOR = FIELD_SEPARATOR.encode("ascii")
_RECORD_SEPARATOR = RECORD_SEPARATOR.encode("ascii")
#: About the bytes one worker's record held in the supervisor's ring costs
#: (C{tests.test_forwarded} measures it), without its C{first_bytes}.
FORWARDED_RECORD_BYTES = 750
#: The text of the few fields that repeat from record to record (service
#: names, causes), kept once; at most L{_MAX_SHARED} of them.
_SHARED: dict[bytes, str] = {}
_MAX_SHARED = 256


def record_item(record: ConnectionRecord) -> str:
    """
    @return: C{record} as a worker sends it: its C{service}, C{client} and
        C{cause} as JSON strings, then its JSON text without C{schema} and
        C{id} (L{fields_json}), separated by L{FIELD_SEPARATOR}; ASCII,
        with no other control character.
    """
    return FIELD_SEPARATOR.join(
        (
            json_string(record.service),
            json_string(record.client),
            json_string(record.cause),
            fields_json(record),
        )
    )


def _text(field: bytes) -> str:
    """
    @return: a JSON string's value (read without the decoder when it
        holds no escape).
    @raise ValueError: it is not a JSON string.
    """
    if b"\\" in field or len(field) < 2 or field[:1] != b'"' or field[-1:] != b'"':
        value = json.loads(field)
        if not isinstance(value, str):
            raise ValueError("not a string")
        return value
    return field[1:-1].decode("ascii")


def _shared(field: bytes) -> str:
    found = _SHARED.get(field)
    if found is None:
        found = sys.intern(_text(field))
        if len(_SHARED) < _MAX_SHARED:
            _SHARED[field] = found
    return found


class ForwardedRecord(ConnectionRecord):
    """
    A worker's connection record, as it came over the control channel:
    numbered again by the supervisor's ring; filtered by service and client
    as any record. Only C{service}, C{client}, C{cause} and C{id} are read
    from it; the rest stays the worker's JSON text (L{fields_json}), read
    only by L{as_dict} (about L{FORWARDED_RECORD_BYTES} bytes held).

    @ivar text: the record's JSON text after its C{id} (bytes).
    """

    __slots__ = ("text",)

    def __init__(self, service: str, client: str, cause: str, text: bytes) -> None:
        self.id = None
        # Not logged yet: the supervisor's JSON log has it (log_record).
        self.logged = False
        self.service = service
        self.client = client
        self.cause = cause
        self.text = text

    def as_json(self) -> bytes:
        """
        @return: the worker's JSON text, its C{id} the supervisor's.
        """
        number = b"null" if self.id is None else b"%d" % self.id
        return b'{"schema":%d,"id":%s,%s' % (SCHEMA_VERSION, number, self.text)

    def as_dict(self) -> dict[str, Any]:
        """
        @return: L{as_json}, decoded.
        """
        made: dict[str, Any] = json.loads(self.as_json())
        return made

    def __repr__(self) -> str:
        made = self.as_dict()
        limit = made.get("limit")
        return (
            f"<record {self.id} {self.service} {self.client} {self.cause}"
            f"{'' if limit is None else ' ' + str(limit)}: "
            f"{made.get('bytes_in')} in, {made.get('bytes_out')} out>"
        )


def add_forwarded_records(ring: RecordRing, line: bytes) -> int:
    """
    Keep a worker's line of records (L{record_item}s, its tag taken off)
    in the supervisor's ring, in order.

    @return: how many items were not records (dropped).
    """
    bad = 0
    add = ring.add
    for item in line.split(_RECORD_SEPARATOR):
        parts = item.split(_FIELD_SEPARATOR, 3)
        try:
            service, client, cause, text = parts
            record = ForwardedRecord(
                _shared(service), _text(client), _shared(cause), text
            )
        except ValueError:
            bad += 1
            continue
        add(record)
    return bad


def worker_handlers(
    fault_slots: Mapping[str, FaultSlot], health: HealthSwitch | None = None
) -> dict[str, Handler]:
    """
    @param fault_slots: the worker's profiles
        (L{twisted_echo.app.server.SockechoService.fault_slots}).
    @param health: the worker's switch (its listeners), for L{PAUSE_COMMAND}.
    @return: the worker's command handlers, by command name.
    """

    def faults(args: Mapping[str, Any]) -> Any:
        slot = fault_slots.get(str(args.get("listener")))
        if slot is None:
            raise CommandError(f"no listener {args.get('listener')!r} here")
        text = args.get("profile")
        try:
            if text is None:
                slot.clear()
            else:
                slot.replace(str(text))
        except (ValueError, SwapRefusedError) as e:
            raise CommandError(str(e)) from None
        return slot.describe()

    def pause(args: Mapping[str, Any]) -> Any:
        if health is None:
            raise CommandError("no listeners to pause here")
        return health.change({"listeners": "pause" if args.get("paused") else "serve"})

    return {FAULTS_COMMAND: faults, PAUSE_COMMAND: pause}


def pause_workers(control: WorkerControl) -> Callable[[bool], Deferred[Any]]:
    """
    @return: the supervisor's C{pause} for its
        L{twisted_echo.operations.health.HealthSwitch}: every worker's
        listeners paused (C{True}) or serving again, also the state workers
        started later take.
    """

    def pause(paused: bool) -> Deferred[Any]:
        return control.broadcast(PAUSE_COMMAND, {"paused": paused}, keep=PAUSE_COMMAND)

    return pause
