# -*- test-case-name: tests.test_tap -*-
"""
C{twistd sockecho}: command-line options and the service they describe.

The option table (L{Options}) and the service tree it describes
(L{makeService}). The values options take are read by
L{twisted_echo.app.optionvalues}, C{--help} is grouped by
L{twisted_echo.app.helpgroups}; the services themselves are declared in
L{twisted_echo.app.registry}, endpoints are built by
L{twisted_echo.app.endpoints}.

Over 500 lines: the option table is a third of it (one entry per option,
with its help text), and the composition (L{makeService}, building each
service's listeners from the registry) reads the same options; splitting
them would make every new option an edit in two modules.

Every listening address is a Twisted endpoint description string
(C{tcp:7007:interface=127.0.0.1}, C{tcp6:7007:interface=\\:\\:1},
C{unix:/run/sockecho.sock}, C{ssl:...}, C{systemd:...}); UDP takes
C{udp:PORT[:interface=ADDR]}. Defaults listen on loopback only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.interfaces import IReactorUDP, IStreamServerEndpoint
from twisted.python import usage

from twisted_echo.app import registry
from twisted_echo.app.endpoints import stream_endpoint
from twisted_echo.app.endpoints import with_backlog as with_backlog
from twisted_echo.app.helpgroups import regroup
from twisted_echo.app.inherit import InheritingReactor
from twisted_echo.app.optionvalues import (
    ANY_SUBPROTOCOL,
    count,
    deflate_mode,
    format_size,
    message_rate,
    number,
    ports_file,
    rate,
    seconds,
    size,
    subprotocols,
    typed,
    udp_ports,
    websocket_path,
    workers,
)
from twisted_echo.app.refusing import RefusingListenerService
from twisted_echo.app.registry import BuildContext, ServiceEntry
from twisted_echo.app.server import SockechoService
from twisted_echo.faults.datagrams import DatagramFaults
from twisted_echo.faults.engine import ListenerFaults
from twisted_echo.faults.profile import FaultProfile, ProfileError, parse_profile
from twisted_echo.faults.runtime import DatagramFaultSlot, FaultSlot, StreamFaultSlot
from twisted_echo.listening.endpoints import parse_description
from twisted_echo.listening.listen import (
    DatagramListenerService,
    StreamListenerService,
    parse_datagram_description,
)
from twisted_echo.listening.tls import (
    DEFAULT_HANDSHAKE_TIMEOUT,
)
from twisted_echo.log.buffer import LEVELS as LOG_LEVELS
from twisted_echo.log.buffer import levels_from
from twisted_echo.policies import limits
from twisted_echo.policies.budget import DEFAULT_MAX_BUFFER, MemoryBudget
from twisted_echo.policies.counters import ServiceCounters
from twisted_echo.policies.loopguard import LoopGuard
from twisted_echo.policies.ratelimit import SourceRateLimiter, TokenBucket
from twisted_echo.records.flows import DEFAULT_WINDOW, FlowTable
from twisted_echo.records.log import log_record
from twisted_echo.records.ring import DEFAULT_RECORDS, RecordRing
from twisted_echo.services.stream import StreamFactory
from twisted_echo.services.websocket import (
    DEFAULT_HANDSHAKE_TIMEOUT as DEFAULT_WEBSOCKET_HANDSHAKE_TIMEOUT,
)
from twisted_echo.services.websocket import DEFAULT_MAX_MESSAGE
from twisted_echo.services.websocket_deflate import RECEIVE
from twisted_echo.services.websocket_http import DEFAULT_PATH
from twisted_echo.services.welcome import DEFAULT_BANNER, DEFAULT_MAX_LINE
from twisted_echo.services.whoami import worker_number

#: The default listener of each service that has one (all on loopback),
#: from the service registry (L{twisted_echo.app.registry}).
DEFAULTS = registry.defaults()
#: Listen queue length given to stream endpoints that do not set one.
#: Twisted's default of 50 stalls connects during accept storms (1 s SYN
#: retransmits); the kernel caps it at net.core.somaxconn.
DEFAULT_BACKLOG = 1024
#: UDP echo rate limits, C{(datagrams per second, burst)}.
DEFAULT_UDP_RATE = (1000.0, 2000)
DEFAULT_UDP_GLOBAL_RATE = (20000.0, 40000)


def _listener_option(service: ServiceEntry) -> Any:
    """
    @return: the C{opt_NAME} method of C{service}'s C{--NAME} option.
    """

    def opt(self: Options, description: str) -> None:
        self.listeners[service.name].append(description)

    default = service.default or "off"
    opt.__doc__ = f"{service.help} [default: {default}] (repeatable)"
    return opt


def _explain_parse_error(error: Exception) -> str:
    """
    Say why an endpoint string did not parse, in the user's terms.
    """
    unknown = re.search(r"unexpected keyword argument '(\w+)'", str(error))
    if isinstance(error, TypeError) and unknown:
        return f"unknown parameter {unknown.group(1)!r}"
    return str(error)


class _ParseOnly:
    """
    The reactor given to endpoint parsers while options are checked: parsing
    only stores it, and the endpoints really listened on are made again by
    L{makeService} with the reactor that runs them.
    """


class Options(usage.Options):
    """
    Options of C{twistd sockecho}; L{postOptions} validates every listening
    address and raises L{twisted.python.usage.UsageError} naming the bad
    one. Parsing the options has no other effect: it installs no reactor and
    changes none of twistd's own options (that is L{twisted_echo.app.runner}'s
    work).
    """

    synopsis = "[options]"
    longdesc = (
        "Run the socket test services: TCP echo (RFC 862), upper-case echo, "
        "a welcome-line service and UDP echo. Listening addresses are Twisted "
        "endpoint strings; giving one replaces that service's default."
    )
    #: --no-NAME for each registered service: L{add_service_options}.
    optFlags: list[list[Any]] = [
        [
            "admin",
            None,
            "Serve the admin API on the --metrics listener: GET/PUT/DELETE "
            "/faults/LISTENER reads, replaces, clears a fault profile at run "
            "time; GET/PUT/DELETE /health fails /readyz or /healthz (503) and "
            "pauses the listeners on cue (docs/faults.md); refused unless "
            "--metrics is on loopback [default: off]",
        ],
        [
            "admin-public",
            None,
            "Let --admin serve on a --metrics address that is not loopback "
            "(anyone who reaches it can make the server misbehave).",
        ],
    ]
    optParameters: list[list[Any]] = [
        ["banner", None, DEFAULT_BANNER, "First line the welcome service sends."],
        [
            "max-line",
            None,
            str(DEFAULT_MAX_LINE),
            "Longest line the welcome service accepts, in bytes.",
            number("max-line", int, 1, "a positive number of bytes"),
        ],
        [
            "max-connections",
            None,
            str(limits.DEFAULT_MAX_CONNECTIONS),
            "Most TCP connections open at once, all services together.",
            count("max-connections", "connections"),
        ],
        [
            "max-per-peer",
            None,
            str(limits.DEFAULT_MAX_PER_PEER),
            "Most TCP connections open at once from one client address.",
            count("max-per-peer", "connections"),
        ],
        [
            "max-buffer",
            None,
            format_size(DEFAULT_MAX_BUFFER),
            "Most bytes held for all TCP connections together (queued replies, "
            "reads, unfinished lines).",
            size("max-buffer"),
        ],
        [
            "idle-timeout",
            None,
            typed(limits.DEFAULT_IDLE_TIMEOUT),
            "Close a connection with no traffic for this many seconds.",
            seconds("idle-timeout"),
        ],
        [
            "stall-timeout",
            None,
            typed(limits.DEFAULT_STALL_TIMEOUT),
            "Abort a connection whose peer takes no byte of what it is owed "
            "(on TCP: acknowledges none, the kernel's send queue included) "
            "for this many seconds. Acknowledgements come in steps (on "
            "loopback up to ~1.3 s apart at 100 KB/s, ~6.5 s at 20 KB/s): "
            "slower readers need a longer timeout.",
            seconds("stall-timeout"),
        ],
        [
            "line-timeout",
            None,
            typed(limits.DEFAULT_LINE_TIMEOUT),
            "Close a welcome connection whose line is not finished within "
            "this many seconds of its first byte.",
            seconds("line-timeout"),
        ],
        [
            "handshake-timeout",
            None,
            typed(DEFAULT_HANDSHAKE_TIMEOUT),
            "Abort a TLS (ssl:) connection whose handshake is not finished "
            "within this many seconds of connecting.",
            seconds("handshake-timeout"),
        ],
        [
            "drain-timeout",
            None,
            typed(limits.DEFAULT_DRAIN_TIMEOUT),
            "On SIGTERM/SIGINT (and SIGHUP without --workers), give open "
            "connections this many seconds to finish, then abort them.",
            seconds("drain-timeout"),
        ],
        [
            "drain-delay",
            None,
            "0",
            "On SIGTERM/SIGINT (and SIGHUP without --workers), keep accepting "
            "and serving this many seconds with /readyz at 503 before the "
            "drain (a load balancer's preStop); a second SIGTERM/SIGINT drains "
            "at once.",
            number("drain-delay", float, 0, "a number of seconds (0: drain at once)"),
        ],
        [
            "backlog",
            None,
            str(DEFAULT_BACKLOG),
            "Listen queue length for stream endpoints that set none.",
            number("backlog", int, 1, "a positive number of connections"),
        ],
        [
            "udp-rate",
            None,
            "{:g}/{}".format(*DEFAULT_UDP_RATE),
            "UDP datagrams answered per second per source address.",
            rate("udp-rate"),
        ],
        [
            "udp-global-rate",
            None,
            "{:g}/{}".format(*DEFAULT_UDP_GLOBAL_RATE),
            "UDP datagrams answered per second, all sources together.",
            rate("udp-global-rate"),
        ],
        [
            "udp-never-answer",
            None,
            None,
            "UDP source ports never answered, against loops with other UDP "
            "services (CVE-2024-2169); the ports sockecho's own UDP listeners "
            "are bound to are never answered either",
            udp_ports("udp-never-answer"),
        ],
        [
            "udp-flow-window",
            None,
            f"{DEFAULT_WINDOW:g}",
            "Seconds of silence that end a UDP peer flow (a source address and "
            "port) and make its connection record.",
            number("udp-flow-window", float, 0.001, "a number of seconds above 0"),
        ],
        [
            "udp-flows",
            None,
            "0",
            "Record UDP peer flows: live flows kept per UDP listener (about "
            "0.6 KB each; e.g. 4096); over it the oldest-started flow ends "
            "(udp_flow_evicted). 0: UDP flows are not recorded (they add "
            "about a fifth to each datagram's cost).",
            number("udp-flows", int, 0, "a number of flows, 0 for none"),
        ],
        ["log-format", None, "text", "Log format: text or json (one object a line)."],
        [
            "log-level",
            None,
            "info",
            "Least severe level logged: debug, info (a line as each connection "
            "opens and closes), warn, error or critical.",
        ],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus /metrics, /healthz and /readyz over HTTP on this "
            "endpoint, e.g. tcp:9107:interface=127.0.0.1 [default: off]",
        ],
        [
            "metrics-max-connections",
            None,
            str(limits.DEFAULT_METRICS_MAX_CONNECTIONS),
            "Most connections open at once to the --metrics listener; more are "
            "closed at once.",
            count("metrics-max-connections", "connections"),
        ],
        [
            "metrics-request-timeout",
            None,
            typed(limits.DEFAULT_METRICS_REQUEST_TIMEOUT),
            "Close a --metrics connection whose request is not complete this "
            "many seconds after its first byte, or whose client has not read "
            "its response within as long.",
            seconds("metrics-request-timeout"),
        ],
        [
            "workers",
            None,
            "1",
            "Worker processes serving every listener; auto: one per CPU this "
            "process may run on. SIGHUP replaces them one by one.",
            workers,
        ],
        [
            "records",
            None,
            str(DEFAULT_RECORDS),
            "Connection records kept for the --metrics listener's /records "
            "(about 0.6 KB each, outside --max-buffer; 0: none kept).",
            number("records", int, 0, "a number of records (0: none)"),
        ],
        [
            "record-bytes",
            None,
            "0",
            "Keep this many of each connection's first bytes in its record, "
            "escaped (they may be private; 0: none).",
            number("record-bytes", int, 0, "a number of bytes (0: none)"),
        ],
        [
            "ports-file",
            None,
            None,
            "Once every listener is up, write where each listens (the real "
            "ports, port 0 included) as JSON to this file; removed when the "
            "drain starts [default: off]",
            ports_file,
        ],
    ]

    # opt_NAME for each registered service: see the end of the class.

    optParameters.append(
        [
            "websocket-max-message",
            None,
            format_size(DEFAULT_MAX_MESSAGE),
            "Longest WebSocket message echoed, in bytes (text: UTF-8; "
            "compressed: once inflated); a longer one is closed with code 1009.",
            size("websocket-max-message"),
        ]
    )
    optParameters.extend(
        [
            [
                "websocket-path",
                None,
                DEFAULT_PATH,
                "URL path of the WebSocket echo and its page; /upper and "
                "/whoami are relative to it (/ws: /ws/upper, /ws/whoami).",
                websocket_path,
            ],
            [
                "websocket-subprotocols",
                None,
                ANY_SUBPROTOCOL,
                "Comma-separated WebSocket subprotocols accepted: the first a "
                "client offers that is listed; none listed: the handshake goes "
                "on without one. *: the first offered.",
                subprotocols,
            ],
            [
                "websocket-deflate",
                None,
                RECEIVE,
                "permessage-deflate: receive (accept it, inflate what clients "
                "send, bounded by --websocket-max-message; reply uncompressed), "
                "both (compress replies too: more CPU and ~300 KiB per "
                "connection while a reply is sent) or off.",
                deflate_mode,
            ],
            [
                "websocket-handshake-timeout",
                None,
                typed(DEFAULT_WEBSOCKET_HANDSHAKE_TIMEOUT),
                "Close (408) a WebSocket connection whose HTTP request is not "
                "complete within this many seconds of connecting.",
                seconds("websocket-handshake-timeout"),
            ],
            [
                "websocket-max-messages-per-second",
                None,
                "0",
                "RATE[/BURST] of WebSocket messages (and pings) one connection "
                "may send; over it the server stops reading from it until the "
                "rate allows (0: no limit).",
                message_rate,
            ],
        ]
    )

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self.listeners: dict[str, list[str]] = {s.name: [] for s in registry.SERVICES}
        #: C{--faults}: each service's fault profile text, then (after
        #: L{postOptions}) its L{FaultProfile} in C{self["faults"]}.
        self.fault_texts: list[str] = []
        self["faults"] = {}
        # Defaults are written as users type them, which is what --help
        # shows; the values are those the option gives for that text.
        for parameter in self.optParameters:
            name, default = parameter[0], parameter[2]
            if len(parameter) == 5 and isinstance(default, str):
                self[name] = parameter[4](default)

    def opt_faults(self, value: str) -> None:
        self.fault_texts.append(value)

    opt_faults.__doc__ = (
        "LISTENERS=PROFILE: misbehave on purpose on a service's TCP listeners "
        "(echo, upper, welcome, whoami, websocket) or UDP ones (udp, "
        "whoami-udp), e.g. "
        "echo='latency=200ms,jitter=20ms;reset-after=1000,p=0.5;seed=42'; "
        "TCP: delay, latency, bandwidth, slice, close-after, reset-after, "
        "half-close-after, blackhole, refuse, corrupt, truncate; UDP: loss, "
        "duplicate, reorder, latency, truncate, corrupt (docs/faults.md) "
        "[default: off] (repeatable)"
    )

    def getUsage(self, width: int | None = None) -> str:
        """
        The options' help, grouped as L{HELP_GROUPS} says, listeners first.

        @param width: columns to wrap to (C{$COLUMNS} or 80 if not given).
        @return: the help text, without the synopsis line.
        """
        return regroup(usage.Options.getUsage(self, width))

    def postOptions(self) -> None:
        """
        Resolve each service's listeners and check every one parses.

        @raise usage.UsageError: naming the option and the value at fault.
        """
        if self["log-format"] not in ("text", "json"):
            raise usage.UsageError(
                f"--log-format takes text or json, not {self['log-format']!r}"
            )
        if self["log-level"] not in LOG_LEVELS:
            raise usage.UsageError(
                f"--log-level takes {', '.join(LOG_LEVELS)}, "
                f"not {self['log-level']!r}"
            )
        for service in registry.SERVICES:
            name = service.name
            given = self.listeners[name]
            if service.default is not None:
                if self[f"no-{name}"]:
                    if given:
                        raise usage.UsageError(f"--{name} and --no-{name} conflict")
                    continue
                given = given or [service.default]
            self.listeners[name] = given
            for description in given:
                datagram = service.is_datagram(is_datagram_description(description))
                self._check_address(name, description, datagram=datagram)
        if not any(self.listeners.values()):
            raise usage.UsageError("every service is switched off; nothing to run")
        if self["metrics"] is not None:
            self._check_address("metrics", self["metrics"], metrics=True)
        self["faults"] = self._fault_profiles()
        self._check_admin()

    def _check_admin(self) -> None:
        """
        C{--admin} needs C{--metrics} on a loopback address (or a UNIX
        socket), unless C{--admin-public}.

        @raise usage.UsageError: one line saying which and how to fix it.
        """
        if not self["admin"]:
            if self["admin-public"]:
                raise usage.UsageError("--admin-public is given without --admin")
            return
        metrics = self["metrics"]
        if metrics is None:
            raise usage.UsageError(
                "--admin serves on the --metrics listener: give --metrics, "
                "e.g. --metrics tcp:9107:interface=127.0.0.1"
            )
        if not self["admin-public"] and not is_loopback_description(metrics):
            raise usage.UsageError(
                f"--admin refused: --metrics {metrics!r} is not a loopback "
                "address (give interface=127.0.0.1 or ::1, or a unix: socket; "
                "or --admin-public to serve it there on purpose)"
            )

    def _fault_profiles(self) -> dict[str, FaultProfile]:
        """
        @return: C{--faults}' profiles by listener key: a stream service's
            name, or a datagram listener key (C{udp}, C{whoami-udp}).
        @raise usage.UsageError: one line naming C{--faults}, the value and
            the part at fault.
        """
        keys: dict[str, tuple[ServiceEntry, bool]] = {}
        for service in registry.SERVICES:
            if service.stream is not None:
                keys[service.name] = (service, False)
            if service.datagram is not None:
                keys[service.listener_key(datagram=True)] = (service, True)
        profiles: dict[str, FaultProfile] = {}
        for value in self.fault_texts:
            name, sep, text = value.partition("=")
            name = name.strip()
            found = keys.get(name) if sep else None
            if found is None:
                raise usage.UsageError(
                    f"bad --faults {value!r}: give LISTENERS=PROFILE, LISTENERS one "
                    f"of {', '.join(keys)}"
                )
            if name in profiles:
                raise usage.UsageError(f"bad --faults {value!r}: {name} given twice")
            service, datagram = found
            if not service_listeners(self, service)[datagram]:
                kind = "UDP" if datagram else "TCP"
                raise usage.UsageError(
                    f"bad --faults {value!r}: {service.name} has no {kind} "
                    "listener running"
                )
            try:
                profiles[name] = parse_profile(text, datagram=datagram)
            except ProfileError as e:
                raise usage.UsageError(f"bad --faults {value!r}: {e}") from None
        return profiles

    def _check_address(
        self,
        option: str,
        description: str,
        datagram: bool = False,
        metrics: bool = False,
    ) -> None:
        """
        Check that C{description}, given to C{--option}, parses.

        @param datagram: whether it is a UDP (or systemd datagram) address.
        @param metrics: whether it is C{--metrics}'s (which takes no
            C{haproxy:} prefix).
        @raise usage.UsageError: naming the option, the value and the fault.
        """
        try:
            if datagram:
                parse_datagram_description(description)
                return
            if metrics and parse_description(description).proxied:
                raise ValueError("the metrics listener does not take haproxy:")
            self.stream_endpoint(description, _ParseOnly())
        except Exception as e:
            raise usage.UsageError(
                f"bad address for --{option} {description!r}: {_explain_parse_error(e)}"
            ) from None

    def stream_endpoint(
        self, description: str, reactor: Any, tls_layer: bool = True
    ) -> IStreamServerEndpoint:
        """
        @param description: a stream listener's endpoint string, as given.
        @param reactor: the reactor the endpoint will listen with.
        @param tls_layer: see L{twisted_echo.app.endpoints.stream_endpoint}.
        @return: its endpoint (L{twisted_echo.app.endpoints.stream_endpoint}),
            with C{--backlog} and C{--handshake-timeout}.
        @raise Exception: whatever the endpoint parser raises for a bad one.
        """
        return stream_endpoint(
            description,
            reactor,
            self["backlog"],
            self["handshake-timeout"],
            tls_layer,
        )


def add_service_options(cls: type[Options], services: Iterable[ServiceEntry]) -> None:
    """
    Give C{cls} each service's options: C{--NAME ENDPOINT} (repeatable) and,
    for a service with a default endpoint, C{--no-NAME}.

    @param cls: L{Options}, or a subclass (whose own C{optFlags} are
        extended; C{usage.Options} adds those of its bases).
    @param services: registry entries (L{twisted_echo.app.registry}).
    """
    flags = list(cls.__dict__.get("optFlags", []))
    for service in services:
        setattr(cls, "opt_" + service.name.replace("-", "_"), _listener_option(service))
        if service.default is not None:
            flags.append(
                [f"no-{service.name}", None, f"Do not run the {service.label} service."]
            )
    cls.optFlags = flags


add_service_options(Options, registry.SERVICES)


def is_datagram_description(description: str) -> bool:
    """
    @param description: a C{--whoami} endpoint string.
    @return: whether it is a UDP one (C{udp:...}); the others are stream
        endpoints (C{systemd:} ones included).
    """
    return parse_description(description).datagram


def service_listeners(
    config: Options, service: ServiceEntry
) -> tuple[list[str], list[str]]:
    """
    @return: C{service}'s stream and datagram listener descriptions, each in
        the order given (L{ServiceEntry.is_datagram}).
    """
    stream: list[str] = []
    datagram: list[str] = []
    for description in config.listeners[service.name]:
        if service.is_datagram(is_datagram_description(description)):
            datagram.append(description)
        else:
            stream.append(description)
    return stream, datagram


def listener_keys(config: Options) -> list[tuple[str, int, str]]:
    """
    @return: C{(key, index, description)} of every listener C{config}
        names, service by service in the registry's order, each service's
        stream listeners before its datagram ones; a key is the service's
        name, or C{NAME-udp} for the datagram listeners of a service that
        takes both (L{ServiceEntry.listener_key}), each numbered on its own.
    """
    keys = []
    for service in registry.SERVICES:
        stream, datagram = service_listeners(config, service)
        for is_datagram, descriptions in ((False, stream), (True, datagram)):
            key = service.listener_key(is_datagram)
            keys += [(key, i, d) for i, d in enumerate(descriptions)]
    return keys


def makeService(
    config: Options,
    reactor: Any = None,
    inherited: Mapping[tuple[str, int], tuple[int, int]] | None = None,
    new_counters: Callable[[str], ServiceCounters] | None = None,
) -> SockechoService:
    """
    Build the service C{config} describes: a L{SockechoService} with one
    listener child per listening address.

    @param config: parsed and validated L{Options}.
    @param reactor: the reactor to listen and keep time with; the global
        one when L{None}.
    @param inherited: listening sockets to use instead of opening them, as
        C{(file descriptor, address family)} by C{(service, index)} (see
        L{listener_keys}); a worker's, opened by its supervisor
        (L{twisted_echo.app.inherit}).
    @param new_counters: makes each service's counters from its name; a
        worker's count into memory its supervisor reads
        (L{twisted_echo.operations.sharedcounters}). Plain L{ServiceCounters} when
        L{None}.
    @return: the service for twistd to run.
    """
    inherited = inherited or {}
    if reactor is None:
        from twisted.internet import reactor

    make_counters = new_counters or (lambda name: ServiceCounters())
    # Every service's counters are made, running or not, as workers'
    # tables have always held them.
    made = {s.name: make_counters(s.name) for s in registry.SERVICES}
    running = [s for s in registry.SERVICES if config.listeners[s.name]]
    counters = {s.name: made[s.name] for s in running}
    source_rate, source_burst = config["udp-rate"]
    global_rate, global_burst = config["udp-global-rate"]
    # One datagram protocol per listener, as it replies through the port it
    # is connected to; all share the counters, the rate limits and the loop
    # guard (which learns every listener's bound port).
    common = BuildContext(
        reactor=reactor,
        config=config,
        counters=ServiceCounters(),
        limits=limits.ConnectionLimits(
            max_connections=config["max-connections"],
            max_per_peer=config["max-per-peer"],
        ),
        timeouts=limits.Timeouts(
            idle=config["idle-timeout"],
            stall=config["stall-timeout"],
            line=config["line-timeout"],
        ),
        budget=MemoryBudget(config["max-buffer"]),
        source_limit=SourceRateLimiter(source_rate, source_burst, reactor),
        global_limit=TokenBucket(global_rate, global_burst, reactor),
        loop_guard=LoopGuard(config["udp-never-answer"]),
        worker=worker_number(),
    )
    log_connections = LOG_LEVELS["info"] in levels_from(config["log-level"])
    records = connection_records(config, reactor, log_connections)
    contexts: dict[str, BuildContext] = {}
    factories: dict[str, StreamFactory] = {}
    listeners = {}
    for service in running:
        context = replace(common, counters=counters[service.name])
        contexts[service.name] = context
        listeners[service.name] = stream, _ = service_listeners(config, service)
        if stream and service.stream is not None:
            factory = factories[service.name] = service.stream(context)
            factory.log_connections = log_connections
            factory.records = records
            # The JSON log's record events ride on the close lines.
            factory.records_in_log = records is not None and log_record in (
                records.observers
            )
            factory.record_bytes = config["record-bytes"]
            profile = config["faults"].get(service.name)
            if profile is not None:
                factory.faults = ListenerFaults(
                    profile,
                    service.name,
                    reactor,
                    context.counters.faults,
                    log_connections,
                )
    top = SockechoService(
        counters,
        factories=list(factories.values()),
        drain_timeout=config["drain-timeout"],
        drain_delay=config["drain-delay"],
        clock=reactor,
    )
    top.records = records
    stream_listeners: dict[str, list[StreamListenerService]] = {}
    for name, factory in factories.items():
        for index, description in enumerate(listeners[name][0]):
            socket_given = inherited.get((name, index))
            if socket_given is not None and parse_description(description).systemd:
                endpoint: IStreamServerEndpoint = AdoptedStreamServerEndpoint(
                    reactor, *socket_given
                )
            elif socket_given is not None:
                endpoint = config.stream_endpoint(
                    description, InheritingReactor(reactor, *socket_given)
                )
            else:
                endpoint = config.stream_endpoint(description, reactor)
            refuse = factory.faults and factory.faults.profile.listener_fault("refuse")
            if refuse:
                listener: StreamListenerService = RefusingListenerService(
                    description,
                    endpoint,
                    factory,
                    name,
                    fault=refuse,
                    clock=reactor,
                    counts=counters[name].faults,
                )
            else:
                listener = StreamListenerService(description, endpoint, factory, name)
            top.addService(listener)
            stream_listeners.setdefault(name, []).append(listener)
    datagram_protocols: dict[str, tuple[str, list[Any]]] = {}
    for service in running:
        build = service.datagram
        key = service.listener_key(datagram=True)
        profile = config["faults"].get(key)
        for index, description in enumerate(listeners[service.name][1]):
            assert build is not None
            protocol = build(contexts[service.name])
            datagram_protocols.setdefault(key, (service.name, []))[1].append(protocol)
            if records is not None and config["udp-flows"]:
                protocol.flows = FlowTable(  # type: ignore[attr-defined]
                    service.name,
                    records,
                    reactor,
                    config["udp-flow-window"],
                    config["udp-flows"],
                )
            if profile is not None:
                protocol.faults = DatagramFaults(  # type: ignore[attr-defined]
                    profile,
                    f"{key}/{index}" if index else key,
                    reactor,
                    counters[service.name],
                    log_connections,
                )
            top.addService(
                DatagramListenerService(
                    description,
                    parse_datagram_description(description),
                    protocol,
                    IReactorUDP(reactor),
                    service.name,
                    inherited=inherited.get((key, index)),
                )
            )
    top.fault_slots = fault_slots(
        factories,
        datagram_protocols,
        counters,
        reactor,
        log_connections,
        stream_listeners,
    )
    if config["metrics"] is not None:
        add_metrics(top, config, reactor, top.fault_slots)
    return top


def connection_records(
    config: Options, reactor: Any, log_info: bool
) -> RecordRing | None:
    """
    @param config: parsed and validated L{Options}.
    @param reactor: the clock of the waits for records.
    @param log_info: whether C{info} events are logged.
    @return: the ring of C{--records} connection records the services
        fill (L{None} with C{--records 0}); with C{--log-format json} and
        C{info} logged, each record is also logged as one event
        (L{twisted_echo.records.log.log_record}).
    """
    if not config["records"]:
        return None
    ring = RecordRing(config["records"], reactor)
    if log_info and config["log-format"] == "json":
        ring.observers.append(log_record)
    return ring


def is_loopback_description(description: str) -> bool:
    """
    @param description: a stream endpoint string (C{--metrics}'s).
    @return: whether it listens on loopback only: a C{tcp}/C{tcp6} (or
        C{ssl}) endpoint whose C{interface} is a loopback address, or a
        C{unix:} socket. Without C{interface} a TCP endpoint listens on
        every address: not loopback.
    """
    import ipaddress

    parsed = parse_description(description)
    if parsed.kind == "unix":
        return True
    if parsed.kind not in ("tcp", "tcp6", "ssl"):
        return False
    kwargs = dict(parsed.options)
    interface = str(kwargs.get("interface", ""))
    if interface == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return False


def fault_slots(
    factories: Mapping[str, StreamFactory],
    datagram_protocols: Mapping[str, tuple[str, list[Any]]],
    counters: Mapping[str, ServiceCounters],
    reactor: Any,
    log_connections: bool,
    stream_listeners: Mapping[str, Sequence[StreamListenerService]] | None = None,
) -> dict[str, FaultSlot]:
    """
    @param factories: each running stream service's factory, by name.
    @param datagram_protocols: each UDP listener key's service name and
        listeners' protocols.
    @param stream_listeners: each stream service's listeners, by name,
        whose accepting a C{refuse} set at run time stops (L{None}: such
        a change is refused).
    @return: each listener key's L{FaultSlot}, for C{--admin}'s C{/faults}.
    """
    slots: dict[str, FaultSlot] = {}
    for name, factory in factories.items():
        slots[name] = StreamFaultSlot(
            factory,
            name,
            reactor,
            counters[name].faults,
            log_connections,
            None if stream_listeners is None else stream_listeners.get(name, []),
        )
    for key, (name, protocols) in datagram_protocols.items():
        slots[key] = DatagramFaultSlot(
            protocols, key, reactor, counters[name], log_connections
        )
    return slots


def add_metrics(
    top: SockechoService,
    config: Options,
    reactor: Any,
    slots: Mapping[str, FaultSlot] | None = None,
) -> None:
    """
    Add the C{--metrics} listener to C{top}, as its last child (started
    once every other listener is), reading C{top}'s counters, turning
    C{/readyz} to 503 when C{top}'s drain starts and stopping when it ends.

    @param top: the server.
    @param config: parsed and validated L{Options} with C{--metrics}.
    @param reactor: the reactor to listen with.
    @param slots: with C{--admin}, the profiles C{/faults} changes.
    """
    from twisted_echo.operations.adminpage import FaultsPage
    from twisted_echo.operations.metrics import MetricsService

    description = config["metrics"]
    metrics = MetricsService(
        description,
        config.stream_endpoint(description, reactor),
        [top],
        max_buffer=config["max-buffer"],
        max_connections=config["metrics-max-connections"],
        request_timeout=config["metrics-request-timeout"],
        datagram_services=registry.datagram_only(),
        records=top.records,
        admin=FaultsPage(slots or {}) if config["admin"] else None,
        health=top.health,
    )
    top.drain_started.append(metrics.drain_started)
    top.drain_ended.append(metrics.drain_ended)
    top.addService(metrics)
