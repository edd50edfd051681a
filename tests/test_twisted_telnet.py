"""
Tests for L{twisted_echo._twisted.telnet}: conch's bound on a telnet
subnegotiation, and the welcome service's own where conch has none.
"""

from __future__ import annotations

from twisted.conch import telnet
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from tests.memory import connect
from twisted_echo._twisted.telnet import (
    DEFAULT_BOUND,
    BoundedTelnetTransport,
    conch_bound_misfit,
    max_subnegotiation_length,
)
from twisted_echo.policies.limits import Timeouts
from twisted_echo.services.welcome import Welcome, WelcomeFactory

#: Whether the installed conch bounds a subnegotiation (not on Twisted 24.7).
CONCH_BOUNDED = hasattr(telnet.Telnet, "_MAX_SUBNEGOTIATION_LENGTH")

ERROR = (
    b"ERROR: telnet subnegotiation too long (over 4096 bytes); closing connection\r\n"
)


class ConchBoundTests(SynchronousTestCase):
    """
    conch bounds a subnegotiation and calls its hook past the bound; when
    it does not, the welcome service bounds it the same way.
    """

    def set_conch_bound(self, bound: object) -> None:
        """
        Give conch's L{telnet.Telnet} C{bound} until the test ends (on
        Twisted 24.7, which has none, then take it away again).
        """
        name = "_MAX_SUBNEGOTIATION_LENGTH"
        if name in vars(telnet.Telnet):
            self.addCleanup(setattr, telnet.Telnet, name, vars(telnet.Telnet)[name])
        else:
            self.addCleanup(
                lambda: name in vars(telnet.Telnet) and delattr(telnet.Telnet, name)
            )
        setattr(telnet.Telnet, name, bound)

    def answer_to_overlong_subnegotiation(self) -> bytes:
        factory = WelcomeFactory(Clock(), timeouts=Timeouts(idle=0))
        protocol, transport = connect(factory, Welcome)
        protocol.dataReceived(telnet.IAC + telnet.SB)
        protocol.dataReceived(b"x" * 5000)
        self.assertTrue(transport.disconnecting)
        return transport.value().split(b"\r\n", 1)[1]  # type: ignore[no-any-return]

    def test_installed_twisted_fits(self) -> None:
        """
        The installed Twisted's conch calls C{_subnegotiationLengthExceeded}
        past its 4096-byte bound; this fails first when a Twisted release
        changes that. (Twisted 24.7, the floor, has no bound: there the
        check says so.)
        """
        if CONCH_BOUNDED:
            self.assertIsNone(conch_bound_misfit())
        else:
            self.assertEqual(
                conch_bound_misfit(), "conch's Telnet has no subnegotiation bound"
            )
        self.assertEqual(max_subnegotiation_length(), 4096)

    def test_overlong_subnegotiation_answered(self) -> None:
        """
        A welcome client sending a subnegotiation of 5000 bytes gets one
        error line and the connection closes.
        """
        self.assertTrue(self.answer_to_overlong_subnegotiation().endswith(ERROR))

    def test_changed_twisted_falls_back(self) -> None:
        """
        On a conch without a usable bound (a bound of 10 MB, as good as
        none; or none at all, as on Twisted 24.7), the check says so, the
        bound is 4096 bytes, and a welcome client sending 5000 bytes gets
        the same error line from the service's own bound.
        """
        self.set_conch_bound(10_000_000)
        self.assertEqual(
            conch_bound_misfit(), "conch's subnegotiation bound is 10000000 bytes"
        )
        self.assertTrue(self.answer_to_overlong_subnegotiation().endswith(ERROR))
        self.set_conch_bound(None)
        self.assertEqual(
            conch_bound_misfit(), "conch's Telnet has no subnegotiation bound"
        )
        self.assertEqual(max_subnegotiation_length(), DEFAULT_BOUND)


class _Recording(BoundedTelnetTransport):
    def __init__(self) -> None:
        super().__init__()
        self.too_long = 0

    def subnegotiation_too_long(self) -> None:
        self.too_long += 1


class BoundedTelnetTransportTests(SynchronousTestCase):
    """
    L{BoundedTelnetTransport}: a subnegotiation past the bound reaches the
    public hook, through conch's private one or the read-by-read bound.
    """

    def feed(self, size: int) -> _Recording:
        layer = _Recording()
        layer.makeConnection(StringTransport())
        layer.dataReceived(telnet.IAC + telnet.SB + b"\x18" + b"a" * (size - 1))
        layer.bound_subnegotiation()
        return layer

    def test_past_the_bound(self) -> None:
        self.assertGreaterEqual(
            self.feed(BoundedTelnetTransport.max_subnegotiation + 1).too_long, 1
        )

    def test_within_the_bound(self) -> None:
        self.assertEqual(
            self.feed(BoundedTelnetTransport.max_subnegotiation).too_long, 0
        )
