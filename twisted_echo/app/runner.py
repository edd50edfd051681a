# -*- test-case-name: tests.test_runner -*-
"""
The twistd-facing layer of C{twistd sockecho}: what only a process started
by twistd needs, kept out of the options (L{twisted_echo.app.options}) and the
services (L{twisted_echo.app.server}).

Here, and only here:
 - systemd is told of readiness and of the drain when it asks
   (C{NOTIFY_SOCKET}: L{notify_systemd});
 - the reactor is chosen (L{twisted_echo._twisted.reactor}, unless C{twistd -r} chose
   one);
 - the process is tuned: the open files limit raised for C{--max-connections}
   (to the hard limit when it is 0, "no limit"), malloc kept from mapping
   every large read (L{twisted_echo.system.malloc});
 - SIGHUP and SIGUSR1 are handled (L{twisted_echo.app.signals});
 - the log (C{--log-format}, C{--log-level}) is written by sockecho's
   buffered observer where twistd would write text
   (L{twisted_echo.log.setup});
 - a start-up error becomes twistd's exit: with C{-n}, one line on standard
   error and exit status 1; as a daemon, twistd's own report through its
   status pipe ("An error has occurred: ...") and exit status 1, with the
   line in the log too.
"""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Mapping
from importlib.metadata import version
from typing import IO, Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import Logger

from twisted_echo._twisted.fastpaths import log_fast_paths
from twisted_echo.app import options as tap
from twisted_echo.app.interfaces import IServer
from twisted_echo.app.registry import datagram_only
from twisted_echo.app.supervisor import Supervisor
from twisted_echo.listening.listen import ListenError
from twisted_echo.operations.systemd import Notifier, NotifyingService
from twisted_echo.services.stream import READ_SIZE
from twisted_echo.system.malloc import keep_large_reads_on_heap

_log = Logger()

#: Whether twistd exits 1 after printing a usage error. Before Twisted 26.10
#: its C{app.run} printed the error and returned, so twistd exited 0.
_major, _minor = (int(n) for n in version("Twisted").split(".")[:2])
TWISTD_EXITS_1_ON_USAGE_ERROR = (_major, _minor) >= (26, 10)

#: Descriptors kept beyond C{--max-connections}: listeners, log files, and
#: connections being refused.
SPARE_FILES = 256


class StartupError(Exception):
    """
    sockecho could not start, as a daemon; its text says why.

    twistd's parent process prints the first 100 bytes of the exception's
    C{module.Class: text} line; the module is named C{sockecho} so that the
    reason fits: C{sockecho.StartupError: cannot listen on ...}.
    """


StartupError.__module__ = "sockecho"


def open_files_wanted(
    max_connections: int, metrics_connections: int | None = None
) -> int | None:
    """
    @param max_connections: C{--max-connections}, 0 for no limit.
    @param metrics_connections: C{--metrics-max-connections} (0 for no
        limit) when this process serves C{--metrics}, else L{None}: the
        metrics listener's connections are counted apart from the services'
        (L{twisted_echo.operations.httpbounds}).
    @return: the open files limit that many connections need, or L{None}
        for as many as the hard limit allows.
    """
    if not max_connections or metrics_connections == 0:
        return None
    return max_connections + (metrics_connections or 0) + SPARE_FILES


def raise_open_files_limit(wanted: int | None) -> int:
    """
    Raise this process's soft limit of open files (C{RLIMIT_NOFILE}) towards
    C{wanted}, up to the hard limit; never lower it.

    @param wanted: file descriptors wanted; L{None} for the hard limit (or,
        when that is unlimited, the kernel's C{fs.nr_open}).
    @return: the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = hard
    if hard == resource.RLIM_INFINITY:
        ceiling = _kernel_open_files_ceiling()
    target = ceiling if wanted is None else min(wanted, ceiling)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def _kernel_open_files_ceiling() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1 << 20


def tune_process(config: Mapping[str, Any]) -> None:
    """
    Raise the open files limit for C{config["max-connections"]} and keep
    large reads on the heap, logging what could not be done.

    @param config: the parsed L{tap.Options}.
    """
    metrics = None
    if config["metrics"] is not None:
        metrics = config["metrics-max-connections"]
    wanted = open_files_wanted(config["max-connections"], metrics)
    limit = raise_open_files_limit(wanted)
    if wanted is not None and limit < wanted:
        _log.warn(
            "open files limit is {limit}, below the {wanted} the connection "
            "limit needs",
            limit=limit,
            wanted=wanted,
        )
    if not keep_large_reads_on_heap(READ_SIZE):
        _log.info("malloc not tuned for {size}-byte reads", size=READ_SIZE)


class TwistdService(MultiService):
    """
    Runs the server (its only child) under twistd, and turns a start-up
    error into twistd's way of failing.

    @param daemon: whether twistd runs as a daemon (no C{-n}).
    @param pidfile: the pid file twistd wrote, removed when start-up fails
        with C{-n} (as a daemon, twistd removes it itself).
    @param stderr: where the C{-n} error line goes (the process's standard
        error by default).
    """

    def __init__(
        self,
        server: IServer,
        daemon: bool = False,
        pidfile: str | None = None,
        stderr: IO[str] | None = None,
    ) -> None:
        MultiService.__init__(self)
        self.server: IService = IService(server)
        self.daemon = daemon
        self.pidfile = pidfile
        self.stderr = stderr
        MultiService.addService(self, server)

    def privilegedStartService(self) -> None:
        """
        Start the server's listeners.

        @raise StartupError: as a daemon, when a listener fails (twistd
            reports it through its status pipe and exits 1).
        @raise SystemExit: with C{-n}, status 1, after one line on standard
            error, when a listener fails.
        """
        try:
            MultiService.privilegedStartService(self)
            log_fast_paths()
        except ListenError as e:
            message = f"sockecho: {e}"
            _log.critical("{message}", message=message)
            if self.daemon:
                raise StartupError(str(e)) from None
            stderr = self.stderr or sys.__stderr__ or sys.stderr
            print(message, file=stderr, flush=True)
            if self.pidfile:
                # twistd wrote it before starting services; a SystemExit
                # skips twistd's own clean-up.
                try:
                    os.remove(self.pidfile)
                except OSError:
                    pass
            raise SystemExit(1) from None

    def stopService(self) -> Deferred[Any]:
        """
        Stop the server first (its drain tells the metrics listener and
        systemd that it has begun), then the other children.
        """
        Service.stopService(self)
        others = [child for child in reversed(list(self)) if child is not self.server]
        stopped: Deferred[Any] = maybeDeferred(self.server.stopService)

        def stop_others(_: object) -> Deferred[Any]:
            return DeferredList(
                [maybeDeferred(child.stopService) for child in others],
                consumeErrors=True,
            )

        stopped.addBoth(stop_others)
        return stopped

    def give_up(self, reason: str) -> None:
        """
        The supervisor cannot keep workers running: stop, remove the pid
        file and exit with status 1 (twistd itself would exit 0).
        """
        from twisted.internet import reactor

        def exit_failed() -> None:
            if self.pidfile:
                try:
                    os.remove(self.pidfile)
                except OSError:
                    pass
            os._exit(1)

        reactor.addSystemEventTrigger("after", "shutdown", exit_failed)
        reactor.stop()


def add_signal_handlers(top: MultiService, server: IServer, reactor: Any) -> None:
    """
    Handle SIGHUP and SIGUSR1 (L{twisted_echo.app.signals}): a service that
    installs the handlers before any listener starts (it is put first
    among C{top}'s children) and is told when the drain starts.
    """
    from twisted_echo.app.signals import SignalService

    signals = SignalService(server, reactor)
    server.drain_started.append(signals.drain_started)
    top.addService(signals)
    top.services.remove(signals)
    top.services.insert(0, signals)


def add_ports_file(top: MultiService, server: IServer, path: str) -> None:
    """
    Add C{--ports-file}'s writer as C{top}'s last child: it writes the file
    once every listener before it is up, and removes it when C{server}'s
    drain starts (L{twisted_echo.operations.announce}).
    """
    from twisted_echo.operations.announce import PortsFileService

    ports_file = PortsFileService(path, top, server)
    server.drain_started.append(ports_file.drain_started)
    top.addService(ports_file)


def forward_to_workers(
    supervisor: Supervisor, config: tap.Options, reactor: Any
) -> None:
    """
    Give C{supervisor} what it serves for its workers
    (L{twisted_echo.app.forwarded}): the ring their connection records are
    numbered and kept in (C{--records}; each logged as one event with
    C{--log-format json}; none without C{--metrics} or that log, and then
    the workers make none), and each listener key's fault profile, which
    C{--admin}'s C{/faults} changes on every worker.
    """
    from twisted_echo.app.forwarded import forwarded_fault_slots
    from twisted_echo.log.buffer import LEVELS, levels_from

    log_info = LEVELS["info"] in levels_from(config["log-level"])
    logged = log_info and config["log-format"] == "json"
    if config["metrics"] is not None or logged:
        # Only where something reads them (/records, the JSON log): the
        # workers make and send no record otherwise.
        supervisor.keep_records(tap.connection_records(config, reactor, log_info))
    supervisor.fault_slots = forwarded_fault_slots(
        [key for key, _, _ in tap.listener_keys(config)],
        config["faults"],
        supervisor.control,
    )


def add_supervisor_metrics(
    top: MultiService, supervisor: Supervisor, config: tap.Options, reactor: Any
) -> None:
    """
    With workers, the supervisor serves C{--metrics}: the figures summed
    over every worker, read from the tables they count into
    (L{twisted_echo.operations.sharedcounters}; what they measure, such as held bytes,
    as each last reported it, at most a second old), C{/readyz} 503 from the
    moment the drain starts; C{/records} from the supervisor's ring and, with
    C{--admin}, C{/faults} forwarded to every worker (L{forward_to_workers}).
    Its connections count towards the supervisor's open files.
    """
    from twisted_echo.app.forwarded import pause_workers
    from twisted_echo.operations.adminpage import FaultsPage
    from twisted_echo.operations.health import HealthSwitch
    from twisted_echo.operations.metrics import MetricsService

    description = config["metrics"]
    metrics = MetricsService(
        description,
        config.stream_endpoint(description, reactor),
        [supervisor],
        max_buffer=config["max-buffer"] * config["workers"],
        max_connections=config["metrics-max-connections"],
        request_timeout=config["metrics-request-timeout"],
        datagram_services=datagram_only(),
        records=supervisor.records,
        admin=FaultsPage(supervisor.fault_slots) if config["admin"] else None,
        # The supervisor serves /readyz and /healthz, so their switch works
        # here; pausing is sent to every worker (twisted_echo.app.forwarded).
        health=HealthSwitch(pause_workers(supervisor.control)),
    )
    supervisor.drain_started.append(metrics.drain_started)
    supervisor.drain_ended.append(metrics.drain_ended)
    top.addService(metrics)


def notify_systemd(
    top: MultiService,
    server: IServer,
    clock: Any,
    drain_timeout: float,
) -> None:
    """
    When systemd asked for readiness notifications (C{NOTIFY_SOCKET}, a
    C{Type=notify} unit), add a L{NotifyingService} after C{server} in
    C{top}: C{READY=1} once every listener is up, C{STATUS=} with the
    connection counts, C{STOPPING=1} when the drain starts (sd_notify(3)).
    Without C{NOTIFY_SOCKET}, nothing.

    @param top: the service twistd runs, C{server}'s parent.
    @param server: the server whose listeners and counters to report.
    @param clock: the reactor, for the periodic status.
    @param drain_timeout: C{--drain-timeout}, seconds, for the status.
    """
    notifier = Notifier.from_environment()
    if not notifier.enabled:
        return
    notifying = NotifyingService(
        notifier,
        server.snapshot,
        clock,
        drain_timeout,
        datagram_services=datagram_only(),
    )
    server.drain_started.append(notifying.drain_started)
    top.addService(notifying)
