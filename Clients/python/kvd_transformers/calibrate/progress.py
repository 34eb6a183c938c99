"""A tiny progress bar with an ETA, on stderr."""

from __future__ import annotations

import sys
import time


def _fmt_time(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """``Progress(total, label)``; ``step(note)`` after each unit of work; ``close()`` at the end.

    ``done`` may start above 0 (a resumed run): the ETA then uses only this run's rate.
    Redraws in place on a terminal, one line per update (throttled) otherwise.
    """

    def __init__(self, total: int, label: str, done: int = 0, stream=None, width: int = 24):
        self.total = max(1, int(total))
        self.label = label
        self.done = int(done)
        self._start_done = self.done
        self.stream = stream or sys.stderr
        self.width = width
        self.t0 = time.monotonic()
        self._tty = getattr(self.stream, "isatty", lambda: False)()
        self._last = 0.0
        self.note = ""
        self._draw(force=True)

    def eta(self) -> float | None:
        ran = self.done - self._start_done
        if ran <= 0:
            return None
        return (time.monotonic() - self.t0) / ran * (self.total - self.done)

    def line(self) -> str:
        frac = min(1.0, self.done / self.total)
        fill = int(frac * self.width)
        eta = self.eta()
        eta_s = "--:--" if eta is None else _fmt_time(eta)
        return (f"{self.label} [{'#' * fill}{'.' * (self.width - fill)}] {self.done}/{self.total} "
                f"{frac * 100:5.1f}% elapsed {_fmt_time(time.monotonic() - self.t0)} ETA {eta_s}"
                + (f"  {self.note}" if self.note else ""))

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and not self._tty and now - self._last < 2.0 and self.done < self.total:
            return
        self._last = now
        line = self.line()
        if not self._tty and line == getattr(self, "_printed", None):
            return
        self._printed = line
        if self._tty:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def step(self, note: str = "", n: int = 1) -> None:
        self.done += n
        self.note = note
        self._draw()

    def close(self) -> None:
        self._draw(force=True)
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()
