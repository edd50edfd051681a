# -*- test-case-name: tests.test_server -*-
"""
The whole server as one service: its listeners, start-up errors, graceful
shutdown and the summary it logs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import Logger
from zope.interface import implementer

from twisted_echo.app.draindelay import DEFAULT_DRAIN_DELAY, DrainDelay
from twisted_echo.app.interfaces import IServer
from twisted_echo.faults.runtime import FaultSlot
from twisted_echo.listening.listen import ListenError, ListenerService
from twisted_echo.listening.pause import pause_listeners
from twisted_echo.operations.health import HealthSwitch
from twisted_echo.policies.counters import ServiceCounters, with_open_connections
from twisted_echo.policies.limits import DEFAULT_DRAIN_TIMEOUT
from twisted_echo.records.ring import RecordRing
from twisted_echo.services.stream import StreamFactory

_log = Logger()


@implementer(IServer)
class SockechoService(MultiService):
    """
    All of sockecho's listeners, one child service each.

    Start-up: if a listener cannot listen, the listeners already started
    are stopped and the L{ListenError} is raised (turning it into an exit
    status is L{twisted_echo.app.runner}'s work).

    Shutdown (twistd runs L{stopService} before the reactor stops, on
    SIGTERM or SIGINT): with C{drain_delay}, keep accepting and serving
    that many seconds first, C{/readyz} at 503
    (L{twisted_echo.app.draindelay}); then stop accepting, let open connections finish
    what they are owed for up to C{drain_timeout} seconds, abort the rest,
    then log each service's counters once every connection has reported.

    @ivar counters: each service's L{ServiceCounters}, by service name.
    @ivar factories: the TCP services' factories, drained at shutdown.
    @ivar drain_started: callables run without arguments the moment
        shutdown starts, before any listener stops (C{/readyz} turns 503,
        sd_notify's C{STOPPING=1}).
    @ivar drain_ended: callables run without arguments once the drain is
        over and the summary logged (the metrics listener stops).
    """

    def __init__(
        self,
        counters: dict[str, ServiceCounters],
        factories: list[StreamFactory] | None = None,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        drain_delay: float = DEFAULT_DRAIN_DELAY,
        clock: Any = None,
    ) -> None:
        """
        @param drain_timeout: C{--drain-timeout}, seconds.
        @param drain_delay: C{--drain-delay}, seconds (0: drain at once).
        @param clock: keeps the drain delay's time (the global reactor
            by default).
        """
        MultiService.__init__(self)
        if clock is None:
            from twisted.internet import reactor as clock
        self.delay = DrainDelay(drain_delay, clock)
        self.counters = counters
        self.factories = factories or []
        self.drain_timeout = drain_timeout
        self.drain_started: list[Callable[[], object]] = []
        self.drain_ended: list[Callable[[], object]] = []
        #: The connection records of its services (C{--records}), or L{None}.
        self.records: RecordRing | None = None
        #: Each listener key's fault profile, changeable at run time
        #: (L{twisted_echo.faults.runtime}: C{--admin}, the test helpers).
        self.fault_slots: dict[str, FaultSlot] = {}
        #: C{/readyz}, C{/healthz} and the listeners switched at run time
        #: (L{twisted_echo.operations.health}: C{--admin}'s C{/health}, the
        #: test helpers).
        self.health = HealthSwitch(lambda paused: pause_listeners(self, paused))

    #: Labels of the figures L{snapshot} gives: none.
    labels: Mapping[str, str] = {}

    def snapshot(self) -> Mapping[str, ServiceCounters]:
        """
        @return: see L{IServer.snapshot}: the counters, plus the bytes open
            connections carried and hold.
        """
        return with_open_connections(self.counters, self.factories)

    def status_counters(self) -> Mapping[str, ServiceCounters]:
        """
        @return: see L{IServer.status_counters}: the counters themselves,
            with each stream service's held bytes measured now.
        """
        for factory in self.factories:
            factory.counters.held_bytes = factory.held_bytes()
        return dict(self.counters)

    def bound_addresses(self) -> list[tuple[str, Any, str]]:
        """
        @return: see L{IServer.bound_addresses}: every listening child's
            (the C{--metrics} one included, named C{metrics}).
        """
        return [
            (child.service_name, child.port.getHost(), child.bound_address())
            for child in self
            if isinstance(child, ListenerService) and child.port is not None
        ]

    def addService(self, service: IService) -> None:
        """
        Add one listener (an L{twisted.application.service.IService}) as a
        child.
        """
        MultiService.addService(self, service)

    def privilegedStartService(self) -> None:
        """
        Start every listener.

        @raise ListenError: when a listener fails; those already listening
            are stopped first.
        """
        try:
            MultiService.privilegedStartService(self)
        except ListenError:
            for child in self:
                child.stopService()
            raise

    def stopService(self) -> Deferred[None]:
        """
        Run the C{drain_started} hooks; after the drain delay (if any),
        stop accepting, drain open connections, log the summary.

        @return: a L{twisted.internet.defer.Deferred} that fires once every
            connection is closed or the drain timeout has passed.
        """
        self.running = 0
        for hook in self.drain_started:
            hook()
        done: Deferred[None] = Deferred()
        self.delay.start(lambda: self._drain(done))
        return done

    def end_drain_delay(self, cause: str) -> bool:
        """
        See L{IServer.end_drain_delay}.
        """
        return self.delay.cut_short(cause)

    def _drain(self, done: Deferred[None]) -> None:
        open_now = sum(len(f.open_protocols) for f in self.factories)
        for factory in self.factories:
            factory.counters.held_bytes = factory.held_bytes()
        _log.info(
            "shutting down: no new connections; draining {open} open "
            "connection(s) holding {held} bytes for up to {timeout} s",
            open=open_now,
            held=sum(f.counters.held_bytes for f in self.factories),
            timeout=self.drain_timeout,
        )
        stopped: list[Deferred[Any]] = [maybeDeferred(MultiService.stopService, self)]
        stopped.extend(f.drain(self.drain_timeout) for f in self.factories)

        def summarize(_: object) -> None:
            for name, counters in self.counters.items():
                _log.info(
                    "{service}: {summary}", service=name, summary=counters.summary()
                )
            for hook in self.drain_ended:
                hook()
            done.callback(None)

        DeferredList(stopped, consumeErrors=True).addCallback(summarize)
