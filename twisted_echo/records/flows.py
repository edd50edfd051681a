# -*- test-case-name: tests.test_flows -*-
"""
Records of UDP peer flows (issue 22: "and per UDP peer flow, a source
address+port seen within a window").

A flow is what one UDP listener saw from one source C{(host, port)} with no
silence longer than the window (C{--udp-flow-window}, L{DEFAULT_WINDOW}
seconds): its first datagram starts it; it ends, and its record goes to
the ring (L{twisted_echo.records.ring.RecordRing}: C{/records}, the JSON
log, the fixtures), when

 - the source has been silent for the window (cause L{causes.UDP_FLOW_IDLE});
 - the listener already holds C{--udp-flows} live flows and a new source
   arrives: the oldest flow (the first started) ends (L{causes.UDP_FLOW_EVICTED}),
   so a flood of spoofed sources cannot grow memory past the bound;
 - the listener stops (shutdown; L{causes.DRAIN}).

Memory: a live flow costs about L{FLOW_BYTES} bytes (its object, its key,
the table's entry, a C{dropped} dictionary; C{sys.getsizeof} summed,
CPython 3.11), so the default bound of L{DEFAULT_FLOWS} flows is about
2.5 MB per UDP listener, outside C{--max-buffer}.

Cost per datagram: one dictionary look-up, one clock reading and a few
additions, inline in the listener; one timer per listener (not per flow)
ends the silent flows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from twisted_echo.records import causes
from twisted_echo.records.record import ConnectionRecord

#: C{--udp-flow-window}'s default: seconds of silence that end a flow.
DEFAULT_WINDOW = 30.0
#: C{--udp-flows}' default: live flows one UDP listener keeps at most.
DEFAULT_FLOWS = 4096
#: About the bytes one live flow costs (C{tests.test_flows} measures it).
FLOW_BYTES = 600


class Flow:
    """
    One live flow's counts.

    @ivar start: when its first datagram arrived, seconds since the epoch.
    @ivar last: when its last datagram arrived.
    @ivar first_out: when its first reply left, or L{None}.
    @ivar datagrams_in: datagrams received.
    @ivar bytes_in: their bytes.
    @ivar datagrams_out: replies sent.
    @ivar bytes_out: their bytes.
    @ivar dropped: datagrams not answered, by reason (the
        L{twisted_echo.services.udp.UDPEcho} C{counters.dropped} reasons:
        C{loop_port}, C{own_port}, C{rate_source}, C{rate_global},
        C{send_error}: the kernel refused the reply, too large among others;
        C{fault_loss}: a C{--faults} C{loss}), or L{None} while none were
        dropped.
    @ivar faults: the names of the faults its replies had, or L{None}.
    """

    __slots__ = (
        "start",
        "last",
        "first_out",
        "datagrams_in",
        "bytes_in",
        "datagrams_out",
        "bytes_out",
        "dropped",
        "faults",
    )

    def __init__(self, now: float) -> None:
        self.start = now
        self.last = now
        self.first_out: float | None = None
        self.datagrams_in = 0
        self.bytes_in = 0
        self.datagrams_out = 0
        self.bytes_out = 0
        self.dropped: dict[str, int] | None = None
        self.faults: set[str] | None = None

    def drop(self, reason: str) -> None:
        """
        Count one datagram not answered, for C{reason}.
        """
        dropped = self.dropped
        if dropped is None:
            dropped = self.dropped = {}
        dropped[reason] = dropped.get(reason, 0) + 1

    def faulted(self, names: Iterable[str], size: int) -> None:
        """
        The reply of C{size} bytes to this flow's last datagram, not yet
        counted as sent, had the faults C{names} (C{--faults udp=...},
        L{twisted_echo.faults.datagrams}). With C{loss} it is counted not
        answered (C{dropped["fault_loss"]}) instead of sent.
        """
        names = set(names)
        if self.faults is None:
            self.faults = names
        else:
            self.faults |= names
        if "loss" in names:
            self.drop("fault_loss")
            # The listener counts the reply as sent when its send returns.
            self.datagrams_out -= 1
            self.bytes_out -= size

    def sent(self, size: int) -> None:
        """
        Count one reply of C{size} bytes, sent as its datagram arrived (the
        listener does it inline).
        """
        self.datagrams_out += 1
        self.bytes_out += size
        if self.first_out is None and self.datagrams_out:
            self.first_out = self.last


def _client_text(addr: Any) -> str:
    host, port = addr[0], addr[1]
    if ":" in host:
        return "udp:{}:{}".format(host.replace(":", "\\:"), port)
    return f"udp:{host}:{port}"


class FlowTable:
    """
    The live flows of one UDP listener, in the order they started.

    The listener counts each datagram in its flow itself (the fast path of
    L{twisted_echo.services.udp.UDPEcho.datagramReceived}: L{live}'s
    C{get}, one clock reading, a few additions); L{start} makes a new one.

    @ivar service: the service's name (C{udp}, C{whoami-udp}...).
    @ivar listener: the listener's address as an endpoint description
        (C{udp:127.0.0.1:7007}), set once it listens.
    @ivar window: seconds of silence that end a flow (more than 0).
    @ivar most: live flows kept at most (at least 1).
    @ivar live: the live flows by source C{(host, port)}, the oldest
        started first.
    @ivar seconds: the clock's C{seconds}.
    """

    def __init__(
        self,
        service: str,
        ring: Any,
        clock: IReactorTime,
        window: float = DEFAULT_WINDOW,
        most: int = DEFAULT_FLOWS,
    ) -> None:
        """
        @param service: the service's name, for the records.
        @param ring: where ended flows' records go (a
            L{twisted_echo.records.ring.RecordRing}: its C{add}).
        @param clock: the reactor's clock (C{seconds}, C{callLater}).
        @param window: seconds of silence that end a flow.
        @param most: live flows kept at most.
        @raise ValueError: for a window not above 0 or fewer than 1 flow.
        """
        if not window > 0:
            raise ValueError(
                f"a flow window is a number of seconds above 0, not {window!r}"
            )
        if most < 1:
            raise ValueError(f"a flow table keeps at least 1 flow, not {most!r}")
        self.service = service
        self.listener = ""
        self.window = window
        self.most = most
        self.clock = clock
        self.seconds = clock.seconds
        self.live: dict[Any, Flow] = {}
        self._ring = ring
        self._timer: IDelayedCall | None = None

    def __len__(self) -> int:
        return len(self.live)

    def start(self, addr: Any) -> Flow:
        """
        Start the flow of a source that has none live (the caller counts
        its datagram); when L{most} are live, the oldest started ends first
        (L{causes.UDP_FLOW_EVICTED}).

        @param addr: the source, C{(host, port)}.
        @return: its new flow.
        """
        now = self.clock.seconds()
        live = self.live
        if len(live) >= self.most:
            oldest = next(iter(live))
            self._end(oldest, live.pop(oldest), causes.UDP_FLOW_EVICTED, now)
        flow = live[addr] = Flow(now)
        if self._timer is None:
            self._timer = self.clock.callLater(self.window, self._sweep)
        return flow

    def seen(self, addr: Any, size: int) -> Flow:
        """
        Count a datagram of C{size} bytes from C{addr} (what the listener
        does inline).

        @return: its flow.
        """
        flow = self.live.get(addr)
        if flow is None:
            flow = self.start(addr)
        flow.last = self.seconds()
        flow.datagrams_in += 1
        flow.bytes_in += size
        return flow

    def end_all(self, cause: str = causes.DRAIN) -> None:
        """
        End every live flow with C{cause} (the listener stops), the oldest
        started first.
        """
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        now = self.clock.seconds()
        live, self.live = self.live, {}
        for addr, flow in live.items():
            self._end(addr, flow, cause, now)

    def _sweep(self) -> None:
        """
        End the flows silent for the window; come back when the next one
        will be (at most every quarter window, so that a sweep, which reads
        every live flow, stays rare).
        """
        self._timer = None
        now = self.clock.seconds()
        window = self.window
        ended = [(a, f) for a, f in self.live.items() if now - f.last >= window]
        for addr, flow in ended:
            del self.live[addr]
            self._end(addr, flow, causes.UDP_FLOW_IDLE, flow.last + window)
        if self.live:
            due = min(f.last for f in self.live.values()) + window
            self._timer = self.clock.callLater(max(due - now, window / 4), self._sweep)

    def _end(self, addr: Any, flow: Flow, cause: str, end: float) -> None:
        self._ring.add(self.record(addr, flow, cause, end))

    def record(self, addr: Any, flow: Flow, cause: str, end: float) -> ConnectionRecord:
        """
        @param addr: the flow's source, C{(host, port)}.
        @param flow: its counts.
        @param cause: how it ended (L{causes.UDP_FLOW_IDLE}...).
        @param end: when it ended, seconds since the epoch (for an idle
            flow, its last datagram and the window: the duration counts
            the silence that ended it).
        @return: its record: C{transport} C{"udp"}, C{reads_in} and
            C{writes_out} the datagrams in and out, C{dropped} the
            datagrams not answered by reason, C{last_seen} the seconds from
            C{start} to its last datagram.
        """
        listener = self.listener
        record = ConnectionRecord(
            self.service,
            listener,
            _client_text(addr),
            None,
            listener,
            None,
            flow.start,
            0.0,
            None if flow.first_out is None else flow.first_out - flow.start,
            max(0.0, end - flow.start),
            flow.bytes_in,
            flow.bytes_out,
            flow.datagrams_in,
            flow.datagrams_out,
            None,
            cause,
        )
        record.transport = "udp"
        record.dropped = dict(flow.dropped) if flow.dropped else {}
        record.last_seen = flow.last - flow.start
        if flow.faults:
            record.faults = sorted(flow.faults)
        return record
