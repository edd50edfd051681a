# -*- test-case-name: tests.test_supervisor -*-
"""
C{--workers N}: one supervisor process, N worker processes serving every
listener.

Over 500 lines: L{Supervisor} is one state machine (start, replace a dead
worker with back-off, SIGHUP replacement, the drain delay, the drain and
its kill deadline) whose steps share the workers' table; the per-service
wiring comes from the service registry (L{twisted_echo.app.registry}).

The supervisor (the process twistd runs) opens every listener once, so a
busy port is still one line and exit status 1 and port 0 is still logged
with the port bound (L{twisted_echo.app.inherit}). A TCP or UDP listener gets one
C{SO_REUSEPORT} socket per worker, all bound to the same address, and the
kernel spreads connections and datagrams over them by a hash of their
addresses; a UNIX socket is one socket every worker accepts on. Each
worker is C{python -m twisted_echo.app.worker}: it parses the same options,
listens on the sockets it inherited, logs JSON events to its standard
output, counts into a table of counters the supervisor maps
(L{twisted_echo.operations.sharedcounters}), and reports what it measures every second.

The supervisor:
 - re-logs each worker's events in its own log, the worker named
   (C{[worker 2 twisted_echo.services.stream#info] echo connection from ...});
 - knows a worker is serving once it reports ready (its listeners are
   up: L{READY_FIELD});
 - replaces a worker that dies after it was ready (a crash) with a
   back-off per worker slot: the replacement starts no sooner than
   L{FIRST_BACKOFF} seconds after the crashed worker started, doubled with
   each crash in a row of that slot up to L{MAX_BACKOFF}; the count starts
   again once a worker has served for L{STABLE_UPTIME} seconds. Crashes
   never make the supervisor exit;
 - replaces a worker that dies before it was ready (a start-up failure)
   after the same kind of back-off, counted over all slots, and gives up,
   exit status 1, after L{MAX_QUICK_DEATHS} start-up failures in a row,
   unless another worker still serves: then it logs an error and keeps
   trying every L{MAX_BACKOFF} seconds;
 - on SIGHUP (L{reload}) replaces the workers one by one with fresh
   processes on the same listening sockets: each old worker is told to
   drain (SIGTERM) only once its replacement is ready, so no connection is
   refused or reset; a replacement that fails at start-up leaves the old
   worker serving and ends the reload;
 - serves C{--metrics} (with L{twisted_echo.app.runner}) from every worker's
   table and last report; a dead worker's gauges drop out at once and its
   counters are kept (C{Supervisor.retired}), to its last count;
 - talks to each worker over a control channel (L{twisted_echo.app.control}:
   commands on the worker's standard input, answers and connection records
   back on one more pipe): C{--admin}'s C{/faults} changes every worker's
   profiles, and C{/records} serves one ring fed by every worker's records
   (L{twisted_echo.app.forwarded}); a worker started later gets the state
   in force (the profiles changed at run time) in its orders;
 - on SIGTERM/SIGINT, after C{--drain-delay} (its C{/readyz} at 503 at
   once while the workers serve on; L{twisted_echo.app.draindelay}), sends
   SIGTERM to every worker (each drains as a single process does), waits
   for them all, then logs every service's counters summed over all
   workers, those that died included.

The listening sockets stay open in the supervisor while workers come and
go, so a connection that arrives while a worker is replaced waits in the
listen queue instead of being refused.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, eventFromJSON, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_echo.app.control import (
    CONTROL_FD_ORDER,
    RECORDS_ORDER,
    STATE_ORDER,
    JsonLines,
    Worker,
    WorkerControl,
)
from twisted_echo.app.draindelay import DEFAULT_DRAIN_DELAY, DrainDelay
from twisted_echo.app.forwarded import (
    SKIPPED_EVENT,
    ForwardedFaultSlot,
    add_forwarded_records,
)
from twisted_echo.app.inherit import (
    REUSEPORT_KINDS,
    open_datagram_sockets,
    open_stream_sockets,
    stream_address,
)
from twisted_echo.app.interfaces import IServer
from twisted_echo.app.registry import is_datagram_key, service_name
from twisted_echo.listening.activation import (
    adoptable_socket,
    parse_systemd_description,
)
from twisted_echo.listening.address import describe_address
from twisted_echo.listening.endpoints import parse_description
from twisted_echo.listening.listen import (
    ListenError,
    explain_listen_failure,
    parse_udp_description,
    warn_if_exposed,
)
from twisted_echo.operations.sharedcounters import CounterTable, combine, without_gauges
from twisted_echo.policies.counters import ServiceCounters
from twisted_echo.policies.idle import cancel_call
from twisted_echo.records.ring import RecordRing

_log = Logger()

#: Start-up failures (workers that died before they were ready) in a row
#: after which the supervisor gives up, when no other worker serves.
MAX_QUICK_DEATHS = 5
#: Seconds of back-off after the first crash or start-up failure in a row;
#: doubled for each further one.
FIRST_BACKOFF = 0.1
#: The longest back-off, seconds: a slot whose workers keep crashing is
#: restarted at most this often.
MAX_BACKOFF = 1.0
#: Seconds a worker must serve for its slot's crash count to start again.
STABLE_UPTIME = 10.0
#: Extra seconds given to workers beyond the drain timeout before SIGKILL.
KILL_GRACE = 5.0
#: The log field a worker's counters report travels in.
COUNTERS_FIELD = "sockecho_worker_counters"
#: The log field of the event a worker logs once its listeners are up.
READY_FIELD = "sockecho_worker_ready"
#: The log field a worker's events carry their formatted text in.
TEXT_FIELD = "sockecho_text"
#: The environment variable a worker finds its orders in.
WORKER_ENV = "SOCKECHO_WORKER"


def is_datagram_service(service: str) -> bool:
    """
    @param service: a listener's key in
        L{twisted_echo.app.options.listener_keys}.
    @return: whether its listeners are datagram ones, as the service
        registry says (L{twisted_echo.app.registry.is_datagram_key}): C{udp}
        (UDP echo) and C{whoami-udp}.
    """
    return is_datagram_key(service)


def counters_from_json(data: Mapping[str, Any]) -> ServiceCounters:
    """
    @param data: a L{ServiceCounters} as C{dataclasses.asdict} gave it.
    @return: the counters.
    """
    counters = ServiceCounters()
    for name, value in data.items():
        current = getattr(counters, name, None)
        if isinstance(current, dict):
            current.update(value)
        elif current is not None:
            setattr(counters, name, value)
    return counters


def add_counters(total: ServiceCounters, more: ServiceCounters) -> None:
    """
    Add C{more} into C{total}, field by field.
    """
    for name, value in vars(more).items():
        current = getattr(total, name)
        if isinstance(current, dict):
            current.update(value)  # Counter.update adds
        else:
            setattr(total, name, current + value)


@dataclass
class Listener:
    """
    One listener as the supervisor opened it.

    @ivar service: the service's name.
    @ivar index: its place among that service's listeners.
    @ivar description: the address as the user wrote it.
    @ivar sockets: one socket per worker, or one for all.
    """

    service: str
    index: int
    description: str
    sockets: list[socket.socket] = field(default_factory=list)
    kind: str = "tcp"

    def socket_for(self, worker: int) -> socket.socket:
        return self.sockets[worker % len(self.sockets)]


class WorkerProtocol(ProcessProtocol):
    """
    Talks to one worker process: its JSON log events on standard output,
    anything else it prints on standard error, its control channel
    (L{twisted_echo.app.control}: commands to its standard input, answers
    and events from C{control_fd}).
    """

    def __init__(
        self, supervisor: Supervisor, number: int, control_fd: int | None = None
    ) -> None:
        self.supervisor = supervisor
        self.number = number
        #: The descriptor its answers and events arrive on.
        self.control_fd = control_fd
        self._control = JsonLines(
            lambda message: supervisor.control.received(self, message),
            self._bad_control_line,
            records=lambda line: supervisor.control.received_records(self, line),
        )
        self.counters: dict[str, ServiceCounters] = {}
        #: When it was started and when it reported ready (reactor seconds).
        self.started_at = supervisor.reactor.seconds()
        self.ready_at: float | None = None
        #: Its process id, once started.
        self.pid: int | None = None
        self._pending = {1: b"", 2: b""}
        #: What the worker counts into (L{twisted_echo.operations.sharedcounters}).
        self.table: CounterTable | None = None

    def figures(self) -> dict[str, ServiceCounters]:
        """
        @return: the worker's counters now: its table, with what its last
            report measured (L{twisted_echo.operations.sharedcounters.combine}).
        """
        if self.table is None:
            return self.counters
        return combine(self.table.snapshot(), self.counters)

    def send_control(self, data: bytes) -> None:
        """
        Write C{data} (commands) to the worker's standard input.
        """
        self.transport.writeToChild(0, data)  # type: ignore[union-attr]

    def _bad_control_line(self, reason: str) -> None:
        _log.error(
            "worker {number}: control channel: {reason}",
            number=self.number,
            reason=reason,
        )

    def childDataReceived(self, childFD: int, data: bytes) -> None:  # noqa: N803
        if childFD == self.control_fd:
            self._control.feed(data)
            return
        lines = (self._pending.get(childFD, b"") + data).split(b"\n")
        self._pending[childFD] = lines.pop()
        for line in lines:
            if childFD == 1:
                self._event(line)
            elif line.strip():
                _log.error(
                    "worker {number}: {line}",
                    number=self.number,
                    line=line.decode("utf-8", "replace"),
                )

    def _event(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").lstrip("\x1e").strip()
        if not text:
            return
        try:
            event = eventFromJSON(text)
        except ValueError:
            _log.info("worker {number}: {line}", number=self.number, line=text)
            return
        if event.get(READY_FIELD):
            self.supervisor.worker_ready(self)
            return
        report = event.get(COUNTERS_FIELD)
        if report is not None:
            self.counters = {
                name: counters_from_json(data) for name, data in report.items()
            }
            return
        level = event.get("log_level")
        level_name = getattr(level, "name", "info")
        event["log_system"] = (
            f"worker {self.number} {event.get('log_namespace', '-')}#{level_name}"
        )
        event["sockecho_worker"] = self.number
        if TEXT_FIELD in event:
            event["log_format"] = "{" + TEXT_FIELD + "}"
            event.pop("log_flattened", None)
        globalLogPublisher(event)

    def processEnded(self, reason: Failure) -> None:  # noqa: N802
        self.supervisor.worker_ended(self, reason)


@implementer(IServer)
class Supervisor(Service):
    """
    Opens the listeners, runs C{count} workers on them, and drains them at
    shutdown (see the module docstring).

    @ivar counters: every service's counters summed over the workers, as
        last reported (L{totals} updates it).
    """

    def __init__(
        self,
        args: Sequence[str],
        listeners: Sequence[tuple[str, int, str]],
        stream_endpoint: Callable[..., Any],
        count: int,
        reactor: Any,
        drain_timeout: float,
        drain_delay: float = DEFAULT_DRAIN_DELAY,
    ) -> None:
        """
        @param args: the sockecho options, as given on the command line
            (each worker parses them again).
        @param listeners: C{(service, index, description)} of each listener.
        @param stream_endpoint: builds a stream listener's endpoint from its
            description, a reactor and C{tls_layer}
            (L{twisted_echo.app.options.Options.stream_endpoint}).
        @param count: how many workers.
        @param reactor: spawns processes and keeps time.
        @param drain_timeout: the workers' C{--drain-timeout}, seconds.
        @param drain_delay: C{--drain-delay}, seconds: the supervisor waits
            that long before telling the workers to drain (they are given
            0 and leave SIGINT to it).
        """
        self.args = list(args)
        self.listener_keys = list(listeners)
        self.stream_endpoint = stream_endpoint
        self.count = count
        self.reactor = reactor
        self.drain_timeout = drain_timeout
        self.delay = DrainDelay(drain_delay, reactor)
        self.listeners: list[Listener] = []
        self.workers: dict[int, WorkerProtocol] = {}
        self.retired: dict[str, ServiceCounters] = {}
        self.counters: dict[str, ServiceCounters] = {}
        self.failed: str | None = None
        self._quick_deaths = 0
        self._crashes: dict[int, int] = {}
        self._respawns: dict[int, IDelayedCall] = {}
        #: A reload's replacement for a slot, not ready yet.
        self.incoming: dict[int, WorkerProtocol] = {}
        #: Old workers told to drain (reload), not ended yet.
        self.draining: list[WorkerProtocol] = []
        self._reload_queue: list[int] = []
        self._stopping: Deferred[None] | None = None
        self._kill_call: IDelayedCall | None = None
        self.on_give_up: Callable[[str], None] = lambda reason: None
        #: Called when the drain starts and when it is over (metrics,
        #: systemd readiness).
        self.drain_started: list[Callable[[], object]] = []
        self.drain_ended: list[Callable[[], object]] = []
        #: The control channels (L{twisted_echo.app.control}): commands go
        #: to every worker alive and not draining.
        self.control = WorkerControl(reactor)
        self.control.targets = lambda: [*self.workers.values(), *self.incoming.values()]
        self.control.events[SKIPPED_EVENT] = _log_skipped
        #: The workers' connection records (C{--records}), numbered here;
        #: L{None} with C{--records 0} or when nothing reads them (then the
        #: workers make none). Set with L{keep_records}.
        self.records: RecordRing | None = None
        #: Each listener key's profile, changed on every worker (C{--admin}).
        self.fault_slots: dict[str, ForwardedFaultSlot] = {}

    def keep_records(self, ring: RecordRing | None) -> None:
        """
        Keep the records the workers send in C{ring} (L{None}: none kept).
        """
        self.records = ring
        if ring is None:
            self.control.records = None
            return

        def keep(worker: Worker, line: bytes) -> None:
            bad = add_forwarded_records(ring, line)
            if bad:
                _log.error(
                    "worker {number}: control channel: {count} record(s) not "
                    "understood; dropped",
                    number=worker.number,
                    count=bad,
                )

        self.control.records = keep

    # Start-up

    def privilegedStartService(self) -> None:
        """
        Open every listener, once.

        @raise ListenError: naming the listener that could not be opened;
            those already open are closed again.
        """
        Service.privilegedStartService(self)
        try:
            for service, index, description in self.listener_keys:
                self.listeners.append(self._open(service, index, description))
        except ListenError:
            self._close_sockets()
            raise

    def _open(self, service: str, index: int, description: str) -> Listener:
        listener = Listener(service, index, description)
        datagram = is_datagram_service(service)
        parsed = parse_description(description)
        try:
            if parsed.systemd:
                # systemd opened it: one socket every worker shares.
                wanted = socket.SOCK_DGRAM if datagram else socket.SOCK_STREAM
                activated = parse_systemd_description(parsed.inner)
                found = adoptable_socket(activated, wanted)
                shared = socket.socket(fileno=os.dup(found.inherited.fd))
                listener.sockets = [shared]
                kind = "udp" if datagram else "tcp"
            elif datagram:
                where = parse_udp_description(description)
                listener.sockets = open_datagram_sockets(
                    where.interface, where.port, self.count
                )
                kind = "udp"
            else:
                # Where it would listen, asked without building the TLS
                # layer: the workers build it (and check it fits) as they
                # listen.
                address = stream_address(
                    lambda r: self.stream_endpoint(description, r, tls_layer=False)
                )
                if address is None:
                    raise ListenError(
                        description, "this endpoint type does not work with --workers"
                    )
                count = self.count if address.kind in REUSEPORT_KINDS else 1
                listener.sockets = open_stream_sockets(address, count)
                kind = "ssl" if parsed.tls else address.kind
        except ListenError:
            raise
        except Exception as e:
            raise ListenError(description, explain_listen_failure(e)) from e
        listener.kind = kind
        name = service_name(service)
        bound = _socket_address(listener.sockets[0], kind)
        _log.info(
            "{service} listening on {address}",
            service=name,
            address=describe_address(bound),
        )
        warn_if_exposed(name, bound)
        return listener

    def bound_addresses(self) -> list[tuple[str, Any, str]]:
        """
        @return: C{(service, address, address as a client endpoint string)}
            of every listener open now, in order (the service C{whoami} for
            whoami's UDP listeners too); for the ports file.
        """
        found = []
        for listener in self.listeners:
            address = _socket_address(listener.sockets[0], listener.kind)
            name = service_name(listener.service)
            found.append((name, address, describe_address(address)))
        return found

    def startService(self) -> None:
        """
        Start every worker.
        """
        Service.startService(self)
        if not self.listeners:
            self.privilegedStartService()
        for number in range(1, self.count + 1):
            self._spawn(number)

    def _spawn(self, number: int, incoming: bool = False) -> None:
        """
        Start a worker for slot C{number}: the slot's worker, or with
        C{incoming} the replacement a reload waits for.
        """
        if not incoming:
            self._respawns.pop(number, None)
        orders = {
            "number": number,
            "supervisor": os.getpid(),
            "args": self.args,
            "sockets": [
                [
                    listener.service,
                    listener.index,
                    listener.socket_for(number - 1).fileno(),
                    listener.socket_for(number - 1).family,
                ]
                for listener in self.listeners
            ],
        }
        child_fds: dict[int, int | str] = {0: "w", 1: "r", 2: "r"}
        for listener in self.listeners:
            fd = listener.socket_for(number - 1).fileno()
            child_fds[fd] = fd
        table, table_fd = CounterTable.create()
        orders["counters_fd"] = table_fd
        child_fds[table_fd] = table_fd
        # The worker's answers and events: a pipe on a descriptor the
        # inherited ones leave free.
        control_fd = max(child_fds) + 1
        child_fds[control_fd] = "r"
        orders[CONTROL_FD_ORDER] = control_fd
        orders[STATE_ORDER] = self.control.replay()
        orders[RECORDS_ORDER] = self.records is not None
        env = dict(os.environ)
        env[WORKER_ENV] = json.dumps(orders)
        env.pop("LISTEN_FDS", None)
        env.pop("LISTEN_PID", None)
        env.pop("NOTIFY_SOCKET", None)
        protocol = WorkerProtocol(self, number, control_fd)
        protocol.table = table
        if incoming:
            self.incoming[number] = protocol
        else:
            self.workers[number] = protocol
        try:
            self.reactor.spawnProcess(
                protocol,
                sys.executable,
                [sys.executable, "-m", "twisted_echo.app.worker"],
                env=env,
                childFDs=child_fds,
            )
        finally:
            os.close(table_fd)
        protocol.pid = protocol.transport.pid  # type: ignore[union-attr]
        _log.info(
            "worker {number} started (pid {pid})", number=number, pid=protocol.pid
        )

    # Workers that become ready or end

    def serving(self) -> list[WorkerProtocol]:
        """
        @return: the workers alive and ready now, old ones still draining
            excluded.
        """
        return [w for w in self.workers.values() if w.ready_at is not None]

    def worker_ready(self, protocol: WorkerProtocol) -> None:
        """
        A worker reported that its listeners are up: log it; during a
        reload, put it in its slot and tell the worker it replaces to drain.
        """
        if protocol.ready_at is not None:
            return
        protocol.ready_at = self.reactor.seconds()
        number = protocol.number
        _log.info("worker {number} ready (pid {pid})", number=number, pid=protocol.pid)
        if self._stopping is not None:
            return
        self._quick_deaths = 0
        if self.incoming.get(number) is not protocol:
            return
        del self.incoming[number]
        # The slot's worker may have crashed meanwhile: this one replaces
        # it, not the one its back-off would start.
        cancel_call(self._respawns.pop(number, None))
        old = self.workers.get(number)
        self.workers[number] = protocol
        self._crashes.pop(number, None)
        if old is not None:
            self.draining.append(old)
            _log.info(
                "worker {number}: pid {pid} replaced by pid {new}; draining it",
                number=number,
                pid=old.pid,
                new=protocol.pid,
            )
            _signal(old, signal.SIGTERM)
        self._reload_next()

    def worker_ended(self, protocol: WorkerProtocol, reason: Failure) -> None:
        """
        A worker's process ended: keep its counters; unless shutting down,
        replace it (L{worker_crashed}, L{worker_failed_start}) or, for an
        old worker drained by a reload or a reload's replacement, say so.
        """
        number = protocol.number
        self.control.worker_gone(protocol)
        # Everything it counted, to its last increment; its connections and
        # the bytes they held are gone.
        final = protocol.figures()
        without_gauges(final.items())
        if protocol.table is not None:
            protocol.table.close()
            protocol.table = None
        protocol.counters = {}
        for name, counters in final.items():
            add_counters(self.retired.setdefault(name, ServiceCounters()), counters)
        why = _exit_reason(reason)
        if protocol in self.draining:
            self.draining.remove(protocol)
            _log.info(
                "worker {number}: old pid {pid} {why} after its drain",
                number=number,
                pid=protocol.pid,
                why=why,
            )
        elif self.incoming.get(number) is protocol:
            del self.incoming[number]
            if self._stopping is None:
                self._reload_queue.clear()
                _log.error(
                    "worker {number}: its replacement {why} before it was ready; "
                    "the old worker serves on and the reload is abandoned",
                    number=number,
                    why=why,
                )
        elif self.workers.get(number) is protocol:
            del self.workers[number]
            if self._stopping is None:
                if protocol.ready_at is None:
                    self.worker_failed_start(protocol, why)
                else:
                    self.worker_crashed(protocol, why)
        if self._stopping is not None and not self._alive():
            self._all_stopped()

    def _alive(self) -> list[WorkerProtocol]:
        return [*self.workers.values(), *self.incoming.values(), *self.draining]

    def _backoff(self, in_a_row: int, protocol: WorkerProtocol) -> float:
        """
        @param in_a_row: crashes (or start-up failures) in a row so far,
            this one included.
        @return: seconds to wait before replacing C{protocol}: the back-off
            (L{FIRST_BACKOFF} doubled per further death, at most
            L{MAX_BACKOFF}) counted from when it started.
        """
        backoff = min(MAX_BACKOFF, FIRST_BACKOFF * 2.0 ** (in_a_row - 1))
        lived: float = self.reactor.seconds() - protocol.started_at
        return round(max(0.0, backoff - lived), 3)

    def worker_crashed(self, protocol: WorkerProtocol, why: str) -> None:
        """
        A worker that was ready died: replace it after its slot's back-off.
        Never gives up.
        """
        number = protocol.number
        assert protocol.ready_at is not None
        if self.reactor.seconds() - protocol.ready_at >= STABLE_UPTIME:
            self._crashes[number] = 0
        crashes = self._crashes[number] = self._crashes.get(number, 0) + 1
        delay = self._backoff(crashes, protocol)
        _log.warn(
            "worker {number} {why}; starting a new one in {delay} s",
            number=number,
            why=why,
            delay=delay,
        )
        self._respawns[number] = self.reactor.callLater(delay, self._spawn, number)

    def worker_failed_start(self, protocol: WorkerProtocol, why: str) -> None:
        """
        A worker died before it was ready: replace it after a back-off, or
        give up after L{MAX_QUICK_DEATHS} in a row when no worker serves.
        """
        number = protocol.number
        self._quick_deaths += 1
        if self._quick_deaths >= MAX_QUICK_DEATHS:
            reason = (
                f"workers keep dying at start-up ({self._quick_deaths} in a row; "
                f"the last {why})"
            )
            serving = len(self.serving())
            if not serving:
                self.failed = reason
                _log.critical("sockecho: {reason}; giving up", reason=reason)
                self.on_give_up(reason)
                return
            _log.error(
                "sockecho: {reason}; {serving} worker(s) still serve, so trying "
                "again in {delay} s",
                reason=reason,
                serving=serving,
                delay=MAX_BACKOFF,
            )
            self._respawns[number] = self.reactor.callLater(
                MAX_BACKOFF, self._spawn, number
            )
            return
        delay = self._backoff(self._quick_deaths, protocol)
        _log.warn(
            "worker {number} {why} before it was ready; starting a new one in "
            "{delay} s",
            number=number,
            why=why,
            delay=delay,
        )
        self._respawns[number] = self.reactor.callLater(delay, self._spawn, number)

    # Reload

    def reload(self) -> None:
        """
        Replace every worker with a fresh process (SIGHUP), one slot at a
        time: each replacement listens on the same sockets, and the worker
        it replaces is told to drain once it is ready. Ignored, with a log
        line, while a reload runs or the drain has begun.
        """
        if self._stopping is not None:
            _log.info("reload asked for while draining; ignored")
            return
        if self.incoming or self._reload_queue:
            _log.info("reload asked for while one runs; ignored")
            return
        self._reload_queue = sorted(self.workers)
        _log.info(
            "reloading: replacing {count} worker(s) one by one",
            count=len(self._reload_queue),
        )
        self._reload_next()

    def _reload_next(self) -> None:
        while self._reload_queue:
            number = self._reload_queue.pop(0)
            if number in self.workers and number not in self.incoming:
                self._spawn(number, incoming=True)
                return
        if not self.incoming:
            _log.info("reload done: {count} worker(s) serve", count=len(self.workers))

    # Shutdown

    def totals(self) -> dict[str, ServiceCounters]:
        """
        @return: every service's counters summed over every worker so far
            (live workers as last reported); also kept as L{counters}.
        """
        totals: dict[str, ServiceCounters] = {}
        reports = [self.retired] + [w.figures() for w in self._alive()]
        for report in reports:
            for name, counters in report.items():
                add_counters(totals.setdefault(name, ServiceCounters()), counters)
        self.counters = totals
        return totals

    #: Labels of the figures L{snapshot} gives: none, they are summed.
    labels: Mapping[str, str] = {}

    def snapshot(self) -> Mapping[str, ServiceCounters]:
        """
        @return: the counters summed over every worker, for C{--metrics}
            (a L{twisted_echo.operations.metrics.CounterSource}).
        """
        return self.totals()

    def status_counters(self) -> Mapping[str, ServiceCounters]:
        """
        @return: see L{IServer.status_counters}: L{snapshot} (summed over
            the workers as they last reported), every service listed.
        """
        found = dict(self.snapshot())
        for key, _, _ in self.listener_keys:
            found.setdefault(service_name(key), ServiceCounters())
        return found

    def stopService(self) -> Deferred[None]:
        """
        Drain every worker (SIGTERM), wait for them all to end (SIGKILL
        after the drain timeout and L{KILL_GRACE}), then log the summed
        counters.
        """
        Service.stopService(self)
        done: Deferred[None] = Deferred()
        self._stopping = done
        for hook in self.drain_started:
            hook()
        for call in self._respawns.values():
            cancel_call(call)
        self._respawns.clear()
        self._reload_queue.clear()
        self.delay.start(self._drain_workers)
        return done

    def end_drain_delay(self, cause: str) -> bool:
        """
        See L{IServer.end_drain_delay}.
        """
        return self.delay.cut_short(cause)

    def _drain_workers(self) -> None:
        """
        Tell every worker to drain (SIGTERM), SIGKILL those left after the
        drain timeout and L{KILL_GRACE}.
        """
        if self._stopping is None:
            return  # every worker ended during the delay
        _log.info(
            "shutting down: draining {count} worker(s) for up to {timeout} s",
            count=len(self.workers),
            timeout=self.drain_timeout,
        )
        if not self._alive():
            self._all_stopped()
            return
        for protocol in self._alive():
            _signal(protocol, signal.SIGTERM)
        self._kill_call = self.reactor.callLater(
            self.drain_timeout + KILL_GRACE, self._kill_remaining
        )

    def _kill_remaining(self) -> None:
        self._kill_call = None
        for protocol in self._alive():
            _log.warn(
                "worker {number} did not stop; killing it", number=protocol.number
            )
            _signal(protocol, signal.SIGKILL)

    def _all_stopped(self) -> None:
        self.delay.cancel()
        cancel_call(self._kill_call)
        self._close_sockets()
        totals = self.totals()
        order = [key[0] for key in self.listener_keys]
        for name in sorted(totals, key=lambda n: order.index(n) if n in order else 99):
            _log.info(
                "{service}: {summary}", service=name, summary=totals[name].summary()
            )
        for hook in self.drain_ended:
            hook()
        done, self._stopping = self._stopping, None
        if done is not None and not done.called:
            done.callback(None)

    def _close_sockets(self) -> None:
        """
        Close every listening socket, and remove the path of each UNIX
        socket this supervisor bound (its workers leave it in place:
        L{twisted_echo._twisted.adopt.AdoptedUNIXPort}).
        """
        for listener in self.listeners:
            for sock in listener.sockets:
                if listener.kind == "unix":
                    path = sock.getsockname()
                    if isinstance(path, str) and path and not path.startswith("\0"):
                        try:
                            os.unlink(path)
                        except OSError:
                            pass
                sock.close()
        self.listeners = []


def _log_skipped(worker: Any, count: Any) -> None:
    _log.warn(
        "worker {number}: {count} connection record(s) dropped on their way "
        "here (this supervisor read them too slowly)",
        number=worker.number,
        count=count,
    )


def _signal(protocol: WorkerProtocol, signum: int) -> None:
    try:
        protocol.transport.signalProcess(signum)  # type: ignore[union-attr]
    except Exception:
        pass  # already gone


def _exit_reason(reason: Failure) -> str:
    value = reason.value
    signum = getattr(value, "signal", None)
    if signum:
        return f"was killed by signal {signum} ({signal.Signals(signum).name})"
    if isinstance(value, ProcessDone):
        return "exited"
    return f"exited with status {getattr(value, 'exitCode', '?')}"


def _socket_address(sock: socket.socket, kind: str) -> Any:
    """
    @param sock: a bound socket.
    @param kind: C{tcp}, C{udp}, C{ssl} or C{unix}.
    @return: its address as a Twisted address (TLS-marked for C{ssl}).
    """
    from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return UNIXAddress(name)
    udp = kind == "udp"
    if sock.family == socket.AF_INET6:
        address: Any = IPv6Address("UDP" if udp else "TCP", name[0], name[1])
    else:
        address = IPv4Address("UDP" if udp else "TCP", name[0], name[1])
    if kind == "ssl":
        from twisted_echo.listening.address import tls_address

        address = tls_address(address)
    return address
