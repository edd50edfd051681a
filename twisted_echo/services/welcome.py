# -*- test-case-name: tests.test_welcome -*-
"""
Welcome: a banner line on connect, then C{OK...} and the line for every line
received.

Lines end in C{\\n} or C{\\r\\n} (netcat, telnet); replies end in C{\\r\\n}
(RFC 854's NVT end of line). A line longer than the limit, or one not
finished within the line timeout (a client trickling bytes), gets one error
line, then the connection closes; nothing is answered after an error line.

Three layers, each a plain Twisted protocol:

 - L{Welcome}, the connection's protocol: a L{StreamProtocol} (half-close,
   flow control, limits, accounting). It hands what it reads to
 - conch's L{telnet.TelnetTransport} (RFC 854 both ways): telnet commands
   and option negotiation are taken out of the input and answered (every
   option refused), never echoed as text; the text it passes on, and the
   text written back, are in telnet's form (0xFF doubled as C{IAC IAC},
   C{LF} sent as C{CR LF}). Its own transport is a L{_ConnectionWriter},
   which writes with L{Welcome.send} and closes with L{Welcome.close}.
 - L{WelcomeLines}, a L{basic.LineReceiver}: the banner, the C{OK...}
   replies, the line limit and the line timeout.

Shortcuts give conch's result without its byte-by-byte parser for the
common cases (the tests check them against conch over every byte value and
chunking): L{Welcome.handle_data} answers a read of exactly one line with no
telnet command at once, passes other reads without a command straight to
the line layer, and of a read with commands gives conch only the commands
(L{Welcome.split_commands}); L{WelcomeLines.dataReceived} answers all the
whole lines of a read in one write.

Telnet commands cost conch's parser and negotiation a few microseconds each,
so each connection may send L{TELNET_COMMAND_RATE} per second (after a burst
of L{TELNET_COMMAND_BURST}); past that it gets an error line and is closed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from twisted.conch import telnet
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.protocols import basic
from twisted.python.failure import Failure

from twisted_echo._twisted.linereceiver import unfinished_line_bytes
from twisted_echo._twisted.telnet import BoundedTelnetTransport
from twisted_echo.policies.budget import MemoryBudget
from twisted_echo.policies.counters import ServiceCounters
from twisted_echo.policies.idle import cancel_call
from twisted_echo.policies.limits import ConnectionLimits, Timeouts
from twisted_echo.policies.ratelimit import TokenBucket
from twisted_echo.records import causes
from twisted_echo.services.stream import StreamFactory, StreamProtocol

DEFAULT_BANNER = "Welcome to the server. Type something and hit enter"
DEFAULT_MAX_LINE = 16384
#: Telnet commands (IAC sequences, an escaped 0xFF data byte excepted) one
#: connection may send per second on average, and at once: a telnet client
#: negotiates a few dozen options on connect. Each command costs conch's
#: parser and negotiation 3 to 5 us of server CPU (a flood of C{IAC DO}
#: cost 2.7 s per MB, against 0.01 s for plain lines, and starved every
#: other connection), so past this a connection gets an error line and is
#: closed, before the read over it is parsed.
TELNET_COMMAND_RATE = 100
TELNET_COMMAND_BURST = 1000

#: IAC and CR as integers: C{255 in data} is one C{memchr}, where
#: C{b"\xff" in data} first tries its operand as an integer and clears the
#: C{TypeError}: 43 against 224 ns per 1 KiB read (CPython 3.11).
_IAC_CODE = telnet.IAC[0]
_CR_CODE = ord(b"\r")
_ESCAPED_IAC = telnet.IAC + telnet.IAC
#: The codes after IAC of the commands that take an option byte (RFC 854:
#: WILL, WONT, DO, DONT), and of those that take none, as conch knows them.
_OPTION_COMMANDS = frozenset(
    code[0] for code in (telnet.WILL, telnet.WONT, telnet.DO, telnet.DONT)
)
_SHORT_COMMANDS = frozenset(
    code[0]
    for code in (
        telnet.EOR,
        telnet.NOP,
        telnet.DM,
        telnet.BRK,
        telnet.IP,
        telnet.AO,
        telnet.AYT,
        telnet.EC,
        telnet.EL,
        telnet.GA,
    )
)


#: Bytes per telnet command in a read below which L{Welcome.handle_data}
#: hands the whole read to conch's parser rather than to
#: L{Welcome.split_commands} (a call per command costs about what conch's
#: loop spends on 30 bytes).
_TEXT_PER_COMMAND = 32


def _text_of(raw: bytes) -> bytes | None:
    """
    @param raw: bytes read between telnet commands (no command in it, IAC
        only in C{IAC IAC} pairs), the parser being in its data state.
    @return: the text conch's parser makes of C{raw}: each C{CR LF} turned
        into C{LF}, each C{IAC IAC} into one 0xFF; L{None} when a CR is not
        followed by LF (conch's own rules for those apply).
    """
    text = raw
    if _CR_CODE in raw:
        text = raw.replace(b"\r\n", b"\n")
        if _CR_CODE in text:
            return None
    if _IAC_CODE in text:
        text = text.replace(_ESCAPED_IAC, telnet.IAC)
    return text


def telnet_commands(data: bytes) -> int:
    """
    Count the telnet commands in C{data}, bytes read from a peer.

    @return: the IAC bytes of C{data} that start a command (RFC 854): every
        IAC but those of C{IAC IAC} pairs (an escaped 0xFF data byte). A
        pair split between two reads counts as one command, which is all a
        rate limit needs.
    """
    return data.count(_IAC_CODE) - 2 * data.count(_ESCAPED_IAC)


class WelcomeLines(basic.LineReceiver, telnet.TelnetProtocol):
    """
    The welcome service's lines, above conch's telnet layer: C{bytes} in
    are telnet text (commands removed, C{CR LF} already turned into C{LF});
    what it writes is text too, which the telnet layer escapes (RFC 854).

    It sends the banner on connect, answers each line with C{OK...} and the
    line, and answers a line over C{factory.max_line} bytes, or one not
    finished C{factory.timeouts.line} seconds after its first byte, with
    one error line, then closes.

    @ivar in_line: whether the bytes of an unfinished line are held.
    """

    factory: WelcomeFactory
    delimiter = b"\n"

    def __init__(self) -> None:
        self.transport = None
        self.connected = 0
        self.MAX_LENGTH = DEFAULT_MAX_LINE
        self.in_line = False
        self._line_call: IDelayedCall | None = None

    def connectionMade(self) -> None:
        """
        Send the banner line.
        """
        self.MAX_LENGTH = self.factory.max_line
        self._write(self.factory.banner + b"\n")

    def _write(self, text: bytes) -> None:
        transport = self.transport
        assert transport is not None
        transport.write(text)

    def _closing(self) -> bool:
        return bool(self.transport.disconnecting)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        """
        Answer the lines in C{data} (telnet text); hold an unfinished last
        line until its end comes.

        Shortcut: the whole lines of C{data} (with the line held before),
        when none is over the limit, are answered in one write, as
        L{basic.LineReceiver} would one by one.
        """
        last = data.rfind(b"\n")
        if last < 0 or self._closing():
            self.split_lines(data)
            return
        whole = basic.LineReceiver.clearLineBuffer(self) + data[: last + 1]
        limit = self.MAX_LENGTH
        if len(whole) > limit + 1 and max(map(len, whole.split(b"\n"))) > limit:
            # A line over the limit: LineReceiver answers the lines before
            # it and reports it.
            self.split_lines(whole + data[last + 1 :])
            return
        was_in_line = self.in_line
        if _CR_CODE in whole:
            # Each reply drops one CR before the LF (see lineReceived).
            whole = whole.replace(b"\r\n", b"\n")
        self._write(b"OK..." + whole[:-1].replace(b"\n", b"\nOK...") + b"\n")
        rest = data[last + 1 :]
        if rest:
            basic.LineReceiver.dataReceived(self, rest)
        self._time_line(was_in_line, True, rest)

    def split_lines(self, data: bytes) -> None:
        """
        Answer the lines in C{data} (telnet text) one by one with
        L{basic.LineReceiver}, and time the line left unfinished, if any.
        """
        if self._closing():
            return
        was_in_line = self.in_line
        basic.LineReceiver.dataReceived(self, data)
        last = data.rfind(b"\n")
        self._time_line(was_in_line, last >= 0, data[last + 1 :])

    def _time_line(self, was_in_line: bool, finished: bool, rest: bytes) -> None:
        """
        After a read: C{finished} tells whether it ended a line, C{rest} is
        what it left of an unfinished line. A line is timed from the read
        that brought its first byte.
        """
        if self._closing():
            return
        self.in_line = bool(rest)
        if not self.in_line:
            self.stop_line_timer()
        elif finished or not was_in_line:
            timeout = self.factory.timeouts.line
            call = self._line_call
            if call is not None and call.active():
                call.reset(timeout)
            elif timeout:
                self._line_call = self.factory.clock.callLater(
                    timeout, self._line_timed_out
                )

    def unfinished_bytes(self) -> int:
        """
        @return: bytes of the unfinished line held (C{LineReceiver}'s
            buffer, L{twisted_echo._twisted.linereceiver}; 0 where that
            cannot be read).
        """
        return unfinished_line_bytes(self) or 0

    def stop_line_timer(self) -> None:
        """
        Stop timing the line in progress, if any.
        """
        call, self._line_call = self._line_call, None
        cancel_call(call)

    def _line_timed_out(self) -> None:
        self._line_call = None
        if self._closing():
            # Closing already (sending what is owed): no error line.
            return
        self.factory.counters.timeouts["line"] += 1
        writer = getattr(self.transport, "transport", None)
        if isinstance(writer, _ConnectionWriter) and writer.held_back():
            # Not the client's slow line: sockecho stopped reading it.
            self.set_close_cause(causes.MEMORY_BUDGET)
            why = b" (not read: --max-buffer spent)"
        else:
            self.set_close_cause(causes.LINE_TIMEOUT)
            why = b""
        self.error(
            b"line not finished within %g s%s; closing connection"
            % (self.factory.timeouts.line, why)
        )

    def lineReceived(self, line: bytes) -> None:
        """
        Answer one line (telnet text without its LF) with C{OK...line}; a CR
        just before the LF (a telnet client's literal C{CR NUL}) is dropped.
        """
        if line[-1:] == b"\r":
            line = line[:-1]
        self._write(b"OK..." + line + b"\n")

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        Answer a line over the limit with one error line and close.
        """
        self.set_close_cause(causes.LIMIT_REFUSAL, "max_line")
        self.error(
            b"line too long (over %d bytes); closing connection" % self.MAX_LENGTH
        )

    def set_close_cause(self, cause: str, limit: str | None = None) -> None:
        """
        Say why the welcome connection closes, for its record
        (L{Welcome.set_close_cause}, through the telnet layer's transport).
        """
        writer = getattr(self.transport, "transport", None)
        if isinstance(writer, _ConnectionWriter):
            writer.set_close_cause(cause, limit)

    def error(self, message: bytes) -> None:
        """
        Send C{ERROR: } and C{message} (ASCII, no end of line) as a line,
        then close the connection; nothing is sent after it.
        """
        self.stop_line_timer()
        self.in_line = False
        self._write(b"ERROR: " + message + b"\n")
        self.transport.loseConnection()  # type: ignore[union-attr]

    def input_ended(self) -> None:
        """
        The peer stopped sending: answer its last line if it did not end it.
        """
        self.stop_line_timer()
        self.in_line = False
        rest: bytes = basic.LineReceiver.clearLineBuffer(self)
        if rest and not self._closing():
            self.lineReceived(rest)

    def connectionLost(self, reason: Failure | None = None) -> None:
        """
        The connection is gone: stop timing the line in progress.
        """
        self.stop_line_timer()


class _TelnetLayer(BoundedTelnetTransport):
    """
    conch's L{telnet.TelnetTransport} between L{Welcome} and
    L{WelcomeLines}. As the line protocol's transport it is C{disconnecting}
    as soon as the connection is closing, so that no line is answered
    after that. A subnegotiation over C{max_subnegotiation} bytes gets an
    error line and a close (L{BoundedTelnetTransport}).
    """

    protocol: WelcomeLines | None

    def __init__(self) -> None:
        telnet.TelnetTransport.__init__(self)

    @property
    def disconnecting(self) -> bool:  # type: ignore[override]
        return bool(self.transport.disconnecting)  # type: ignore[union-attr]

    def subnegotiation_too_long(self) -> None:
        """
        An error line, then close.
        """
        if self.protocol is not None:
            self.protocol.error(
                b"telnet subnegotiation too long (over %d bytes); closing connection"
                % self.max_subnegotiation
            )

    def connect(self, writer: _ConnectionWriter, lines: WelcomeLines) -> None:
        """
        Connect to C{writer} below and C{lines} above (which sends the
        banner).
        """
        telnet.TelnetTransport.makeConnection(self, writer)
        self.protocol = lines
        basic.LineReceiver.makeConnection(lines, self)


class _ConnectionWriter:
    """
    The transport of the telnet layer: the welcome connection itself.
    What the telnet layer writes (replies, option refusals) goes out with
    L{Welcome.send}, unless the connection is closing; its
    C{loseConnection} (conch's, on a telnet protocol error, or the line
    protocol's after an error line) is L{Welcome.close}.
    """

    __slots__ = ("_connection",)

    def __init__(self, connection: Welcome) -> None:
        self._connection = connection

    @property
    def disconnecting(self) -> bool:
        return self._connection.closing

    def write(self, data: bytes) -> None:
        connection = self._connection
        if not connection.closing:
            connection.send(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self._connection.close()

    def set_close_cause(self, cause: str, limit: str | None = None) -> None:
        self._connection.set_close_cause(cause, limit)

    def held_back(self) -> bool:
        """
        @return: whether the memory budget stopped reading the connection
            (L{twisted_echo.policies.budget.MemoryBudget.holds_back}).
        """
        connection = self._connection
        return connection.factory.budget.holds_back(connection)

    def getPeer(self) -> IAddress:
        return self._connection.transport.getPeer()  # type: ignore[union-attr]

    def getHost(self) -> IAddress:
        return self._connection.transport.getHost()  # type: ignore[union-attr]


class Welcome(StreamProtocol):
    """
    The welcome service's connection: feeds what it reads (C{bytes}) to
    conch's telnet layer and so to L{WelcomeLines}, with half-close and
    flow control (see L{twisted_echo.services.stream}): replies to every line
    received before the peer half-closed are delivered, and a last line
    without an end of line is answered too.

    @cvar lines_protocol: the line protocol above the telnet layer.
    """

    factory: WelcomeFactory
    lines_protocol: ClassVar[type[WelcomeLines]] = WelcomeLines

    def __init__(self) -> None:
        super().__init__()
        self._lines = self.lines_protocol()
        self._telnet = _TelnetLayer()
        self._max_line = DEFAULT_MAX_LINE
        # True while nothing is pending: the telnet parser is between
        # commands, no unfinished line is held, the connection is open.
        self._between_lines = False
        # Bytes of unfinished line counted in the memory budget.
        self._held_line = 0
        # The telnet command rate limit's token bucket, made at the first
        # command (most connections send none).
        self._command_bucket: TokenBucket | None = None

    def on_open(self) -> None:
        """
        Connect the telnet and line layers and send the banner.
        """
        factory = self.factory
        self._max_line = factory.max_line
        lines, telnet_layer = self._lines, self._telnet
        lines.factory = factory
        telnet_layer.connect(_ConnectionWriter(self), lines)
        self._between_lines = not self.closing

    def timeoutConnection(self) -> None:
        """
        The idle timeout: as for any stream service, except while the
        memory budget stops reading the unfinished line (then the budget,
        not the client, left the connection idle: C{memory_budget}); the
        drain's own quiet timeout stays C{drain}.
        """
        factory = self.factory
        if (
            not self.closing
            and factory._draining is None
            and factory.budget.holds_back(self)
        ):
            self.set_close_cause(causes.MEMORY_BUDGET)
        super().timeoutConnection()

    def handle_data(self, data: bytes) -> None:
        """
        Answer C{data}, bytes read from the peer: telnet commands are
        answered by the telnet layer (RFC 854), the text goes to the line
        layer.

        Shortcuts, with the telnet parser's very result: a read of exactly
        one line ending in C{LF} or C{CR LF}, with no other CR and no IAC,
        while nothing is pending, is answered at once; any other read
        without IAC, in which each CR is part of a C{CR LF}, goes to the
        line layer with each C{CR LF} turned into C{LF}; a read with telnet
        commands (within the connection's command rate, else an error line
        and a close) goes to L{split_commands}, or to conch's parser whole
        when it is mostly commands.

        The one-line shortcut takes 0.67 us for a 1 KiB line besides the
        send (1.20 before its searches took integers and its reply was built
        with one join; C{timeit} in memory).
        """
        if self._between_lines and data[-1:] == b"\n" and _IAC_CODE not in data:
            end = len(data) - 1
            if data.find(b"\n") == end:
                if _CR_CODE not in data:
                    cr = end
                elif data.find(b"\r") == end - 1:
                    cr = end - 1
                else:
                    cr = -1
                if 0 <= cr <= self._max_line:
                    self.send(b"".join((b"OK...", data[:cr], b"\r\n")))
                    return
        if self._telnet.state == "data" and not self.closing:
            if _IAC_CODE in data:
                commands = telnet_commands(data)
                if not self._within_command_rate(commands):
                    pass
                elif commands * _TEXT_PER_COMMAND > len(data):
                    # Mostly commands: conch's loop over the whole read
                    # costs less than a call to it per command.
                    self.conch_parse(data)
                else:
                    self.split_commands(data)
                self._note_state()
                self._count_line()
                return
            text = data
            if _CR_CODE in data:
                text = data.replace(b"\r\n", b"\n")
                if _CR_CODE in text:
                    text = b""
            if text:
                self._lines.dataReceived(text)
                self._note_state()
                self._count_line()
                return
        self.parse_telnet(data)
        self._note_state()
        self._count_line()

    def split_commands(self, data: bytes) -> None:
        """
        Answer C{data}, bytes read from the peer with the telnet parser
        between commands, as conch's parser would, with conch seeing only
        the commands: the text between them (C{IAC IAC} pairs made single
        0xFF bytes, each C{CR LF} turned into C{LF}) goes straight to the
        line layer, in the order conch would deliver it. conch's parser
        takes a Python loop turn per byte (0.43 s of CPU per MB of text
        with one command per 64 KiB read, against 0.01 without); here the
        text costs what text without commands costs.

        Whatever this does not follow (a subnegotiation, a malformed or
        unfinished command, a CR not before an LF) goes, from the start of
        the text before it, to L{conch_parse}.
        """
        find = data.find
        lines = self._lines
        end = len(data)
        start = scan = 0
        followed = True
        while scan < end:
            iac = find(_IAC_CODE, scan)
            if iac < 0:
                break
            code = data[iac + 1] if iac + 1 < end else -1
            if code == _IAC_CODE:
                scan = iac + 2  # an escaped 0xFF: text
                continue
            if code in _OPTION_COMMANDS and iac + 2 < end:
                command_end = iac + 3
            elif code in _SHORT_COMMANDS:
                command_end = iac + 2
            else:
                followed = False  # subnegotiation, malformed or unfinished
                break
            raw = data[start:iac]
            if raw:
                text = _text_of(raw)
                if text is None:
                    followed = False
                    break
                lines.dataReceived(text)
                if self.closing:
                    return
            self.conch_parse(data[iac:command_end])
            if self.closing:
                return
            start = scan = command_end
        rest = data[start:]
        if not rest:
            return
        if followed:
            text = _text_of(rest)
            if text is not None:
                if text:
                    lines.dataReceived(text)
                return
        self.conch_parse(rest)

    def _count_line(self) -> None:
        """
        Tell the memory budget how much unfinished line is held now.
        """
        held = 0 if self._between_lines else self._lines.unfinished_bytes()
        if held != self._held_line:
            delta, self._held_line = held - self._held_line, held
            self.factory.budget.hold_line(self, delta)

    def held_bytes(self) -> int:
        """
        @return: bytes held now: queued replies and the unfinished line.
        """
        return super().held_bytes() + self._held_line

    def parse_telnet(self, data: bytes) -> None:
        """
        Pass C{data}, bytes read from the peer, through conch's telnet
        parser only (no shortcut). A byte after IAC that no telnet command
        uses, a subnegotiation over L{_TelnetLayer.max_subnegotiation}
        bytes, or telnet commands over the connection's rate (see
        L{commands_allowed}) get an error line, then the connection closes.
        """
        if self.closing or not self._within_command_rate(telnet_commands(data)):
            return
        self.conch_parse(data)

    def conch_parse(self, data: bytes) -> None:
        """
        Pass C{data} through conch's telnet parser; a malformed command or
        an overlong subnegotiation gets an error line and a close.
        """
        try:
            telnet.TelnetTransport.dataReceived(self._telnet, data)
        except ValueError:
            # Telnet.dataReceived raises on a byte after IAC that no telnet
            # command uses.
            self._lines.error(b"malformed telnet command (IAC sequence)")
            return
        self._telnet.bound_subnegotiation()

    def _within_command_rate(self, commands: int) -> bool:
        """
        @param commands: the telnet commands of a read (L{telnet_commands}).
        @return: whether they are within the connection's rate
            (L{commands_allowed}); if not, the peer was sent an error line,
            and the connection is closing.
        """
        if not self.commands_allowed(commands):
            factory = self.factory
            factory.counters.refused["telnet_rate"] += 1
            self._log.info(
                "{service} connection from {peer}: over {rate} telnet "
                "commands per second; closing",
                service=factory.service_name,
                peer=self.client_text(),
                rate=factory.telnet_command_rate,
            )
            self.set_close_cause(causes.LIMIT_REFUSAL, "telnet_rate")
            self._lines.error(
                b"too many telnet commands (over %d per second); closing connection"
                % factory.telnet_command_rate
            )
            return False
        return True

    def commands_allowed(self, commands: int) -> bool:
        """
        Take C{commands} telnet commands from the connection's token bucket
        (RFC 2697 terms): it holds up to C{factory.telnet_command_burst}
        commands and refills at C{factory.telnet_command_rate} per second
        (0: no limit).

        @param commands: the telnet commands of a read (L{telnet_commands}).
        @return: whether the read may be parsed (the tokens were taken).
        """
        factory = self.factory
        rate = factory.telnet_command_rate
        if not commands or not rate:
            return True
        bucket = self._command_bucket
        if bucket is None:
            bucket = self._command_bucket = TokenBucket(
                rate, factory.telnet_command_burst, factory.clock
            )
        return bucket.allow(commands)

    def _note_state(self) -> None:
        self._between_lines = (
            not self.closing
            and self._telnet.state == "data"
            and not self._lines.in_line
        )

    def end_of_input(self) -> None:
        """
        Answer a last line that the peer ended with EOF instead of C{\\n}.
        """
        self._lines.input_ended()

    def on_close(self, reason: Failure | None) -> None:
        """
        Tell the telnet and line layers (which stop timing the line in
        progress), and give back the unfinished line's bytes to the memory
        budget.
        """
        self._between_lines = False
        telnet.TelnetTransport.connectionLost(self._telnet, reason)
        if self._held_line:
            held, self._held_line = self._held_line, 0
            self.factory.budget.hold_line(self, -held)


class WelcomeFactory(StreamFactory):
    """
    Builds L{Welcome} protocols and holds their settings.

    @ivar banner: the first line sent on connect (bytes, UTF-8, no EOL).
    @ivar max_line: the longest line accepted, in bytes, without its EOL.
    @ivar telnet_command_rate: telnet commands per second one connection
        may send on average (0: no limit); past it (or past
        C{telnet_command_burst} at once) it gets an error line and is closed,
        counted as C{refused["telnet_rate"]}.
    @ivar telnet_command_burst: telnet commands one connection may send at
        once.
    """

    protocol = Welcome
    service_name = "welcome"
    refusal_line: ClassVar[bool] = True
    #: An empty line (1 byte) is answered with 7: C{OK...} and CR LF.
    expansion = 7

    def __init__(
        self,
        clock: IReactorTime,
        counters: ServiceCounters | None = None,
        limits: ConnectionLimits | None = None,
        timeouts: Timeouts | None = None,
        banner: str = DEFAULT_BANNER,
        max_line: int = DEFAULT_MAX_LINE,
        budget: MemoryBudget | None = None,
    ) -> None:
        super().__init__(clock, counters, limits, timeouts, budget)
        self.banner = banner.encode("utf-8")
        self.max_line = max_line
        self.telnet_command_rate = TELNET_COMMAND_RATE
        self.telnet_command_burst = TELNET_COMMAND_BURST
