# -*- test-case-name: tests.test_supervisor -*-
"""
C{--workers N}: one supervisor process, N worker processes serving every
listener.

The supervisor (the process twistd runs) opens every listener once, so a
busy port is still one line and exit status 1 and port 0 is still logged
with the port bound (L{twisted_echo.inherit}). A TCP or UDP listener gets one
C{SO_REUSEPORT} socket per worker, all bound to the same address, and the
kernel spreads connections and datagrams over them by a hash of their
addresses; a UNIX socket is one socket every worker accepts on. Each
worker is C{python -m twisted_echo.worker}: it parses the same options,
listens on the sockets it inherited, logs JSON events to its standard
output, and reports its counters every second.

The supervisor:
 - re-logs each worker's events in its own log, the worker named
   (C{[worker 2 twisted_echo.stream#info] echo connection from ...});
 - replaces a worker that dies at once (after a back-off when workers die
   within L{QUICK_DEATH} seconds of starting), and gives up, exit status 1,
   after L{MAX_QUICK_DEATHS} such deaths in a row;
 - on SIGTERM/SIGINT sends SIGTERM to every worker (each drains as a
   single process does), waits for them all, then logs every service's
   counters summed over all workers, those that died included.

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

from twisted_echo.address import describe_address
from twisted_echo.counters import ServiceCounters
from twisted_echo.idle import cancel_call
from twisted_echo.inherit import (
    REUSEPORT_KINDS,
    open_datagram_sockets,
    open_stream_sockets,
    stream_address,
)
from twisted_echo.listen import (
    ListenError,
    explain_listen_failure,
    parse_udp_description,
    warn_if_exposed,
)
from twisted_echo.systemd import (
    adoptable_socket,
    is_systemd_description,
    parse_systemd_description,
)

_log = Logger()

#: A worker that dies within this many seconds of starting died "quickly".
QUICK_DEATH = 2.0
#: Quick deaths in a row after which the supervisor gives up.
MAX_QUICK_DEATHS = 5
#: Seconds before replacing a worker after its first quick death; doubled
#: for each further one.
FIRST_BACKOFF = 0.1
#: Extra seconds given to workers beyond the drain timeout before SIGKILL.
KILL_GRACE = 5.0
#: The log field a worker's counters report travels in.
COUNTERS_FIELD = "sockecho_worker_counters"
#: The log field a worker's events carry their formatted text in.
TEXT_FIELD = "sockecho_text"
#: The environment variable a worker finds its orders in.
WORKER_ENV = "SOCKECHO_WORKER"


def is_datagram_service(service: str) -> bool:
    """
    @param service: a listener's service name in
        L{twisted_echo.tap.listener_keys}.
    @return: whether its listeners are UDP ones: C{udp} (UDP echo) and
        C{*-udp} (C{whoami-udp}).
    """
    return service == "udp" or service.endswith("-udp")


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
    anything else it prints on standard error.
    """

    def __init__(self, supervisor: Supervisor, number: int) -> None:
        self.supervisor = supervisor
        self.number = number
        self.counters: dict[str, ServiceCounters] = {}
        self._pending = {1: b"", 2: b""}

    def childDataReceived(self, childFD: int, data: bytes) -> None:  # noqa: N803
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
        stream_endpoint: Callable[[str, Any], Any],
        count: int,
        reactor: Any,
        drain_timeout: float,
    ) -> None:
        """
        @param args: the sockecho options, as given on the command line
            (each worker parses them again).
        @param listeners: C{(service, index, description)} of each listener.
        @param stream_endpoint: builds a stream listener's endpoint from its
            description and a reactor (L{tap.Options.stream_endpoint}).
        @param count: how many workers.
        @param reactor: spawns processes and keeps time.
        @param drain_timeout: the workers' C{--drain-timeout}, seconds.
        """
        self.args = list(args)
        self.listener_keys = list(listeners)
        self.stream_endpoint = stream_endpoint
        self.count = count
        self.reactor = reactor
        self.drain_timeout = drain_timeout
        self.listeners: list[Listener] = []
        self.workers: dict[int, WorkerProtocol] = {}
        self.retired: dict[str, ServiceCounters] = {}
        self.counters: dict[str, ServiceCounters] = {}
        self.failed: str | None = None
        self._started_at: dict[int, float] = {}
        self._quick_deaths = 0
        self._respawns: dict[int, IDelayedCall] = {}
        self._stopping: Deferred[None] | None = None
        self._kill_call: IDelayedCall | None = None
        self.on_give_up: Callable[[str], None] = lambda reason: None
        #: Called when the drain starts and when it is over (metrics,
        #: systemd readiness).
        self.drain_started: list[Callable[[], object]] = []
        self.drain_ended: list[Callable[[], object]] = []

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
        try:
            if is_systemd_description(description):
                # systemd opened it: one socket every worker shares.
                wanted = socket.SOCK_DGRAM if datagram else socket.SOCK_STREAM
                found = adoptable_socket(parse_systemd_description(description), wanted)
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
                address = stream_address(lambda r: self.stream_endpoint(description, r))
                if address is None:
                    raise ListenError(
                        description, "this endpoint type does not work with --workers"
                    )
                count = self.count if address.kind in REUSEPORT_KINDS else 1
                listener.sockets = open_stream_sockets(address, count)
                kind = "ssl" if description.startswith("ssl:") else address.kind
        except ListenError:
            raise
        except Exception as e:
            raise ListenError(description, explain_listen_failure(e)) from e
        listener.kind = kind
        name = service.removesuffix("-udp") or service
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
            name = listener.service.removesuffix("-udp") or listener.service
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

    def _spawn(self, number: int) -> None:
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
        env = dict(os.environ)
        env[WORKER_ENV] = json.dumps(orders)
        env.pop("LISTEN_FDS", None)
        env.pop("LISTEN_PID", None)
        env.pop("NOTIFY_SOCKET", None)
        protocol = WorkerProtocol(self, number)
        self.workers[number] = protocol
        self._started_at[number] = self.reactor.seconds()
        self.reactor.spawnProcess(
            protocol,
            sys.executable,
            [sys.executable, "-m", "twisted_echo.worker"],
            env=env,
            childFDs=child_fds,
        )
        protocol.transport.closeStdin()  # type: ignore[union-attr]
        _log.info(
            "worker {number} started (pid {pid})",
            number=number,
            pid=protocol.transport.pid,  # type: ignore[union-attr]
        )

    # Workers that end

    def worker_ended(self, protocol: WorkerProtocol, reason: Failure) -> None:
        """
        A worker's process ended: keep its counters, and replace it unless
        shutting down.
        """
        number = protocol.number
        if self.workers.get(number) is protocol:
            del self.workers[number]
        for name, counters in protocol.counters.items():
            add_counters(self.retired.setdefault(name, ServiceCounters()), counters)
        if self._stopping is not None:
            if not self.workers:
                self._all_stopped()
            return
        why = _exit_reason(reason)
        lived = self.reactor.seconds() - self._started_at.get(number, 0.0)
        if lived < QUICK_DEATH:
            self._quick_deaths += 1
        else:
            self._quick_deaths = 0
        if self._quick_deaths >= MAX_QUICK_DEATHS:
            self.failed = (
                f"workers keep dying at start-up ({self._quick_deaths} in a row; "
                f"the last {why})"
            )
            _log.critical("sockecho: {reason}; giving up", reason=self.failed)
            self.on_give_up(self.failed)
            return
        delay = 0.0
        if self._quick_deaths:
            delay = min(1.0, FIRST_BACKOFF * 2 ** (self._quick_deaths - 1))
        _log.warn(
            "worker {number} {why}; starting a new one in {delay} s",
            number=number,
            why=why,
            delay=delay,
        )
        self._respawns[number] = self.reactor.callLater(delay, self._spawn, number)

    # Shutdown

    def totals(self) -> dict[str, ServiceCounters]:
        """
        @return: every service's counters summed over every worker so far
            (live workers as last reported); also kept as L{counters}.
        """
        totals: dict[str, ServiceCounters] = {}
        reports = [self.retired] + [w.counters for w in self.workers.values()]
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
            (a L{twisted_echo.metrics.CounterSource}).
        """
        return self.totals()

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
        _log.info(
            "shutting down: draining {count} worker(s) for up to {timeout} s",
            count=len(self.workers),
            timeout=self.drain_timeout,
        )
        if not self.workers:
            self._all_stopped()
            return done
        for protocol in list(self.workers.values()):
            _signal(protocol, signal.SIGTERM)
        self._kill_call = self.reactor.callLater(
            self.drain_timeout + KILL_GRACE, self._kill_remaining
        )
        return done

    def _kill_remaining(self) -> None:
        self._kill_call = None
        for protocol in list(self.workers.values()):
            _log.warn(
                "worker {number} did not stop; killing it", number=protocol.number
            )
            _signal(protocol, signal.SIGKILL)

    def _all_stopped(self) -> None:
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
        for listener in self.listeners:
            for sock in listener.sockets:
                sock.close()
        self.listeners = []


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
        from twisted_echo.address import tls_address

        address = tls_address(address)
    return address
