# -*- test-case-name: tests.test_addresses -*-
"""
Where a running sockecho listens, by service, as its ports file
(L{twisted_echo.operations.portsfile}) says: L{Addresses}, what the test
servers (L{twisted_echo.testing.spawn.SockechoProcess},
L{twisted_echo.testing.trial.RunningServices}) are, and what a script
makes of a ports file (C{Addresses(read_ports_file(path)["listeners"])}).

Every service of the service registry (L{twisted_echo.app.registry}) is an
attribute: C{.NAME} its first listener's C{(host, port)}, C{.NAME_endpoint}
its endpoint string; a service added to the registry has them with no edit
here. Imports nothing from Twisted (the pytest plugin uses it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from twisted_echo.app import registry
from twisted_echo.operations.portsfile import Listener
from twisted_echo.operations.portsfile import read_ports_file as read_ports_file

__all__ = ["Addresses", "read_ports_file"]

#: The suffix of an attribute that gives a listener's endpoint string.
_ENDPOINT = "_endpoint"


def _service_names() -> dict[str, str]:
    """
    @return: each registered service's attribute name (C{-} written C{_})
        and its name, read from the registry now.
    """
    return {s.name.replace("-", "_"): s.name for s in registry.SERVICES}


class Addresses:
    """
    Where a running sockecho listens, by service, as its ports file says:
    C{(host, port)} tuples for sockets, endpoint strings for Twisted clients
    and C{sockecho-client}: L{address} and L{endpoint}, and as attributes
    named after each registered service (C{.echo}, C{.echo_endpoint}, ...:
    L{__getattr__}).

    @ivar listeners: each running service's listener entries, in order
        (the ports file's C{listeners}).
    """

    def __init__(self, listeners: Mapping[str, Sequence[Listener]]) -> None:
        self.listeners = {name: list(found) for name, found in listeners.items()}

    def _entry(self, service: str, index: int) -> Listener:
        found = self.listeners.get(service, [])
        if index >= len(found):
            raise LookupError(
                f"this sockecho has no {service} listener"
                + (f" number {index}" if index else "")
                + f" (it runs: {', '.join(self.listeners) or 'nothing'})"
            )
        return found[index]

    def address(self, service: str, index: int = 0) -> tuple[str, int]:
        """
        @param service: a service's name (C{echo}, C{udp}, ..., as the
            registry names it) or C{metrics}.
        @param index: which of that service's listeners, in the order given.
        @return: C{(host, port)} of that listener.
        @raise LookupError: if there is no such listener, or it is a UNIX
            socket (see L{endpoint}).
        """
        entry = self._entry(service, index)
        if entry["port"] is None:
            raise LookupError(
                f"{service} listens on {entry['address']}, which has no port"
            )
        return (entry["host"], entry["port"])

    def endpoint(self, service: str, index: int = 0) -> str:
        """
        @return: the listener's address as a client endpoint string:
            C{tcp:127.0.0.1:PORT}, C{ssl:...}, C{unix:PATH} (for
            L{twisted.internet.endpoints.clientFromString}), or
            C{udp:127.0.0.1:PORT} (for C{sockecho-client}).
        @raise LookupError: if there is no such listener.
        """
        return str(self._entry(service, index)["address"])

    def __getattr__(self, name: str) -> Any:
        """
        C{.NAME}: L{address}C{(NAME)}; C{.NAME_endpoint}:
        L{endpoint}C{(NAME)}, for every service in the registry
        (L{twisted_echo.app.registry.SERVICES}): C{.echo}, C{.upper},
        C{.welcome}, C{.udp}, C{.whoami}, C{.websocket}, ...
        (C{whoami-udp} would be C{.whoami_udp}).

        @return: C{(host, port)}, or the endpoint string (e.g.
            C{tcp:127.0.0.1:41873}, C{udp:127.0.0.1:41873}).
        @raise LookupError: if that service has no such listener (see
            L{address}).
        @raise AttributeError: if C{name} names no registered service.
        """
        service, endpoint = name, False
        if name.endswith(_ENDPOINT):
            service, endpoint = name[: -len(_ENDPOINT)], True
        known = _service_names()
        if service.startswith("_") or service not in known:
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}"
            )
        if endpoint:
            return self.endpoint(known[service])
        return self.address(known[service])

    def __dir__(self) -> list[str]:
        names = set(super().__dir__())
        for attribute in _service_names():
            names.update((attribute, attribute + _ENDPOINT))
        return sorted(names)
