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
   arrives: the flow seen least recently ends (L{causes.UDP_FLOW_EVICTED}),
   so a flood of spoofed sources cannot grow memory past the bound;
 - the listener stops (shutdown; L{causes.DRAIN}).

Memory: a live flow costs about L{FLOW_BYTES} bytes (its object, its key
and the table's entry; C{sys.getsizeof} summed, CPython 3.11), so the
default bound of L{DEFAULT_FLOWS} flows is about 2.5 MB per UDP listener,
outside C{--max-buffer}.

Cost per datagram: one dictionary look-up (C{move_to_end} to keep the
least recently seen first) and a few additions; one timer per listener
(not per flow) ends the silent flows.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from twisted_echo.records import causes
from twisted_echo.records.record import ConnectionRecord

#: C{--udp-flow-window}'s default: seconds of silence that end a flow.
DEFAULT_WINDOW = 30.0
#: C{--udp-flows}' default: live flows one UDP listener keeps at most.
DEFAULT_FLOWS = 4096
#: About the bytes one live flow costs (L{tests.test_flows} measures it).
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
        C{send_error}: the kernel refused the reply, too large among others),
        or L{None} while none were dropped.
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

    def drop(self, reason: str) -> None:
        """
        Count one datagram not answered, for C{reason}.
        """
        dropped = self.dropped
        if dropped is None:
            dropped = self.dropped = {}
        dropped[reason] = dropped.get(reason, 0) + 1

    def sent(self, size: int, now: float) -> None:
        """
        Count one reply of C{size} bytes sent at C{now}.
        """
        if self.first_out is None:
            self.first_out = now
        self.datagrams_out += 1
        self.bytes_out += size


def _client_text(addr: Any) -> str:
    host, port = addr[0], addr[1]
    if ":" in host:
        return "udp:{}:{}".format(host.replace(":", "\\:"), port)
    return f"udp:{host}:{port}"


class FlowTable:
    """
    The live flows of one UDP listener, the least recently seen first.

    @ivar service: the service's name (C{udp}, C{whoami-udp}...).
    @ivar listener: the listener's address as an endpoint description
        (C{udp:127.0.0.1:7007}), set once it listens.
    @ivar window: seconds of silence that end a flow (more than 0).
    @ivar most: live flows kept at most (at least 1).
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
        self._ring = ring
        self._flows: OrderedDict[Any, Flow] = OrderedDict()
        self._timer: IDelayedCall | None = None

    def __len__(self) -> int:
        return len(self._flows)

    def seen(self, addr: Any, size: int) -> Flow:
        """
        Count a datagram of C{size} bytes from C{addr}.

        @param addr: its source, C{(host, port)}.
        @return: its flow (new if the source had none live: the least
            recently seen flow ends first when the table is full).
        """
        now = self.clock.seconds()
        flows = self._flows
        flow = flows.get(addr)
        if flow is None:
            if len(flows) >= self.most:
                self._end(*flows.popitem(last=False), causes.UDP_FLOW_EVICTED, now)
            flow = flows[addr] = Flow(now)
            if self._timer is None:
                self._timer = self.clock.callLater(self.window, self._sweep)
        else:
            flows.move_to_end(addr)
            flow.last = now
        flow.datagrams_in += 1
        flow.bytes_in += size
        return flow

    def end_all(self, cause: str = causes.DRAIN) -> None:
        """
        End every live flow with C{cause} (the listener stops), the least
        recently seen first.
        """
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        now = self.clock.seconds()
        flows = self._flows
        while flows:
            self._end(*flows.popitem(last=False), cause, now)

    def _sweep(self) -> None:
        self._timer = None
        now = self.clock.seconds()
        flows = self._flows
        window = self.window
        while flows:
            addr, flow = next(iter(flows.items()))
            if now - flow.last < window:
                self._timer = self.clock.callLater(
                    flow.last + window - now, self._sweep
                )
                return
            del flows[addr]
            self._end(addr, flow, causes.UDP_FLOW_IDLE, flow.last + window)

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
        return record
