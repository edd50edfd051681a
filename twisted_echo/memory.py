# -*- test-case-name: tests.test_server -*-
"""
Heap tuning for large reads.

C{recv(256 KiB)} allocates a 256 KiB string per read; glibc serves
allocations of 128 KiB and more with C{mmap}, so every read would map,
fault in and unmap fresh pages (measured: request/response three times
slower than with 64 KiB reads). Raising glibc's C{M_MMAP_THRESHOLD} keeps
such strings on the heap, where they are reused.
"""

from __future__ import annotations

import ctypes
import ctypes.util

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
