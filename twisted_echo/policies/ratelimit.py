# -*- test-case-name: tests.test_ratelimit -*-
"""
Rate limits for UDP echo, so that one flooding address, or a victim whose
address is spoofed as the source of a reflection attempt, cannot monopolise
the server or be flooded by it.

L{TokenBucket} is the single-rate token bucket of RFC 2697 (section 3) and
RFC 4115, counted in datagrams rather than bytes: the committed rate (CIR) is
C{rate} datagrams per second, the committed burst size (CBS) is C{burst}
datagrams, and the bucket starts full. A datagram is allowed ("green") when
the bucket holds at least one token, which it then spends; otherwise it is
not allowed ("red"). Tokens are added lazily, from the time elapsed on
C{clock.seconds()} since the previous call: no timer is ever scheduled.

L{SourceRateLimiter} gives each source host (not port: a spoofer varies the
port freely) its own such bucket, in a table bounded in size; see its
docstring for what happens when the table is full.

A rate of C{0} means unlimited: C{allow} is always C{True} and no bucket or
table is kept. L{twisted_echo.services.udp.UDPEcho} skips an unlimited limiter
entirely.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from twisted.internet.interfaces import IReactorTime

__all__ = ["DEFAULT_MAX_SOURCES", "SourceRateLimiter", "TokenBucket"]

#: Default bound on the number of source hosts L{SourceRateLimiter} tracks.
DEFAULT_MAX_SOURCES = 65536


def _check(rate: float, burst: int) -> tuple[float, int]:
    rate = float(rate)
    if not math.isfinite(rate) or rate < 0:
        raise ValueError(
            f"rate must be a finite number of datagrams per second >= 0 "
            f"(0 means unlimited), not {rate!r}"
        )
    if rate:
        _check_count("burst", burst)
    return rate, burst


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, not {value!r}")


class TokenBucket:
    """
    A token bucket (RFC 2697 / RFC 4115 single-rate bucket, in datagrams).

    @ivar rate: committed rate, datagrams per second (C{float}); C{0} means
        unlimited.
    @ivar burst: committed burst size, datagrams (C{int}): the most that can
        be allowed at one instant, and the bucket's capacity.
    @ivar tokens: datagrams allowed now without waiting (C{float}), as of
        C{last}.
    @ivar last: C{clock.seconds()} at the previous refill, seconds.
    """

    __slots__ = ("rate", "burst", "tokens", "last", "_clock")

    def __init__(self, rate: float, burst: int, clock: IReactorTime) -> None:
        """
        @param rate: datagrams per second (C{float} >= 0); C{0}: unlimited.
        @param burst: bucket size in datagrams (C{int} >= 1; ignored when
            C{rate} is C{0}).
        @param clock: where time comes from (C{seconds()}, in seconds); the
            reactor, or L{twisted.internet.task.Clock} in tests.
        @raise ValueError: C{rate} negative or not finite, or C{burst} < 1.
        """
        self.rate, self.burst = _check(rate, burst)
        self._clock = clock
        self.tokens = float(self.burst)
        self.last = clock.seconds()

    @property
    def unlimited(self) -> bool:
        """
        C{True} when C{rate} is 0: L{allow} always says yes.
        """
        return not self.rate

    def allow(self, count: float = 1.0) -> bool:
        """
        Take C{count} tokens if there are that many (none if there are not).

        @param count: tokens wanted: 1 per datagram; a welcome connection
            takes one per telnet command of a read.
        @return: C{True} if one datagram (or C{count} events) may go ahead
            now (the tokens were spent), C{False} if it should be dropped.
            Always C{True} when unlimited.
        """
        rate = self.rate
        if not rate:
            return True
        now = self._clock.seconds()
        elapsed = now - self.last
        # A clock stepped backwards adds nothing, and restarts from now.
        self.last = now
        tokens = self.tokens
        if elapsed > 0:
            tokens += elapsed * rate
            if tokens > self.burst:
                tokens = self.burst
        if tokens >= count:
            self.tokens = tokens - count
            return True
        self.tokens = tokens
        return False

    def full(self, now: float) -> bool:
        """
        @param now: the time, in seconds on the same clock.
        @return: C{True} if the bucket would hold C{burst} tokens at C{now},
            i.e. forgetting it changes nothing.
        """
        return not self.rate or (
            self.tokens + max(0.0, now - self.last) * self.rate >= self.burst
        )


class SourceRateLimiter:
    """
    One L{TokenBucket} per source host, in a table of bounded size.

    Sources are keyed by host only (the C{host} of C{(host, port)}), so a
    sender cannot escape its limit by changing ports, and a spoofed victim
    of a reflection attempt receives at most C{rate} datagrams per second
    (after an initial C{burst}).

    The table holds at most C{max_sources} hosts, most recently seen last.
    When a new host arrives and the table is full:

      1. the least recently seen host is forgotten if its bucket has
         refilled to full (forgetting a full bucket loses nothing: a new
         one starts full). Only that one entry is looked at, so a new host
         costs O(1); since the table is in order of last use, the oldest
         entry is always removable once every host has been idle for
         C{burst / rate} seconds or more, and idle hosts are removed
         oldest first;
      2. if the table is still full, the new host is not added: its
         datagram is judged by one overflow bucket (same C{rate} and
         C{burst}), shared by every host that found the table full.

    So memory stays bounded (C{max_sources} buckets plus one), hosts already
    in the table keep their own allowance, and a spoofed flood of distinct
    sources gets at most one host's allowance once the table is full. (A
    flood of distinct sources that fits in the table is what a global limit,
    a plain L{TokenBucket}, is for.)

    @ivar rate: datagrams per second per host (C{float}); C{0}: unlimited.
    @ivar burst: datagrams per host at one instant (C{int}).
    @ivar max_sources: most hosts tracked at once (C{int}).
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: IReactorTime,
        max_sources: int = DEFAULT_MAX_SOURCES,
    ) -> None:
        """
        @param rate: datagrams per second per host (C{float} >= 0); C{0}:
            unlimited, and no table is kept.
        @param burst: datagrams per host at one instant (C{int} >= 1).
        @param clock: where time comes from (C{seconds()}, in seconds).
        @param max_sources: most hosts tracked at once (C{int} >= 1).
        @raise ValueError: a parameter out of range.
        """
        self.rate, self.burst = _check(rate, burst)
        _check_count("max_sources", max_sources)
        self.max_sources = max_sources
        self._clock = clock
        self._sources: OrderedDict[str, TokenBucket] = OrderedDict()
        self._overflow = TokenBucket(self.rate, self.burst, clock)

    @property
    def unlimited(self) -> bool:
        """
        C{True} when C{rate} is 0: L{allow} always says yes.
        """
        return not self.rate

    def __len__(self) -> int:
        """
        @return: how many hosts the table holds now.
        """
        return len(self._sources)

    def allow(self, host: str) -> bool:
        """
        Take one token from C{host}'s bucket if there is one.

        @param host: the source host of a datagram (C{str}, e.g.
            C{"192.0.2.1"} or C{"2001:db8::1"}); not the port.
        @return: C{True} if its datagram may be answered now, C{False} if
            it should be dropped. Always C{True} when unlimited.
        """
        if not self.rate:
            return True
        sources = self._sources
        bucket = sources.get(host)
        if bucket is None:
            if len(sources) >= self.max_sources and not self._make_room():
                return self._overflow.allow()
            bucket = sources[host] = TokenBucket(self.rate, self.burst, self._clock)
        else:
            sources.move_to_end(host)
        return bucket.allow()

    def _make_room(self) -> bool:
        """
        Forget the least recently seen host if its bucket is full (so
        forgetting it loses nothing). At most one entry is looked at, so a
        new host costs O(1) however full the table is.

        @return: C{True} if there is now room for one more host.
        """
        sources = self._sources
        host, bucket = next(iter(sources.items()))
        if bucket.full(self._clock.seconds()):
            del sources[host]
            return True
        return False
