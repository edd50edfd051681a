# -*- test-case-name: tests.test_plugin -*-
"""
The twistd face of sockecho, where the C{twistd sockecho} plugin points (as
Twisted's own plugins point at their C{tap} modules): L{Options}, twistd's
options for C{twistd sockecho}, and L{makeService}, the service twistd runs.

The options and the service tree they describe are
L{twisted_echo.app.options}'s; what only a process started by twistd needs
(the reactor, process tuning, signals, systemd, the start-up error) is
L{twisted_echo.app.runner}'s. Embedding sockecho without twistd uses
L{twisted_echo.app.options} (or C{twisted_echo.Options} and
C{twisted_echo.makeService}).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from twisted.python import usage

from twisted_echo._twisted.reactor import install_if_unchosen
from twisted_echo.app import options
from twisted_echo.app.interfaces import IServer
from twisted_echo.app.runner import (
    TWISTD_EXITS_1_ON_USAGE_ERROR,
    TwistdService,
    add_ports_file,
    add_signal_handlers,
    add_supervisor_metrics,
    forward_to_workers,
    notify_systemd,
    open_files_wanted,
    raise_open_files_limit,
    tune_process,
)
from twisted_echo.app.supervisor import Supervisor
from twisted_echo.log.setup import use_log


class Options(options.Options):
    """
    L{twisted_echo.app.options.Options}, plus what they ask of twistd:
    C{--log-format} and C{--log-level} make twistd log through sockecho's
    observer (L{twisted_echo.log.setup}). The options as given
    are kept (C{args}) for workers to parse again.
    """

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse C{options} (the command line's by default), keeping them. Run
        by a twistd that would exit 0 after a usage error (Twisted before
        26.10), print what twistd prints for it and exit 1, as a newer
        twistd does.

        @raise usage.UsageError: naming the option and the value at fault.
        """
        self.args = list(sys.argv[1:] if options is None else options)
        try:
            usage.Options.parseOptions(self, options)
        except usage.UsageError as error:
            twistd = getattr(self, "parent", None)
            if twistd is None or TWISTD_EXITS_1_ON_USAGE_ERROR:
                raise
            print(twistd)
            print(f"{' '.join(sys.argv[0:2])}: {error}")
            raise SystemExit(1) from None

    def postOptions(self) -> None:
        """
        Validate (L{twisted_echo.app.options.Options.postOptions}), then set up the log.

        @raise usage.UsageError: naming the option and the value at fault.
        """
        options.Options.postOptions(self)
        twistd = getattr(self, "parent", None)
        if twistd is not None:
            use_log(twistd, self["log-format"], self["log-level"])


def makeService(config: Options) -> TwistdService:
    """
    Choose the reactor, tune the process, and build the server C{config}
    describes (L{twisted_echo.app.options.makeService}) for twistd to
    run.

    @param config: parsed and validated L{Options}, whose C{parent} is
        twistd's own options when run by twistd.
    @return: the service twistd runs.
    """
    install_if_unchosen()
    from twisted.internet import reactor

    twistd: Mapping[str, Any] = getattr(config, "parent", None) or {}
    server: IServer
    supervisor: Supervisor | None = None
    if config["workers"] > 1:
        server = supervisor = Supervisor(
            getattr(config, "args", []),
            options.listener_keys(config),
            config.stream_endpoint,
            config["workers"],
            reactor,
            config["drain-timeout"],
            config["drain-delay"],
        )
    else:
        tune_process(config)
        server = options.makeService(config, reactor)
    top = TwistdService(
        server,
        daemon="nodaemon" in twistd and not twistd["nodaemon"],
        pidfile=twistd.get("pidfile") or None,
    )
    add_signal_handlers(top, server, reactor)
    if supervisor is not None:
        supervisor.on_give_up = top.give_up
        forward_to_workers(supervisor, config, reactor)
        if config["metrics"] is not None:
            # The supervisor serves no service connection: its open files
            # are the listeners, the workers' pipes and the metrics
            # listener's connections.
            raise_open_files_limit(
                open_files_wanted(1, config["metrics-max-connections"])
            )
            add_supervisor_metrics(top, supervisor, config, reactor)
    notify_systemd(top, server, reactor, config["drain-timeout"])
    if config["ports-file"] is not None:
        add_ports_file(top, server, config["ports-file"])
    return top


__all__ = ["Options", "makeService"]
