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
from contextlib import AbstractContextManager as ContextManager
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python import usage

from twisted_echo.app import options as tap
from twisted_echo.app.server import SockechoService
from twisted_echo.operations.announce import bound_listeners
from twisted_echo.operations.portsfile import ports_document
from twisted_echo.records.ring import RecordRing, matcher
from twisted_echo.testing.addresses import Addresses
from twisted_echo.testing.faults import profile_block
from twisted_echo.testing.health import health_block, requested
from twisted_echo.testing.records import DEFAULT_TIMEOUT, Record, describe
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

    Its connection records (L{twisted_echo.records}, read from the ring in
    this process): L{records}, L{assert_no_connections} at once, and
    L{wait_for}, L{expect_close} as C{Deferred}s (the test's reactor must
    run for connections to close), each record the dict of
    C{twisted_echo/records/schema.json}; L{reset_records} moves the mark
    they count from.

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
        self._mark = 0
        self._expected: set[int] = set()

    def faults(self, listener: str, profile: str) -> ContextManager[None]:
        """
        C{with services.faults("echo", "reset-after=10"): ...}: C{profile}
        on C{listener} (C{echo}, C{udp}...: docs/faults.md) from the next
        connection or datagram until the block ends, then the profile
        before it again (same text and seed), even if the block raises.
        Set in this process (no admin API needed). For a block spanning
        Deferreds, use it around the whole C{yield}ed wait
        (C{inlineCallbacks}).

        @raise twisted_echo.faults.profile.ProfileError: (a C{ValueError})
            the profile does not parse.
        @raise LookupError: no such listener.
        @raise twisted_echo.faults.runtime.SwapRefusedError: a change that
            cannot be made at run time (a C{refuse} fault on a slot
            built without its listeners).
        """
        slots = self.service.fault_slots
        slot = slots.get(listener)
        if slot is None:
            raise LookupError(
                f"no listener {listener!r} takes a profile here; "
                f"listeners: {', '.join(slots) or 'none'}"
            )

        def read() -> tuple[str | None, int | None]:
            profile, seed = slot.current()
            return (profile.text if profile is not None else None), seed

        def write(text: str | None) -> None:
            if text is None:
                slot.clear()
            else:
                slot.replace(text)

        block: ContextManager[None] = profile_block(read, write, profile)
        return block

    def health(
        self,
        readyz: str | None = None,
        healthz: str | None = None,
        listeners: str | None = None,
    ) -> ContextManager[None]:
        """
        C{with services.health(readyz="fail", listeners="pause"): ...}: the
        probes (C{"fail"}: 503 C{failed by the admin API}, or C{"pass"};
        served with C{--metrics}) and listeners (C{"pause"}: not
        accepting, or C{"serve"}) switched as given for the block, the
        others as they are; then the state before it again, even if the
        block raises. Set in this process (no admin API needed). For a
        block spanning Deferreds, use it around the whole C{yield}ed wait.

        @raise ValueError: a bad value, or none given.
        """
        changes = requested(readyz, healthz, listeners)
        switch = self.service.health
        block: ContextManager[None] = health_block(
            switch.describe, switch.change, changes
        )
        return block

    def unready(self) -> ContextManager[None]:
        """
        C{with services.unready(): ...}: C{/readyz} answers 503 C{failed
        by the admin API} for the block while the services serve on
        (L{health}C{(readyz="fail")}).
        """
        return self.health(readyz="fail")

    def _ring(self) -> RecordRing:
        ring = self.service.records
        if ring is None:
            raise AssertionError("no connection records: started with --records 0")
        return ring

    def reset_records(self) -> None:
        """
        See only the connections that close from now on.
        """
        self._mark = self._ring().last_id
        self._expected.clear()

    def records(self, service: str | None = None) -> list[Record]:
        """
        @return: the records of the connections (of C{service}) closed
            since the start or L{reset_records}, oldest first.
        """
        found = self._ring().since(self._mark, matcher(service))
        return [record.as_dict() for record in found]

    def assert_no_connections(self, service: str | None = None) -> None:
        """
        @raise AssertionError: listing them, if a connection (of C{service})
            closed since the start or L{reset_records}.
        """
        found = self.records(service)
        if found:
            raise AssertionError(
                f"expected no {service or 'sockecho'} connection; "
                f"{len(found)} closed:\n{describe(found)}"
            )

    def _wait(
        self,
        done: Any,
        service: str | None,
        timeout: float,
        failure: Any,
    ) -> Deferred[Any]:
        """
        Check C{done(records)} each time a record (of C{service}) closes
        until it returns something not L{None}, which the result fires
        with; fail with C{failure(records)}'s message after C{timeout}.
        """
        ring = self._ring()
        matches = matcher(service)
        deadline = ring.clock.seconds() + timeout
        result: Deferred[Any] = Deferred()

        def check(_: object = None) -> None:
            found = self.records(service)
            try:
                value = done(found)
            except AssertionError:
                result.errback()
                return
            if value is not None:
                result.callback(value)
                return
            left = deadline - ring.clock.seconds()
            if left <= 0:
                result.errback(AssertionError(failure(found)))
                return
            last = found[-1]["id"] if found else self._mark
            ring.wait(last, matches, left).addCallback(check)

        check()
        return result

    def wait_for(
        self, n: int, service: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> Deferred[list[Record]]:
        """
        @return: a C{Deferred} firing with the records once C{n}
            connections (of C{service}) have closed, or failing with an
            C{AssertionError} listing what came after C{timeout} seconds.
        """
        return self._wait(
            lambda found: found if len(found) >= n else None,
            service,
            timeout,
            lambda found: (
                f"waited {timeout:g} s for {n} closed {service or 'sockecho'} "
                f"connection(s); {len(found)} arrived:\n{describe(found)}"
            ),
        )

    def expect_close(
        self, cause: str, service: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> Deferred[Record]:
        """
        @return: a C{Deferred} firing with the record of the next
            connection (of C{service}) to close, in order, if it ended with
            C{cause}; else failing with an C{AssertionError} saying how it
            ended, or that none closed within C{timeout} seconds.
        """

        def done(found: list[Record]) -> Record | None:
            fresh = [r for r in found if r["id"] not in self._expected]
            if not fresh:
                return None
            record = fresh[0]
            self._expected.add(record["id"])
            if record["cause"] != cause:
                raise AssertionError(
                    f"expected a {service or 'sockecho'} connection closed by "
                    f"{cause}; it closed by {record['cause']}:\n"
                    f"{describe([record])}"
                )
            return record

        return self._wait(
            done,
            service,
            timeout,
            lambda found: (
                f"waited {timeout:g} s for a {service or 'sockecho'} connection "
                f"to close by {cause}; none closed:\n{describe(found)}"
            ),
        )

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
