# -*- test-case-name: tests.test_client_progress -*-
"""
The live progress line of C{sockecho-client load}, drawn with C{tqdm} on a
terminal only.
"""

from __future__ import annotations

from typing import IO, Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from twisted_echo.client.stats import LoadStats

#: Seconds between updates of the progress line.
INTERVAL = 0.25


class LiveProgress:
    """
    Shows elapsed seconds out of the run's duration, with requests, errors
    and mismatches so far, while the run lasts.
    """

    def __init__(
        self,
        clock: IReactorTime,
        stats: LoadStats,
        duration: float,
        stream: IO[str] | None,
    ) -> None:
        """
        @param clock: drives the updates.
        @param stats: the run's totals, read at each update.
        @param duration: the run's length in seconds.
        @param stream: where to draw; nothing is drawn unless it is a tty
            (nor when it is C{None}).
        """
        self.clock = clock
        self.stats = stats
        self.duration = duration
        self.stream = stream
        self._bar: Any = None
        self._loop: LoopingCall | None = None
        self._started = 0.0

    @property
    def enabled(self) -> bool:
        """
        Whether the stream is a terminal.
        """
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def start(self) -> None:
        """
        Start drawing (on a terminal only).
        """
        if not self.enabled:
            return
        from tqdm import tqdm  # type: ignore[import-untyped,unused-ignore]

        self._started = self.clock.seconds()
        self._bar = tqdm(
            total=round(self.duration, 1),
            unit="s",
            file=self.stream,
            leave=False,
            dynamic_ncols=True,
            bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s {postfix}",
        )
        self._loop = LoopingCall(self.update)
        self._loop.clock = self.clock
        self._loop.start(INTERVAL, now=True)

    def update(self) -> None:
        """
        Redraw the line with the current totals.
        """
        bar = self._bar
        if bar is None:
            return
        elapsed = min(self.clock.seconds() - self._started, self.duration)
        bar.n = round(elapsed, 1)
        stats = self.stats
        bar.set_postfix_str(
            f"{stats.requests} req, {stats.errors} errors, "
            f"{stats.mismatches} mismatches",
            refresh=False,
        )
        bar.refresh()

    def stop(self) -> None:
        """
        Stop drawing and erase the line.
        """
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
