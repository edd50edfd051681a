# -*- test-case-name: tests.test_portsfile -*-
"""
Telling others where the server listens: C{--ports-file PATH} written once
every listener is up and removed when the drain starts (the format is
L{twisted_echo.operations.portsfile}'s).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, cast

from twisted.application.service import IService, MultiService, Service
from twisted.internet.address import IPv4Address, IPv6Address

from twisted_echo.listening.listen import ListenError, ListenerService
from twisted_echo.operations.portsfile import (
    Listener,
    listener_entry,
    ports_document,
    remove_ports_file,
    write_ports_file,
)

if TYPE_CHECKING:
    from twisted_echo.app.interfaces import IServer


class PortsFileError(ListenError):
    """
    The ports file could not be written: a start-up error, reported as a
    listener's is (one line, exit status 1).
    """

    def __str__(self) -> str:
        return f"cannot write the ports file {self.description}: {self.reason}"


def entry_for(address: Any, described: str) -> Listener:
    """
    @param address: a bound address (L{IPv4Address}, L{IPv6Address},
        L{twisted.internet.address.UNIXAddress}, TLS-marked or not).
    @param described: the same as a client endpoint string.
    @return: its entry in the ports file.
    """
    if isinstance(address, IPv4Address | IPv6Address):
        return listener_entry(described, address.host, address.port)
    return listener_entry(described, None, None)


def bound_listeners(
    service: IService, server: IServer | None = None
) -> list[tuple[str, Listener]]:
    """
    @param service: a running server, or a service holding one: its
        listeners are found among its descendants (L{ListenerService}s, and
        those C{server} says it opened).
    @param server: the server (L{twisted_echo.app.interfaces.IServer}),
        asked for its listeners where it is found among them (with
        C{--workers}, the supervisor opens them for its workers).
    @return: C{(service name, entry)} for every listener listening now, in
        the order they were started.
    """
    if server is not None and cast(object, service) is server:
        return [
            (name, entry_for(address, described))
            for name, address, described in server.bound_addresses()
        ]
    if isinstance(service, ListenerService):
        if service.port is None:
            return []
        return [
            (
                service.service_name,
                entry_for(service.port.getHost(), service.bound_address()),
            )
        ]
    found: list[tuple[str, Listener]] = []
    if isinstance(service, MultiService):
        for child in service:
            found.extend(bound_listeners(child, server))
    return found


class PortsFileService(Service):
    """
    Writes the ports file when started (after every other child of the same
    parent has started listening: add it last) and removes it when stopped
    or when L{drain_started} is called.

    @ivar path: the file's absolute path.
    @ivar top: the service whose listeners are written (its descendants').
    @ivar server: the server among them, asked for its own listeners.
    """

    def __init__(
        self, path: str, top: IService, server: IServer | None = None
    ) -> None:
        self.path = path
        self.top = top
        self.server = server
        self._written: os.stat_result | None = None

    def privilegedStartService(self) -> None:
        """
        Write the file.

        @raise PortsFileError: if it cannot be written.
        """
        Service.privilegedStartService(self)
        if self._written is not None:
            return
        document = ports_document(os.getpid(), bound_listeners(self.top, self.server))
        try:
            write_ports_file(self.path, document)
            self._written = os.stat(self.path)
        except OSError as e:
            raise PortsFileError(self.path, os.strerror(e.errno or 0).lower()) from e

    def startService(self) -> None:
        Service.startService(self)
        if self._written is None:
            self.privilegedStartService()

    def drain_started(self) -> None:
        """
        The server stops accepting: remove the file (if still ours).
        """
        if self._written is not None:
            remove_ports_file(self.path, self._written)
            self._written = None

    def stopService(self) -> None:
        Service.stopService(self)
        self.drain_started()
