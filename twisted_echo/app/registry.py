# -*- test-case-name: tests.test_registry -*-
"""
The service registry: every service sockecho runs, declared once.

Each L{ServiceEntry} says what the rest of sockecho asks of a service: its
name (the C{--NAME} option, the C{service} label of metrics and logs, the
ports file's key), the kind of its listeners (stream, datagram or both),
its default endpoint (or off, and so whether it has C{--no-NAME}) and how
to build its protocol factory. Options (L{twisted_echo.app.options}), the service tree,
the supervisor's listeners (L{twisted_echo.app.supervisor}), metrics and
systemd's status (told which services are datagram ones) and the test
servers' defaults (L{twisted_echo.testing.spawn}) read L{SERVICES}.

Adding a service is a module under L{twisted_echo.services} and one line in
L{SERVICES}, e.g. a stream service off by default::

    ServiceEntry("reverse", "Endpoint for the reverse service.",
                 stream=factory_of("twisted_echo.services.reverse", "ReverseFactory")),

(L{factory_of} imports the module when the factory is first built, and
calls the class as L{StreamFactory} subclasses are called: C{(reactor,
counters, limits, timeouts, budget)}). That gives C{--reverse ENDPOINT}
(repeatable, C{[default: off]} in C{--help}), its listeners in the service
tree and under C{--workers}, its key in the ports file, its counters and
C{service="reverse"} metrics. With C{default=ENDPOINT} it also listens by
default, has C{--no-reverse}, and the test servers
(L{twisted_echo.testing.spawn}) give it a port. A service whose factory
takes more (C{--banner}) has its own builder function here (C{_welcome}).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # The builders import their service when called: importing the registry
    # (as the test helpers do, for the defaults) imports no service.
    from twisted.internet.protocol import DatagramProtocol

    from twisted_echo.policies.budget import MemoryBudget
    from twisted_echo.policies.counters import ServiceCounters
    from twisted_echo.policies.limits import ConnectionLimits, Timeouts
    from twisted_echo.policies.loopguard import LoopGuard
    from twisted_echo.policies.ratelimit import SourceRateLimiter, TokenBucket
    from twisted_echo.services.stream import StreamFactory

#: The kinds of listener a service takes.
STREAM = "stream"
DATAGRAM = "datagram"
#: The suffix of the listener key of a service's datagram listeners when
#: it takes both kinds (C{whoami-udp}).
DATAGRAM_SUFFIX = "-udp"


@dataclass(frozen=True)
class BuildContext:
    """
    What a service's factory is built from: one per server (or worker).

    @ivar reactor: the reactor to listen and keep time with.
    @ivar config: the parsed options (L{twisted_echo.app.options.Options}).
    @ivar counters: this service's counters.
    @ivar limits: the connection limits all stream services share.
    @ivar timeouts: the timeouts all stream services share.
    @ivar budget: the C{--max-buffer} budget all stream services share.
    @ivar source_limit: the per-source datagram rate limit, shared.
    @ivar global_limit: the datagram rate limit of all sources, shared.
    @ivar loop_guard: the UDP loop guard every datagram listener shares.
    @ivar worker: this process's worker number, or L{None}.
    """

    reactor: Any
    config: Mapping[str, Any]
    counters: ServiceCounters
    limits: ConnectionLimits
    timeouts: Timeouts
    budget: MemoryBudget
    source_limit: SourceRateLimiter
    global_limit: TokenBucket
    loop_guard: LoopGuard
    worker: int | None


@dataclass(frozen=True)
class ServiceEntry:
    """
    One service, as the registry declares it.

    @ivar name: the service's name: its C{--NAME} option, its C{service}
        label in metrics and logs, its key in the ports file.
    @ivar help: the C{--NAME} option's help, without the C{[default: ...]
        (repeatable)} that is added.
    @ivar stream: builds the factory of its stream listeners (TCP, UNIX,
        TLS, systemd), once per server; L{None} if it takes none.
    @ivar datagram: builds the protocol of one datagram listener (C{udp:},
        or C{systemd:} for a datagram-only service), once per listener;
        L{None} if it takes none.
    @ivar default: the endpoint it listens on when C{--NAME} is not given,
        or L{None} for off (then it has no C{--no-NAME}).
    @ivar title: how C{--no-NAME}'s help names it (C{"UDP echo"});
        C{name} by default.
    """

    name: str
    help: str
    stream: Callable[[BuildContext], StreamFactory] | None = None
    datagram: Callable[[BuildContext], DatagramProtocol] | None = None
    default: str | None = None
    title: str = ""

    @property
    def kind(self) -> str:
        """
        L{STREAM}, L{DATAGRAM}, or C{"stream+datagram"} for a service whose
        listeners may be either (each as its description says).
        """
        kinds = [k for k, b in ((STREAM, self.stream), (DATAGRAM, self.datagram)) if b]
        return "+".join(kinds)

    @property
    def label(self) -> str:
        """
        The name people read: C{title}, or C{name}.
        """
        return self.title or self.name

    def is_datagram(self, datagram_description: bool) -> bool:
        """
        @param datagram_description: whether a listener's description is a
            C{udp:} one (L{twisted_echo.listening.endpoints}).
        @return: whether that listener of this service is a datagram one: a
            datagram-only service's always are (C{systemd:} ones included).
        """
        if self.stream is None:
            return True
        return self.datagram is not None and datagram_description

    def listener_key(self, datagram: bool) -> str:
        """
        @return: the name of this service's stream or datagram listeners in
            C{listener_keys} (and to the supervisor): C{name}, or
            C{name-udp} for the datagram ones of a service taking both.
        """
        if datagram and self.stream is not None:
            return self.name + DATAGRAM_SUFFIX
        return self.name


def factory_of(module: str, name: str) -> Callable[[BuildContext], StreamFactory]:
    """
    @param module: the dotted name of a service's module.
    @param name: its L{StreamFactory} subclass, called with C{(reactor,
        counters, limits, timeouts, budget)}.
    @return: a builder of that factory for L{ServiceEntry.stream}; the
        module is imported when the builder is first called.
    """

    def build(context: BuildContext) -> StreamFactory:
        factory_class = getattr(importlib.import_module(module), name)
        factory: StreamFactory = factory_class(
            context.reactor,
            context.counters,
            context.limits,
            context.timeouts,
            context.budget,
        )
        return factory

    return build


def _welcome(context: BuildContext) -> StreamFactory:
    from twisted_echo.services.welcome import WelcomeFactory

    return WelcomeFactory(
        context.reactor,
        context.counters,
        context.limits,
        context.timeouts,
        banner=context.config["banner"],
        max_line=context.config["max-line"],
        budget=context.budget,
    )


def _udp_echo(context: BuildContext) -> DatagramProtocol:
    from twisted_echo.services.udp import UDPEcho

    return UDPEcho(
        context.counters, context.source_limit, context.global_limit, context.loop_guard
    )


def _whoami(context: BuildContext) -> StreamFactory:
    from twisted_echo.services.whoami import WhoamiFactory, WhoamiInfo

    return WhoamiFactory(
        context.reactor,
        context.counters,
        context.limits,
        context.timeouts,
        context.budget,
        info=WhoamiInfo(worker=context.worker),
    )


def _whoami_udp(context: BuildContext) -> DatagramProtocol:
    from twisted_echo.services.whoami import WhoamiInfo, WhoamiUDP

    return WhoamiUDP(
        context.counters,
        context.source_limit,
        context.global_limit,
        context.loop_guard,
        info=WhoamiInfo(worker=context.worker),
    )


def _websocket(context: BuildContext) -> StreamFactory:
    from twisted_echo.services.websocket import WebSocketFactory
    from twisted_echo.services.whoami import WhoamiInfo

    config = context.config
    return WebSocketFactory(
        context.reactor,
        context.counters,
        context.limits,
        context.timeouts,
        context.budget,
        max_message=config["websocket-max-message"],
        path=config["websocket-path"],
        subprotocols=config["websocket-subprotocols"],
        deflate=config["websocket-deflate"],
        handshake_timeout=config["websocket-handshake-timeout"],
        message_rate=config["websocket-max-messages-per-second"],
        info=WhoamiInfo(worker=context.worker),
    )


#: Every service, in the order options, listeners and counters list them.
SERVICES: tuple[ServiceEntry, ...] = (
    ServiceEntry(
        "echo",
        "Endpoint for the echo service.",
        stream=factory_of("twisted_echo.services.echo", "EchoFactory"),
        default="tcp:7007:interface=127.0.0.1",
    ),
    ServiceEntry(
        "upper",
        "Endpoint for the upper service.",
        stream=factory_of("twisted_echo.services.upper", "UpperFactory"),
        default="tcp:7008:interface=127.0.0.1",
    ),
    ServiceEntry(
        "welcome",
        "Endpoint for the welcome service.",
        stream=_welcome,
        default="tcp:7009:interface=127.0.0.1",
    ),
    ServiceEntry(
        "udp",
        "udp:PORT[:interface=ADDR] (or systemd:index=N) for UDP echo.",
        datagram=_udp_echo,
        default="udp:7007:interface=127.0.0.1",
        title="UDP echo",
    ),
    ServiceEntry(
        "whoami",
        "Endpoint for the whoami service: TCP, UNIX, TLS (one JSON line, then "
        "close) or udp:PORT[:interface=ADDR] (one JSON datagram per datagram)",
        stream=_whoami,
        datagram=_whoami_udp,
    ),
    ServiceEntry(
        "websocket",
        "Endpoint for the WebSocket echo service (ws://HOST:PORT/, /upper, "
        "/whoami; ssl: for wss://; GET / in a browser: a page to try it)",
        stream=_websocket,
        title="WebSocket",
    ),
)


def entry(name: str) -> ServiceEntry:
    """
    @param name: a service's name, or a listener key (C{whoami-udp}).
    @return: its entry.
    @raise KeyError: if no service has that name.
    """
    for service in SERVICES:
        if name in (service.name, service.listener_key(datagram=True)):
            return service
    raise KeyError(name)


def service_name(key: str) -> str:
    """
    @param key: a listener key (L{ServiceEntry.listener_key}).
    @return: the name of its service (C{whoami} for C{whoami-udp}), the
        key itself when no registered service has it.
    """
    try:
        return entry(key).name
    except KeyError:
        return key


def is_datagram_key(key: str, services: Sequence[ServiceEntry] | None = None) -> bool:
    """
    @param key: a listener key (L{ServiceEntry.listener_key}).
    @param services: the entries to look in; L{SERVICES} by default.
    @return: whether its listeners are datagram ones.
    """
    for service in SERVICES if services is None else services:
        if key == service.listener_key(datagram=True):
            return service.datagram is not None
    return False


def defaults(services: Sequence[ServiceEntry] | None = None) -> dict[str, str]:
    """
    @return: the default endpoint of every service that has one, by name.
    """
    services = SERVICES if services is None else services
    return {s.name: s.default for s in services if s.default is not None}


def datagram_only(services: Sequence[ServiceEntry] | None = None) -> frozenset[str]:
    """
    @return: the names of the services that take no stream listener (whose
        counters have no connections: metrics, systemd's status).
    """
    services = SERVICES if services is None else services
    return frozenset(s.name for s in services if s.stream is None)


__all__ = [
    "DATAGRAM",
    "SERVICES",
    "STREAM",
    "BuildContext",
    "ServiceEntry",
    "datagram_only",
    "defaults",
    "entry",
    "factory_of",
    "is_datagram_key",
    "service_name",
]
