"""SIGTERM stops a report run between rows.

The handler raises KeyboardInterrupt where the main thread happens to be, but an exception raised
inside a finalizer (``__del__``, a weakref callback) is printed and dropped by Python, so the run
would go on to the end. The handler therefore also sets a flag, and ``Checkpoint.add`` asks
``check()`` before writing a row: once a stop was asked for, no further row lands.
"""

from __future__ import annotations

import signal

_requested: str | None = None


def install() -> None:
    """Make SIGTERM stop the run (as Ctrl-C does) and be remembered."""
    def on_term(signum, frame):
        global _requested
        _requested = f"signal {signum}"
        raise KeyboardInterrupt(_requested)
    signal.signal(signal.SIGTERM, on_term)


def check() -> None:
    """KeyboardInterrupt if SIGTERM arrived, even when its first exception was swallowed."""
    if _requested is not None:
        raise KeyboardInterrupt(_requested)
