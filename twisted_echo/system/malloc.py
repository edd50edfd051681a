# -*- test-case-name: tests.test_malloc -*-
"""
Heap tuning: large reads, and memory handed back after bursts of closes.

C{recv(256 KiB)} allocates a 256 KiB string per read; glibc serves
allocations of 128 KiB and more with C{mmap}, so every read would map,
fault in and unmap fresh pages (measured: request/response three times
slower than with 64 KiB reads). Raising glibc's C{M_MMAP_THRESHOLD} keeps
such strings on the heap, where they are reused.

Memory freed in many small pieces (the OpenSSL state of closed TLS
connections) stays in glibc's heap; L{HeapTrimmer} hands it back with
C{malloc_trim} once enough has been freed.

Below every layer (L{twisted_echo.system}): the TLS layer
(L{twisted_echo.listening.tls}) trims, the runner
(L{twisted_echo.app.runner}) tunes at start-up. Not a policy (no rule a
service applies) nor a Twisted private, so neither C{policies/} nor
C{_twisted/}.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: mallopt parameters (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_large_reads_on_heap(largest: int) -> bool:
    """
    Ask glibc to serve allocations up to C{largest} bytes from the heap,
    and to keep up to eight times that free before giving memory back.

    @param largest: the largest read, in bytes.
    @return: whether it took effect (C{False} on a C library without
        C{mallopt}, such as musl; nothing else changes then).
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    threshold = 2 * largest
    return bool(
        mallopt(_M_MMAP_THRESHOLD, threshold)
        and mallopt(_M_TRIM_THRESHOLD, 8 * threshold)
    )


#: Bytes freed (as reported to L{HeapTrimmer.freed}) after which the heap is
#: trimmed: about a hundred closed TLS connections.
TRIM_AFTER = 4 * 1024 * 1024
#: Seconds from the report that crosses L{TRIM_AFTER} to the trim: the frees
#: of a burst of closes are trimmed once, and trims come at most once per
#: this many seconds.
TRIM_DELAY = 1.0


def _libc_function(name: str) -> Any:
    """
    @return: the C library's function C{name} (through C{ctypes}), or
        L{None} where there is no such function (musl has no
        C{malloc_trim}).
    """
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    try:
        return getattr(ctypes.CDLL(library), name)
    except (OSError, AttributeError):
        return None


def trim_heap() -> bool:
    """
    Hand the heap's free memory back to the system: glibc's
    C{malloc_trim(0)}, which returns free pages anywhere in the heap (not
    only at its top, as glibc does on its own past C{M_TRIM_THRESHOLD}).

    @return: whether memory was returned (C{False} also on a C library
        without C{malloc_trim}).
    """
    malloc_trim = _libc_function("malloc_trim")
    if malloc_trim is None:
        return False
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int
    return bool(malloc_trim(0))


class HeapTrimmer:
    """
    Trims the heap (L{trim_heap}) once enough memory has been freed.

    glibc keeps the memory of freed objects for later allocations. After a
    burst of closed TLS connections (about 46 KiB of OpenSSL state each,
    allocated in small pieces between longer-lived ones), the heap cannot
    shrink from its top, and the process would keep tens of MiB it no
    longer uses (issue 19: +52-62 MiB after 1,000 connections; +4.6 MiB
    with a trim).

    @ivar trims: how many times the heap was trimmed.
    """

    def __init__(
        self,
        clock: IReactorTime,
        after: int = TRIM_AFTER,
        delay: float = TRIM_DELAY,
        trim: Callable[[], object] = trim_heap,
    ) -> None:
        """
        @param clock: the reactor's clock.
        @param after: bytes freed after which to trim.
        @param delay: seconds from crossing C{after} to the trim.
        @param trim: what trims (L{trim_heap}).
        """
        self._clock = clock
        self._after = after
        self._delay = delay
        self._trim = trim
        self._freed = 0
        self._call: IDelayedCall | None = None
        self._stopped = False
        self.trims = 0

    def freed(self, size: int) -> None:
        """
        C{size} bytes were freed: trim the heap L{TRIM_DELAY} seconds after
        more than C{after} bytes have been since the last trim.
        """
        self._freed += size
        if self._freed >= self._after and self._call is None and not self._stopped:
            self._call = self._clock.callLater(self._delay, self._trim_now)

    def _trim_now(self) -> None:
        self._call = None
        self._freed = 0
        self.trims += 1
        self._trim()

    def start(self) -> None:
        """
        Trim again after L{stop} (the listener started again).
        """
        self._stopped = False

    def stop(self) -> None:
        """
        Cancel a trim scheduled, and schedule none from now on (the
        listener stopped).
        """
        self._stopped = True
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
