"""Progress of a long loop for people: a live tqdm bar on a terminal, and plain throttled lines where
the output is a log (a training job's stderr goes to the backend's log, where a bar's carriage
returns would pile up into one endless line).

    progress = progress_bar(total=steps, initial=done, desc="train", unit="step")
    progress.set_postfix(loss="0.1234")
    progress.update(1)
    progress.close()
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

TTY_REFRESH_S = 10.0  # a live bar: redrawn at most this often
LOG_EVERY_S = 30.0  # a log: one line at most this often (and one at the end)


def progress_bar(total: int, initial: int = 0, desc: str = "", unit: str = "it", stream: TextIO | None = None):
    """A tqdm bar when ``stream`` (default stderr) is a terminal, else a ``LineProgress``. Both take
    ``update(n)``, ``set_postfix(**values)`` and ``close()``."""
    stream = stream or sys.stderr
    if stream.isatty():
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=stream, mininterval=TTY_REFRESH_S,
                    dynamic_ncols=True)
    return LineProgress(total, initial, desc, unit, stream)


class LineProgress:
    """One line per ``every_s`` seconds of progress, e.g.
    ``train: 120/1000 step (12%), 2.3 step/s, 6 min 23 s left, loss=0.1234``, and one when closed."""

    def __init__(self, total: int, initial: int, desc: str, unit: str, stream: TextIO,
                 every_s: float = LOG_EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self._stream, self._every_s, self._clock = stream, every_s, clock
        self._start_n, self._started = initial, clock()
        self._last_line = self._started
        self._written_n = initial
        self._postfix = ""
        self._closed = False

    def set_postfix(self, refresh: bool = False, **values) -> None:
        """Values shown at the end of the next line (``refresh`` is tqdm's; lines keep their pace)."""
        self._postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._clock() - self._last_line >= self._every_s:
            self._write()

    def close(self) -> None:
        if not self._closed and self.n != self._written_n:
            self._write()
        self._closed = True

    def _write(self) -> None:
        now = self._clock()
        elapsed = now - self._started
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%)" if self.total
                 else f"{self.n} {self.unit}"]
        if rate > 0:
            parts.append(f"{rate:.3g} {self.unit}/s")
            if self.total and self.n < self.total:
                parts.append(f"{_duration((self.total - self.n) / rate)} left")
        if self._postfix:
            parts.append(self._postfix)
        print(f"{self.desc}: " + ", ".join(parts), file=self._stream, flush=True)
        self._last_line, self._written_n = now, self.n


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else f"{secs} s"
