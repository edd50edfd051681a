# -*- test-case-name: tests.test_systemd -*-
"""
systemd readiness without libsystemd (sd_notify(3)). Socket activation is
L{twisted_echo.listening.activation}.

When systemd sets C{NOTIFY_SOCKET} (C{Type=notify}
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
from typing import TYPE_CHECKING

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

if TYPE_CHECKING:
    from twisted_echo.policies.counters import ServiceCounters

_log = Logger()

#: Seconds between two C{STATUS=} updates while serving.
STATUS_INTERVAL = 5.0


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
