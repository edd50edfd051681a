# -*- test-case-name: tests.test_faults_runtime -*-
"""
Changing a listener's fault profile while the server runs (issue 21): what
the admin API (L{twisted_echo.operations.adminpage}) and in-process tests
(L{twisted_echo.testing}) read, replace and clear.

A L{FaultSlot} stands for one listener key of C{--faults} (a stream
service's name, C{udp}, C{whoami-udp}). A new profile applies from the
next connection (TCP: connections already open keep the plan drawn as
they opened) or the next reply datagram (UDP: replies held back by the
old profile's C{reorder} or C{latency} are dropped); it starts its own
seeded sequence (connection 1, datagram 1), so a seeded profile set at
run time replays as it would from start-up. A C{refuse} fault is the
listeners' own: a change that adds, replaces or removes one starts its
windows on every listening port of the service from the change on, or
ends the window in force (L{twisted_echo.faults.refuse}); a slot that
was not given its listeners refuses such a change with
L{SwapRefusedError}.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_echo.faults.datagrams import DatagramFaults
from twisted_echo.faults.engine import ListenerFaults
from twisted_echo.faults.profile import Fault, FaultProfile, parse_profile
from twisted_echo.faults.refuse import RefuseWindows

_log = Logger(namespace="twisted_echo.faults")


class SwapRefusedError(Exception):
    """
    The change cannot be made while the server runs; the message says why
    (the profile in force is unchanged).
    """


def _refuse_of(profile: FaultProfile | None) -> Fault | None:
    return None if profile is None else profile.listener_fault("refuse")


class FaultSlot:
    """
    One listener key's profile, changeable at run time.

    @ivar key: the listener key (C{echo}, C{udp}...).
    @ivar datagram: whether it is a UDP listener's (its profiles parse
        with the UDP faults).
    """

    key: str
    datagram: bool

    def current(self) -> tuple[FaultProfile | None, int | None]:
        """
        @return: the profile in force (L{None}: none) and its seed (the
            one given, or the one picked at random).
        """
        raise NotImplementedError()

    def replace(self, text: str) -> None:
        """
        Parse C{text} and put it in force for what comes next.

        @param text: a profile (docs/faults.md's grammar).
        @raise twisted_echo.faults.profile.ProfileError: it does not
            parse (nothing changes).
        @raise SwapRefusedError: the change cannot be made at run time.
        """
        profile = parse_profile(text, datagram=self.datagram)
        self._check(profile)
        self._set(profile)
        _log.info(
            "faults of {key} set at run time: {profile} (seed {seed})",
            key=self.key,
            profile=profile.text,
            seed=self.current()[1],
        )

    def clear(self) -> None:
        """
        Clean behaviour from the next connection or datagram on.

        @raise SwapRefusedError: the change cannot be made at run time.
        """
        self._check(None)
        self._set(None)
        _log.info("faults of {key} cleared at run time", key=self.key)

    def describe(self) -> dict[str, Any]:
        """
        @return: C{{"listener", "profile", "seed"}} (profile and seed
            L{None} without one), as the admin API answers.
        """
        profile, seed = self.current()
        return {
            "listener": self.key,
            "profile": profile.text if profile is not None else None,
            "seed": seed,
        }

    def _check(self, profile: FaultProfile | None) -> None:
        """
        @raise SwapRefusedError: C{profile} cannot replace the one in force.
        """

    def _set(self, profile: FaultProfile | None) -> None:
        raise NotImplementedError()


class StreamFaultSlot(FaultSlot):
    """
    A stream service's profile: its factory's C{faults}
    (L{ListenerFaults}), read by the stream base as each connection opens;
    and its listeners' C{refuse} windows.
    """

    datagram = False

    def __init__(
        self,
        factory: Any,
        key: str,
        clock: IReactorTime,
        counts: Any,
        log_connections: bool = True,
        listeners: Sequence[Any] | None = None,
    ) -> None:
        """
        @param factory: the service's L{twisted_echo.services.stream.StreamFactory}.
        @param counts: where faults are counted (its C{counters.faults}).
        @param listeners: the service's stream listeners
            (L{twisted_echo.listening.listen.StreamListenerService}: their
            C{port} while listening, C{description}, and C{windows}, the
            L{RefuseWindows} in force or L{None}), whose accepting a
            C{refuse} set at run time stops; L{None}: unknown, and a
            change to or from a C{refuse} is refused.
        """
        self.factory = factory
        self.key = key
        self.clock = clock
        self.counts = counts
        self.log_connections = log_connections
        self.listeners = listeners

    def current(self) -> tuple[FaultProfile | None, int | None]:
        faults: ListenerFaults | None = self.factory.faults
        if faults is None:
            return None, None
        return faults.profile, faults.seed

    def _check(self, profile: FaultProfile | None) -> None:
        if self.listeners is not None:
            return
        if _refuse_of(self.current()[0]) or _refuse_of(profile):
            raise SwapRefusedError(
                "refuse is a listener fault and this server did not give "
                "its listeners for a change at run time: a profile with "
                "refuse cannot be set, replaced or cleared here (restart "
                "with --faults)"
            )

    def _set(self, profile: FaultProfile | None) -> None:
        old = _refuse_of(self.current()[0])
        self.factory.faults = (
            None
            if profile is None
            else ListenerFaults(
                profile, self.key, self.clock, self.counts, self.log_connections
            )
        )
        new = _refuse_of(profile)
        if old is not None or new is not None:
            self._refuse(new)

    def _refuse(self, fault: Fault | None) -> None:
        """
        End every listener's C{refuse} windows; with C{fault}, start its
        windows on every listening port from now on.
        """
        for listener in self.listeners or ():
            windows: RefuseWindows | None = getattr(listener, "windows", None)
            if windows is not None:
                windows.stop()
            listener.windows = None
            if fault is None or listener.port is None:
                continue
            listener.windows = RefuseWindows(
                self.clock,
                listener.port,
                fault,
                self.counts,
                f"{self.key} listener {listener.description}",
            )
            listener.windows.start()


class DatagramFaultSlot(FaultSlot):
    """
    A UDP listener key's profile: each of its listeners' protocol's
    C{faults} (L{DatagramFaults}), which its replies go through.
    """

    datagram = True

    def __init__(
        self,
        protocols: Sequence[Any],
        key: str,
        clock: IReactorTime,
        counters: Any,
        log: bool = True,
    ) -> None:
        """
        @param protocols: the key's listeners' protocols
            (L{twisted_echo.services.udp}), in listener order.
        @param counters: the service's L{ServiceCounters}.
        """
        self.protocols = list(protocols)
        self.key = key
        self.clock = clock
        self.counters = counters
        self.log = log

    def current(self) -> tuple[FaultProfile | None, int | None]:
        for protocol in self.protocols:
            faults: DatagramFaults | None = protocol.faults
            if faults is not None:
                return faults.profile, faults.seed
        return None, None

    def _set(self, profile: FaultProfile | None) -> None:
        for index, protocol in enumerate(self.protocols):
            old: DatagramFaults | None = protocol.faults
            new = (
                None
                if profile is None
                else DatagramFaults(
                    profile,
                    f"{self.key}/{index}" if index else self.key,
                    self.clock,
                    self.counters,
                    self.log,
                )
            )
            protocol.faults = new
            sendto = getattr(protocol, "_sendto", None)
            if sendto is None:
                continue  # not listening yet: startProtocol wraps it
            if old is not None:
                old.stop()
                sendto = old.sendto  # the socket's own
            protocol._sendto = new.wrap(sendto, protocol) if new else sendto
