# -*- test-case-name: tests.test_faults_engine -*-
"""
Content faults: C{corrupt} (flip one bit every N reply bytes) and
C{truncate} (drop the last N bytes of the first reply, then close). Neither
ever makes a reply larger.
"""

from __future__ import annotations

import random


class Corrupter:
    """
    Flips one bit (drawn from the connection's seeded RNG) in every
    C{every}-th byte of the reply stream.
    """

    def __init__(self, every: int, rng: random.Random) -> None:
        """
        @param every: bytes; the last byte of each run of C{every} is hit.
        """
        self.every = every
        self.rng = rng
        self.position = 0  # reply bytes seen so far

    def apply(self, data: bytes) -> bytes:
        """
        @return: C{data} with its bits flipped, the same length.
        """
        every = self.every
        first = every - 1 - self.position % every
        self.position += len(data)
        if first >= len(data):
            return data
        changed = bytearray(data)
        for index in range(first, len(changed), every):
            changed[index] ^= 1 << self.rng.randrange(8)
        return bytes(changed)


def truncated(data: bytes, drop: int) -> bytes:
    """
    @return: C{data} without its last C{drop} bytes (nothing if it is not
        longer than that).
    """
    return data[: max(0, len(data) - drop)]
