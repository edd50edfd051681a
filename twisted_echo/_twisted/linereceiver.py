# -*- test-case-name: tests.test_linereceiver -*-
"""
The unfinished line a L{twisted.protocols.basic.LineReceiver} holds: its
private C{_buffer}. The welcome service counts it in the memory budget
(C{--max-buffer}) while the line grows
(L{twisted_echo.services.welcome}).

L{line_buffer_misfit} checks, once at import, on a L{LineReceiver} fed in
memory, that C{_buffer} holds exactly the bytes after the last delimiter.
Where it does not, L{unfinished_line_bytes} says L{None}; the welcome
service then counts an unfinished line as empty (lines stay bounded by
C{--max-line}, but the budget no longer sees them).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import StringTransport
from twisted.protocols.basic import LineReceiver

__all__ = ["LINE_BUFFER_MISFIT", "line_buffer_misfit", "unfinished_line_bytes"]


def unfinished_line_bytes(receiver: LineReceiver) -> int | None:
    """
    @param receiver: a L{LineReceiver} (in line mode).
    @return: the bytes of the unfinished line it holds, or L{None} where
        this Twisted does not keep them as L{line_buffer_misfit} expects.
    """
    if LINE_BUFFER_MISFIT is not None:
        return None
    return len(receiver._buffer)


def line_buffer_misfit() -> str | None:
    """
    Check that a L{LineReceiver} holds C{b"par"} in C{_buffer} after
    receiving C{b"one\\npar"}, and nothing after C{b"t\\n"}.

    @return: L{None} when it fits, else what does not.
    """
    lines: list[bytes] = []

    class Receiver(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:  # noqa: N802 (Twisted's name)
            lines.append(line)

    try:
        receiver: Any = Receiver()
        receiver.makeConnection(StringTransport())
        receiver.dataReceived(b"one\npar")
        if getattr(receiver, "_buffer", None) != b"par" or lines != [b"one"]:
            return "LineReceiver._buffer does not hold the unfinished line"
        receiver.dataReceived(b"t\n")
        if receiver._buffer != b"" or lines != [b"one", b"part"]:
            return "LineReceiver._buffer is not emptied by a finished line"
    except Exception as error:
        return f"feeding a LineReceiver raised {error!r}"
    return None


#: Why L{unfinished_line_bytes} cannot read this Twisted, or L{None}.
LINE_BUFFER_MISFIT = line_buffer_misfit()
