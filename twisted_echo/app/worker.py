# -*- test-case-name: tests.test_supervisor -*-
"""
One worker of C{--workers N} (L{twisted_echo.app.supervisor}): run as
C{python -m twisted_echo.app.worker} by the supervisor, never by hand.

Its orders are JSON in the environment variable C{SOCKECHO_WORKER}: its
number, the sockecho options as given on the command line, and the
listening sockets it inherited (C{[service, index, fd, family]}). It runs
the same services as a single sockecho process on those sockets, writes its
log as JSON events to standard output, in batches at most 0.1 s apart
(L{twisted_echo.log.buffer}; the supervisor re-logs them), counts into
memory the supervisor reads (C{counters_fd}, L{twisted_echo.operations.sharedcounters}:
nothing counted is lost if it is killed), reports its counters every second
(for what it measures: bytes held, bytes of open connections) and once more
after its drain, and drains on SIGTERM or SIGINT like a single process
(with C{--drain-delay}, the supervisor waits it out and sends SIGTERM;
the worker ignores SIGINT, which a terminal sends the supervisor too). Once
its listeners are up it logs a ready event
(L{twisted_echo.app.supervisor.READY_FIELD}), from which on the supervisor counts
its death as a crash, not a start-up failure.

Its control channel (L{twisted_echo.app.control}): the supervisor's
commands on standard input (L{twisted_echo.app.forwarded.worker_handlers}:
C{faults}), answers and events on C{control_fd}; each connection record
goes to the supervisor as an event (the supervisor keeps and logs them, so
this worker keeps only the last one; it makes none when the supervisor
keeps none: without C{--metrics} and a JSON log); the commands in its orders'
C{state} (the profiles changed at run time before it started, a pause)
are applied once its listeners are up, before its reactor runs: before
it takes any connection or datagram.

SIGHUP is ignored: a terminal's hang-up reaches the whole process group,
and the supervisor, which gets it too, replaces the workers itself. SIGUSR1
logs this worker's status (L{twisted_echo.app.signals.log_status}).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import json
import os
import signal
import sys
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger, globalLogBeginner

from twisted_echo.log.buffer import BufferedLogObserver
from twisted_echo.log.classic import message_text
from twisted_echo.log.setup import json_record

#: Seconds between counter reports.
REPORT_INTERVAL = 1.0

_log = Logger()


def report(service: Any) -> None:
    """
    Log the service's counters in the field the supervisor reads.
    """
    _log.debug(
        "counters",
        sockecho_worker_counters={
            name: dataclasses.asdict(counters)
            for name, counters in service.snapshot().items()
        },
    )


#: prctl(2) option: the signal this process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def end_with_supervisor(supervisor_pid: int) -> None:
    """
    Make this worker get SIGTERM (and so drain and exit) when its
    supervisor dies, however it dies (Linux C{prctl(PR_SET_PDEATHSIG)});
    exit at once if it is already gone.

    @param supervisor_pid: the supervisor's process id.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError, TypeError):
        pass  # not Linux: the supervisor's SIGTERM is the only way out
    if os.getppid() != supervisor_pid:
        os._exit(0)


def main() -> None:
    """
    Run one worker until it is told to stop.
    """
    from twisted_echo.app.supervisor import READY_FIELD, TEXT_FIELD, WORKER_ENV

    # Until the handlers below are set, neither signal may end the worker.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)

    orders = json.loads(os.environ[WORKER_ENV])
    end_with_supervisor(orders["supervisor"])
    from twisted_echo._twisted.reactor import install_if_unchosen

    install_if_unchosen()
    from twisted.internet import reactor

    from twisted_echo.app import options as tap
    from twisted_echo.app.runner import tune_process
    from twisted_echo.listening import listen

    def record(event: dict[str, Any]) -> str:
        # The text as this worker formats it: formatting specs such as
        # {duration:.3f} do not survive the JSON round trip.
        event[TEXT_FIELD] = message_text(event)
        return json_record(event)

    # In batches, as a single process's log (twisted_echo.log.buffer); every
    # level, as the counters travel as debug events: the supervisor filters
    # by --log-level, and this worker's factories make no connection lines
    # when that is above info.
    observer = BufferedLogObserver(sys.stdout, record, lambda: reactor)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    config = tap.Options()
    config.parseOptions(orders["args"])  # type: ignore[no-untyped-call]
    config["metrics"] = None  # the supervisor serves the metrics
    # The supervisor keeps the records (and logs them): this worker's ring
    # only hands each one over; none at all when the supervisor keeps none.
    config["records"] = min(config["records"], 1) if orders.get("records") else 0
    # The supervisor waits out --drain-delay before it sends SIGTERM; a
    # terminal's SIGINT, which reaches this worker too, is left to it.
    supervisor_delays = config["drain-delay"] > 0
    config["drain-delay"] = 0.0
    tune_process(config)
    inherited = {
        (service, index): (fd, family)
        for service, index, fd, family in orders["sockets"]
    }
    new_counters = None
    if orders.get("counters_fd") is not None:
        from twisted_echo.app.registry import datagram_only
        from twisted_echo.operations.sharedcounters import (
            CounterTable,
            shared_counters_factory,
        )

        new_counters = shared_counters_factory(
            CounterTable.open(orders["counters_fd"]), unshared=datagram_only()
        )
    service = tap.makeService(config, reactor, inherited, new_counters)
    from twisted.internet.stdio import StandardIO

    from twisted_echo.app.control import (
        CONTROL_FD_ORDER,
        STATE_ORDER,
        WorkerChannel,
        apply_state,
    )
    from twisted_echo.app.forwarded import record_item, worker_handlers

    handlers = worker_handlers(service.fault_slots, service.health)
    channel = WorkerChannel(handlers, reactor)
    if orders.get(CONTROL_FD_ORDER) is not None:
        # mypy sees the Windows StandardIO, which has no stdin/stdout.
        StandardIO(  # type: ignore[call-arg,unused-ignore]
            channel, stdin=0, stdout=orders[CONTROL_FD_ORDER], reactor=reactor
        )
        if service.records is not None:
            service.records.observers[:] = [
                lambda record: channel.send_record(record_item(record))
            ]
            # The supervisor logs each record once, numbered there: this
            # worker's close lines do not carry its own numbering.
            for factory in service.factories:
                factory.records_in_log = False
    # Listen on the inherited sockets, without the exposure warning: the
    # supervisor gave it once for each listener.
    listen.ListenerService.warn_if_exposed = False
    service.privilegedStartService()
    service.startService()  # type: ignore[no-untyped-call]
    # The state in force (profiles, pause) before the reactor runs, so
    # before the first connection or datagram is taken.
    apply_state(handlers, orders.get(STATE_ORDER, []))
    _log.debug("ready", **{READY_FIELD: True})
    reporter = LoopingCall(report, service)
    reporter.clock = reactor
    reporter.start(REPORT_INTERVAL, now=False)

    def stop() -> Any:
        reporter.stop()
        done = service.stopService()
        done.addCallback(lambda _: report(service))
        return done

    reactor.addSystemEventTrigger("before", "shutdown", stop)
    # SIGTERM or SIGINT drains, once: a worker may get both the signal its
    # process group got (Ctrl-C) and the supervisor's SIGTERM.
    stopping: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        if not stopping:
            stopping.append(signum)
            _log.info("received {signal}, draining", signal=signal.Signals(signum).name)
            reactor.callFromThread(reactor.stop)  # type: ignore[attr-defined]

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN if supervisor_delays else on_signal)
    from twisted_echo.app.signals import log_status

    signal.signal(
        signal.SIGUSR1,
        lambda signum, frame: reactor.callFromThread(  # type: ignore[attr-defined]
            log_status, service
        ),
    )
    reactor.run(installSignalHandlers=False)  # type: ignore[call-arg]


if __name__ == "__main__":
    main()
