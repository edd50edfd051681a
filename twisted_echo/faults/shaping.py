# -*- test-case-name: tests.test_faults_engine -*-
"""
Timing faults: when the bytes of a connection move.

L{OutputShaper} holds what a service sends and releases it late (C{delay}
before the first reply byte, C{latency} with C{jitter} per reply chunk),
cut (C{slice}: N-byte segments with a C{gap}) or slowly (C{bandwidth}, the
downward direction); L{InputLimiter} caps how fast a connection is read
(C{bandwidth} upward) by pausing its reading. Both keep time on the
factory's clock (a L{twisted.internet.task.Clock} in tests).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: Bandwidth is released in pieces of this many seconds' worth of bytes.
BANDWIDTH_QUANTUM = 0.05


class OutputShaper:
    """
    A FIFO of reply bytes with release times.

    @ivar held: the bytes held now (counted by the memory budget).
    """

    def __init__(
        self,
        clock: IReactorTime,
        rng: random.Random,
        write: Callable[[bytes], None],
        delay: float = 0.0,
        latency: float = 0.0,
        jitter: float = 0.0,
        segment: int = 0,
        gap: float = 0.0,
        rate: float = 0.0,
    ) -> None:
        """
        @param write: writes bytes to the peer now.
        @param delay: seconds before the first reply byte.
        @param latency: seconds each reply chunk is held.
        @param jitter: seconds, at most, added to or taken from C{latency}
            (uniform, drawn per chunk; never below 0).
        @param segment: bytes per segment (0: not cut).
        @param gap: seconds between segments.
        @param rate: bytes per second (0: no cap).
        """
        self.clock = clock
        self.rng = rng
        self.write = write
        self.delay = delay
        self.latency = latency
        self.jitter = jitter
        self.segment = segment
        self.gap = gap
        self.rate = rate
        self.quantum = max(1, int(rate * BANDWIDTH_QUANTUM)) if rate else 0
        self.timed = bool(delay or latency or jitter or segment or rate)
        self.queue: deque[list[float | bytes]] = deque()
        self.held = 0
        self.first = True
        self.last_release = 0.0
        self.next_free = 0.0
        self.call: IDelayedCall | None = None
        self.drained: Callable[[], None] | None = None
        self.written: Callable[[], None] | None = None

    def push(self, data: bytes) -> None:
        """
        Hold C{data} (bytes) until its release time; write at once what is
        due now.
        """
        if not self.timed:
            self.write(data)
            return
        now = self.clock.seconds()
        at = now
        if self.first:
            at += self.delay
            self.first = False
        if self.latency or self.jitter:
            at += max(0.0, self.latency + self.rng.uniform(-self.jitter, self.jitter))
        if self.segment:
            if self.queue or self.last_release > now:
                at = max(at, self.last_release + self.gap)
            for offset in range(0, len(data), self.segment):
                self.queue.append([at, data[offset : offset + self.segment]])
                self.last_release = at
                at += self.gap
        else:
            at = max(at, self.last_release)
            self.last_release = at
            self.queue.append([at, data])
        self.held += len(data)
        if self.call is None:
            self.pump()

    def pump(self) -> None:
        """
        Write every piece due now; wake up when the next is due. Calls
        C{drained} once nothing is held.
        """
        self.call = None
        queue = self.queue
        while queue:
            head = queue[0]
            now = self.clock.seconds()
            at = float(head[0])
            if self.rate:
                at = max(at, self.next_free)
            if at > now:
                self.call = self.clock.callLater(at - now, self.pump)
                return
            data = head[1]
            assert isinstance(data, bytes)
            piece = data
            if self.rate:
                piece = data[: self.quantum]
                # Late wake-ups do not slow the rate down (the schedule is
                # kept), unless the connection sent nothing for a while.
                late = now - self.next_free > BANDWIDTH_QUANTUM
                start = now if late else self.next_free
                self.next_free = start + len(piece) / self.rate
            if len(piece) == len(data):
                queue.popleft()
            else:
                head[1] = data[len(piece) :]
            self.held -= len(piece)
            self.write(piece)
            if self.written is not None:
                self.written()
        drained, self.drained = self.drained, None
        if drained is not None:
            drained()

    def when_drained(self, callback: Callable[[], None]) -> None:
        """
        Call C{callback} once nothing is held (now, if nothing is).
        """
        if self.queue:
            self.drained = callback
        else:
            callback()

    def clear(self) -> None:
        """
        Drop what is held and stop the timer.
        """
        self.queue.clear()
        self.held = 0
        self.drained = None
        call, self.call = self.call, None
        if call is not None and call.active():
            call.cancel()


class InputLimiter:
    """
    Caps the rate a connection is read at: after each read, reading
    pauses for as long as the read's bytes take at C{rate}.
    """

    def __init__(
        self,
        clock: IReactorTime,
        rate: float,
        pause: Callable[[bool], None],
    ) -> None:
        """
        @param rate: bytes per second.
        @param pause: called with L{True} to stop reading, L{False} to read
            again.
        """
        self.clock = clock
        self.rate = rate
        self.pause = pause
        self.next_free = 0.0
        self.call: IDelayedCall | None = None

    def note(self, count: int) -> None:
        """
        C{count} bytes were read: pause reading until they are paid for.
        """
        now = self.clock.seconds()
        self.next_free = max(now, self.next_free) + count / self.rate
        if self.call is None and self.next_free > now:
            self.pause(True)
            self.call = self.clock.callLater(self.next_free - now, self._resume)

    def _resume(self) -> None:
        self.call = None
        self.pause(False)

    def stop(self) -> None:
        """
        Stop the timer (the connection is gone).
        """
        call, self.call = self.call, None
        if call is not None and call.active():
            call.cancel()
