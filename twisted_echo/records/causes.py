# -*- test-case-name: tests.test_records -*-
"""
How a connection ended: the close causes of a connection record, a fixed
vocabulary (issue 22; docs/testing.md lists them for people).

A record's cause is set once, by the first of:

 - the code that closes or aborts the connection for a reason of its own
   (a timeout, a limit, the drain, a fault), through
   L{twisted_echo.services.stream.StreamProtocol.set_close_cause} (or, for a
   connection the service never took, where it is refused);
 - otherwise, at close, from what Twisted reports (L{cause_of_loss}).
"""

from __future__ import annotations

from typing import Final

from twisted.internet.error import ConnectionDone, ConnectionLost

#: The client sent its FIN (stopped sending) and got every reply: the
#: clean end of an echo.
CLIENT_FIN: Final = "client_fin"
#: The client reset the connection (RST) with nothing left owed to it.
CLIENT_RESET: Final = "client_reset"
#: The client went away (reset, or our writes failed) while replies were
#: still queued for it.
CLIENT_LEFT_UNSENT: Final = "client_left_unsent"
#: The service ended the connection itself once its work was done (whoami
#: after its answer, welcome's C{quit}): not in the issue's list, added so
#: that those ends are not misnamed.
SERVICE_CLOSE: Final = "service_close"
#: No traffic for C{--idle-timeout} seconds.
IDLE_TIMEOUT: Final = "idle_timeout"
#: A welcome line not finished within C{--line-timeout} seconds.
LINE_TIMEOUT: Final = "line_timeout"
#: The peer took none of what it was owed for C{--stall-timeout} seconds.
STALL_TIMEOUT: Final = "stall_timeout"
#: No TLS handshake within C{--handshake-timeout} seconds.
HANDSHAKE_TIMEOUT: Final = "handshake_timeout"
#: No PROXY header within 5 s on a C{haproxy:} listener.
PROXY_HEADER_TIMEOUT: Final = "proxy_header_timeout"
#: A PROXY header missing, malformed, oversized or cut short: not in the
#: issue's list (it is no timeout), added.
PROXY_HEADER_INVALID: Final = "proxy_header_invalid"
#: Refused by a limit; the record's C{limit} names it (C{max_connections},
#: C{max_per_peer}, C{max_line}).
LIMIT_REFUSAL: Final = "limit_refusal"
#: The TLS layer failed the connection (the peer's bytes were not TLS, no
#: common version or cipher, a certificate refused): not in the issue's
#: list, added.
TLS_ERROR: Final = "tls_error"
#: Ended while the memory budget (C{--max-buffer}) had stopped reading it:
#: a welcome line the budget could not admit more of, then its line (or
#: idle) timeout fired (L{twisted_echo.policies.budget.MemoryBudget.holds_back}).
#: The budget itself never closes a connection; this names why it could not
#: finish its line.
MEMORY_BUDGET: Final = "memory_budget"
#: Ended by a fault profile (C{--faults}: C{close-after}, C{reset-after},
#: C{half-close-after}, C{blackhole}; set by L{twisted_echo.faults.engine}).
FAULT: Final = "fault"
#: Closed or aborted by the drain at shutdown (SIGTERM, C{--drain-timeout}).
DRAIN: Final = "drain"
#: sockecho failed: an exception in the service's code.
SERVER_ERROR: Final = "server_error"
#: A UDP peer flow (L{twisted_echo.records.flows}) ended: its source sent
#: nothing for C{--udp-flow-window} seconds. Not in the issue's list (a
#: datagram flow has no close), added.
UDP_FLOW_IDLE: Final = "udp_flow_idle"
#: A UDP peer flow ended early because its listener held C{--udp-flows}
#: live flows and a new source arrived (the least recently seen ends).
#: Added, as L{UDP_FLOW_IDLE}. (A UDP flow live at shutdown ends with
#: L{DRAIN}.)
UDP_FLOW_EVICTED: Final = "udp_flow_evicted"

#: Every cause, in the order docs/testing.md lists them.
CAUSES: Final = (
    CLIENT_FIN,
    CLIENT_RESET,
    CLIENT_LEFT_UNSENT,
    SERVICE_CLOSE,
    IDLE_TIMEOUT,
    LINE_TIMEOUT,
    STALL_TIMEOUT,
    HANDSHAKE_TIMEOUT,
    PROXY_HEADER_TIMEOUT,
    PROXY_HEADER_INVALID,
    LIMIT_REFUSAL,
    TLS_ERROR,
    MEMORY_BUDGET,
    FAULT,
    DRAIN,
    SERVER_ERROR,
    UDP_FLOW_IDLE,
    UDP_FLOW_EVICTED,
)


def cause_of_loss(
    reason_type: type[BaseException] | None, peer_finished: bool, owed: bool
) -> str:
    """
    The cause of a connection no code closed for a reason of its own.

    @param reason_type: the type of the exception Twisted's
        C{connectionLost} reported (C{ConnectionDone}, C{ConnectionLost},
        ...), or L{None}.
    @param peer_finished: whether the peer had sent its FIN.
    @param owed: whether replies were still queued for the peer.
    @return: one of L{CAUSES}: L{CLIENT_FIN} or L{SERVICE_CLOSE} for a clean
        close, L{CLIENT_LEFT_UNSENT} or L{CLIENT_RESET} for a lost one,
        L{SERVER_ERROR} for anything else (an exception in sockecho).
    """
    if reason_type is None or issubclass(reason_type, ConnectionDone):
        return CLIENT_FIN if peer_finished else SERVICE_CLOSE
    if issubclass(reason_type, (ConnectionLost, OSError)):
        # ConnectionLost: a reset, a failed write (EPIPE), or an abort no
        # code gave a cause for; ConnectionAborted is one of its kinds.
        return CLIENT_LEFT_UNSENT if owed else CLIENT_RESET
    if reason_type.__module__.startswith("OpenSSL"):
        return TLS_ERROR
    return SERVER_ERROR
