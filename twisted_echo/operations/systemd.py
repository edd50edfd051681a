# -*- test-case-name: tests.test_systemd -*-
"""
systemd integration without libsystemd: socket activation and readiness.

Long until split (issue 20): socket activation (a listening concern) and sd_notify
are one module here.

Socket activation (sd_listen_fds(3)): systemd, or C{systemd-socket-activate},
starts sockecho with its listening sockets already open as file
descriptors 3, 4, ... and says so in the environment:

 - C{LISTEN_PID}: the pid the sockets are meant for (ours, or they are not
   ours to take);
 - C{LISTEN_FDS}: how many descriptors, from C{SD_LISTEN_FDS_START} (3) on;
 - C{LISTEN_FDNAMES}: optional (systemd 227 and later, the activate tool
   with C{--fdname}), colon-separated names, one per descriptor; without
   it every descriptor is named C{unknown}, as
   C{sd_listen_fds_with_names(3)} says.

Twisted's own C{systemd:} endpoint (L{twisted.internet.endpoints}) gives
up on every inherited socket when C{LISTEN_FDNAMES} is not set, and takes
C{LISTEN_PID} and C{LISTEN_FDS} out of the environment when
L{twisted.internet.endpoints} is imported. sockecho therefore reads the
three variables itself (L{activation_environment}) and adopts each socket
with the reactor's public C{IReactorSocket.adoptStreamPort} (stream
listeners: L{SystemdStreamEndpoint}) or, for UDP, the listener in
L{twisted_echo.listening.listen}. The listener strings are
C{systemd:index=N}, C{systemd:name=NAME} and Twisted's
C{systemd:domain=INET:index=N} (L{parse_systemd_description}).

Readiness (sd_notify(3)): when systemd sets C{NOTIFY_SOCKET} (C{Type=notify}
units), L{Notifier} sends it datagrams of C{VARIABLE=value} lines over an
C{AF_UNIX} datagram socket (a path, or an abstract name written with a
leading C{@}); L{NotifyingService} says C{READY=1} once every listener is
up, C{STATUS=} with the connection counts while serving, and
C{STOPPING=1} when the drain starts. Nothing is sent when C{NOTIFY_SOCKET}
is unset.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IProtocolFactory,
    IReactorSocket,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from twisted_echo.listening.endpoints import parse_description

if TYPE_CHECKING:
    from twisted_echo.policies.counters import ServiceCounters

_log = Logger()

#: The first descriptor systemd passes (C{SD_LISTEN_FDS_START}).
SD_LISTEN_FDS_START = 3
#: The name of a passed descriptor when C{LISTEN_FDNAMES} does not say.
UNKNOWN_NAME = "unknown"
#: The variables of socket activation.
ACTIVATION_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
#: Address families C{domain=} may name (C{AF_} + the name).
DOMAINS = ("INET", "INET6", "UNIX")
#: Seconds between two C{STATUS=} updates while serving.
STATUS_INTERVAL = 5.0



class SystemdSocketError(Exception):
    """
    An inherited socket asked for is not there or is not usable; the text
    says why, in the operator's terms.
    """


@dataclass(frozen=True)
class InheritedSocket:
    """
    One descriptor passed by socket activation.

    @ivar index: its position among the passed descriptors, from 0.
    @ivar fd: its descriptor number (C{SD_LISTEN_FDS_START + index}).
    @ivar name: its name from C{LISTEN_FDNAMES}, else L{UNKNOWN_NAME}.
    """

    index: int
    fd: int
    name: str

    def describe(self) -> str:
        """
        @return: e.g. C{systemd socket 1 (fd 4, named 'udp')}.
        """
        return f"systemd socket {self.index} (fd {self.fd}, named {self.name!r})"


@dataclass(frozen=True)
class SystemdAddress:
    """
    A listener's choice among the inherited sockets: exactly one of
    C{index} and C{name}.

    @ivar index: position among the passed descriptors (C{int}, from 0).
    @ivar name: the C{FileDescriptorName=} (or C{--fdname}) to take.
    @ivar domain: the address family named by C{domain=} (C{"INET"},
        C{"INET6"}, C{"UNIX"}), or L{None}. Accepted for Twisted's form;
        the family used is the socket's own.
    """

    index: int | None = None
    name: str | None = None
    domain: str | None = None

    def describe(self) -> str:
        """
        @return: C{index=N} or C{name=NAME}.
        """
        return f"index={self.index}" if self.name is None else f"name={self.name}"


def is_systemd_description(description: str) -> bool:
    """
    @param description: a listening address as given on the command line.
    @return: whether it names an inherited socket (C{systemd:...}).
    """
    return parse_description(description).systemd


def parse_systemd_description(description: str) -> SystemdAddress:
    """
    Parse C{systemd:index=N}, C{systemd:name=NAME}, optionally with
    C{domain=INET|INET6|UNIX} (Twisted's C{systemd:domain=INET:index=N}).

    @param description: the listening address as given.
    @return: the parsed L{SystemdAddress}.
    @raise ValueError: naming what is wrong.
    """
    parsed = parse_description(description)
    if not parsed.systemd or parsed.proxied:
        raise ValueError(
            f"expected systemd:index=N or systemd:name=NAME, not {description!r}"
        )
    if parsed.args:
        raise ValueError(
            f"systemd: takes index=N or name=NAME, not {parsed.args[0]!r}"
        )
    fields: dict[str, str] = {}
    for key, value in parsed.options:
        if key not in ("index", "name", "domain"):
            raise ValueError(f"unknown parameter {key!r}")
        if key in fields:
            raise ValueError(f"{key}= given twice")
        fields[key] = value
    if ("index" in fields) == ("name" in fields):
        raise ValueError("give exactly one of index=N and name=NAME")
    index = None
    if "index" in fields:
        text = fields["index"]
        if not text.isdigit():
            raise ValueError(f"index= takes a number from 0, not {text!r}")
        index = int(text)
    name = fields.get("name")
    if name is not None and not name:
        raise ValueError("name= is empty")
    domain = fields.get("domain")
    if domain is not None and domain.upper() not in DOMAINS:
        raise ValueError(f"domain= takes {', '.join(DOMAINS)}, not {domain!r}")
    return SystemdAddress(index, name, domain.upper() if domain else None)


def _process_start_environment() -> dict[str, str]:
    """
    @return: the activation variables as this process was started with
        them (C{/proc/self/environ}, which removing a variable from
        C{os.environ} does not change), or an empty dict.
    """
    try:
        with open("/proc/self/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    found = {}
    for entry in raw.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        name = key.decode("ascii", "replace")
        if sep and name in ACTIVATION_VARIABLES:
            found[name] = value.decode("utf-8", "replace")
    return found


def activation_environment(
    environ: Mapping[str, str] | None = None,
) -> Mapping[str, str]:
    """
    Where to read C{LISTEN_PID}, C{LISTEN_FDS} and C{LISTEN_FDNAMES}.

    @param environ: the variables to read; by default this process's
        environment, or, when C{LISTEN_FDS} is no longer in it (Twisted's
        C{systemd:} endpoint parser deletes it when
        L{twisted.internet.endpoints} is imported), the environment the
        process was started with.
    @return: a mapping holding (some of) the three variables.
    """
    if environ is not None:
        return environ
    if "LISTEN_FDS" in os.environ:
        return os.environ
    return _process_start_environment()


def inherited_sockets(
    environ: Mapping[str, str] | None = None, pid: int | None = None
) -> list[InheritedSocket]:
    """
    The descriptors socket activation passed to this process, as
    sd_listen_fds_with_names(3) finds them.

    @param environ: see L{activation_environment}.
    @param pid: this process's pid (L{os.getpid} by default); the sockets
        are ours only if C{LISTEN_PID} says it.
    @return: one L{InheritedSocket} per descriptor, in order.
    @raise SystemdSocketError: when none were passed to this process, or
        the variables contradict each other; the text says which.
    """
    env = activation_environment(environ)
    count_text = env.get("LISTEN_FDS")
    pid_text = env.get("LISTEN_PID")
    if count_text is None:
        raise SystemdSocketError(
            "no socket inherited from systemd (LISTEN_FDS is not set: start "
            "sockecho from a .socket unit or systemd-socket-activate)"
        )
    if pid_text is None:
        raise SystemdSocketError("LISTEN_FDS is set but LISTEN_PID is not")
    me = os.getpid() if pid is None else pid
    if pid_text.strip() != str(me):
        raise SystemdSocketError(
            f"the inherited sockets are not this process's (LISTEN_PID is "
            f"{pid_text}, this process is {me})"
        )
    try:
        count = int(count_text)
    except ValueError:
        count = -1
    if count < 0:
        raise SystemdSocketError(f"LISTEN_FDS is {count_text!r}, not a number")
    names_text = env.get("LISTEN_FDNAMES")
    if names_text:
        names = names_text.split(":")
        if len(names) != count:
            raise SystemdSocketError(
                f"LISTEN_FDNAMES names {len(names)} socket(s) but LISTEN_FDS is {count}"
            )
    else:
        names = [UNKNOWN_NAME] * count
    return [
        InheritedSocket(i, SD_LISTEN_FDS_START + i, name)
        for i, name in enumerate(names)
    ]


def choose_socket(
    address: SystemdAddress, sockets: list[InheritedSocket]
) -> InheritedSocket:
    """
    @param address: which socket a listener asks for.
    @param sockets: the inherited ones (L{inherited_sockets}).
    @return: the one asked for.
    @raise SystemdSocketError: when it is not there, or the name is not
        one socket's.
    """
    if address.index is not None:
        if address.index < len(sockets):
            return sockets[address.index]
        raise SystemdSocketError(
            f"no inherited socket {address.index}: systemd passed "
            f"{len(sockets)} (index= counts from 0)"
        )
    named = [s for s in sockets if s.name == address.name]
    if len(named) == 1:
        return named[0]
    names = ", ".join(repr(s.name) for s in sockets) or "none"
    if not named:
        raise SystemdSocketError(
            f"no inherited socket is named {address.name!r} (names: {names})"
        )
    raise SystemdSocketError(
        f"{len(named)} inherited sockets are named {address.name!r} "
        f"(indexes {', '.join(str(s.index) for s in named)}): use index="
    )


@dataclass(frozen=True)
class AdoptableSocket:
    """
    An inherited socket checked for a listener.

    @ivar inherited: which descriptor.
    @ivar family: its address family (C{socket.AF_INET}...).
    """

    inherited: InheritedSocket
    family: socket.AddressFamily


_KINDS: dict[int, str] = {socket.SOCK_STREAM: "stream", socket.SOCK_DGRAM: "datagram"}


def adoptable_socket(
    address: SystemdAddress,
    kind: int,
    environ: Mapping[str, str] | None = None,
    pid: int | None = None,
) -> AdoptableSocket:
    """
    Find the inherited socket C{address} asks for and make it ready to be
    adopted: of the C{kind} asked (a listening stream socket, not an
    C{Accept=yes} connection; or a datagram socket), non-blocking, and not
    passed on to programs this process may run (C{FD_CLOEXEC}), as
    sd_listen_fds(3) leaves them.

    @param kind: C{socket.SOCK_STREAM} or C{socket.SOCK_DGRAM}.
    @param environ: see L{activation_environment}.
    @param pid: see L{inherited_sockets}.
    @raise SystemdSocketError: saying what is wrong.
    """
    inherited = choose_socket(address, inherited_sockets(environ, pid))
    what = inherited.describe()
    try:
        probe = socket.socket(fileno=os.dup(inherited.fd))
    except OSError as e:
        raise SystemdSocketError(f"{what} is not a socket: {e.strerror}") from None
    with probe:
        family, sock_type = probe.family, probe.type
        listening = (
            sock_type == socket.SOCK_STREAM
            and probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) != 0
        )
    if sock_type != kind:
        raise SystemdSocketError(
            f"{what} is a {_KINDS.get(sock_type, str(sock_type))} socket, not "
            f"a {_KINDS[kind]} one"
        )
    if kind == socket.SOCK_STREAM and not listening:
        raise SystemdSocketError(
            f"{what} is not listening (a connection from an Accept=yes "
            "socket unit? sockecho needs Accept=no)"
        )
    if family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
        raise SystemdSocketError(f"{what} has address family {family}")
    if kind == socket.SOCK_DGRAM and family == socket.AF_UNIX:
        raise SystemdSocketError(f"{what} is a UNIX datagram socket, not UDP")
    os.set_blocking(inherited.fd, False)
    os.set_inheritable(inherited.fd, False)
    return AdoptableSocket(inherited, family)


@implementer(IStreamServerEndpoint)
class SystemdStreamEndpoint:
    """
    A stream server endpoint on a socket inherited from systemd, found by
    index or by name with or without C{LISTEN_FDNAMES}, and adopted with
    C{IReactorSocket.adoptStreamPort} (which listens on a duplicate; the
    inherited descriptor stays open, as systemd keeps its own).
    """

    def __init__(
        self,
        reactor: Any,
        address: SystemdAddress,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """
        @param reactor: an L{IReactorSocket} provider.
        @param address: which inherited socket.
        @param environ: see L{activation_environment} (tests give one).
        """
        self.reactor = reactor
        self.address = address
        self.environ = environ

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:  # noqa: N803
        """
        Adopt the socket; the result is there at once.

        @return: a L{Deferred} firing with the listening port, or failing
            with L{SystemdSocketError} (or the reactor's error).
        """
        try:
            found = adoptable_socket(self.address, socket.SOCK_STREAM, self.environ)
            reactor: Any = IReactorSocket(self.reactor)
            port: IListeningPort = reactor.adoptStreamPort(
                found.inherited.fd, found.family, protocolFactory
            )
        except Exception:
            return fail()
        _log.info("adopted {socket}", socket=found.inherited.describe())
        return succeed(port)


# sd_notify(3)


def notify_address(environ: Mapping[str, str] | None = None) -> str | None:
    """
    @param environ: where to read C{NOTIFY_SOCKET} (this process's
        environment by default).
    @return: the C{AF_UNIX} address to send notifications to: a path, or
        an abstract name (C{@name} becomes C{"\\0name"}); L{None} when
        C{NOTIFY_SOCKET} is unset, empty or of a kind not supported here
        (C{vsock:}).
    """
    value = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None


class Notifier:
    """
    Sends sd_notify(3) messages: datagrams of newline-separated
    C{VARIABLE=value} assignments to the C{AF_UNIX} socket C{NOTIFY_SOCKET}
    names. Never blocks (a full queue drops the message) and never raises:
    a failure is logged once.

    @ivar address: where messages go, or L{None} to send nothing.
    """

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._socket: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """
        @param environ: see L{notify_address}.
        @return: a notifier for C{NOTIFY_SOCKET}, or one that sends nothing.
        """
        value = (os.environ if environ is None else environ).get("NOTIFY_SOCKET")
        address = notify_address(environ)
        if value and address is None:
            _log.warn(
                "NOTIFY_SOCKET={value!r} is not an AF_UNIX socket; systemd "
                "will not be told of readiness",
                value=value,
            )
        return cls(address)

    @property
    def enabled(self) -> bool:
        """
        Whether messages are sent (C{NOTIFY_SOCKET} was set).
        """
        return self.address is not None

    def notify(self, **assignments: str | int) -> bool:
        """
        Send one message, e.g. C{notify(READY=1, STATUS="serving")}.

        @param assignments: sd_notify variables and values; a value is
            sent on one line (newlines become spaces).
        @return: whether the message was sent.
        """
        if self.address is None or not assignments:
            return False
        message = "\n".join(
            f"{key}={str(value).replace(chr(10), ' ')}"
            for key, value in assignments.items()
        )
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto(message.encode("utf-8"), self.address)
        except OSError as e:
            if not self._failed:
                self._failed = True
                _log.warn(
                    "cannot notify systemd at NOTIFY_SOCKET: {error}",
                    error=e.strerror or str(e),
                )
            return False
        return True

    def close(self) -> None:
        """
        Close the socket (a later L{notify} opens a new one).
        """
        if self._socket is not None:
            self._socket.close()
            self._socket = None


#: The services that take no connection, by default (the app passes the
#: service registry's, L{twisted_echo.app.registry.datagram_only}).
DATAGRAM_SERVICES = frozenset({"udp"})


def status_line(
    counters: Mapping[str, ServiceCounters],
    datagram_services: Collection[str] = DATAGRAM_SERVICES,
) -> str:
    """
    @param counters: each service's counters.
    @param datagram_services: the names of the services that take no
        connection, only datagrams.
    @return: the C{STATUS=} text while serving, e.g. C{serving: 3
        connection(s) open (echo 1, welcome 2), 10 accepted; 5
        datagram(s) answered}.
    """
    stream = {n: c for n, c in counters.items() if n not in datagram_services}
    datagram = [c for n, c in counters.items() if n in datagram_services]
    open_now = sum(c.connections_open for c in stream.values())
    accepted = sum(c.connections_total for c in stream.values())
    parts = []
    if stream:
        each = ", ".join(f"{name} {c.connections_open}" for name, c in stream.items())
        parts.append(f"{open_now} connection(s) open ({each}), {accepted} accepted")
    if datagram:
        answered = sum(c.datagrams_out for c in datagram)
        parts.append(f"{answered} datagram(s) answered")
    return "serving: " + "; ".join(parts) if parts else "serving"


class NotifyingService(Service):
    """
    Keeps systemd told (sd_notify(3)): C{READY=1} when started (the server
    it follows has every listener up), C{STATUS=} with the connection
    counts every L{STATUS_INTERVAL} seconds while serving (only when they
    changed), and C{STOPPING=1} with the drain's C{STATUS=} the moment the
    drain starts (L{drain_started}, a hook of the server).

    Start it after the server (its parent starts children in order).
    """

    def __init__(
        self,
        notifier: Notifier,
        counters: Callable[[], Mapping[str, ServiceCounters]],
        clock: IReactorTime,
        drain_timeout: float,
        interval: float = STATUS_INTERVAL,
        datagram_services: Collection[str] = DATAGRAM_SERVICES,
    ) -> None:
        """
        @param notifier: where to send.
        @param counters: returns each service's counters now.
        @param clock: for the periodic status.
        @param drain_timeout: C{--drain-timeout}, seconds, for the status.
        @param interval: seconds between status updates.
        @param datagram_services: the services that take no connection
        (L{status_line}).
        """
        self.notifier = notifier
        self.counters = counters
        self.datagram_services = datagram_services
        self.drain_timeout = drain_timeout
        self.interval = interval
        self._loop = LoopingCall(self._update_status)
        self._loop.clock = clock
        self._clock = clock
        self._ready_call: IDelayedCall | None = None
        self._last_status: str | None = None

    def startService(self) -> None:
        """
        Say C{READY=1} with the first status once the reactor runs (so a
        SIGTERM systemd sends on hearing it finds twistd's handler in place
        and drains), and keep the status current.
        """
        Service.startService(self)
        self._ready_call = self._clock.callLater(0, self._ready)

    def _ready(self) -> None:
        self._ready_call = None
        if not self.running:
            return
        status = status_line(self.counters(), self.datagram_services)
        self._last_status = status
        self.notifier.notify(READY=1, STATUS=status)
        if self.notifier.enabled and self.interval > 0 and not self._loop.running:
            self._loop.start(self.interval, now=False)

    def _update_status(self) -> None:
        status = status_line(self.counters(), self.datagram_services)
        if status != self._last_status:
            self._last_status = status
            self.notifier.notify(STATUS=status)

    def drain_started(self) -> None:
        """
        Say C{STOPPING=1}: the drain has started (with the connections
        left to drain and the drain timeout in C{STATUS=}).
        """
        self._stop_loop()
        open_now = sum(c.connections_open for c in self.counters().values())
        self.notifier.notify(
            STOPPING=1,
            STATUS=f"draining {open_now} open connection(s) for up to "
            f"{self.drain_timeout:g} s",
        )

    def _stop_loop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def stopService(self) -> None:
        """
        Stop the status updates.
        """
        Service.stopService(self)
        if self._ready_call is not None and self._ready_call.active():
            self._ready_call.cancel()
        self._ready_call = None
        self._stop_loop()
