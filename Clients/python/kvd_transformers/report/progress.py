"""Progress on stderr with an ETA; work is weighted by prompt length (a 2048-token cell costs about
four 512-token cells)."""

from __future__ import annotations

import sys
import time


def _fmt(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    def __init__(self, weights: list, stream=sys.stderr):
        self.total = float(sum(weights)) or 1.0
        self.count = len(weights)
        self.done_w = 0.0
        self.done_n = 0
        self.t0 = time.monotonic()
        self.stream = stream

    def log(self, msg: str) -> None:
        print(f"[report {_fmt(time.monotonic() - self.t0)}] {msg}", file=self.stream, flush=True)

    def step(self, weight: float, msg: str) -> None:
        self.done_w += weight
        self.done_n += 1
        el = time.monotonic() - self.t0
        eta = el / self.done_w * (self.total - self.done_w) if self.done_w else 0.0
        self.log(f"{self.done_n}/{self.count} {msg} | ETA {_fmt(eta)}")
