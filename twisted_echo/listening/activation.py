# -*- test-case-name: tests.test_activation -*-
"""
systemd socket activation without libsystemd: finding, checking and
adopting the listening sockets systemd passed (L{adoptable_socket},
L{SystemdStreamEndpoint}), and the C{systemd:} listener strings
(L{parse_systemd_description}). Readiness (sd_notify) is
L{twisted_echo.operations.systemd}.

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
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorSocket,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from zope.interface import implementer

from twisted_echo.listening.endpoints import parse_description

_log = Logger()

#: The first descriptor systemd passes (C{SD_LISTEN_FDS_START}).
SD_LISTEN_FDS_START = 3
#: The name of a passed descriptor when C{LISTEN_FDNAMES} does not say.
UNKNOWN_NAME = "unknown"
#: The variables of socket activation.
ACTIVATION_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
#: Address families C{domain=} may name (C{AF_} + the name).
DOMAINS = ("INET", "INET6", "UNIX")


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
