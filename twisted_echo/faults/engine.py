# -*- test-case-name: tests.test_faults_engine -*-
"""
The fault engine: seeded per-connection decisions and the plan every byte
of a faulted connection goes through.

L{ListenerFaults} belongs to a service's factory (C{factory.faults}); the
stream base (L{twisted_echo.services.stream}) asks it for a
L{ConnectionPlan} as each connection opens. Each connection's decisions
come from its own C{random.Random}, seeded with the profile's seed, the
service's name and the connection's ordinal (1, 2...) on that factory:
the same seed and the same sequence of connections give the same faults,
and no global random state is read or changed.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from twisted_echo.faults.content import Corrupter, truncated
from twisted_echo.faults.endings import DeliveryWait, reset
from twisted_echo.faults.profile import Fault, FaultProfile
from twisted_echo.faults.shaping import InputLimiter, OutputShaper
from twisted_echo.records import causes


class FaultedConnection(Protocol):
    """
    What a plan uses of the stream base's protocol (docs/services.md).
    """

    transport: Any
    allowance: int

    def send_unfaulted(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def resume_reading(self) -> None: ...
    def client_text(self) -> str: ...
    def set_close_cause(self, cause: str, limit: str | None = None) -> None: ...


_log = Logger(namespace="twisted_echo.faults")


class ListenerFaults:
    """
    A profile attached to one service's TCP listeners.

    @ivar profile: the L{FaultProfile}.
    @ivar seed: its seed, or the one picked at random when it gives none.
    @ivar ordinal: connections planned so far.
    @ivar log_connections: whether each connection's faults are logged
        (info level, as the connection lines are).
    """

    def __init__(
        self,
        profile: FaultProfile,
        service_name: str,
        clock: IReactorTime,
        counts: Counter[str],
        log_connections: bool = True,
    ) -> None:
        """
        @param counts: where each fault given to a connection is counted,
            by fault name (the service's C{counters.faults}:
            C{sockecho_faults_total}).
        """
        self.profile = profile
        self.service_name = service_name
        self.clock = clock
        self.counts = counts
        self.log_connections = log_connections
        self.seed = (
            profile.seed
            if profile.seed is not None
            else random.SystemRandom().randrange(1 << 32)
        )
        self.faults = profile.connection_faults()
        self.ordinal = 0

    def rng(self, ordinal: int) -> random.Random:
        """
        @return: the seeded generator of connection number C{ordinal}.
        """
        return random.Random(f"{self.seed}/{self.service_name}/{ordinal}")

    def draw(self, rng: random.Random) -> list[Fault]:
        """
        @return: the faults a connection gets: each with its probability
            (C{random() < p}: 0 never, 1 always), one draw per fault.
        """
        return [fault for fault in self.faults if rng.random() < fault.p]

    def plan(self, connection: FaultedConnection) -> ConnectionPlan | None:
        """
        Draw a new connection's faults, count and log them.

        @return: its plan, or L{None} when it gets none.
        """
        self.ordinal += 1
        rng = self.rng(self.ordinal)
        drawn = self.draw(rng)
        for fault in drawn:
            self.counts[fault.name] += 1
        if self.log_connections:
            _log.info(
                "{service} connection from {peer}: faults {faults} "
                "(connection {ordinal}, seed {seed})",
                service=self.service_name,
                peer=connection.client_text(),
                faults="; ".join(f.text for f in drawn) or "none",
                ordinal=self.ordinal,
                seed=self.seed,
            )
        if not drawn:
            return None
        return ConnectionPlan(self.clock, connection, rng, drawn)


class ConnectionPlan:
    """
    One connection's faults, applied to what it sends and receives.

    @ivar half_closed: whether a C{half-close-after} shut the sending side
        (the connection goes on reading).
    """

    def __init__(
        self,
        clock: IReactorTime,
        connection: FaultedConnection,
        rng: random.Random,
        faults: list[Fault],
    ) -> None:
        self.clock = clock
        self.connection = connection
        given = {fault.name: fault for fault in faults}
        self.given = given
        self.blackhole = "blackhole" in given
        latency = given.get("latency")
        sliced = given.get("slice")
        bandwidth = given.get("bandwidth")
        direction = bandwidth.option("direction", "down") if bandwidth else None
        self.shaper = OutputShaper(
            clock,
            rng,
            self._write,
            delay=given["delay"].value if "delay" in given else 0.0,
            latency=latency.value if latency else 0.0,
            jitter=latency.option("jitter", 0.0) if latency else 0.0,
            segment=sliced.value if sliced else 0,
            gap=sliced.option("gap", 0.0) if sliced else 0.0,
            rate=bandwidth.value if bandwidth and direction != "up" else 0.0,
        )
        self.shaper.written = self._check_reading
        self.limiter = (
            InputLimiter(clock, bandwidth.value, self._limit_pause)
            if bandwidth and direction != "down"
            else None
        )
        corrupt, truncate = given.get("corrupt"), given.get("truncate")
        self.corrupter = Corrupter(corrupt.value, rng) if corrupt else None
        self.truncate: int | None = truncate.value if truncate else None
        # The ending after a number of reply bytes: (kind, bytes).
        self.ending: tuple[str, int] | None = None
        self.timers: list[IDelayedCall] = []
        for name in ("half-close-after", "close-after", "reset-after"):
            fault = given.get(name)
            if fault is None:
                continue
            if isinstance(fault.value, float):
                self.timers.append(clock.callLater(fault.value, self._timed_end, name))
            elif self.ending is None or fault.value < self.ending[1]:
                self.ending = (name, fault.value)
        if self.blackhole and given["blackhole"].value is not None:
            self.timers.append(
                clock.callLater(given["blackhole"].value, self._timed_end, "blackhole")
            )
        self.accepted = 0  # reply bytes let through so far
        self.stopped = False  # nothing more is sent
        self.half_closed = False
        self.held_close: Any = None
        self.ending_due = False
        self.delivery: DeliveryWait | None = None
        self.budget_paused = False
        self.limit_paused = False
        self.reading_paused = False
        self.gone = False

    def start(self) -> None:
        """
        The connection is open: an ending after 0 bytes happens now.
        """
        if self.ending is not None and self.ending[1] == 0:
            self.stopped = True
            self.ending_due = True
            self.shaper.when_drained(self._end)

    # What the connection sends and receives.

    def send(self, data: bytes) -> None:
        """
        Apply the faults to C{data}, a reply the service sends.
        """
        if self.stopped or self.blackhole:
            return
        if self.truncate is not None:
            data = truncated(data, self.truncate)
            self.stopped = True
            self.ending_due = True
            self.ending = ("close-after", 0)
        if self.corrupter is not None:
            data = self.corrupter.apply(data)
        ending = self.ending
        if ending is not None and not self.stopped:
            room = ending[1] - self.accepted
            if len(data) >= room:
                data = data[:room]
                self.stopped = True
                self.ending_due = True
        self.accepted += len(data)
        if data:
            self.shaper.push(data)
            self._check_reading()
        if self.ending_due and not self.gone:
            self.shaper.when_drained(self._end)

    def received(self, data: bytes) -> bytes:
        """
        @return: what of C{data}, bytes read from the peer, the service
            gets (nothing from a blackhole).
        """
        if self.limiter is not None:
            self.limiter.note(len(data))
        if self.blackhole:
            return b""
        return data

    def held_bytes(self) -> int:
        """
        @return: reply bytes held back now (counted in the memory budget).
        """
        return self.shaper.held

    def hold_close(self, finish: Any) -> bool:
        """
        The connection is closing (C{close}): when bytes are still held or
        an ending waits, keep C{finish} (the base's close) for later.

        @return: whether the close was held.
        """
        if self.ending_due or self.shaper.queue:
            self.held_close = finish
            if not self.ending_due:
                self.shaper.when_drained(self._release_close)
            return True
        return False

    def connection_lost(self) -> None:
        """
        The connection is gone: stop every timer.
        """
        self.gone = True
        self.shaper.clear()
        for call in self.timers:
            if call.active():
                call.cancel()
        if self.limiter is not None:
            self.limiter.stop()
        if self.delivery is not None:
            self.delivery.stop()

    # Inside.

    def _write(self, data: bytes) -> None:
        self.connection.send_unfaulted(data)

    def _release_close(self) -> None:
        finish, self.held_close = self.held_close, None
        if finish is not None and not self.gone:
            finish()

    def _end(self) -> None:
        """
        Every byte before the ending is written: end as the fault says.
        """
        if self.gone:
            return
        assert self.ending is not None
        self.connection.set_close_cause(causes.FAULT)  # its record's cause
        kind = self.ending[0]
        if kind == "reset-after":
            # The peer must have every byte before the RST, or the RST
            # discards them.
            self.delivery = DeliveryWait(
                self.clock, self.connection.transport, self._reset
            )
            return
        self.ending_due = False
        if kind == "half-close-after":
            self.half_closed = True
            self.connection.transport.loseWriteConnection()
            self._release_close()
            return
        if self.held_close is not None:
            self._release_close()
        else:
            self.connection.close()

    def _reset(self) -> None:
        self.delivery = None
        if not self.gone:
            reset(self.connection.transport)

    def _timed_end(self, kind: str) -> None:
        """
        A C{close-after}, C{reset-after}, C{half-close-after} or
        C{blackhole} time is up.
        """
        if self.gone:
            return
        self.connection.set_close_cause(causes.FAULT)  # its record's cause
        self.stopped = True
        self.shaper.clear()
        if kind == "reset-after":
            reset(self.connection.transport)
            return
        if kind == "half-close-after":
            self.half_closed = True
            self.connection.transport.loseWriteConnection()
            return
        self.ending_due = False
        if self.held_close is not None:
            self._release_close()
        else:
            self.connection.close()

    # Reading: held bytes above the allowance, or the upward bandwidth,
    # stop it.

    def _limit_pause(self, pause: bool) -> None:
        self.limit_paused = pause
        self._update_reading()

    def _check_reading(self) -> None:
        over = self.shaper.held > self.connection.allowance
        if over != self.budget_paused:
            self.budget_paused = over
            self._update_reading()

    def _update_reading(self) -> None:
        pause = self.budget_paused or self.limit_paused
        if pause == self.reading_paused or self.gone:
            return
        self.reading_paused = pause
        if pause:
            self.connection.transport.pauseProducing()
        else:
            self.connection.resume_reading()
