# -*- test-case-name: tests.test_welcome -*-
"""
Welcome: a banner line on connect, then C{OK...} and the line for every line
received.

Lines end in C{\\n} or C{\\r\\n} (netcat, telnet); replies end in C{\\r\\n}
(RFC 854's NVT end of line). Telnet commands and option negotiation
(RFC 854, C{IAC ...}) are parsed by L{twisted.conch.telnet.Telnet}: they are
answered as telnet requires (every option refused) and never echoed as text.
A line longer than the limit, or one not finished within the line timeout
(a client trickling bytes), gets one error line, then the connection closes.
"""

from __future__ import annotations

from typing import ClassVar

from twisted.conch import telnet
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.protocols import basic
from twisted.python.failure import Failure

from twisted_echo.counters import ServiceCounters
from twisted_echo.idle import cancel_call
from twisted_echo.limits import ConnectionLimits, Timeouts
from twisted_echo.stream import StreamFactory, StreamProtocol

DEFAULT_BANNER = "Welcome to the server. Type something and hit enter"
DEFAULT_MAX_LINE = 16384
_EOL = b"\r\n"


def _reply(line: bytes) -> bytes:
    """
    @param line: a line received, without its LF (a CR before it is dropped).
    @return: the welcome service's answer, C{OK...line} and CR LF, with
        each 0xFF byte doubled (RFC 854: IAC IAC is the data byte 255).
    """
    if line[-1:] == b"\r":
        line = line[:-1]
    return b"OK..." + line.replace(telnet.IAC, telnet.IAC * 2) + _EOL


class Welcome(StreamProtocol, telnet.Telnet, basic.LineReceiver):
    """
    The welcome service's protocol, with half-close and flow control (see
    L{twisted_echo.stream}): replies to every line received before the peer
    half-closed are delivered, and a last line without an end of line is
    answered too.
    """

    factory: WelcomeFactory
    delimiter = b"\n"

    def __init__(self) -> None:
        StreamProtocol.__init__(self)
        telnet.Telnet.__init__(self)
        self.MAX_LENGTH = basic.LineReceiver.MAX_LENGTH
        self._line_call: IDelayedCall | None = None
        self._partial = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self.MAX_LENGTH = self.factory.max_line
        self.send(self.factory.banner.replace(telnet.IAC, telnet.IAC * 2) + _EOL)

    def handle_data(self, data: bytes) -> None:
        """
        Strip telnet commands from C{data} and pass the text on as lines.
        Nothing is answered once the connection is closing.
        """
        if self._closing:
            return
        if self.state == "data" and telnet.IAC not in data:
            # Fast path, same result as the telnet parser: no command, and
            # CR only as part of CR LF (the parser turns CR LF into LF).
            if b"\r" not in data:
                self.applicationDataReceived(data)
                return
            if data.count(b"\r") == data.count(b"\r\n"):
                self.applicationDataReceived(data.replace(b"\r\n", b"\n"))
                return
        try:
            telnet.Telnet.dataReceived(self, data)
        except ValueError:
            # Telnet.dataReceived raises on a byte after IAC that no telnet
            # command uses.
            self.send(b"ERROR: malformed telnet command (IAC sequence)" + _EOL)
            self.close()

    def applicationDataReceived(self, data: bytes) -> None:
        """
        Text from the telnet parser: split it into lines, and time the line
        left unfinished, if any (from the chunk it started in).
        """
        if self._closing:
            return
        if not self._partial and data[-1:] == b"\n" and len(data) <= self.MAX_LENGTH:
            # Fast path: whole lines, each within the limit, nothing buffered:
            # answer them all in one write, as LineReceiver would one by one.
            if data.count(b"\n") == 1:
                self.send(_reply(data[:-1]))
            else:
                self.send(b"".join(map(_reply, data.split(b"\n")[:-1])))
            return
        was_partial = self._partial
        basic.LineReceiver.dataReceived(self, data)
        if self._closing:
            return
        self._partial = not data.endswith(b"\n")
        if not self._partial:
            self._cancel_line_timeout()
        elif not was_partial or b"\n" in data:
            # A new line started in this chunk: it is timed from now.
            self._cancel_line_timeout()
            if self.factory.timeouts.line:
                self._line_call = self.callLater(
                    self.factory.timeouts.line, self._line_timed_out
                )

    def _write(self, data: bytes) -> None:
        # Telnet's replies to option requests: counted, and not sent once
        # the connection is closing.
        if not self._closing:
            self.send(data)

    def _cancel_line_timeout(self) -> None:
        call, self._line_call = self._line_call, None
        cancel_call(call)

    def _line_timed_out(self) -> None:
        self._line_call = None
        self.factory.counters.timeouts["line"] += 1
        self.send(
            b"ERROR: line not finished within %g s; closing connection%s"
            % (self.factory.timeouts.line, _EOL)
        )
        self.close()

    def lineReceived(self, line: bytes) -> None:
        """
        Answer one line (bytes, without its end of line) with C{OK...line}.
        """
        self.send(_reply(line))

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        Answer a line over the limit with one error line and close.
        """
        self.send(
            b"ERROR: line too long (over %d bytes); closing connection%s"
            % (self.MAX_LENGTH, _EOL)
        )
        self.close()

    def end_of_input(self) -> None:
        """
        Answer a last line that the peer ended with EOF instead of C{\\n}.
        """
        self._cancel_line_timeout()
        rest: bytes = basic.LineReceiver.clearLineBuffer(self)
        if rest and not self.transport.disconnecting:  # type: ignore[union-attr]
            self.lineReceived(rest)

    def close(self) -> None:
        self._cancel_line_timeout()
        StreamProtocol.close(self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._cancel_line_timeout()
        StreamProtocol.connectionLost(self, reason)


class WelcomeFactory(StreamFactory):
    """
    Builds L{Welcome} protocols and holds their settings.

    @ivar banner: the first line sent on connect (bytes, UTF-8, no EOL).
    @ivar max_line: the longest line accepted, in bytes, without its EOL.
    """

    protocol = Welcome
    service_name = "welcome"
    refusal_line: ClassVar[bool] = True

    def __init__(
        self,
        clock: IReactorTime,
        counters: ServiceCounters | None = None,
        limits: ConnectionLimits | None = None,
        timeouts: Timeouts | None = None,
        banner: str = DEFAULT_BANNER,
        max_line: int = DEFAULT_MAX_LINE,
    ) -> None:
        super().__init__(clock, counters, limits, timeouts)
        self.banner = banner.encode("utf-8")
        self.max_line = max_line
