# -*- test-case-name: tests.test_interfaces -*-
"""
What the rest of sockecho needs of "the server": L{IServer}, provided by the
single-process L{twisted_echo.app.server.SockechoService} and by the
L{twisted_echo.app.supervisor.Supervisor} of C{--workers}, so that the
runner, the metrics listener, systemd's notifications, the signal handlers
and the ports file work with either without asking which it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zope.interface import Attribute, Interface

from twisted_echo.policies.counters import ServiceCounters


class IServer(Interface):
    """
    A running sockecho: its listeners, counters and drain. It is also a
    L{twisted.application.service.IService} (both servers are services).

    It is also a L{twisted_echo.operations.metrics.CounterSource}
    (C{labels} and C{snapshot}) for C{--metrics}.
    """

    drain_started = Attribute(
        "A list of callables, run without arguments the moment shutdown "
        "starts, before any listener stops (C{/readyz} turns 503, "
        "sd_notify's C{STOPPING=1}, the ports file is removed)."
    )
    drain_ended = Attribute(
        "A list of callables, run without arguments once the drain is over "
        "and the summary logged (the metrics listener stops)."
    )
    labels = Attribute(
        "C{Mapping[str, str]}: labels of the figures L{snapshot} gives; "
        "empty (they are summed)."
    )

    def snapshot() -> Mapping[str, ServiceCounters]:
        """
        @return: each running service's
            counters now, by service name, including what open connections
            carried and hold; the caller must not change them.
        """

    def status_counters() -> Mapping[str, ServiceCounters]:
        """
        @return: each running service's counters for the SIGUSR1 status
            line (L{twisted_echo.app.signals.log_status}): bytes as counted
            when connections close, held bytes measured now; every service
            listed, those with nothing counted yet too.
        """

    def end_drain_delay(cause: str) -> bool:  # noqa: N805
        """
        Start the drain now if the C{--drain-delay} wait is running (a
        second SIGTERM or SIGINT: L{twisted_echo.app.signals}), with a log
        line giving C{cause} (C{"received SIGTERM"}).

        @return: whether the wait was running.
        """

    def bound_addresses() -> list[tuple[str, Any, str]]:
        """
        @return: C{(service name, bound
            address, the address as a client endpoint string)} of every
            listener open now, in the order they were opened (whoami's UDP
            listeners are C{whoami}'s); for the ports file.
        """


__all__ = ["IServer"]
