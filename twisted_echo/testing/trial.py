# -*- test-case-name: tests.test_testing -*-
"""
sockecho inside your own reactor, for Twisted tests (C{twisted.trial},
pytest-twisted): L{start_services} listens on free ports of 127.0.0.1 in
the running reactor and gives the addresses and a L{RunningServices.stop}
that drains.

For a sockecho in a process of its own (blocking and asyncio tests too),
see L{twisted_echo.testing.spawn} and the pytest fixtures of
L{twisted_echo.testing.pytest_plugin}.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python import usage

from twisted_echo.app import options as tap
from twisted_echo.app.server import SockechoService
from twisted_echo.operations.announce import bound_listeners
from twisted_echo.operations.portsfile import ports_document
from twisted_echo.testing.addresses import Addresses
from twisted_echo.testing.spawn import (
    default_listeners,
    make_certificate,
    options_from_keywords,
)


class RunningServices(Addresses):
    """
    sockecho's services listening in this process's reactor: their
    addresses (L{Addresses}: C{.echo}, C{.echo_endpoint}, ...) and
    L{stop}.

    @ivar service: the running L{SockechoService} (its C{counters} say what
        each service did).
    @ivar ca_file: with C{tls=True}, the certificate the TLS listeners
        serve, to trust as a CA; else L{None}.
    """

    def __init__(
        self, service: SockechoService, directory: str | None, ca_file: str | None
    ) -> None:
        super().__init__(
            ports_document(os.getpid(), bound_listeners(service))["listeners"]
        )
        self.service = service
        self.ca_file = ca_file
        self._directory = directory

    def stop(self) -> Deferred[None]:
        """
        Stop as sockecho does at SIGTERM: stop accepting at once, let open
        connections finish (an idle one is closed after 1 s; all are
        aborted after C{--drain-timeout}).

        @return: a L{twisted.internet.defer.Deferred} that fires once every
            listener is closed and every connection has ended.
        """
        done: Deferred[None] = self.service.stopService()

        def clean_up(result: object) -> object:
            if self._directory is not None:
                shutil.rmtree(self._directory, ignore_errors=True)
            return result

        done.addBoth(clean_up)
        return done


def start_services(
    *options: str, reactor: Any = None, tls: bool = False, **keywords: object
) -> Deferred[RunningServices]:
    """
    Start sockecho's services in C{reactor}, each on a free port of
    127.0.0.1 unless the options say otherwise.

    @param options: sockecho options as on the command line
        (C{"--banner", "hi"}); echo, upper, welcome and UDP echo get a
        port-0 listener unless named (C{--echo ...}, C{--no-echo}).
        C{--workers} is not available here.
    @param reactor: the reactor to listen in; the global reactor (imported
        at call time) when L{None}.
    @param tls: echo, upper and welcome over TLS (unless the options give
        their listeners), with a new self-signed certificate for
        C{localhost} and C{127.0.0.1} (L{RunningServices.ca_file}).
    @param keywords: more options, as L{twisted_echo.testing.spawn.start_sockecho}
        takes them: C{banner="hi"}, C{max_line=80}, C{whoami=True}.
    @return: a L{twisted.internet.defer.Deferred} firing with the
        L{RunningServices} once every listener listens, or failing with
        L{twisted.python.usage.UsageError} (a bad option) or
        L{twisted_echo.listening.listen.ListenError} (a listener that cannot
        listen; the others are closed again).
    """
    if reactor is None:
        from twisted.internet import reactor
    given = [*options, *options_from_keywords(keywords)]
    directory = ca_file = None
    certificate = None
    if tls:
        directory = tempfile.mkdtemp(prefix="sockecho-")
        certificate = make_certificate(directory)
        ca_file = certificate[0]
    defaults = default_listeners(given, certificate)
    config = tap.Options()
    try:
        config.parseOptions([*defaults, *given])  # type: ignore[no-untyped-call]
        if config["workers"] != 1:
            raise usage.UsageError("--workers is not available in the test's reactor")
        service = tap.makeService(config, reactor)
        service.privilegedStartService()
        service.startService()  # type: ignore[no-untyped-call]
    except Exception:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        return fail()
    return succeed(RunningServices(service, directory, ca_file))
