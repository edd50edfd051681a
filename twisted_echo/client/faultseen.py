# -*- test-case-name: tests.test_client_faultreport -*-
"""
What one connection of C{sockecho-client faults} met
(L{twisted_echo.client.faultreport}), and its words: how it ended, the
faults of docs/faults.md it fits (L{classify}), the text report. Pure:
no sockets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Segments, gaps and corrupted offsets kept per connection (beyond,
#: counted only).
MAX_KEPT = 1000

#: How a connection can end (docs/faults.md, "See what my client would
#: see").
ENDINGS = (
    "clean",
    "eof",
    "half-close",
    "reset",
    "stall",
    "connect-timeout",
    "refused",
    "error",
)


@dataclass
class Observation:
    """
    What one connection met. Times are seconds; sizes bytes.

    @ivar number: the connection's number in the run, from 1.
    @ivar ending: one of L{ENDINGS}.
    @ivar connect: seconds to connect (TCP), or L{None} if it did not.
    @ivar handshake: seconds of the TLS handshake, or L{None}.
    @ivar first_byte: seconds from the payload's last byte handed to the
        socket to the reply's first byte, or L{None} (no byte).
    @ivar sent: payload bytes sent.
    @ivar received: reply bytes received.
    @ivar segments: the size of each C{recv} (at most L{MAX_KEPT}).
    @ivar gaps: seconds between consecutive segments (at most L{MAX_KEPT}).
    @ivar corrupted: offsets of reply bytes that differ from the payload's
        (at most L{MAX_KEPT}).
    @ivar corrupted_count: how many differ.
    @ivar error: the error, in words (C{ECONNRESET}, ...), or L{None}.
    @ivar close_notify: TLS: whether the server's EOF came with a
        close_notify (L{None} over plain TCP or without EOF).
    @ivar seen: the faults these observations fit, as profile clauses of
        docs/faults.md (C{reset-after=1000}; alternatives joined by
        C{" or "}); empty when clean.
    """

    number: int
    ending: str = "error"
    connect: float | None = None
    handshake: float | None = None
    first_byte: float | None = None
    sent: int = 0
    received: int = 0
    segments: list[int] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    corrupted: list[int] = field(default_factory=list)
    corrupted_count: int = 0
    error: str | None = None
    close_notify: bool | None = None
    seen: list[str] = field(default_factory=list)


def _millis(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def _slice_of(segments: list[int]) -> int | None:
    """
    @return: the segment size when the reply came in at least two equal
        segments, the last no longer, else L{None}.
    """
    if len(segments) < 2:
        return None
    size = segments[0]
    if all(s == size for s in segments[:-1]) and segments[-1] <= size:
        return size
    return None


def _corrupt_of(offsets: list[int], count: int, received: int) -> str:
    """
    @return: C{corrupt=N} when the offsets are those of sockecho's
        C{corrupt=N} (the last byte of every run of N), else C{corrupt}.
    """
    every = offsets[0] + 1
    if count == len(offsets) and offsets == list(range(every - 1, received, every)):
        return f"corrupt={every}"
    return "corrupt"


def classify(seen: Observation, slow: float) -> list[str]:
    """
    Name the faults an observation fits, as docs/faults.md's clauses.

    @param seen: what a connection met.
    @param slow: seconds; a first byte later than this is a C{delay}. A
        sliced reply's median gap is given as C{gap=} from 1 ms.
    @return: clauses such as C{reset-after=1000}, C{close-after=3996 or
        truncate=100}, C{half-close-after=100}, C{blackhole},
        C{delay=503ms}, C{slice=100,gap=50ms}, C{corrupt=1000}; empty for
        a clean exchange.
    """
    names: list[str] = []
    if seen.ending == "refused":
        return ["refused (nothing listening)"]
    if seen.ending == "connect-timeout":
        return ["refuse (connect timed out: backlog full?)"]
    if seen.first_byte is not None and seen.first_byte > slow:
        names.append(f"delay={_millis(seen.first_byte)}")
    size = _slice_of(seen.segments)
    if size is not None:
        gaps = sorted(seen.gaps)
        median = gaps[len(gaps) // 2] if gaps else 0.0
        names.append(
            f"slice={size}" + (f",gap={_millis(median)}" if median >= 0.001 else "")
        )
    if seen.corrupted:
        names.append(_corrupt_of(seen.corrupted, seen.corrupted_count, seen.received))
    if seen.ending == "reset":
        names.append(f"reset-after={seen.received}")
    elif seen.ending == "half-close":
        names.append(f"half-close-after={seen.received}")
    elif seen.ending == "eof":
        short = seen.sent - seen.received
        names.append(
            f"close-after={seen.received} or truncate={short}"
            if short > 0
            else f"close-after={seen.received}"
        )
    elif seen.ending == "stall":
        names.append(
            "blackhole" if seen.received == 0 else f"stall after {seen.received} B"
        )
    elif seen.ending == "error":
        names.append(f"error ({seen.error})")
    if seen.ending == "clean" and seen.received > seen.sent:
        names.append(f"{seen.received - seen.sent} B more than sent")
    return names


def _ending_words(seen: Observation) -> str:
    ending = seen.ending
    if ending == "clean":
        how = "we closed" if seen.handshake is not None else "EOF after our half-close"
        return f"clean: whole reply, then {how}"
    if ending == "eof":
        tls = (
            ""
            if seen.close_notify is None
            else (
                " with close_notify" if seen.close_notify else " without close_notify"
            )
        )
        return f"EOF{tls} after {seen.received} B, our writes after it reset"
    if ending == "half-close":
        return f"EOF after {seen.received} B while still writable (half-close)"
    if ending == "reset":
        return f"ECONNRESET after {seen.received} B"
    if ending == "stall":
        return f"our timeout: {seen.error}, after {seen.received} B"
    if ending == "connect-timeout":
        return f"connect timed out ({seen.error})"
    if ending == "refused":
        return "connection refused (ECONNREFUSED)"
    return f"error: {seen.error}"


def format_observation(seen: Observation) -> str:
    """
    @return: a few lines on one connection, no final newline.
    """

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.1f} ms"

    lines = [f"connection {seen.number}: {_ending_words(seen)}"]
    if seen.connect is not None:
        tls = (
            f", TLS handshake {ms(seen.handshake)}"
            if seen.handshake is not None
            else ""
        )
        lines.append(
            f"  connect {ms(seen.connect)}{tls}, first byte {ms(seen.first_byte)}, "
            f"received {seen.received} of {seen.sent} B"
        )
    if seen.segments:
        shown = seen.segments[:12]
        more = f" ... ({len(seen.segments)} in all)" if len(seen.segments) > 12 else ""
        gap = f", largest gap {ms(max(seen.gaps))}" if seen.gaps else ""
        lines.append(f"  segments {' '.join(str(s) for s in shown)}{more}{gap}")
    if seen.corrupted_count:
        shown_offsets = ", ".join(str(o) for o in seen.corrupted[:8])
        more = " ..." if seen.corrupted_count > 8 else ""
        lines.append(
            f"  corrupted {seen.corrupted_count} B at offsets {shown_offsets}{more}"
        )
    lines.append(f"  seen: {'; '.join(seen.seen) if seen.seen else 'nothing (clean)'}")
    return "\n".join(lines)


def format_report(
    endpoint: str, size: int, timeout: float, results: list[Observation]
) -> str:
    """
    @return: the text report, no final newline.
    """
    lines = [
        f"faults {endpoint}: {len(results)} connection(s), {size} B each, "
        f"timeout {timeout:g} s"
    ]
    lines += [format_observation(seen) for seen in results]
    faulted = sum(bool(seen.seen) for seen in results)
    lines.append(
        f"result: faults met on {faulted} of {len(results)} connection(s)"
        if faulted
        else f"result: clean ({len(results)} connection(s))"
    )
    return "\n".join(lines)
