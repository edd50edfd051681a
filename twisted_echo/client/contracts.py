# -*- test-case-name: tests.test_client_contracts -*-
"""
What each service owes its client: the expected reply to what was sent,
checked byte by byte as replies arrive.

 - echo (RFC 862): every byte sent comes back identical, in order.
 - upper: L{twisted_echo.services.upper.upper_bytes} of what was sent; a multi-byte
   UTF-8 character is owed once its last byte has been sent.
 - welcome: a banner line (ending C{\\r\\n}) first, then C{OK...<line>\\r\\n}
   for every line sent (ending C{\\n} or C{\\r\\n}; RFC 854 end of line).
   Lines holding telnet commands (byte C{0xFF}) are not modelled.

A checker is fed what was sent (L{ReplyChecker.sent}) and what came back
(L{ReplyChecker.received}); the first byte that differs is a mismatch, and
what is owed at the end but never came is lost.
"""

from __future__ import annotations

import codecs
import random

from twisted_echo.services.upper import upper_bytes

SERVICES = ("echo", "upper", "welcome")

#: The longest banner line accepted from the welcome service, in bytes.
MAX_BANNER = 4096

_EOL = b"\r\n"


class ReplyChecker:
    """
    Checks one connection's replies against the echo contract (RFC 862);
    subclasses change what is owed for what is sent.

    @ivar sent_total: bytes sent so far.
    @ivar owed_total: reply bytes owed so far for what was sent.
    @ivar received_total: reply bytes received so far (after any banner).
    @ivar mismatch: C{None}, or one line saying where the replies first
        differed from what was owed; once set, later replies are ignored.
    """

    service = "echo"

    def __init__(self) -> None:
        self.sent_total = 0
        self.owed_total = 0
        self.received_total = 0
        self.mismatch: str | None = None
        self._owed = bytearray()

    @property
    def ready(self) -> bool:
        """
        Whether the service has sent what it sends unasked (the banner), so
        requests can be timed.
        """
        return True

    @property
    def outstanding(self) -> int:
        """
        Reply bytes owed but not yet received.
        """
        return self.owed_total - self.received_total

    def sent(self, data: bytes) -> None:
        """
        Account for C{data} (bytes) written to the service.
        """
        self.sent_total += len(data)
        self._owe(data)

    def end_of_input(self) -> None:
        """
        Account for the end of what is sent (half-close, C{SHUT_WR}).
        """

    def received(self, data: bytes) -> bool:
        """
        Check reply bytes against what is owed.

        @param data: bytes just received.
        @return: C{False} when a mismatch was found now or before (see
            L{mismatch}), else C{True}.
        """
        if self.mismatch is not None:
            return False
        owed = self._owed
        n = len(data)
        if n > len(owed):
            ok = data[: len(owed)] == owed
            if ok:
                self._fail(
                    f"{n - len(owed)} reply bytes beyond what was owed, at reply "
                    f"byte {self.received_total + len(owed)}: "
                    f"{_preview(data[len(owed) :])}"
                )
                return False
        elif owed.startswith(data):
            del owed[:n]
            self.received_total += n
            return True
        index = _first_difference(owed, data)
        expected, got = owed[index : index + 16], data[index : index + 16]
        self._fail(
            f"reply byte {self.received_total + index} differs: expected "
            f"{_preview(expected)}, got {_preview(got)}"
        )
        return False

    def _owe(self, reply: bytes) -> None:
        self.owed_total += len(reply)
        self._owed += reply

    def _fail(self, message: str) -> None:
        self.mismatch = f"{self.service}: {message}"


class UpperChecker(ReplyChecker):
    """
    The upper service: owes C{upper_bytes} of the complete UTF-8 characters
    sent; an unfinished character's bytes are owed unchanged at end of input.
    """

    service = "upper"

    def __init__(self) -> None:
        ReplyChecker.__init__(self)
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")

    def sent(self, data: bytes) -> None:
        self.sent_total += len(data)
        decoder = self._decoder
        held_before = decoder.getstate()[0]
        decoder.decode(data)
        held_after: bytes = decoder.getstate()[0]
        whole = (held_before + data)[: len(held_before) + len(data) - len(held_after)]
        if whole:
            self._owe(upper_bytes(whole))

    def end_of_input(self) -> None:
        held: bytes = self._decoder.getstate()[0]
        self._decoder.reset()
        if held:
            self._owe(upper_bytes(held))


class WelcomeChecker(ReplyChecker):
    """
    The welcome service: a banner line, then C{OK...<line>\\r\\n} per line.

    @ivar banner: the banner line received (bytes, without C{\\r\\n}), or
        C{None} while it is still coming.
    """

    service = "welcome"

    def __init__(self, expected_banner: bytes | None = None) -> None:
        ReplyChecker.__init__(self)
        self.banner: bytes | None = None
        self._expected_banner = expected_banner
        self._banner_buffer = b""
        self._line = b""

    @property
    def ready(self) -> bool:
        return self.banner is not None

    def sent(self, data: bytes) -> None:
        self.sent_total += len(data)
        *lines, self._line = (self._line + data).split(b"\n")
        for line in lines:
            self._owe_line(line)

    def end_of_input(self) -> None:
        if self._line:
            self._owe_line(self._line)
            self._line = b""

    def received(self, data: bytes) -> bool:
        if self.banner is None and self.mismatch is None:
            buffer = self._banner_buffer + data
            line, eol, rest = buffer.partition(_EOL)
            if not eol:
                if len(buffer) > MAX_BANNER:
                    self._fail(f"no banner line in the first {MAX_BANNER} bytes")
                    return False
                self._banner_buffer = buffer
                return True
            self.banner = line
            self._banner_buffer = b""
            expected = self._expected_banner
            if expected is not None and line != expected:
                self._fail(f"banner is {_preview(line)}, expected {_preview(expected)}")
                return False
            data = rest
        return ReplyChecker.received(self, data)

    def _owe_line(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        self._owe(b"OK..." + line + _EOL)


def checker_for(service: str, banner: bytes | None = None) -> ReplyChecker:
    """
    @param service: one of L{SERVICES}.
    @param banner: for C{welcome}, the exact banner expected (bytes without
        C{\\r\\n}), or C{None} to accept any banner line.
    @return: a fresh checker for one connection to that service.
    @raise ValueError: for an unknown service.
    """
    if service == "echo":
        return ReplyChecker()
    if service == "upper":
        return UpperChecker()
    if service == "welcome":
        return WelcomeChecker(banner)
    raise ValueError(f"unknown service {service!r}; expected one of {SERVICES}")


_UPPER_TEXT = "straße héllo 你好 the quick brown fox ".encode()
_LINE_ALPHABET = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,-"


def request_payload(service: str, size: int, seed: int = 0) -> bytes:
    """
    A request of exactly C{size} bytes whose whole reply is owed as soon as
    it is sent (so it can be timed alone).

    @param service: one of L{SERVICES}.
    @param size: request length in bytes, at least 1.
    @param seed: varies the content between connections.
    @return: for echo, random bytes of all 256 values; for upper, whole UTF-8
        characters (mixed case, multi-byte); for welcome, one line of
        printable ASCII ending in C{\\n}.
    @raise ValueError: for a size below 1 or an unknown service.
    """
    if size < 1:
        raise ValueError(f"request size must be at least 1 byte, not {size}")
    rng = random.Random(seed)
    if service == "echo":
        return rng.randbytes(size)
    if service == "upper":
        start = rng.randrange(len(_UPPER_TEXT))
        text = _UPPER_TEXT[start:] + _UPPER_TEXT * (size // len(_UPPER_TEXT) + 1)
        cut = text[:size].decode("utf-8", "ignore").encode("utf-8")
        return cut + b"x" * (size - len(cut))
    if service == "welcome":
        body = bytes(rng.choice(_LINE_ALPHABET) for _ in range(min(size - 1, 4096)))
        body = (body * ((size - 1) // max(len(body), 1) + 1))[: size - 1]
        return body + b"\n"
    raise ValueError(f"unknown service {service!r}; expected one of {SERVICES}")


def _first_difference(a: bytes | bytearray, b: bytes | bytearray) -> int:
    n = min(len(a), len(b))
    lo, hi = 0, n
    while lo < hi:
        # Binary search on prefix equality: fast for large replies.
        mid = (lo + hi) // 2
        if a[lo : mid + 1] == b[lo : mid + 1]:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _preview(data: bytes | bytearray) -> str:
    shown = bytes(data[:16])
    more = "..." if len(data) > 16 else ""
    return f"{shown!r}{more}"
