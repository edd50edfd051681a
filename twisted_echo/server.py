# -*- test-case-name: tests.test_server -*-
"""
The whole server as one service: its listeners, start-up errors, graceful
shutdown and the summary it logs.
"""

from __future__ import annotations

import os
import resource
import sys
from typing import IO, Any

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import Logger

from twisted_echo.counters import ServiceCounters
from twisted_echo.limits import DEFAULT_DRAIN_TIMEOUT
from twisted_echo.listen import ListenError
from twisted_echo.memory import keep_large_reads_on_heap
from twisted_echo.stream import READ_SIZE, StreamFactory

_log = Logger()


def raise_open_files_limit(wanted: int) -> int:
    """
    Raise this process's soft limit of open files (C{RLIMIT_NOFILE}) towards
    C{wanted}, up to the hard limit; never lower it.

    @param wanted: file descriptors wanted.
    @return: the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


class SockechoService(MultiService):
    """
    All of sockecho's listeners, one child service each.

    Start-up: if a listener cannot listen, one line naming it goes to
    standard error and the process exits with status 1.

    Shutdown (twistd runs L{stopService} before the reactor stops, on
    SIGTERM or SIGINT): stop accepting at once, let open connections finish
    what they are owed for up to C{drain_timeout} seconds, abort the rest,
    then log each service's counters.

    @ivar counters: each service's L{ServiceCounters}, by service name.
    @ivar factories: the TCP services' factories, drained at shutdown.
    """

    def __init__(
        self,
        counters: dict[str, ServiceCounters],
        factories: list[StreamFactory] | None = None,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        open_files: int = 0,
        pidfile: str | None = None,
        stderr: IO[str] | None = None,
        daemon: bool = False,
    ) -> None:
        MultiService.__init__(self)
        self.counters = counters
        self.factories = factories or []
        self.drain_timeout = drain_timeout
        self._open_files = open_files
        self._pidfile = pidfile
        self._stderr = stderr
        self._daemon = daemon

    def addService(self, service: IService) -> None:
        """
        Add one listener (an L{IService}) as a child.
        """
        MultiService.addService(self, service)

    def privilegedStartService(self) -> None:
        """
        Raise the open files limit if asked, keep large reads on the heap,
        then start every listener.

        @raise SystemExit: with status 1 when a listener fails.
        """
        if self._open_files:
            limit = raise_open_files_limit(self._open_files)
            if limit < self._open_files:
                _log.warn(
                    "open files limit is {limit}, below the {wanted} the "
                    "connection limit needs",
                    limit=limit,
                    wanted=self._open_files,
                )
        if not keep_large_reads_on_heap(READ_SIZE):
            _log.info("malloc not tuned for {size}-byte reads", size=READ_SIZE)
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

    def stopService(self) -> Deferred[None]:
        """
        Stop accepting, drain open connections, log the summary.

        @return: a L{Deferred} that fires once every connection is closed or
            the drain timeout has passed.
        """
        open_now = sum(len(f.open_protocols) for f in self.factories)
        _log.info(
            "shutting down: no new connections; draining {open} open "
            "connection(s) for up to {timeout} s",
            open=open_now,
            timeout=self.drain_timeout,
        )
        stopped: list[Deferred[Any]] = [maybeDeferred(MultiService.stopService, self)]
        stopped.extend(f.drain(self.drain_timeout) for f in self.factories)
        done: Deferred[None] = Deferred()

        def summarize(_: object) -> None:
            for name, counters in self.counters.items():
                _log.info(
                    "{service}: {summary}", service=name, summary=counters.summary()
                )
            done.callback(None)

        DeferredList(stopped, consumeErrors=True).addCallback(summarize)
        return done
