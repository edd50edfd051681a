# -*- test-case-name: tests.test_tap -*-
"""
C{twistd sockecho}: command-line options and the service they describe.

Long until split (issue 20): value coercion and help regrouping, endpoint
construction and the service tree's composition are one module here.

Every listening address is a Twisted endpoint description string
(C{tcp:7007:interface=127.0.0.1}, C{tcp6:7007:interface=\\:\\:1},
C{unix:/run/sockecho.sock}, C{ssl:...}, C{systemd:...}); UDP takes
C{udp:PORT[:interface=ADDR]}. Defaults listen on loopback only.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString
from twisted.internet.interfaces import IReactorUDP, IStreamServerEndpoint
from twisted.python import usage

from twisted_echo.app.inherit import InheritingReactor
from twisted_echo.app.server import SockechoService
from twisted_echo.listening.endpoints import BACKLOG_KINDS, parse_description
from twisted_echo.listening.listen import (
    DatagramListenerService,
    StreamListenerService,
    parse_datagram_description,
)
from twisted_echo.listening.proxyheader import ProxyHeaderEndpoint
from twisted_echo.listening.tls import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    TLSListeningReactor,
)
from twisted_echo.log.buffer import LEVELS as LOG_LEVELS
from twisted_echo.log.buffer import levels_from
from twisted_echo.operations.systemd import (
    SystemdStreamEndpoint,
    parse_systemd_description,
)
from twisted_echo.policies import limits
from twisted_echo.policies.budget import DEFAULT_MAX_BUFFER, MemoryBudget
from twisted_echo.policies.counters import ServiceCounters
from twisted_echo.policies.ratelimit import SourceRateLimiter, TokenBucket
from twisted_echo.services.echo import EchoFactory
from twisted_echo.services.stream import StreamFactory
from twisted_echo.services.udp import UDPEcho
from twisted_echo.services.upper import UpperFactory
from twisted_echo.services.welcome import (
    DEFAULT_BANNER,
    DEFAULT_MAX_LINE,
    WelcomeFactory,
)
from twisted_echo.services.whoami import (
    WhoamiFactory,
    WhoamiInfo,
    WhoamiUDP,
    worker_number,
)

#: The default listener of each service: all on loopback.
DEFAULTS = {
    "echo": "tcp:7007:interface=127.0.0.1",
    "upper": "tcp:7008:interface=127.0.0.1",
    "welcome": "tcp:7009:interface=127.0.0.1",
    "udp": "udp:7007:interface=127.0.0.1",
}
TCP_SERVICES = ("echo", "upper", "welcome")
#: The whoami service (off by default): its C{udp:} listeners are datagram
#: listeners, named L{WHOAMI_UDP} in L{listener_keys}; the others stream.
WHOAMI = "whoami"
WHOAMI_UDP = "whoami-udp"
#: Listen queue length given to stream endpoints that do not set one.
#: Twisted's default of 50 stalls connects during accept storms (1 s SYN
#: retransmits); the kernel caps it at net.core.somaxconn.
DEFAULT_BACKLOG = 1024
#: UDP echo rate limits, C{(datagrams per second, burst)}.
DEFAULT_UDP_RATE = (1000.0, 2000)
DEFAULT_UDP_GLOBAL_RATE = (20000.0, 40000)


def _number(
    option: str, kind: Callable[[str], Any], minimum: float, what: str
) -> Callable[[str], Any]:
    """
    A C{usage.Options} coercer whose error names the option.
    """

    def coerce(value: str) -> Any:
        try:
            number = kind(value)
        except ValueError:
            number = None
        if number is None or not math.isfinite(number) or number < minimum:
            raise ValueError(f"--{option} takes {what}, not {value!r}")
        return number

    coerce.coerceDoc = what[0].upper() + what[1:] + "."  # type: ignore[attr-defined]
    return coerce


def _seconds(option: str) -> Callable[[str], Any]:
    return _number(option, float, 0, "a number of seconds (0: never)")


def _count(option: str, what: str) -> Callable[[str], Any]:
    return _number(option, int, 0, f"a number of {what} (0: no limit)")


def _workers(value: str) -> int:
    """
    A coercer for C{--workers}: a positive number, or C{auto} for the CPUs
    this process may run on.
    """
    if value.strip().lower() == "auto":
        return len(os.sched_getaffinity(0))
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(
            f"--workers takes a positive number of processes or auto, not {value!r}"
        )
    return count


_workers.coerceDoc = "A positive number, or auto."  # type: ignore[attr-defined]


def _ports_file(value: str) -> str:
    """
    A coercer for C{--ports-file}: the path made absolute (twistd may
    change directory), in a directory that exists.
    """
    path = os.path.abspath(value)
    if not value or not os.path.isdir(os.path.dirname(path)):
        raise ValueError(
            f"--ports-file takes a file in a directory that exists, not {value!r}"
        )
    return path


_ports_file.coerceDoc = "A path; its directory must exist."  # type: ignore[attr-defined]


_SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """
    @param text: a size in bytes, with an optional binary suffix: C{65536},
        C{64K}, C{64M}, C{1G} (K = 1024 bytes; C{KiB}, C{MB} and lower case
        are read the same).
    @return: the size in bytes.
    @raise ValueError: if C{text} is not such a size.
    """
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(I?B)?\s*", text.upper())
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    return int(match.group(1)) * _SIZE_SUFFIXES[match.group(2)]


def format_size(size: int) -> str:
    """
    @param size: a number of bytes.
    @return: C{size} as L{parse_size} reads it, with the largest binary
        suffix that divides it: C{64M}, C{256K}, C{1000}.
    """
    for suffix in ("G", "M", "K"):
        unit = _SIZE_SUFFIXES[suffix]
        if size and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def _typed(number: float) -> str:
    """
    @return: C{number} as a user would type it: C{300}, C{0.5}.
    """
    return f"{number:g}"


def _size(option: str) -> Callable[[str], int]:
    def coerce(value: str) -> int:
        try:
            return parse_size(value)
        except ValueError:
            raise ValueError(
                f"--{option} takes a size in bytes, with K, M or G "
                f"(0: no limit), not {value!r}"
            ) from None

    coerce.coerceDoc = "Bytes, or with K, M, G (binary); 0: no limit."  # type: ignore[attr-defined]
    return coerce


def _rate(option: str) -> Callable[[str], Any]:
    """
    A coercer for C{RATE[/BURST]}: datagrams per second, and the burst in
    datagrams (default: one second's worth); C{0} for no limit.
    """

    def coerce(value: str) -> tuple[float, int]:
        rate_text, _, burst_text = value.partition("/")
        try:
            rate = float(rate_text)
            burst = int(burst_text) if burst_text else max(1, math.ceil(rate))
        except ValueError:
            rate, burst = -1, 0
        if not (math.isfinite(rate) and rate >= 0 and burst >= 1):
            raise ValueError(
                f"--{option} takes RATE[/BURST] in datagrams per second "
                f"(0: no limit), not {value!r}"
            )
        return rate, burst

    coerce.coerceDoc = "RATE[/BURST]: datagrams per second[/datagrams]; 0: none."  # type: ignore[attr-defined]
    return coerce


def _udp_ports(option: str) -> Callable[[str], Any]:
    """
    A coercer for C{PORT[-PORT],...}: UDP ports and inclusive ranges
    (L{twisted_echo.services.udp.parse_ports}); C{none} for none.
    """
    from twisted_echo.services.udp import (
        DEFAULT_NEVER_ANSWER,
        format_ports,
        parse_ports,
    )

    def coerce(value: str) -> frozenset[int]:
        try:
            return parse_ports(value)
        except ValueError as e:
            raise ValueError(
                f"--{option} takes comma-separated ports and ranges "
                f"(PORT[-PORT],...) or none, not {value!r}: {e}"
            ) from None

    default = format_ports(DEFAULT_NEVER_ANSWER)
    coerce.coerceDoc = f"PORT[-PORT],... or none [default: {default}]"  # type: ignore[attr-defined]
    return coerce


def _listener_option(service: str, help_text: str) -> Any:
    def opt(self: Options, description: str) -> None:
        self.listeners[service].append(description)

    opt.__doc__ = f"{help_text} [default: {DEFAULTS[service]}] (repeatable)"
    return opt


def _explain_parse_error(error: Exception) -> str:
    """
    Say why an endpoint string did not parse, in the user's terms.
    """
    unknown = re.search(r"unexpected keyword argument '(\w+)'", str(error))
    if isinstance(error, TypeError) and unknown:
        return f"unknown parameter {unknown.group(1)!r}"
    return str(error)


def with_backlog(description: str, backlog: int) -> str:
    """
    Add C{backlog=} to a stream endpoint description that has none.

    @param description: an endpoint string, e.g. C{tcp:7007}.
    @param backlog: the listen queue length.
    @return: e.g. C{tcp:7007:backlog=1024}, without surrounding whitespace
        (L{parse_description}); other endpoint types unchanged.
    """
    parsed = parse_description(description)
    if parsed.proxied or parsed.kind not in BACKLOG_KINDS:
        return description
    return parsed.with_default("backlog", str(backlog))


class _ParseOnly:
    """
    The reactor given to endpoint parsers while options are checked: parsing
    only stores it, and the endpoints really listened on are made again by
    L{makeService} with the reactor that runs them.
    """


#: How C{--help} lists the options: C{(heading, options)} in order, listeners
#: first; an option named in none (C{--help}, C{--version}) comes last
#: under "Other", and a name that is no option is passed over.
HELP_GROUPS = (
    (
        "Listeners (endpoint strings; giving one replaces that service's "
        "default)",
        (
            "echo",
            "upper",
            "welcome",
            "udp",
            "whoami",
            "no-echo",
            "no-upper",
            "no-welcome",
            "no-udp",
            "metrics",
            "ports-file",
        ),
    ),
    ("The welcome service", ("banner", "max-line")),
    (
        "Limits",
        (
            "max-connections",
            "max-per-peer",
            "max-buffer",
            "backlog",
            "udp-rate",
            "udp-global-rate",
            "udp-never-answer",
            "metrics-max-connections",
        ),
    ),
    (
        "Timeouts, in seconds",
        (
            "idle-timeout",
            "stall-timeout",
            "line-timeout",
            "handshake-timeout",
            "drain-timeout",
            "metrics-request-timeout",
        ),
    ),
    ("Running", ("workers", "log-format", "log-level")),
)
#: The first line of an option's entry in C{usage.Options}' help.
_HELP_ENTRY = re.compile(r"^(?:  -\w, |      )--([\w-]+)")


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
    optFlags = [
        ["no-echo", None, "Do not run the echo service."],
        ["no-upper", None, "Do not run the upper service."],
        ["no-welcome", None, "Do not run the welcome service."],
        ["no-udp", None, "Do not run the UDP echo service."],
    ]
    optParameters: list[list[Any]] = [
        ["banner", None, DEFAULT_BANNER, "First line the welcome service sends."],
        [
            "max-line",
            None,
            str(DEFAULT_MAX_LINE),
            "Longest line the welcome service accepts, in bytes.",
            _number("max-line", int, 1, "a positive number of bytes"),
        ],
        [
            "max-connections",
            None,
            str(limits.DEFAULT_MAX_CONNECTIONS),
            "Most TCP connections open at once, all services together.",
            _count("max-connections", "connections"),
        ],
        [
            "max-per-peer",
            None,
            str(limits.DEFAULT_MAX_PER_PEER),
            "Most TCP connections open at once from one client address.",
            _count("max-per-peer", "connections"),
        ],
        [
            "max-buffer",
            None,
            format_size(DEFAULT_MAX_BUFFER),
            "Most bytes held for all TCP connections together (queued replies, "
            "reads, unfinished lines).",
            _size("max-buffer"),
        ],
        [
            "idle-timeout",
            None,
            _typed(limits.DEFAULT_IDLE_TIMEOUT),
            "Close a connection with no traffic for this many seconds.",
            _seconds("idle-timeout"),
        ],
        [
            "stall-timeout",
            None,
            _typed(limits.DEFAULT_STALL_TIMEOUT),
            "Abort a connection whose peer takes no byte of what it is owed "
            "(on TCP: acknowledges none, the kernel's send queue included) "
            "for this many seconds. Acknowledgements come in steps (on "
            "loopback up to ~1.3 s apart at 100 KB/s, ~6.5 s at 20 KB/s): "
            "slower readers need a longer timeout.",
            _seconds("stall-timeout"),
        ],
        [
            "line-timeout",
            None,
            _typed(limits.DEFAULT_LINE_TIMEOUT),
            "Close a welcome connection whose line is not finished within "
            "this many seconds of its first byte.",
            _seconds("line-timeout"),
        ],
        [
            "handshake-timeout",
            None,
            _typed(DEFAULT_HANDSHAKE_TIMEOUT),
            "Abort a TLS (ssl:) connection whose handshake is not finished "
            "within this many seconds of connecting.",
            _seconds("handshake-timeout"),
        ],
        [
            "drain-timeout",
            None,
            _typed(limits.DEFAULT_DRAIN_TIMEOUT),
            "On SIGTERM/SIGINT (and SIGHUP without --workers), give open "
            "connections this many seconds to finish, then abort them.",
            _seconds("drain-timeout"),
        ],
        [
            "backlog",
            None,
            str(DEFAULT_BACKLOG),
            "Listen queue length for stream endpoints that set none.",
            _number("backlog", int, 1, "a positive number of connections"),
        ],
        [
            "udp-rate",
            None,
            "{:g}/{}".format(*DEFAULT_UDP_RATE),
            "UDP datagrams answered per second per source address.",
            _rate("udp-rate"),
        ],
        [
            "udp-global-rate",
            None,
            "{:g}/{}".format(*DEFAULT_UDP_GLOBAL_RATE),
            "UDP datagrams answered per second, all sources together.",
            _rate("udp-global-rate"),
        ],
        [
            "udp-never-answer",
            None,
            None,
            "UDP source ports never answered, against loops with other UDP "
            "services (CVE-2024-2169); the ports sockecho's own UDP listeners "
            "are bound to are never answered either",
            _udp_ports("udp-never-answer"),
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
            _count("metrics-max-connections", "connections"),
        ],
        [
            "metrics-request-timeout",
            None,
            _typed(limits.DEFAULT_METRICS_REQUEST_TIMEOUT),
            "Close a --metrics connection whose request is not complete this "
            "many seconds after its first byte, or whose client has not read "
            "its response within as long.",
            _seconds("metrics-request-timeout"),
        ],
        [
            "workers",
            None,
            "1",
            "Worker processes serving every listener; auto: one per CPU this "
            "process may run on. SIGHUP replaces them one by one.",
            _workers,
        ],
        [
            "ports-file",
            None,
            None,
            "Once every listener is up, write where each listens (the real "
            "ports, port 0 included) as JSON to this file; removed when the "
            "drain starts [default: off]",
            _ports_file,
        ],
    ]

    opt_echo = _listener_option("echo", "Endpoint for the echo service.")
    opt_upper = _listener_option("upper", "Endpoint for the upper service.")
    opt_welcome = _listener_option("welcome", "Endpoint for the welcome service.")
    opt_udp = _listener_option(
        "udp", "udp:PORT[:interface=ADDR] (or systemd:index=N) for UDP echo."
    )

    def opt_whoami(self, description: str) -> None:
        self.listeners[WHOAMI].append(description)

    opt_whoami.__doc__ = (
        "Endpoint for the whoami service: TCP, UNIX, TLS (one JSON line, then "
        "close) or udp:PORT[:interface=ADDR] (one JSON datagram per datagram) "
        "[default: off] (repeatable)"
    )

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self.listeners: dict[str, list[str]] = {name: [] for name in DEFAULTS}
        self.listeners[WHOAMI] = []
        # Defaults are written as users type them, which is what --help
        # shows; the values are those the option gives for that text.
        for parameter in self.optParameters:
            name, default = parameter[0], parameter[2]
            if len(parameter) == 5 and isinstance(default, str):
                self[name] = parameter[4](default)

    def getUsage(self, width: int | None = None) -> str:
        """
        The options' help, grouped as L{HELP_GROUPS} says, listeners first.

        @param width: columns to wrap to (C{$COLUMNS} or 80 if not given).
        @return: the help text, without the synopsis line.
        """
        text = usage.Options.getUsage(self, width)
        if not text.startswith("Options:\n"):
            return text
        listing, _, rest = text[len("Options:\n") :].partition("\n\n")
        entries: dict[str, list[str]] = {}
        for line in (listing + "\n").splitlines(keepends=True):
            entry = _HELP_ENTRY.match(line)
            if entry is not None:
                current = entries.setdefault(entry.group(1), [])
            current.append(line)
        groups = []
        for heading, names in (*HELP_GROUPS, ("Other", tuple(entries))):
            listed = [line for name in names for line in entries.pop(name, [])]
            if listed:
                groups.append(f"{heading}:\n" + "".join(listed))
        return "\n".join(groups) + ("\n" + rest if rest else "")

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
        for service in DEFAULTS:
            given = self.listeners[service]
            if self[f"no-{service}"]:
                if given:
                    raise usage.UsageError(f"--{service} and --no-{service} conflict")
                continue
            descriptions = given or [DEFAULTS[service]]
            self.listeners[service] = descriptions
            for description in descriptions:
                self._check_address(service, description, datagram=service == "udp")
        for description in self.listeners[WHOAMI]:
            self._check_address(
                WHOAMI, description, datagram=is_datagram_description(description)
            )
        if not self.listeners[WHOAMI] and not any(
            self.listeners[name] for name in DEFAULTS if not self[f"no-{name}"]
        ):
            raise usage.UsageError("every service is switched off; nothing to run")
        if self["metrics"] is not None:
            self._check_address("metrics", self["metrics"], metrics=True)

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

    def stream_endpoint(self, description: str, reactor: Any) -> IStreamServerEndpoint:
        """
        @param description: a stream listener's endpoint string, as given.
        @param reactor: the reactor the endpoint will listen with.
        @return: its endpoint, with C{--backlog} added where it sets none;
            C{ssl:} endpoints listen with sockecho's TLS layer, which keeps
            half-close (L{twisted_echo.listening.tls}); C{systemd:} ones adopt a
            socket inherited from systemd, with or without
            C{LISTEN_FDNAMES} (L{twisted_echo.operations.systemd}); C{haproxy:ENDPOINT}
            ones read a PROXY header on each connection before the service
            starts (L{twisted_echo.listening.proxyheader}).
        @raise Exception: whatever the endpoint parser raises for a bad one.
        """
        parsed = parse_description(description)
        if parsed.proxied:
            if parsed.kind in ("haproxy", "ssl", "udp"):
                raise ValueError(
                    f"haproxy: does not take {parsed.kind}: listeners (TCP, UNIX "
                    "and systemd: ones only)"
                )
            return ProxyHeaderEndpoint(self.stream_endpoint(parsed.inner, reactor))
        if parsed.systemd:
            address = parse_systemd_description(parsed.inner)
            return SystemdStreamEndpoint(reactor, address)
        if parsed.tls:
            reactor = TLSListeningReactor(reactor, self["handshake-timeout"])
        endpoint: IStreamServerEndpoint = serverFromString(
            reactor, with_backlog(parsed.inner, self["backlog"])
        )
        return endpoint


def is_datagram_description(description: str) -> bool:
    """
    @param description: a C{--whoami} endpoint string.
    @return: whether it is a UDP one (C{udp:...}); the others are stream
        endpoints (C{systemd:} ones included).
    """
    return parse_description(description).datagram


def whoami_listeners(config: Options) -> dict[str, list[str]]:
    """
    @return: the C{--whoami} descriptions, stream ones under L{WHOAMI} and
        UDP ones under L{WHOAMI_UDP}, each in the order given.
    """
    given = config.listeners[WHOAMI]
    return {
        WHOAMI: [d for d in given if not is_datagram_description(d)],
        WHOAMI_UDP: [d for d in given if is_datagram_description(d)],
    }


def listener_keys(config: Options) -> list[tuple[str, int, str]]:
    """
    @return: C{(service, index, description)} of every listener C{config}
        names, in the order L{makeService} adds them; whoami's are named
        L{WHOAMI} (stream) and L{WHOAMI_UDP} (datagram), each numbered on
        its own.
    """
    whoami = whoami_listeners(config)
    return [
        (service, index, description)
        for service in (*TCP_SERVICES, "udp")
        for index, description in enumerate(config.listeners[service])
    ] + [
        (service, index, description)
        for service in (WHOAMI, WHOAMI_UDP)
        for index, description in enumerate(whoami[service])
    ]


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
    counters = {name: make_counters(name) for name in (*DEFAULTS, WHOAMI)}
    shared = limits.ConnectionLimits(
        max_connections=config["max-connections"],
        max_per_peer=config["max-per-peer"],
    )
    timeouts = limits.Timeouts(
        idle=config["idle-timeout"],
        stall=config["stall-timeout"],
        line=config["line-timeout"],
    )
    budget = MemoryBudget(config["max-buffer"])
    factories: dict[str, StreamFactory] = {
        "echo": EchoFactory(reactor, counters["echo"], shared, timeouts, budget),
        "upper": UpperFactory(reactor, counters["upper"], shared, timeouts, budget),
        "welcome": WelcomeFactory(
            reactor,
            counters["welcome"],
            shared,
            timeouts,
            banner=config["banner"],
            max_line=config["max-line"],
            budget=budget,
        ),
    }
    whoami = whoami_listeners(config)
    whoami_info = WhoamiInfo(worker=worker_number())
    log_connections = LOG_LEVELS["info"] in levels_from(config["log-level"])
    if whoami[WHOAMI]:
        factories[WHOAMI] = WhoamiFactory(
            reactor, counters[WHOAMI], shared, timeouts, budget, info=whoami_info
        )
    for factory in factories.values():
        factory.log_connections = log_connections
    running = [name for name in DEFAULTS if config.listeners[name]]
    if config.listeners[WHOAMI]:
        running.append(WHOAMI)
    top = SockechoService(
        {name: counters[name] for name in running},
        factories=[
            factories[name]
            for name in (*TCP_SERVICES, WHOAMI)
            if name in factories and name in running
        ],
        drain_timeout=config["drain-timeout"],
    )
    stream_listeners = {name: config.listeners[name] for name in TCP_SERVICES}
    stream_listeners[WHOAMI] = whoami[WHOAMI]
    for service, descriptions in stream_listeners.items():
        for index, description in enumerate(descriptions):
            socket_given = inherited.get((service, index))
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
            top.addService(
                StreamListenerService(
                    description, endpoint, factories[service], service
                )
            )
    source_rate, source_burst = config["udp-rate"]
    global_rate, global_burst = config["udp-global-rate"]
    from twisted_echo.services.udp import LoopGuard

    # One UDPEcho per listener, as it replies through the port it is
    # connected to; all share the counters, the rate limits and the loop
    # guard (which learns every listener's bound port).
    source_limit = SourceRateLimiter(source_rate, source_burst, reactor)
    global_limit = TokenBucket(global_rate, global_burst, reactor)
    loop_guard = LoopGuard(config["udp-never-answer"])
    for index, description in enumerate(config.listeners["udp"]):
        top.addService(
            DatagramListenerService(
                description,
                parse_datagram_description(description),
                UDPEcho(counters["udp"], source_limit, global_limit, loop_guard),
                IReactorUDP(reactor),
                "udp",
                inherited=inherited.get(("udp", index)),
            )
        )
    for index, description in enumerate(whoami[WHOAMI_UDP]):
        top.addService(
            DatagramListenerService(
                description,
                parse_datagram_description(description),
                WhoamiUDP(
                    counters[WHOAMI],
                    source_limit,
                    global_limit,
                    loop_guard,
                    info=whoami_info,
                ),
                IReactorUDP(reactor),
                WHOAMI,
                inherited=inherited.get((WHOAMI_UDP, index)),
            )
        )
    if config["metrics"] is not None:
        add_metrics(top, config, reactor)
    return top


def add_metrics(top: SockechoService, config: Options, reactor: Any) -> None:
    """
    Add the C{--metrics} listener to C{top}, as its last child (started
    once every other listener is), reading C{top}'s counters, turning
    C{/readyz} to 503 when C{top}'s drain starts and stopping when it ends.

    @param top: the server.
    @param config: parsed and validated L{Options} with C{--metrics}.
    @param reactor: the reactor to listen with.
    """
    from twisted_echo.operations.metrics import LocalCounters, MetricsService

    description = config["metrics"]
    metrics = MetricsService(
        description,
        config.stream_endpoint(description, reactor),
        [LocalCounters(top)],
        max_buffer=config["max-buffer"],
        max_connections=config["metrics-max-connections"],
        request_timeout=config["metrics-request-timeout"],
    )
    top.drain_started.append(metrics.drain_started)
    top.drain_ended.append(metrics.drain_ended)
    top.addService(metrics)
