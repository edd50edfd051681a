"""
A loopback client paced by the reactor's clock (never C{time.sleep}): it
sends on a non-blocking socket (plain TCP, or TLS through Python's C{ssl})
and reads a fixed number of bytes per tick, with the kernel's default socket
buffers; and a watch of a server connection's progress, for stall tests.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred

from twisted_echo.listening.sendqueue import bytes_acked


class PacedClient:
    """
    Every C{tick} seconds: sends what the socket takes of C{send_total}
    bytes (C{chunk} repeated), then reads at most C{read_per_tick} bytes,
    until C{read_total} bytes were read (then it stops reading but stays
    connected), the server closes, or C{timeout} seconds passed.

    @ivar sent: bytes sent so far.
    @ivar received: bytes read so far; C{digest} hashes them.
    @ivar stopped_reading_at: the reactor time the last read happened
        after C{read_total} bytes, or L{None}.
    @ivar outcome: C{"eof"}, C{"reset"}, C{"timeout"}, C{"done"} (C{until}
        was true), or L{None} while running.
    @ivar finished: fires with L{outcome} when it is set.
    """

    def __init__(
        self,
        sock: socket.socket,
        chunk: bytes,
        send_total: int,
        read_per_tick: int,
        tick: float,
        read_total: int | None = None,
        timeout: float = 60.0,
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.chunk = chunk
        self.send_total = send_total
        self.read_per_tick = read_per_tick
        self.tick = tick
        self.read_total = read_total
        self.sent = 0
        self.received = 0
        self.digest = hashlib.sha256()
        self.stopped_reading_at: float | None = None
        self.outcome: str | None = None
        self.finished: Deferred[str] = Deferred()
        self.until: Callable[[], bool] = lambda: False
        self._deadline = reactor.seconds() + timeout  # type: ignore[attr-defined]
        self._call: Any = reactor.callLater(0, self._step)  # type: ignore[attr-defined]

    def stop(self) -> Deferred[str]:
        """
        Stop at the next tick (for test clean-up).

        @return: L{finished}.
        """
        self.until = lambda: True
        return self.finished

    def _finish(self, outcome: str) -> None:
        self.outcome = outcome
        self.sock.close()
        self.finished.callback(outcome)

    def _step(self) -> None:
        self._call = None
        if self.until():
            self._finish("done")
            return
        if reactor.seconds() > self._deadline:  # type: ignore[attr-defined]
            self._finish("timeout")
            return
        try:
            self._send()
            if self._read():
                return
        except ConnectionError:
            self._finish("reset")
            return
        self._call = reactor.callLater(self.tick, self._step)  # type: ignore[attr-defined]

    def _send(self) -> None:
        size = len(self.chunk)
        for _ in range(256):  # at most 256 chunks per tick
            if self.sent >= self.send_total:
                return
            offset = self.sent % size
            part = self.chunk[offset : offset + self.send_total - self.sent]
            try:
                sent = self.sock.send(part)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return
            self.sent += sent

    def _read(self) -> bool:
        """
        @return: whether the connection ended.
        """
        if self.read_total is not None and self.received >= self.read_total:
            return False
        budget = self.read_per_tick
        if self.read_total is not None:
            budget = min(budget, self.read_total - self.received)
        while budget > 0:
            try:
                data = self.sock.recv(min(budget, 65536))
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return False
            except ssl.SSLZeroReturnError:
                data = b""
            if not data:
                self._finish("eof")
                return True
            budget -= len(data)
            self.received += len(data)
            self.digest.update(data)
        if self.read_total is not None and self.received >= self.read_total:
            self.stopped_reading_at = reactor.seconds()  # type: ignore[attr-defined]
        return False


class ProgressWatch:
    """
    Polls a server connection every 10 ms, by the reactor's clock: notes
    the last time its peer's progress moved (the bytes the peer
    acknowledged on C{sock}, the server's TCP socket) and the time the
    connection closed.

    @ivar last_progress: the reactor time the acknowledged count was last
        seen to move.
    @ivar closed_at: when C{is_open()} was first seen false, or L{None}.
    @ivar finished: fires once closed (or after C{timeout} seconds).
    """

    def __init__(
        self,
        protocol: Any,
        sock: socket.socket,
        is_open: Callable[[], bool],
        timeout: float = 30.0,
    ) -> None:
        self.protocol = protocol
        self.sock = sock
        self.is_open = is_open
        self.last_progress = reactor.seconds()  # type: ignore[attr-defined]
        self.closed_at: float | None = None
        self._seen: int | None = None
        self._deadline = self.last_progress + timeout
        self.finished: Deferred[None] = Deferred()
        self._poll()

    def _poll(self) -> None:
        now = reactor.seconds()  # type: ignore[attr-defined]
        if not self.is_open():
            self.closed_at = now
            self.finished.callback(None)
            return
        seen = bytes_acked(self.sock)
        if seen != self._seen:
            self._seen = seen
            self.last_progress = now
        if now > self._deadline:
            self.finished.callback(None)
            return
        reactor.callLater(0.01, self._poll)  # type: ignore[attr-defined]
