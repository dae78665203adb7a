"""The progress line on a terminal: done / total, %, rate and ETA; nothing elsewhere.

The line and the log records share stderr. The meter registers a clear hook
with logs.py, whose handler calls it under the lock both hold before writing a
record: a record always starts on a clean line (never glued onto ``37%``), and
the meter draws the line again on its next tick. ``close`` clears it, so the
result printed after it starts on a clean line too.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from janua_backup import logs
from janua_backup.output.format import size

CLEAR_LINE = "\r\x1b[K"  # back to column 0, erase to the end of the line
INTERVAL_S = 0.5  # redraws at most twice a second


class ProgressMeter:
    """Bytes done of a total, %, rate and ETA on a terminal; silent under cron,
    in the daemon, under --quiet and when stderr is not a terminal."""

    def __init__(
        self,
        total_bytes: int,
        label: str,
        *,
        quiet: bool = False,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total = total_bytes
        self.label = label
        self.done = 0
        self.enabled = not quiet and self.stream.isatty()
        self._clock = clock
        self._start = clock()
        self._last: float | None = None
        self._shown = False
        if self.enabled:
            logs.set_status_line(self._clear)

    def expect(self, size_bytes: int) -> None:
        """More bytes to come (a backup learns its total once it has listed the files)."""
        with logs.OUTPUT_LOCK:
            self.total += size_bytes

    def __call__(self, n: int) -> None:
        if not self.enabled:
            return
        with logs.OUTPUT_LOCK:
            self.done += n
            now = self._clock()
            if self._last is not None and now - self._last < INTERVAL_S:
                return
            self._last = now
            self.stream.write(CLEAR_LINE + self.line(now))
            self.stream.flush()
            self._shown = True

    def line(self, now: float) -> str:
        rate = self.done / max(now - self._start, 1e-6)
        speed = f"{size(int(rate))}/s"
        if not self.total:
            return f"{self.label}: {size(self.done)}, {speed}"
        # Files grow while they are copied: never past 100%, never a negative ETA.
        percent = min(100.0, 100.0 * self.done / self.total)
        left = max(self.total - self.done, 0)
        eta = duration(left / rate) if rate > 0 else "?"
        return (
            f"{self.label}: {size(self.done)} / {size(self.total)} ({percent:.0f}%), "
            f"{speed}, ETA {eta}"
        )

    def _clear(self) -> None:
        """Called with ``logs.OUTPUT_LOCK`` held, before a log record is written."""
        if self._shown:
            self.stream.write(CLEAR_LINE)
            self.stream.flush()
            self._shown = False
            self._last = None  # draw again at the next tick, under the record

    def close(self) -> None:
        if not self.enabled:
            return
        with logs.OUTPUT_LOCK:
            self._clear()
            logs.set_status_line(None)


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: an ETA a person reads at a glance."""
    whole = int(seconds + 0.5)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
