# -*- test-case-name: tests.test_writequeue -*-
"""
How much a Twisted socket transport has queued: the write queue of
L{twisted.internet.abstract.FileDescriptor}, read through its attributes.

L{twisted.internet.abstract.FileDescriptor.write} appends to
C{_tempDataBuffer} and adds to C{_tempDataLen} (private); C{doWrite} joins
that into C{dataBuffer} and sends from C{offset}. sockecho reads these to
send a reply straight to the socket when nothing is queued
(L{nothing_queued}, used by C{StreamProtocol.send}: a reactor turn and two
C{epoll_ctl} calls saved per reply) and to see a queue shrink for the stall
timeout (L{queued_bytes}).

L{write_queue_misfit} checks, once at import, that a L{abstract.FileDescriptor}
still queues that way: it writes to one (a stand-in reactor, no socket)
and lets C{doWrite} hand part of the queue to a stand-in socket, and sees
L{queued_bytes} follow. L{WRITE_QUEUE_FITS} is the result; when it is
false, L{queued_bytes} says L{None} and sockecho writes every reply with
C{transport.write} and counts a stall from the pause, as Twisted's own
servers do.
"""

from __future__ import annotations

from twisted.internet import abstract, tcp

__all__ = [
    "WRITE_QUEUE_FITS",
    "WRITE_QUEUE_MISFIT",
    "nothing_queued",
    "queued_bytes",
    "write_queue_misfit",
]


class _StandInReactor:
    """
    Enough of a reactor for a descriptor that is written to in memory.
    """

    def addWriter(self, writer: object) -> None:  # noqa: N802 (Twisted's name)
        pass

    def removeWriter(self, writer: object) -> None:  # noqa: N802 (Twisted's name)
        pass


class _TakesTwo(abstract.FileDescriptor):
    """
    A descriptor whose "socket" takes at most two bytes per write.
    """

    connected = True
    sent = b""

    def writeSomeData(self, data: bytes) -> int:  # noqa: N802 (Twisted's name)
        taken = bytes(data[:2])
        self.sent += taken
        return len(taken)


def queued_bytes(transport: object) -> int | None:
    """
    @param transport: a connection's transport.
    @return: the bytes written to it and not yet handed to the kernel
        (C{len(dataBuffer) - offset + _tempDataLen}), or L{None} when the
        transport does not say (not a socket transport, or Twisted's
        write queue is not as L{write_queue_misfit} expects).
    """
    pending = getattr(transport, "_tempDataLen", None)
    if not WRITE_QUEUE_FITS or pending is None:
        return None
    queued: int = len(transport.dataBuffer) - transport.offset + pending  # type: ignore[attr-defined]
    return queued


def nothing_queued(transport: object) -> bool:
    """
    The send fast path's test, on a plain socket transport that
    L{WRITE_QUEUE_FITS} (the caller checks that once per connection).

    @param transport: a L{abstract.FileDescriptor} transport.
    @return: whether nothing written to C{transport} waits to be sent, so
        that bytes written straight to its socket keep their order.
    """
    return not transport._tempDataLen and not transport.dataBuffer  # type: ignore[attr-defined]


def write_queue_misfit() -> str | None:
    """
    Check that Twisted's L{abstract.FileDescriptor} queues writes as
    L{queued_bytes} and L{nothing_queued} read them: a fresh one has
    nothing queued; 5 bytes written are 5 queued (in C{_tempDataBuffer} /
    C{_tempDataLen}); after C{doWrite} hands 2 to the socket, 3 are queued
    (C{dataBuffer} from C{offset}); and L{tcp.Connection} still has C{TLS}
    and C{setTcpNoDelay}, which the fast path's caller reads.

    @return: L{None} when it fits, else what does not.
    """
    try:
        descriptor = _TakesTwo(reactor=_StandInReactor())  # type: ignore[arg-type]
        fields = (
            isinstance(getattr(descriptor, "dataBuffer", None), bytes)
            and isinstance(getattr(descriptor, "offset", None), int)
            and isinstance(getattr(descriptor, "_tempDataLen", None), int)
            and isinstance(getattr(descriptor, "_tempDataBuffer", None), list)
        )
        if not fields:
            return (
                "FileDescriptor has no dataBuffer, offset, _tempDataLen "
                "or _tempDataBuffer"
            )
        if not _nothing_queued(descriptor) or _queued(descriptor) != 0:
            return "a fresh FileDescriptor says something is queued"
        descriptor.write(b"hello")
        if _nothing_queued(descriptor) or _queued(descriptor) != 5:
            return "5 bytes written are not 5 queued"
        descriptor.doWrite()  # type: ignore[no-untyped-call]
        if descriptor.sent != b"he" or _queued(descriptor) != 3:
            return "after sending 2 of 5 bytes, 3 are not queued"
    except Exception as error:
        return f"writing to a FileDescriptor raised {error!r}"
    if not hasattr(tcp.Connection, "TLS") or not callable(
        getattr(tcp.Connection, "setTcpNoDelay", None)
    ):
        return "tcp.Connection has no TLS or setTcpNoDelay"
    return None


def _queued(descriptor: object) -> int:
    return len(descriptor.dataBuffer) - descriptor.offset + descriptor._tempDataLen  # type: ignore[attr-defined,no-any-return]


_nothing_queued = nothing_queued

#: Whether the installed Twisted queues writes as sockecho reads them
#: (L{write_queue_misfit}, checked once at import).
WRITE_QUEUE_MISFIT = write_queue_misfit()
WRITE_QUEUE_FITS = WRITE_QUEUE_MISFIT is None
