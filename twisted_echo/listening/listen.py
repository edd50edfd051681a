# -*- test-case-name: tests.test_listen -*-
"""
Listening: one service per listening address, TCP and UDP alike, that logs
the address it really bound (so port 0 is usable) and fails with one readable
line when it cannot listen.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorUDP,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_echo._twisted.adopt import adopt_datagram_port
from twisted_echo._twisted.transport import use_lean_transport
from twisted_echo.listening.activation import (
    SystemdAddress,
    adoptable_socket,
    parse_systemd_description,
)
from twisted_echo.listening.address import describe_address, tls_address
from twisted_echo.listening.datagram import (
    MAX_DATAGRAM,
    DatagramPort,
    datagram_port_problem,
    is_wildcard,
)
from twisted_echo.listening.endpoints import parse_description
from twisted_echo.listening.tls import is_tls_port

_log = Logger()


class ListenError(Exception):
    """
    A listener could not be started.

    @ivar description: the listening address as the user gave it.
    @ivar reason: why, in words (C{"address already in use"}).
    """

    def __init__(self, description: str, reason: str) -> None:
        super().__init__(description, reason)
        self.description = description
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot listen on {self.description}: {self.reason}"


def explain_listen_failure(error: BaseException) -> str:
    """
    Say in words why listening failed.

    @param error: the exception C{listen} raised.
    @return: e.g. C{"address already in use"}, C{"permission denied"}.
    """
    cause: BaseException | None = error
    if isinstance(error, CannotListenError):
        cause = error.socketError
    code = getattr(cause, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return os.strerror(code).lower()
    return str(cause or error) or type(error).__name__


def exposure(address: object) -> str | None:
    """
    Say whether a bound address can be reached from beyond this host.

    @param address: a listener's bound address (an L{IPv4Address},
        L{IPv6Address}, a UNIX address...).
    @return: L{None} for a loopback address (C{127.0.0.0/8}, C{::1},
        C{::ffff:127.0.0.1}) and for anything that is not IP (UNIX
        sockets); otherwise how far it is open, in words: C{"every IPv4
        interface"} (C{0.0.0.0}), C{"every interface"} (C{::}, IPv4 too
        unless the system keeps IPv6 sockets IPv6-only) or C{"a
        non-loopback address"}.
    """
    if not isinstance(address, IPv4Address | IPv6Address):
        return None
    host = address.host.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "a non-loopback address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None
    if ip.is_unspecified:
        return "every IPv4 interface" if ip.version == 4 else "every interface"
    return "a non-loopback address"


def warn_if_exposed(service: str, address: object) -> bool:
    """
    Log a warning when C{service}'s listener on C{address} is open beyond
    loopback (L{exposure}): Twisted's C{tcp:PORT} and C{udp:PORT} endpoints
    without C{interface=} listen on every interface.

    @param service: the service's name, for the log.
    @param address: the listener's bound address.
    @return: whether a warning was logged.
    """
    where = exposure(address)
    if where is None:
        return False
    _log.warn(
        "{service} listening on {address} is open beyond loopback ({where}); "
        "give the endpoint interface=127.0.0.1 to keep it to this host",
        service=service,
        address=describe_address(address),
        where=where,
    )
    return True


@dataclass(frozen=True)
class UDPAddress:
    """
    Where a UDP service listens.

    @ivar port: UDP port number, 0 for any free port.
    @ivar interface: local address to bind, C{""} for all IPv4 addresses,
        C{"::"} for all IPv6 ones.
    """

    port: int
    interface: str = ""




def parse_udp_description(description: str) -> UDPAddress:
    """
    Parse a UDP listening address in Twisted's endpoint string form.

    @param description: C{udp:PORT[:interface=ADDR]}; colons in C{ADDR} are
        escaped with a backslash as in every endpoint string
        (C{udp:7007:interface=\\:\\:1}). C{port=PORT} is accepted too.
    @return: the parsed L{UDPAddress}.
    @raise ValueError: with a message naming what is wrong.
    """
    parsed = parse_description(description)
    if not parsed.datagram or parsed.proxied:
        raise ValueError(f"expected udp:PORT[:interface=ADDR], not {description!r}")
    args = list(parsed.args)
    kwargs: dict[str, str] = {}
    for key, value in parsed.options:
        if key not in ("port", "interface"):
            raise ValueError(f"unknown udp parameter {key!r} in {description!r}")
        kwargs[key] = value
    if len(args) > 1 or (args and "port" in kwargs):
        raise ValueError(f"too many ports in {description!r}")
    port_text = args[0] if args else kwargs.get("port")
    if port_text is None:
        raise ValueError(f"no port in {description!r}")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad port {port_text!r} in {description!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range 0-65535 in {description!r}")
    return UDPAddress(port, kwargs.get("interface", ""))


def parse_datagram_description(description: str) -> UDPAddress | SystemdAddress:
    """
    Parse a C{--udp} listening address.

    @param description: C{udp:PORT[:interface=ADDR]} (L{parse_udp_description})
        or a socket inherited from systemd, C{systemd:index=N} or
        C{systemd:name=NAME}
        (L{twisted_echo.listening.activation.parse_systemd_description}).
    @return: a L{UDPAddress} or a L{SystemdAddress}.
    @raise ValueError: with a message naming what is wrong.
    """
    if parse_description(description).systemd:
        return parse_systemd_description(description)
    return parse_udp_description(description)


def listen_at_once(
    endpoint: IStreamServerEndpoint, factory: Any, description: str
) -> IListeningPort:
    """
    Listen on C{endpoint} with C{factory}; its result must be there at once
    (TCP, UNIX, TLS and systemd endpoints all listen synchronously).

    @param description: the address as the user wrote it, for errors.
    @return: the listening port.
    @raise ListenError: if the endpoint did not listen at once.
    @raise Exception: whatever listening failed with.
    """
    results: list[IListeningPort | Failure] = []
    endpoint.listen(factory).addBoth(results.append)
    if not results:
        raise ListenError(description, "endpoint did not listen at once")
    [result] = results
    if isinstance(result, Failure):
        result.raiseException()
    assert not isinstance(result, Failure)
    return result


class ListenerService(Service):
    """
    Listens on one address while running; subclasses say how in L{listen}.

    Listening starts in C{privilegedStartService} (before twistd drops
    privileges) and a failure is raised there as L{ListenError}; the address
    really bound is logged (so port 0 is usable), with a warning when it is
    open beyond loopback (L{warn_if_exposed}).

    @cvar warn_if_exposed: whether to give that warning (a worker does not:
        its supervisor gave it for the same listener).
    @ivar description: the address as the user wrote it.
    @ivar service_name: the service's name, for the log.
    @ivar port: the listening port once listening, else L{None}.
    @ivar paused: whether its port is not read on purpose
        (L{twisted_echo.listening.pause.pause_listeners}).
    """

    port: Any = None
    warn_if_exposed: bool = True
    paused: bool = False

    def __init__(self, description: str, service_name: str) -> None:
        self.description = description
        self.service_name = service_name

    def listen(self) -> Any:
        """
        Start listening.

        @return: the listening port (with C{getHost} and C{stopListening}).
        @raise Exception: whatever listening raised.
        """
        raise NotImplementedError

    def privilegedStartService(self) -> None:
        """
        Start listening.

        @raise ListenError: if listening failed at once (busy port,
            permission denied, bad address).
        """
        Service.privilegedStartService(self)
        if self.port is not None:
            return
        try:
            self.port = self.listen()
        except ListenError:
            raise
        except Exception as e:
            raise ListenError(self.description, explain_listen_failure(e)) from e
        _log.info(
            "{service} listening on {address}",
            service=self.service_name,
            address=self.bound_address(),
        )
        if self.warn_if_exposed:
            warn_if_exposed(self.service_name, self.port.getHost())

    def bound_address(self) -> str:
        """
        @return: the address really bound, as a client endpoint string.
        """
        return describe_address(self.port.getHost())

    def startService(self) -> None:
        Service.startService(self)
        if self.port is None:
            self.privilegedStartService()

    def stopService(self) -> Deferred[None] | None:
        """
        Stop listening; open connections are not touched.
        """
        Service.stopService(self)
        port, self.port = self.port, None
        if port is None:
            return None
        d: Deferred[None] = maybeDeferred(port.stopListening)
        return d


class StreamListenerService(ListenerService):
    """
    Listens on one stream endpoint (TCP, UNIX, TLS...) while running.

    @ivar windows: a C{refuse} fault's windows on its port
        (L{twisted_echo.faults.refuse.RefuseWindows}, set at start-up or at
        run time), or L{None}; stopped when it stops.
    """

    windows: Any = None

    def __init__(
        self,
        description: str,
        endpoint: IStreamServerEndpoint,
        factory: Factory,
        service_name: str,
    ) -> None:
        super().__init__(description, service_name)
        self.endpoint = endpoint
        self.factory = factory

    def listen(self) -> IListeningPort:
        """
        Listen on the endpoint; its result must be there at once (TCP, UNIX,
        TLS and systemd endpoints all listen synchronously). TCP ports build
        the leaner L{twisted_echo._twisted.transport.Server} transports.
        """
        port = listen_at_once(self.endpoint, self.factory, self.description)
        use_lean_transport(port)
        return port

    def stopService(self) -> Deferred[None] | None:
        windows, self.windows = self.windows, None
        if windows is not None:
            windows.stop()
        return super().stopService()

    def bound_address(self) -> str:
        """
        @return: the address really bound, as a client endpoint string:
            C{ssl:HOST:PORT} for a TLS listener.
        """
        address = self.port.getHost()
        if is_tls_port(self.port):
            address = tls_address(address)
        return describe_address(address)


#: What the stock L{twisted.internet.udp.Port} means on a wildcard address, for the log.
_STOCK_WILDCARD = (
    ", whose replies leave from the address the kernel picks, which a "
    "connected client drops if it sent to another of this host's addresses"
)


class DatagramListenerService(ListenerService):
    """
    Listens on one UDP address while running, reading datagrams up to
    L{MAX_DATAGRAM} bytes.

    It listens with L{DatagramPort} (no 64 KiB allocation per datagram;
    on a wildcard address, C{0.0.0.0} or C{::}, replies leave from the
    address each datagram was sent to) when L{datagram_port_problem} finds
    Twisted's L{twisted.internet.udp.Port} as expected, else with the stock
    L{twisted.internet.udp.Port} from C{reactor.listenUDP}, and logs one info
    line saying so (a warning on a wildcard address, where the stock port
    lets the kernel pick a reply's source address).
    """

    def __init__(
        self,
        description: str,
        address: UDPAddress | SystemdAddress,
        protocol: DatagramProtocol,
        reactor: IReactorUDP,
        service_name: str,
        inherited: tuple[int, int] | None = None,
    ) -> None:
        """
        @param description: the address as the user wrote it.
        @param address: where to listen, or which socket inherited from
            systemd to listen on (found when listening, then used as
            C{inherited}).
        @param protocol: the protocol for this port alone (a
            L{DatagramProtocol} replies through the one port it is
            connected to).
        @param reactor: the reactor to listen with.
        @param service_name: the service's name, for the log.
        @param inherited: C{(file descriptor, address family)} of a bound UDP
            socket to use instead of binding C{address} (a worker's socket,
            opened by the supervisor).
        """
        super().__init__(description, service_name)
        self.address = address
        self.protocol = protocol
        self.reactor = reactor
        self.inherited = inherited

    def listen(self) -> IListeningPort:
        if isinstance(self.address, SystemdAddress) and self.inherited is None:
            found = adoptable_socket(self.address, socket.SOCK_DGRAM)
            self.inherited = (found.inherited.fd, found.family)
            _log.info("adopted {socket}", socket=found.inherited.describe())
        problem = datagram_port_problem()
        if problem is not None:
            wildcard = isinstance(self.address, UDPAddress) and is_wildcard(
                self.address.interface
            )
            say = _log.warn if wildcard else _log.info
            say(
                "{service}: Twisted's udp.Port is not as sockecho expects "
                "({problem}); {description} uses the stock udp.Port{consequence}",
                service=self.service_name,
                problem=problem,
                description=self.description,
                consequence=_STOCK_WILDCARD if wildcard else "",
            )
            if self.inherited is not None:
                fd, family = self.inherited
                return self.reactor.adoptDatagramPort(  # type: ignore[attr-defined,no-any-return]
                    fd, family, self.protocol, MAX_DATAGRAM
                )
            assert isinstance(self.address, UDPAddress)
            return self.reactor.listenUDP(
                self.address.port,
                self.protocol,
                interface=self.address.interface,
                maxPacketSize=MAX_DATAGRAM,
            )
        if self.inherited is not None:
            fd, family = self.inherited
            return adopt_datagram_port(
                DatagramPort, self.reactor, fd, family, self.protocol, MAX_DATAGRAM
            )
        assert isinstance(self.address, UDPAddress)
        port = DatagramPort(
            self.address.port,
            self.protocol,
            self.address.interface,
            MAX_DATAGRAM,
            self.reactor,
        )
        port.startListening()
        return port
