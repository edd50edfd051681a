# -*- test-case-name: tests.test_package -*-
"""
sockecho: the classic socket test services as a Twisted application.

Services (one module each):
 - L{twisted_echo.services.echo}: TCP echo, RFC 862.
 - L{twisted_echo.services.upper}: TCP echo of UTF-8 text, upper-cased.
 - L{twisted_echo.services.welcome}: a banner, then C{OK...} and each line received.
 - L{twisted_echo.services.udp}: UDP echo, RFC 862, with a loop guard (CVE-2024-2169).
 - L{twisted_echo.services.whoami}: how the server sees the client, as JSON (TCP, UDP).

Start them with C{twistd -n sockecho}; see L{twisted_echo.app.options}.

The public API is the names in C{__all__}, importable from here
(C{from twisted_echo import EchoFactory}): the services' factories and
protocols, the server (L{twisted_echo.app.server.SockechoService}) and what
builds it from options (L{twisted_echo.app.options.Options},
L{twisted_echo.app.options.makeService}), the client's entry points
(L{twisted_echo.client}), and sockecho for other projects' tests: a server
process (L{twisted_echo.testing.spawn.start_sockecho}, behind the pytest plugin's
C{sockecho} fixture), services in a running reactor
(L{twisted_echo.testing.trial.start_services}) and the ports file
(L{twisted_echo.operations.portsfile},
L{twisted_echo.testing.addresses}). Everything else may change between releases.
Importing this package imports none of them: each is imported when first
used (PEP 562), so C{import twisted_echo} loads neither a reactor nor any
networking module.

@var __version__: sockecho's version, as installed (the package's
    metadata: C{setup.cfg}'s C{version}).
"""

from __future__ import annotations

import importlib

#: C{typing.TYPE_CHECKING}, without importing C{typing} (a twentieth of a
#: second of start-up here and there; type checkers read it the same).
TYPE_CHECKING = False

#: Where each public name lives: C{NAME: MODULE} (same name there) or
#: C{NAME: (MODULE, NAME_THERE)}, modules relative to this package.
_PUBLIC: dict[str, str | tuple[str, str]] = {
    # The services: protocols and their factories.
    "StreamProtocol": "services.stream",
    "StreamFactory": "services.stream",
    "Echo": "services.echo",
    "EchoFactory": "services.echo",
    "Upper": "services.upper",
    "UpperFactory": "services.upper",
    "Welcome": "services.welcome",
    "WelcomeFactory": "services.welcome",
    "UDPEcho": "services.udp",
    "Whoami": "services.whoami",
    "WhoamiFactory": "services.whoami",
    "WhoamiUDP": "services.whoami",
    # The server, and what builds it from twistd's options.
    "SockechoService": "app.server",
    "Options": "app.options",
    "makeService": "app.options",
    # The client (sockecho-client) and its commands' entry points.
    "client_main": ("client.__main__", "main"),
    "ClientError": "client.errors",
    "run_chat": "client.chat",
    "LoadConfig": "client.load",
    "run_load": "client.load",
    "CheckResult": "client.check",
    "run_check": "client.check",
    "run_checks": "client.check",
    "run_whoami": "client.whoami",
    # Testing: a sockecho for other projects' tests (docs/testing.md).
    "start_sockecho": "testing.spawn",
    "SockechoProcess": "testing.spawn",
    "StartError": "testing.spawn",
    "start_services": "testing.trial",
    "RunningServices": "testing.trial",
    "Addresses": "testing.addresses",
    "read_ports_file": "operations.portsfile",
}

__all__ = [
    "__version__",
    "StreamProtocol",
    "StreamFactory",
    "Echo",
    "EchoFactory",
    "Upper",
    "UpperFactory",
    "Welcome",
    "WelcomeFactory",
    "UDPEcho",
    "Whoami",
    "WhoamiFactory",
    "WhoamiUDP",
    "SockechoService",
    "Options",
    "makeService",
    "client_main",
    "ClientError",
    "run_chat",
    "LoadConfig",
    "run_load",
    "CheckResult",
    "run_check",
    "run_checks",
    "run_whoami",
    "start_sockecho",
    "SockechoProcess",
    "StartError",
    "start_services",
    "RunningServices",
    "Addresses",
    "read_ports_file",
]

if TYPE_CHECKING:
    from typing import Any

    from twisted_echo.app.options import Options, makeService
    from twisted_echo.app.server import SockechoService
    from twisted_echo.client.__main__ import main as client_main
    from twisted_echo.client.chat import run_chat
    from twisted_echo.client.check import CheckResult, run_check, run_checks
    from twisted_echo.client.errors import ClientError
    from twisted_echo.client.load import LoadConfig, run_load
    from twisted_echo.client.whoami import run_whoami
    from twisted_echo.operations.portsfile import read_ports_file
    from twisted_echo.services.echo import Echo, EchoFactory
    from twisted_echo.services.stream import StreamFactory, StreamProtocol
    from twisted_echo.services.udp import UDPEcho
    from twisted_echo.services.upper import Upper, UpperFactory
    from twisted_echo.services.welcome import Welcome, WelcomeFactory
    from twisted_echo.services.whoami import Whoami, WhoamiFactory, WhoamiUDP
    from twisted_echo.testing.addresses import Addresses
    from twisted_echo.testing.spawn import SockechoProcess, StartError, start_sockecho
    from twisted_echo.testing.trial import RunningServices, start_services

    __version__: str


def _installed_version() -> str:
    """
    @return: the installed distribution's version; C{0+unknown} when this
        package runs uninstalled (from a bare checkout on C{sys.path}).
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sockecho")
    except PackageNotFoundError:
        return "0+unknown"


def __getattr__(name: str) -> Any:
    """
    Import a public name (or C{__version__}) on first use (PEP 562).

    @raise AttributeError: for a name that is not public.
    """
    if name == "__version__":
        value: Any = _installed_version()
    elif name in _PUBLIC:
        where = _PUBLIC[name]
        module, attribute = (where, name) if isinstance(where, str) else where
        value = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
