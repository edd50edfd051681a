# -*- test-case-name: tests.test_twisted_telnet -*-
"""
conch's bound on a telnet subnegotiation: C{telnet.Telnet}'s private
C{_MAX_SUBNEGOTIATION_LENGTH} (bytes between C{IAC SB} and C{IAC SE}) and
its hook C{_subnegotiationLengthExceeded}, called when a peer goes past it
(Twisted releases after 24.7; 24.7's conch holds a subnegotiation without
bound). The welcome service's telnet layer answers past the same bound
with an error line and a close (L{twisted_echo.services.welcome}).

L{BoundedTelnetTransport}, the welcome service's telnet layer's base,
overrides the hook and calls its public C{subnegotiation_too_long}
instead.

L{conch_bound_misfit} checks, by feeding a L{telnet.Telnet} a
subnegotiation one byte longer than the bound, that conch calls the hook.
Where it does not fit, L{max_subnegotiation_length} is 4096 (conch's
figure) and the layer applies the bound itself after each read
(L{BoundedTelnetTransport.bound_subnegotiation}).
"""

from __future__ import annotations

from typing import Any, ClassVar

from twisted.conch import telnet
from twisted.internet.testing import StringTransport

__all__ = [
    "DEFAULT_BOUND",
    "BoundedTelnetTransport",
    "conch_bound_misfit",
    "max_subnegotiation_length",
]

#: conch's bound where it has none of its own (bytes).
DEFAULT_BOUND = 4096
#: The largest bound L{conch_bound_misfit} feeds conch to check (bytes).
MOST_CHECKED = 1 << 20


def max_subnegotiation_length() -> int:
    """
    @return: the most bytes a telnet subnegotiation may hold: conch's
        C{_MAX_SUBNEGOTIATION_LENGTH}, or L{DEFAULT_BOUND}.
    """
    bound = getattr(telnet.Telnet, "_MAX_SUBNEGOTIATION_LENGTH", DEFAULT_BOUND)
    return bound if type(bound) is int and bound > 0 else DEFAULT_BOUND


def conch_bound_misfit() -> str | None:
    """
    Check that conch's L{telnet.Telnet} calls C{_subnegotiationLengthExceeded}
    once a subnegotiation exceeds C{_MAX_SUBNEGOTIATION_LENGTH} (an C{int}
    up to L{MOST_CHECKED}), and not before.

    @return: L{None} when it does, else what does not fit.
    """
    bound = getattr(telnet.Telnet, "_MAX_SUBNEGOTIATION_LENGTH", None)
    if type(bound) is not int:
        return "conch's Telnet has no subnegotiation bound"
    if not 0 < bound <= MOST_CHECKED:
        return f"conch's subnegotiation bound is {bound} bytes"
    exceeded: list[bool] = []

    class Recording(telnet.Telnet):
        def _subnegotiationLengthExceeded(self) -> None:  # noqa: N802 (conch's name)
            exceeded.append(True)

    try:
        protocol: Any = Recording()  # type: ignore[no-untyped-call]
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(telnet.IAC + telnet.SB + b"\x18" + b"a" * (bound - 1))
        if exceeded:
            return "conch ends a subnegotiation before its bound"
        protocol.dataReceived(b"a" * 2)
    except Exception as error:
        return f"feeding conch's Telnet raised {error!r}"
    if not exceeded:
        return "conch does not call _subnegotiationLengthExceeded past its bound"
    return None


class BoundedTelnetTransport(telnet.TelnetTransport):
    """
    conch's L{telnet.TelnetTransport} with a bound on a subnegotiation
    (between C{IAC SB} and C{IAC SE}) that a subclass answers in
    L{subnegotiation_too_long}: through conch's private hook
    C{_subnegotiationLengthExceeded} where conch has the bound, else by
    L{bound_subnegotiation}, to be called after each read.
    """

    #: The most bytes a telnet subnegotiation may hold: conch's own bound,
    #: or the same figure on the Twisted releases (24.7...) whose conch has
    #: none.
    max_subnegotiation: ClassVar[int] = max_subnegotiation_length()

    def subnegotiation_too_long(self) -> None:
        """
        A subnegotiation went past L{max_subnegotiation} bytes. Subclasses
        answer it; by default, close the connection.
        """
        self.loseConnection()  # type: ignore[no-untyped-call]

    def _subnegotiationLengthExceeded(self) -> None:  # noqa: N802 (conch's name)
        # conch's hook for a subnegotiation past its bound (it would log and
        # drop the connection).
        self.subnegotiation_too_long()

    def bound_subnegotiation(self) -> None:
        """
        After a read: on a Twisted whose conch holds a subnegotiation
        without bound, answer one longer than L{max_subnegotiation} bytes
        as conch's bound does (L{subnegotiation_too_long}).
        """
        if (
            self.state.startswith("subnegotiation")
            and len(getattr(self, "commands", ())) > self.max_subnegotiation
        ):
            self.subnegotiation_too_long()
