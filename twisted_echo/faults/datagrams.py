# -*- test-case-name: tests.test_faults_datagrams -*-
"""
UDP faults: C{loss}, C{duplicate}, C{reorder}, C{latency} with C{jitter},
C{truncate} and C{corrupt}, each drawn per datagram with its C{p=}.

A UDP listener with a profile replies through L{DatagramFaults.send}
instead of its socket's C{sendto} (the one hook in
L{twisted_echo.services.udp.UDPEcho.startProtocol}); the faults a UDP peer
flow's datagrams had, and those C{loss} dropped, are told to its flow
(L{twisted_echo.records.flows.Flow.faulted}). Decisions come from
one C{random.Random} per listener, seeded with the profile's seed and the
listener's key: the same seed and the same sequence of datagrams give the
same faults. A fault never makes a reply larger; each duplicate must pass
the listener's rate limits (C{--udp-rate}, C{--udp-global-rate}) as a
reply does, or it is not sent (counted in C{dropped[rate_*]}).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from twisted.internet.error import MessageLengthError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from twisted_echo.faults.content import Corrupter, truncated
from twisted_echo.faults.profile import Fault, FaultProfile

_log = Logger(namespace="twisted_echo.faults")

#: Seconds a reordered datagram is held at most, when fewer than K
#: datagrams follow it.
REORDER_MAX_HOLD = 1.0

SendTo = Callable[[bytes, Any], object]


class DatagramFaults:
    """
    One UDP listener's faults.

    @ivar ordinal: datagrams seen so far.
    @ivar held: datagrams held back by C{reorder}:
        C{[datagrams still to follow, data, addr, copies, timer]}.
    """

    def __init__(
        self,
        profile: FaultProfile,
        key: str,
        clock: IReactorTime,
        counters: Any,
        log: bool = True,
    ) -> None:
        """
        @param key: the listener's name for the seed (C{udp}, C{udp/1}...).
        @param counters: the service's L{ServiceCounters}: C{faults},
            C{datagrams_out}, C{bytes_out}, C{dropped}.
        """
        self.profile = profile
        self.clock = clock
        self.counters = counters
        self.seed = (
            profile.seed
            if profile.seed is not None
            else random.SystemRandom().randrange(1 << 32)
        )
        self.rng = random.Random(f"{self.seed}/{key}")
        self.faults = profile.connection_faults()
        self.ordinal = 0
        self.held: list[list[Any]] = []
        self.timers: set[IDelayedCall] = set()
        self.sendto: SendTo = _nowhere
        self.protocol: Any = None
        if log:
            _log.info(
                "{key} listener: faults {faults} (seed {seed})",
                key=key,
                faults=profile.text,
                seed=self.seed,
            )

    def wrap(self, sendto: SendTo, protocol: Any) -> SendTo:
        """
        @param sendto: how the listener sends a datagram now.
        @param protocol: the listener's protocol (its C{source_limit} and
            C{global_limit}, for duplicates).
        @return: what the listener sends its replies with instead.
        """
        self.sendto = sendto
        self.protocol = protocol
        return self.send

    def draw(self) -> dict[str, Fault]:
        """
        @return: the faults the next datagram gets (one draw per fault:
            C{random() < p}, so 0 never and 1 always).
        """
        rng = self.rng
        return {f.name: f for f in self.faults if rng.random() < f.p}

    def send(self, reply: bytes, addr: Any) -> None:
        """
        Send C{reply} to C{addr} as the faults drawn for it say.

        The listener counts a reply as sent once this returns; this takes
        that back and counts each datagram when it really leaves.
        """
        counters = self.counters
        counters.datagrams_out -= 1
        counters.bytes_out -= len(reply)
        self.ordinal += 1
        drawn = self.draw()
        for name in drawn:
            counters.faults[name] += 1
        flows = getattr(self.protocol, "flows", None)
        if drawn and flows is not None:
            flow = flows.live.get(addr)
            if flow is not None:
                flow.faulted(drawn, len(reply))
        due = []
        for item in self.held:
            item[0] -= 1
            if item[0] <= 0:
                due.append(item)
        for item in due:
            self.held.remove(item)
            self._cancel(item[4])
        if "loss" not in drawn:
            self._fault(reply, addr, drawn)
        for _, data, to, copies, _ in due:
            self._send_now(data, to, copies)

    def _fault(self, reply: bytes, addr: Any, drawn: dict[str, Fault]) -> None:
        rng = self.rng
        if "truncate" in drawn:
            reply = truncated(reply, drawn["truncate"].value)
        if "corrupt" in drawn and reply:
            every = drawn["corrupt"].value
            if every is None:
                changed = bytearray(reply)
                changed[rng.randrange(len(changed))] ^= 1 << rng.randrange(8)
                reply = bytes(changed)
            else:
                reply = Corrupter(every, rng).apply(reply)
        copies = 1
        if "duplicate" in drawn:
            copies += drawn["duplicate"].value or 1
        if "reorder" in drawn:
            item = [drawn["reorder"].value, reply, addr, copies, None]
            item[4] = self._later(REORDER_MAX_HOLD, self._release, item)
            self.held.append(item)
            return
        latency = drawn.get("latency")
        if latency is not None:
            jitter = latency.option("jitter", 0.0)
            delay = max(0.0, latency.value + rng.uniform(-jitter, jitter))
            self._later(delay, self._send_now, reply, addr, copies)
            return
        self._send_now(reply, addr, copies)

    def _send_now(self, data: bytes, addr: Any, copies: int) -> None:
        counters = self.counters
        for copy in range(copies):
            if copy and not self._allowed(addr):
                return
            try:
                self.sendto(data, addr)
            except (OSError, MessageLengthError):
                counters.dropped["send_error"] += 1
                return
            counters.datagrams_out += 1
            counters.bytes_out += len(data)

    def _allowed(self, addr: Any) -> bool:
        """
        @return: whether the rate limits allow one more datagram to C{addr}
            (a duplicate), counting a refusal as the listener does.
        """
        protocol = self.protocol
        source = getattr(protocol, "source_limit", None)
        if source is not None and not source.allow(addr[0]):
            self.counters.dropped["rate_source"] += 1
            return False
        overall = getattr(protocol, "global_limit", None)
        if overall is not None and not overall.allow():
            self.counters.dropped["rate_global"] += 1
            return False
        return True

    def _release(self, item: list[Any]) -> None:
        if item in self.held:
            self.held.remove(item)
            self._send_now(item[1], item[2], item[3])

    def _later(self, delay: float, function: Any, *args: Any) -> IDelayedCall:
        def run() -> None:
            self.timers.discard(call)
            function(*args)

        call = self.clock.callLater(delay, run)
        self.timers.add(call)
        return call

    def _cancel(self, call: IDelayedCall | None) -> None:
        if call is not None:
            self.timers.discard(call)
            if call.active():
                call.cancel()

    def stop(self) -> None:
        """
        The listener stops: drop what is held or delayed.
        """
        self.held.clear()
        for call in list(self.timers):
            self._cancel(call)


def _nowhere(data: bytes, addr: Any) -> None:
    raise OSError("not listening")
