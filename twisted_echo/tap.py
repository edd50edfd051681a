# -*- test-case-name: tests.test_tap -*-
"""
C{twistd sockecho}: command-line options and the service they describe.

Every listening address is a Twisted endpoint description string
(C{tcp:7007:interface=127.0.0.1}, C{tcp6:7007:interface=\\:\\:1},
C{unix:/run/sockecho.sock}, C{ssl:...}, C{systemd:...}); UDP takes
C{udp:PORT[:interface=ADDR]}. Defaults listen on loopback only.
"""

from __future__ import annotations

import os
import re
import sys
from typing import IO, Any

from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorUDP, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python import usage

from twisted_echo.counters import ServiceCounters
from twisted_echo.echo import EchoFactory
from twisted_echo.listen import (
    DatagramListenerService,
    ListenError,
    StreamListenerService,
    parse_udp_description,
)
from twisted_echo.stream import StreamFactory
from twisted_echo.udp import UDPEcho
from twisted_echo.upper import UpperFactory
from twisted_echo.welcome import DEFAULT_BANNER, DEFAULT_MAX_LINE, WelcomeFactory

_log = Logger()

#: The default listener of each service: all on loopback.
DEFAULTS = {
    "echo": "tcp:7007:interface=127.0.0.1",
    "upper": "tcp:7008:interface=127.0.0.1",
    "welcome": "tcp:7009:interface=127.0.0.1",
    "udp": "udp:7007:interface=127.0.0.1",
}
TCP_SERVICES = ("echo", "upper", "welcome")


def _max_line(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"--max-line takes a positive number of bytes, not {value!r}")
    return number


_max_line.coerceDoc = "A positive number of bytes."  # type: ignore[attr-defined]


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


class Options(usage.Options):
    """
    Options of C{twistd sockecho}; L{postOptions} validates every listening
    address and raises L{usage.UsageError} naming the bad one.
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
    optParameters = [
        ["banner", None, DEFAULT_BANNER, "First line the welcome service sends."],
        [
            "max-line",
            None,
            DEFAULT_MAX_LINE,
            "Longest line the welcome service accepts, in bytes.",
            _max_line,
        ],
    ]

    opt_echo = _listener_option("echo", "Endpoint for the echo service.")
    opt_upper = _listener_option("upper", "Endpoint for the upper service.")
    opt_welcome = _listener_option("welcome", "Endpoint for the welcome service.")
    opt_udp = _listener_option("udp", "udp:PORT[:interface=ADDR] for UDP echo.")

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self.listeners: dict[str, list[str]] = {name: [] for name in DEFAULTS}
        self.endpoints: dict[str, list[tuple[str, IStreamServerEndpoint]]] = {}

    def postOptions(self) -> None:
        """
        Resolve each service's listeners and check every one parses.

        @raise usage.UsageError: naming the option and the value at fault.
        """
        from twisted.internet import reactor

        for service, given in self.listeners.items():
            if self[f"no-{service}"]:
                if given:
                    raise usage.UsageError(f"--{service} and --no-{service} conflict")
                continue
            descriptions = given or [DEFAULTS[service]]
            self.listeners[service] = descriptions
            for description in descriptions:
                try:
                    if service == "udp":
                        parse_udp_description(description)
                    else:
                        endpoint = serverFromString(reactor, description)
                        self.endpoints.setdefault(service, []).append(
                            (description, endpoint)
                        )
                except Exception as e:
                    raise usage.UsageError(
                        f"bad address for --{service} {description!r}: "
                        f"{_explain_parse_error(e)}"
                    ) from None
        if not any(self.listeners[name] for name in DEFAULTS if not self[f"no-{name}"]):
            raise usage.UsageError("every service is switched off; nothing to run")


class SockechoService(MultiService):
    """
    All of sockecho's listeners, one child service each.

    @ivar counters: each service's L{ServiceCounters}, by service name.
    """

    def __init__(
        self,
        counters: dict[str, ServiceCounters],
        pidfile: str | None = None,
        stderr: IO[str] | None = None,
        daemon: bool = False,
    ) -> None:
        MultiService.__init__(self)
        self.counters = counters
        self._pidfile = pidfile
        self._daemon = daemon
        self._stderr = stderr

    def addService(self, service: IService) -> None:
        """
        Add one listener (an L{IService}) as a child.
        """
        MultiService.addService(self, service)

    def privilegedStartService(self) -> None:
        """
        Start every listener; if one cannot listen, print one line naming it
        to standard error and exit with status 1.

        @raise SystemExit: when a listener fails.
        """
        try:
            MultiService.privilegedStartService(self)
        except ListenError as e:
            self._fail(f"sockecho: {e}")

    def _fail(self, message: str) -> None:
        for child in self:
            child.stopService()
        stderr = self._stderr or sys.__stderr__ or sys.stderr
        print(message, file=stderr, flush=True)
        if self._daemon:
            # A daemon's standard error is /dev/null: say it in the log too.
            _log.critical("{message}", message=message)
        if self._pidfile:
            # twistd wrote it just before starting services; a SystemExit
            # skips twistd's own clean-up.
            try:
                os.remove(self._pidfile)
            except OSError:
                pass
        raise SystemExit(1)

    def stopService(self) -> Any:
        """
        Stop listening and log each service's counters.
        """
        for name, counters in self.counters.items():
            _log.info("{service}: {summary}", service=name, summary=counters.summary())
        return MultiService.stopService(self)


def makeService(config: Options) -> SockechoService:
    """
    Build the service C{config} describes: a L{SockechoService} with one
    listener child per listening address.

    @param config: parsed and validated L{Options}.
    @return: the service for twistd to run.
    """
    from twisted.internet import reactor

    counters = {name: ServiceCounters() for name in DEFAULTS}
    factories: dict[str, StreamFactory] = {
        "echo": EchoFactory(reactor, counters["echo"]),
        "upper": UpperFactory(reactor, counters["upper"]),
        "welcome": WelcomeFactory(
            reactor,
            counters["welcome"],
            banner=config["banner"],
            max_line=config["max-line"],
        ),
    }
    twistd_config = getattr(config, "parent", None) or {}
    top = SockechoService(
        {name: counters[name] for name in DEFAULTS if config.listeners[name]},
        pidfile=twistd_config.get("pidfile") or None,
        daemon="nodaemon" in twistd_config and not twistd_config["nodaemon"],
    )
    for service in TCP_SERVICES:
        for description, endpoint in config.endpoints.get(service, []):
            top.addService(
                StreamListenerService(
                    description, endpoint, factories[service], service
                )
            )
    udp_protocol = UDPEcho(counters["udp"])
    for description in config.listeners["udp"]:
        top.addService(
            DatagramListenerService(
                description,
                parse_udp_description(description),
                udp_protocol,
                IReactorUDP(reactor),
                "udp",
            )
        )
    return top
